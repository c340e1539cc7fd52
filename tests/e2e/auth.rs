//! Accounts and data isolation end to end: the real server binary with users created by
//! its admin commands, real clients, real HTTP on 127.0.0.1. Each test checks what the
//! server holds and what every client holds afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use roster_client::{ClientError, Credentials};
use roster_e2e::{DEFAULT_USER, TestClient, TestServer, assert_converged, authed_http, bin_path};
use roster_protocol::{
    ApiError, Change, ChangeOp, ConflictLogEntry, ErrorCode, PROTOCOL_VERSION, RowId, ServerRow,
    SyncRequest, SyncResponse,
};
use serde_json::{Value, json};

/// A sync request from a fresh client id.
fn request(since: u64, changes: Vec<Change>) -> SyncRequest {
    SyncRequest {
        slice: None,
        protocol: PROTOCOL_VERSION,
        client_id: uuid::Uuid::now_v7(),
        since,
        changes,
        pull_limit: 1_000,
        round: None,
        batch_id: Some(uuid::Uuid::now_v7()),
        epoch: None,
    }
}

fn change(op: ChangeOp, id: RowId, base_version: Option<u64>, fields: Option<Value>) -> Change {
    Change {
        table: "person".into(),
        id,
        op,
        base_version,
        fields: fields.and_then(|f| f.as_object().cloned()),
        base_fields: None,
        edited_at_ms: None,
    }
}

/// POSTs a sync request with `http` and returns the status and the raw body.
async fn post_sync(
    http: &reqwest::Client,
    server: &TestServer,
    body: &SyncRequest,
) -> (u16, String) {
    let response = http
        .post(format!("{}/v1/sync", server.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// GETs `path` with `http` and returns the status and the raw body.
async fn get(http: &reqwest::Client, server: &TestServer, path: &str) -> (u16, String) {
    let response = http
        .get(format!("{}{path}", server.url()))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn error_code(body: &str) -> ErrorCode {
    let error: ApiError = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not an API error body ({e}): {body}"));
    assert!(!error.error.message.is_empty());
    error.error.code
}

/// A stored row's (version, deleted, data), keyed by (dataset, table, id).
type StoredRows = BTreeMap<(String, String, String), (i64, bool, Option<String>)>;

/// Every row in the server's database, of every data set.
fn all_stored_rows(server: &TestServer) -> StoredRows {
    server.db().stored_rows().into_iter().collect()
}

/// No token, a wrong token and a revoked token get 401 `unauthorized` on every /v1 route,
/// and none of those requests stores anything; /health stays open. A client whose token
/// was revoked keeps its pending edits and syncs again once it has a new token.
#[tokio::test]
async fn missing_wrong_and_revoked_tokens_are_refused_and_store_nothing() {
    let server = TestServer::start();
    let (revoked_id, revoked) = server.create_token(DEFAULT_USER);
    let client = TestClient::as_user(&server, &Credentials::token(revoked.clone())).await;
    let kept = client.insert("person", json!({"name": "Before revocation"}));
    client.client.sync().await.unwrap();
    server.revoke_token(revoked_id);
    let before = all_stored_rows(&server);
    assert_eq!(before.len(), 1);

    let anonymous = reqwest::Client::new();
    let wrong = authed_http(
        "rst_0000000000000000000000000000000000000000000000000000000000000000",
        None,
    );
    let revoked_http = authed_http(&revoked, None);
    let basic = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {}", server.token()).parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    for (who, http) in [
        ("no token", &anonymous),
        ("wrong token", &wrong),
        ("revoked token", &revoked_http),
        ("not a bearer token", &basic),
    ] {
        let insert = change(
            ChangeOp::Insert,
            RowId::now_v7(),
            None,
            Some(json!({"name": "Intruder"})),
        );
        let (status, body) = post_sync(http, &server, &request(0, vec![insert])).await;
        assert_eq!(status, 401, "{who}: {body}");
        assert_eq!(error_code(&body), ErrorCode::Unauthorized, "{who}");
        assert!(!body.contains("Before revocation"), "{who}: {body}");
        for path in ["/v1/schema", "/v1/conflicts"] {
            let (status, body) = get(http, &server, path).await;
            assert_eq!(status, 401, "{who} GET {path}: {body}");
            assert_eq!(error_code(&body), ErrorCode::Unauthorized);
        }
        let (status, _) = get(http, &server, "/health").await;
        assert_eq!(status, 200, "{who}: /health stays open");
    }
    assert_eq!(all_stored_rows(&server), before, "nothing was stored");
    assert!(server.conflict_log().is_empty());

    // The client with the revoked token: refused, not retried, edits kept.
    client.update("person", kept, json!({"age": 41}));
    let error = client.client.sync().await.unwrap_err();
    assert!(matches!(error, ClientError::Unauthorized(_)), "{error}");
    assert!(!error.is_transient());
    assert_eq!(client.pending(), 1);
    assert_eq!(
        server.live("person").await[&kept].get("age"),
        Some(&Value::Null)
    );

    // A new token (saved in the store) lets the same device go on.
    let (_, fresh) = server.create_token(DEFAULT_USER);
    client.client.set_token(Some(fresh)).unwrap();
    client.client.sync().await.unwrap();
    assert_eq!(server.live("person").await[&kept]["age"], json!(41));
    assert_converged(&server, "person", &[&client]).await;
}

/// User B knows user A's row ids and versions and tries to pull, update, delete and
/// insert over them, on its own data set and by naming A's: A's rows, A's clients and
/// A's conflict log are unchanged, and nothing B receives carries A's data.
#[tokio::test]
async fn another_user_cannot_read_overwrite_or_delete_rows_even_knowing_the_ids() {
    let server = TestServer::start();
    let a1 = TestClient::new(&server).await;
    let a2 = TestClient::new(&server).await;
    let secret_1 = a1.insert("person", json!({"name": "Alice Secret", "city": "Hidden"}));
    let secret_2 = a1.insert("person", json!({"name": "Alice Private", "age": 30}));
    a1.client.sync().await.unwrap();
    a2.client.sync().await.unwrap();
    let a_rows = server.rows().await;
    assert_eq!(a_rows.len(), 2);
    let v1 = a_rows[&("person".to_owned(), secret_1)].version;
    let v2 = a_rows[&("person".to_owned(), secret_2)].version;

    let bob_token = server.create_user("bob");
    let bob = authed_http(&bob_token, None);

    // Read: a pull from 0 returns nothing of A's.
    let (status, body) = post_sync(&bob, &server, &request(0, vec![])).await;
    assert_eq!(status, 200, "{body}");
    let pulled: SyncResponse = serde_json::from_str(&body).unwrap();
    assert!(pulled.changes.is_empty(), "{body}");

    // Update, delete and insert over A's ids in B's own data set.
    let attacks = vec![
        change(
            ChangeOp::Update,
            secret_1,
            Some(v1),
            Some(json!({"name": "Mallory was here"})),
        ),
        change(ChangeOp::Delete, secret_2, Some(v2), None),
    ];
    let (status, body) = post_sync(&bob, &server, &request(0, attacks)).await;
    assert_eq!(status, 200, "{body}");
    let insert_over = change(
        ChangeOp::Insert,
        secret_2,
        None,
        Some(json!({"name": "Mallory's own"})),
    );
    let (status, body2) = post_sync(&bob, &server, &request(0, vec![insert_over])).await;
    assert_eq!(status, 200, "{body2}");
    for answer in [&body, &body2] {
        for leaked in ["Alice", "Hidden"] {
            assert!(!answer.contains(leaked), "B received A's data: {answer}");
        }
    }

    // The same by naming A's data set: 403, as for a data set that does not exist.
    let bob_on_a = authed_http(&bob_token, Some(DEFAULT_USER));
    let bob_on_nothing = authed_http(&bob_token, Some("no-such-dataset"));
    let overwrite = change(
        ChangeOp::Update,
        secret_1,
        Some(v1),
        Some(json!({"name": "Mallory again"})),
    );
    let (status_a, body_a) =
        post_sync(&bob_on_a, &server, &request(0, vec![overwrite.clone()])).await;
    let (status_n, body_n) =
        post_sync(&bob_on_nothing, &server, &request(0, vec![overwrite])).await;
    assert_eq!((status_a, status_n), (403, 403));
    assert_eq!(error_code(&body_a), ErrorCode::Forbidden);
    assert_eq!(
        body_a, body_n,
        "a foreign data set looks like a missing one"
    );
    let (status, body) = get(&bob_on_a, &server, "/v1/conflicts").await;
    assert_eq!(status, 403, "{body}");

    // A's rows are exactly as before, on the server and on both of A's clients.
    assert_eq!(server.rows().await, a_rows);
    a1.client.sync().await.unwrap();
    a2.client.sync().await.unwrap();
    assert_eq!(a1.live("person")[&secret_1]["name"], json!("Alice Secret"));
    assert_eq!(a2.live("person")[&secret_2]["name"], json!("Alice Private"));
    assert_converged(&server, "person", &[&a1, &a2]).await;
    assert!(server.conflict_log_of(DEFAULT_USER).is_empty());

    // B's data set holds only what B wrote; its conflict log shows nothing of A.
    let b_rows = server.live_as(&bob_token, None, "person").await;
    assert_eq!(b_rows.len(), 1);
    assert_eq!(b_rows[&secret_2]["name"], json!("Mallory's own"));
    let (status, body) = get(&bob, &server, "/v1/conflicts").await;
    assert_eq!(status, 200);
    let log: Vec<ConflictLogEntry> = serde_json::from_str(&body).unwrap();
    assert!(
        !body.contains("Alice") && !body.contains("Hidden"),
        "{body}"
    );
    for entry in &log {
        assert!(
            entry
                .server_row
                .as_ref()
                .is_none_or(|row: &ServerRow| row.fields.is_none())
        );
    }
    // A real client of B sees only B's row.
    let b_client = TestClient::as_user(&server, &Credentials::token(bob_token.clone())).await;
    b_client.client.sync().await.unwrap();
    let seen = b_client.live("person");
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec![&secret_2]);
    assert_eq!(seen[&secret_2]["name"], json!("Mallory's own"));
    assert_eq!(seen[&secret_2]["city"], Value::Null);
}

/// Each user's /v1/conflicts lists only the conflicts of its own data set.
#[tokio::test]
async fn the_server_conflict_log_is_scoped_to_the_data_set() {
    let server = TestServer::start();
    let a1 = TestClient::new(&server).await;
    let a2 = TestClient::new(&server).await;
    let id = a1.insert("person", json!({"name": "Jane", "age": 25}));
    a1.client.sync().await.unwrap();
    a2.client.sync().await.unwrap();
    a1.update("person", id, json!({"age": 26}));
    a2.update("person", id, json!({"age": 27}));
    a1.client.sync().await.unwrap();
    let report = a2.client.sync().await.unwrap();
    assert_eq!(report.conflicts_detected, 1);
    a1.client.sync().await.unwrap();

    let bob_token = server.create_user("bob");
    let bob = TestClient::as_user(&server, &Credentials::token(bob_token.clone())).await;
    let bob_id = bob.insert("person", json!({"name": "Bob's", "age": 1}));
    bob.client.sync().await.unwrap();
    let bob2 = TestClient::as_user(&server, &Credentials::token(bob_token.clone())).await;
    bob2.client.sync().await.unwrap();
    bob.update("person", bob_id, json!({"age": 2}));
    bob2.update("person", bob_id, json!({"age": 3}));
    bob.client.sync().await.unwrap();
    bob2.client.sync().await.unwrap();

    let a_log = a1.client.server_conflicts(100, None).await.unwrap();
    let b_log = bob.client.server_conflicts(100, None).await.unwrap();
    assert_eq!(a_log.len(), 1);
    assert_eq!(b_log.len(), 1);
    assert_eq!(a_log[0].id, id);
    assert_eq!(b_log[0].id, bob_id);
    assert_eq!(server.conflict_log().len(), 2);
    assert_eq!(server.conflict_log_of("bob").len(), 1);
    assert_converged(&server, "person", &[&a1, &a2]).await;
    let b_rows = server.live_as(&bob_token, None, "person").await;
    assert_eq!(bob.live("person"), b_rows);
}

/// A data set A shares with B syncs both ways between A's and B's clients; B's own data
/// set stays separate; a data set not shared with B (or the unowned `default` before it
/// is shared) is refused with 403 and B's client stores nothing of it.
#[tokio::test]
async fn a_shared_data_set_syncs_both_ways_and_an_unshared_one_is_forbidden() {
    let server = TestServer::start();
    let bob_token = server.create_user("bob");
    let on_alice = Credentials::token(bob_token.clone()).with_dataset(DEFAULT_USER);

    // Before sharing: B cannot even initialise a client on A's data set.
    let tmp = tempfile::tempdir().unwrap();
    let error = roster_client::SyncClient::init(tmp.path(), &server.url(), &on_alice, None)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, ClientError::Forbidden(_)), "{error}");
    assert!(!tmp.path().join("roster.db").exists());
    let default = authed_http(&bob_token, Some("default"));
    let (status, _) = post_sync(&default, &server, &request(0, vec![])).await;
    assert_eq!(status, 403);

    let a = TestClient::new(&server).await;
    let shared_row = a.insert("person", json!({"name": "Shared", "age": 1}));
    a.client.sync().await.unwrap();
    server.share(DEFAULT_USER, "bob");

    let b = TestClient::as_user(&server, &on_alice).await;
    let b_own = TestClient::as_user(&server, &Credentials::token(bob_token.clone())).await;
    let own_row = b_own.insert("person", json!({"name": "Bob only"}));
    b_own.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    assert_eq!(b.live("person")[&shared_row]["name"], json!("Shared"));

    b.update("person", shared_row, json!({"age": 2}));
    let from_b = b.insert("person", json!({"name": "From Bob"}));
    b.client.sync().await.unwrap();
    a.client.sync().await.unwrap();
    assert_eq!(a.live("person")[&shared_row]["age"], json!(2));
    assert_eq!(a.live("person")[&from_b]["name"], json!("From Bob"));
    assert!(!a.live("person").contains_key(&own_row));
    assert_converged(&server, "person", &[&a, &b]).await;

    // B's own data set is still only B's.
    let own = server.live_as(&bob_token, None, "person").await;
    assert_eq!(own.keys().copied().collect::<Vec<_>>(), vec![own_row]);
    b_own.client.sync().await.unwrap();
    assert_eq!(b_own.live("person"), own);

    // A third user with no grant is refused on A's data set and sees nothing.
    let carol_token = server.create_user("carol");
    let carol = authed_http(&carol_token, Some(DEFAULT_USER));
    let (status, body) = post_sync(&carol, &server, &request(0, vec![])).await;
    assert_eq!(status, 403);
    assert!(!body.contains("Shared"));
    assert!(
        server
            .live_as(&carol_token, None, "person")
            .await
            .is_empty()
    );
}

/// The token secrets appear nowhere in the database files (only their SHA-256 hashes),
/// and `list-users` shows ids and labels, never secrets.
#[tokio::test]
async fn tokens_are_stored_hashed() {
    let server = TestServer::start();
    let bob = server.create_user("bob");
    let (_, second) = server.create_token("bob");
    let client = TestClient::new(&server).await;
    client.insert("person", json!({"name": "Anything"}));
    client.client.sync().await.unwrap();

    let secrets = [server.token().to_owned(), bob.clone(), second.clone()];
    // Every file of the server (its SQLite database, WAL and config) is free of secrets;
    // on PostgreSQL the database lives elsewhere and its tokens table is checked below.
    let dir = server.dir();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a token",
                path.display()
            );
            assert!(
                !text.contains(&secret[4..]),
                "{} holds a token's random part",
                path.display()
            );
        }
    }
    let hashes = server.db().token_hashes();
    let expected: Vec<String> = secrets
        .iter()
        .map(|s| {
            roster_server::accounts::TokenHash::of(s)
                .as_str()
                .to_owned()
        })
        .collect();
    assert_eq!(hashes, expected);

    let out = Command::new(bin_path("roster-server"))
        .arg("--db")
        .arg(server.db().url())
        .args(["list-users", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    let users: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 2);
    for secret in &secrets {
        assert!(!listed.contains(secret.as_str()));
    }
}

fn roster(dir: &Path, args: &[&str], token: Option<&str>) -> std::process::Output {
    let env: Vec<(&str, &str)> = token.map(|t| ("ROSTER_TOKEN", t)).into_iter().collect();
    roster_e2e::cli::roster_command(dir, args, &env)
        .output()
        .unwrap()
}

/// The CLI takes its token from ROSTER_TOKEN at init; a revoked token makes `sync` exit
/// with 5 and keeps the edit pending; a new token given with --token gets it through.
#[tokio::test]
async fn the_cli_uses_its_token_and_a_refused_one_exits_5() {
    let server = TestServer::start();
    let (id, token) = server.create_token(DEFAULT_USER);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cli");

    let no_token = roster(&dir, &["init", "--server", &server.url()], None);
    assert_eq!(no_token.status.code(), Some(5), "{no_token:?}");
    assert!(!dir.join("roster.db").exists());

    let init = roster(&dir, &["init", "--server", &server.url()], Some(&token));
    assert!(init.status.success(), "{init:?}");
    let added = roster(&dir, &["add", "name=Cli", "--json"], None);
    assert!(added.status.success());
    let sync = roster(&dir, &["sync"], None);
    assert!(sync.status.success(), "the stored token is used: {sync:?}");
    let sync = roster(&dir, &["sync"], Some(""));
    assert!(
        sync.status.success(),
        "an empty ROSTER_TOKEN is no token: {sync:?}"
    );
    assert_eq!(server.live("person").await.len(), 1);

    server.revoke_token(id);
    let edit_id: Value = serde_json::from_slice(&added.stdout).unwrap();
    let edit_id = edit_id["id"].as_str().unwrap().to_owned();
    assert!(
        roster(&dir, &["edit", &edit_id, "age=5"], None)
            .status
            .success()
    );
    let refused = roster(&dir, &["sync", "--json"], None);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("credentials"), "{stderr}");
    let status: Value =
        serde_json::from_slice(&roster(&dir, &["status", "--json"], None).stdout).unwrap();
    assert_eq!(status["pending"], json!(1));

    let again = roster(&dir, &["sync", "--token", server.token()], None);
    assert!(again.status.success(), "{again:?}");
    let rows = server.live("person").await;
    assert_eq!(rows.values().next().unwrap()["age"], json!(5));
}

/// `delete-user` revokes every token of the user: its old token is refused, and does
/// not become the token of the next user created (not even one with the same name),
/// whose data set starts empty when the old one was deleted with its data.
#[tokio::test]
async fn a_deleted_users_token_does_not_work_for_the_next_created_user() {
    let server = TestServer::start();
    let alice_token = server.create_user("alice");
    let alice = authed_http(&alice_token, None);
    let row = RowId::now_v7();
    let insert = change(
        ChangeOp::Insert,
        row,
        None,
        Some(json!({"name": "Alice's"})),
    );
    let (status, _) = post_sync(&alice, &server, &request(0, vec![insert])).await;
    assert_eq!(status, 200);

    let summary = server.delete_user("alice", false);
    assert!(summary.contains("deleted user alice"), "{summary}");
    let (status, body) = post_sync(&alice, &server, &request(0, vec![])).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), ErrorCode::Unauthorized);

    let bob_token = server.create_user("bob");
    let again_token = server.create_user("alice");
    for (name, token) in [("bob", &bob_token), ("the new alice", &again_token)] {
        let (status, body) =
            post_sync(&authed_http(token, None), &server, &request(0, vec![])).await;
        assert_eq!(status, 200, "{name}: {body}");
        let answer: SyncResponse = serde_json::from_str(&body).unwrap();
        assert!(
            answer.changes.is_empty(),
            "{name} sees nothing of the old alice"
        );
    }
    let (status, _) = post_sync(&alice, &server, &request(0, vec![])).await;
    assert_eq!(status, 401, "the old token still works for no one");
    assert!(
        !all_stored_rows(&server)
            .keys()
            .any(|(_, _, id)| *id == row.to_string()),
        "--delete-data removed the rows"
    );
}

/// `delete-user --keep-data` keeps the data set and the shares others have on it.
#[tokio::test]
async fn a_user_deleted_with_keep_data_leaves_its_shared_rows_to_the_grantees() {
    let server = TestServer::start();
    let alice_token = server.create_user("alice");
    let alice = authed_http(&alice_token, None);
    let row = RowId::now_v7();
    let insert = change(ChangeOp::Insert, row, None, Some(json!({"name": "Kept"})));
    assert_eq!(
        post_sync(&alice, &server, &request(0, vec![insert]))
            .await
            .0,
        200
    );
    server.share("alice", DEFAULT_USER);

    server.delete_user("alice", true);
    assert_eq!(post_sync(&alice, &server, &request(0, vec![])).await.0, 401);
    let kept = server
        .live_as(server.token(), Some("alice"), "person")
        .await;
    assert_eq!(kept[&row]["name"], json!("Kept"));
}

/// `unshare` takes a share back: the grantee is refused from its next request on, like
/// on a data set that was never shared, and the owner keeps everything.
#[tokio::test]
async fn unshare_removes_access() {
    let server = TestServer::start();
    let bob_token = server.create_user("bob");
    let bob_on_tester = authed_http(&bob_token, Some(DEFAULT_USER));
    server.share(DEFAULT_USER, "bob");
    let row = RowId::now_v7();
    let insert = change(ChangeOp::Insert, row, None, Some(json!({"name": "Shared"})));
    assert_eq!(
        post_sync(&bob_on_tester, &server, &request(0, vec![insert]))
            .await
            .0,
        200
    );

    server.unshare(DEFAULT_USER, "bob");
    let (status, body) = post_sync(&bob_on_tester, &server, &request(0, vec![])).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), ErrorCode::Forbidden);
    assert!(!body.contains("Shared"));
    assert!(server.live("person").await.contains_key(&row));
}

/// The token id `create-token` / `rotate-token` printed on stderr.
fn issued_id(stderr: &str) -> i64 {
    stderr
        .split("issued token ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no token id in {stderr:?}"))
}

/// A token created with `--expires-in` works until then; once expired it is refused
/// with 401 `token_expired` (not `unauthorized`), and nothing is read or stored.
#[tokio::test]
async fn expired_token_is_refused_with_token_expired() {
    let server = TestServer::start();
    let (day, _) = server.admin(&["create-token", "--user", DEFAULT_USER, "--expires-in", "1d"]);
    let (gone, _) = server.admin(&["create-token", "--user", DEFAULT_USER, "--expires-in", "0s"]);
    let ok = authed_http(day.trim(), None);
    assert_eq!(post_sync(&ok, &server, &request(0, vec![])).await.0, 200);

    let expired = authed_http(gone.trim(), None);
    let row = RowId::now_v7();
    let insert = change(ChangeOp::Insert, row, None, Some(json!({"name": "Late"})));
    let (status, body) = post_sync(&expired, &server, &request(0, vec![insert])).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), ErrorCode::TokenExpired);
    assert!(!server.live("person").await.contains_key(&row));
    let (status, body) = get(&expired, &server, "/v1/conflicts").await;
    assert_eq!((status, error_code(&body)), (401, ErrorCode::TokenExpired));
    let (status, body) = post_sync(
        &authed_http("rst_unknown", None),
        &server,
        &request(0, vec![]),
    )
    .await;
    assert_eq!((status, error_code(&body)), (401, ErrorCode::Unauthorized));
}

/// `rotate-token ID --grace G` issues a new token for the same user; the old one keeps
/// working for the grace period, then answers `token_expired`. `list-tokens` shows when
/// each token was last used.
#[tokio::test]
async fn a_rotated_token_overlaps_with_the_new_one_for_the_grace_period() {
    let server = TestServer::start();
    let (old_secret, stderr) = server.admin(&["create-token", "--user", DEFAULT_USER]);
    let old_id = issued_id(&stderr);
    let old = authed_http(old_secret.trim(), None);
    let (new_secret, _) = server.admin(&["rotate-token", &old_id.to_string(), "--grace", "1d"]);
    let new = authed_http(new_secret.trim(), None);
    assert_eq!(post_sync(&old, &server, &request(0, vec![])).await.0, 200);
    assert_eq!(post_sync(&new, &server, &request(0, vec![])).await.0, 200);

    let (newest_secret, stderr) =
        server.admin(&["rotate-token", &old_id.to_string(), "--grace", "0s"]);
    let newest_id = issued_id(&stderr);
    let (status, body) = post_sync(&old, &server, &request(0, vec![])).await;
    assert_eq!((status, error_code(&body)), (401, ErrorCode::TokenExpired));
    assert_eq!(post_sync(&new, &server, &request(0, vec![])).await.0, 200);
    let newest = authed_http(newest_secret.trim(), None);
    assert_eq!(
        post_sync(&newest, &server, &request(0, vec![])).await.0,
        200
    );

    let (listing, _) = server.admin(&["list-tokens", "--user", DEFAULT_USER]);
    let line = |id: i64| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{id}\t")))
            .unwrap_or_else(|| panic!("token {id} missing from {listing}"))
            .to_owned()
    };
    assert!(line(old_id).contains("\texpired\t"), "{listing}");
    let used = line(newest_id);
    let last_used = used.rsplit('\t').next().unwrap();
    assert_ne!(last_used, "-", "the newest token's use is recorded: {used}");
    assert!(
        !listing.contains(newest_secret.trim()),
        "secrets are never listed"
    );
}
