//! Operating the server: the Prometheus endpoint counts what a scripted series of syncs
//! did, `/ready` answers, and SIGTERM during a push stops the server cleanly (exit 0)
//! with every request either applied whole or not at all.

use std::time::Duration;

use roster_client::SyncOptions;
use roster_e2e::{TWO_TABLE_CONFIG, TestClient, TestServer, assert_converged};
use serde_json::json;

/// The value of the sample `series` (name and labels exactly as rendered) in a
/// Prometheus text page; 0 when the series was never recorded.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(server.metrics_url()).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// A scripted series of syncs by two devices, a refused token and an open change
/// stream: the counters say exactly what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_a_series_of_syncs_did() {
    let config = format!("metrics_listen = \"127.0.0.1:0\"\n{TWO_TABLE_CONFIG}");
    let server = TestServer::start_with_config(&config);
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;

    // 1. A pushes 3 people; 2. B pulls them.
    let ids: Vec<_> = (0..3)
        .map(|i| a.insert("person", json!({"name": format!("P{i}")})))
        .collect();
    let a1 = a.client.sync().await.unwrap();
    let b1 = b.client.sync().await.unwrap();
    assert_eq!(b1.downloaded, 3);
    // 3. Both change one person's name; A's sync applies, B's meets a conflict that
    //    the server's rule (server-wins) decides.
    a.update("person", ids[0], json!({"name": "From A"}));
    b.update("person", ids[0], json!({"name": "From B"}));
    let a2 = a.client.sync().await.unwrap();
    let b2 = b.client.sync().await.unwrap();
    assert_eq!(b2.conflicts_detected, 1);
    // 4. A wrong token, refused.
    let refused = roster_e2e::authed_http("rst_not_a_token", None)
        .get(format!("{}/v1/schema", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // 5. One change stream held open while the page is read.
    let stream = server
        .http()
        .get(format!("{}/v1/changes", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let page = scrape(&server).await;
    assert_eq!(
        sample(&page, r#"roster_sync_rounds_total{outcome="completed"}"#),
        4.0,
        "{page}"
    );
    assert_eq!(sample(&page, "roster_sync_changes_applied_total"), 4.0);
    assert_eq!(
        sample(
            &page,
            r#"roster_sync_conflicts_total{kind="both_updated",resolution="server_wins"}"#
        ),
        1.0,
        "{page}"
    );
    assert_eq!(sample(&page, "roster_sync_pulled_rows_total"), 3.0);
    assert_eq!(sample(&page, "roster_auth_failures_total"), 1.0);
    assert_eq!(
        sample(
            &page,
            r#"roster_http_rejected_requests_total{code="unauthorized",status="401"}"#
        ),
        1.0,
        "{page}"
    );
    let sync_requests = a1.requests + b1.requests + a2.requests + b2.requests;
    assert_eq!(
        sample(
            &page,
            r#"roster_http_request_duration_seconds_count{route="/v1/sync",method="POST",status="200"}"#
        ),
        f64::from(sync_requests),
        "{page}"
    );
    assert_eq!(sample(&page, "roster_change_streams_open"), 1.0);
    assert_eq!(
        sample(&page, r#"roster_db_pool_connections{state="max"}"#),
        8.0
    );
    drop(stream);
}

/// `/ready` says the database answers and is migrated; `/health` that the process
/// lives. Without `metrics_listen` no metrics endpoint is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_health_answer() {
    let server = TestServer::start();
    for path in ["/ready", "/health"] {
        let response = reqwest::get(format!("{}{path}", server.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let body: serde_json::Value = reqwest::get(format!("{}/ready", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready");
}

/// SIGTERM while a device pushes 2,000 rows in batches of 250: the server exits 0
/// within its grace period; each batch is on the server whole or not at all; once it
/// runs again the device's next round brings both to the same rows, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_push_applies_each_batch_whole_or_not_at_all() {
    const ROWS: usize = 2_000;
    const BATCH: usize = 250;
    let server = TestServer::start();
    let options = SyncOptions {
        push_batch: BATCH,
        retries: 0,
        ..SyncOptions::default()
    };
    let device = TestClient::with_options(&server, options).await;
    device.insert_numbered_people(ROWS);
    // Stop the server once its first batch is committed, while the push goes on.
    let runtime = tokio::runtime::Handle::current();
    let stopper = tokio::task::spawn_blocking(move || {
        let mut server = server;
        runtime.block_on(server.db().wait_for_a_stored_row(Duration::from_secs(20)));
        let status = server.terminate(Duration::from_secs(10));
        let stored = server.db().stored_rows().len();
        (server, status, stored)
    });
    let first = device.client.sync().await;
    let (mut server, status, stored) = stopper.await.unwrap();
    let status = status.expect("the server did not stop within 10 s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        stored % BATCH == 0 && stored > 0 && stored <= ROWS,
        "{stored} rows stored: a batch was applied in part"
    );
    if first.is_ok() {
        assert_eq!(stored, ROWS, "the round completed, so every row is stored");
    }

    server.restart();
    device.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&device]).await;
    assert_eq!(server.live("person").await.len(), ROWS);
    assert_eq!(
        server.db().stored_rows().len(),
        ROWS,
        "a row was stored twice"
    );
}

/// `--log-format json` writes one JSON object per log line, with the event's fields.
#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(roster_e2e::bin_path("roster-server"))
        .arg("--db")
        .arg(dir.path().join("fresh.db"))
        .args(["--log-format", "json", "list-users"])
        .env("ROSTER_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let migration = lines
        .iter()
        .find(|line| line["fields"]["message"] == "applied migration")
        .unwrap_or_else(|| panic!("no migration logged: {stderr}"));
    assert_eq!(migration["level"], "INFO");
    assert!(migration["fields"]["migration"].is_u64());
}
