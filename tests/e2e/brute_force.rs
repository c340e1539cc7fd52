//! The brute-force limit on bearer tokens, against the real server binary: a burst of
//! bad tokens from one address is slowed, then refused with 429 and `Retry-After`,
//! while a client whose token is valid keeps syncing, and other addresses (127.0.0.2:
//! all of 127/8 is loopback) are not affected.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use roster_e2e::{TWO_TABLE_CONFIG, TestClient, TestServer, assert_converged};
use roster_protocol::PROTOCOL_VERSION;
use serde_json::{Value, json};

/// Two failures answered at once, three slowed by 300 ms, then refused for a minute.
fn config() -> String {
    format!(
        "auth_failures_before_delay = 2\nauth_failures_before_block = 5\n\
         auth_failure_delay_ms = 300\nauth_failure_window_secs = 60\n{TWO_TABLE_CONFIG}"
    )
}

/// An HTTP client whose connections come from `source`.
fn http_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// An empty pull with `token`; returns the status, the `Retry-After` header and the
/// body, and how long the answer took.
async fn pull(
    http: &reqwest::Client,
    server: &TestServer,
    token: &str,
) -> (u16, Option<u64>, Value, Duration) {
    let started = Instant::now();
    let response = http
        .post(format!("{}/v1/sync", server.url()))
        .bearer_auth(token)
        .json(
            &json!({"protocol": PROTOCOL_VERSION, "client_id": uuid::Uuid::now_v7(),
                      "since": 0, "changes": [], "pull_limit": 10}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body, started.elapsed())
}

#[tokio::test]
async fn a_burst_of_bad_tokens_is_slowed_then_refused_while_a_valid_client_keeps_syncing() {
    let server = TestServer::start_with_config(&config());
    let good = TestClient::new(&server).await;
    good.insert("person", json!({"name": "Before the burst"}));
    good.client.sync().await.unwrap();
    let unused = server.create_user("bob");

    let local = http_from("127.0.0.1");
    let mut answers = Vec::new();
    for guess in 0..8 {
        answers.push(pull(&local, &server, &format!("rst_{guess:064x}")).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    for (status, _, _, took) in &answers[2..5] {
        assert!(
            *took >= Duration::from_millis(300),
            "a failure past the threshold was answered in {took:?} ({status})"
        );
    }
    for (_, retry_after, body, _) in &answers[5..] {
        assert_eq!(body["error"]["code"], json!("too_many_requests"), "{body}");
        let secs = retry_after.expect("Retry-After on a 429");
        assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    }

    // The valid client on the blocked address keeps syncing.
    good.insert("person", json!({"name": "During the block"}));
    good.client.sync().await.unwrap();
    assert_eq!(good.pending(), 0);
    assert_converged(&server, "person", &[&good]).await;
    // A token never seen valid waits like a guess on the blocked address (documented).
    assert_eq!(pull(&local, &server, &unused).await.0, 429);

    // Another address is not affected: its valid token works, its bad one is a 401.
    let other = http_from("127.0.0.2");
    let (status, _, body, _) = pull(&other, &server, &unused).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pull(&other, &server, "rst_bad").await.0, 401);
}

/// A user that sends more requests than its quota allows is refused with 429 and
/// `Retry-After` before anything runs; another user on the same address goes on.
#[tokio::test]
async fn a_user_past_its_request_quota_waits_while_another_user_goes_on() {
    let server =
        TestServer::start_with_config(&format!("user_requests_per_minute = 5\n{TWO_TABLE_CONFIG}"));
    let (bob, _) = server.admin(&["create-user", "bob"]);
    let http = http_from("127.0.0.1");
    for _ in 0..5 {
        let (status, _, body, _) = pull(&http, &server, server.token()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body, _) = pull(&http, &server, server.token()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], json!("too_many_requests"));
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(
        (1..=12).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let (status, _, body, _) = pull(&http, &server, bob.trim()).await;
    assert_eq!(status, 200, "{body}");
}
