//! Faults between client and server: answers lost after the server applied a batch,
//! answers cut short or delayed, and a server killed in the middle of applying a batch.
//! Nothing may be applied twice or lost, and no phantom conflicts may appear.

use std::sync::atomic::Ordering;
use std::time::Duration;

use roster_client::{ClientError, SyncOptions};
use roster_e2e::proxy::FaultProxy;
use roster_e2e::{TestClient, TestServer, assert_converged, obj};
use serde_json::json;

fn quick_retries() -> SyncOptions {
    SyncOptions {
        retry_delay: Duration::from_millis(20),
        ..SyncOptions::default()
    }
}

/// The answer to a push is lost after the server applied it: the client sends the same
/// batch again and the server answers it again without applying it twice, so no insert
/// meets itself as a conflict and every row has exactly one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_and_the_batch_applied_once() {
    let server = TestServer::start();
    let proxy = FaultProxy::start(server.addr()).await;
    let a = TestClient::at_url(&proxy.url(), &server.credentials(), quick_retries()).await;
    let b = TestClient::new(&server).await;
    let ids: Vec<_> = (0..20)
        .map(|i| a.insert("person", json!({"name": format!("P{i}")})))
        .collect();
    a.client.sync().await.unwrap();
    let newest_before = server
        .rows()
        .await
        .values()
        .map(|r| r.version)
        .max()
        .unwrap();

    for id in &ids {
        a.update("person", *id, json!({"age": 7}));
    }
    let extra = a.insert("person", json!({"name": "Extra"}));
    proxy.faults.drop_answers.store(2, Ordering::SeqCst);
    let report = a.client.sync().await.unwrap();
    assert_eq!(
        proxy.faults.injected.load(Ordering::SeqCst),
        2,
        "two answers were lost"
    );
    assert_eq!(report.uploaded, 21);
    assert_eq!(
        report.conflicts_detected, 0,
        "no retried change meets itself"
    );
    assert!(server.conflict_log().is_empty());
    let rows = server.rows().await;
    let newest = rows.values().map(|r| r.version).max().unwrap();
    assert_eq!(
        newest - newest_before,
        21,
        "21 changes, 21 writes: none applied twice"
    );
    assert_eq!(a.pending(), 0);
    assert!(rows.contains_key(&("person".to_owned(), extra)));
    b.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&a, &b]).await;
}

/// Answers cut in half and answers delayed: the client retries the cut ones, waits for
/// the slow ones, and ends equal to the server with every change applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_delayed_answers() {
    let server = TestServer::start();
    let proxy = FaultProxy::start(server.addr()).await;
    let options = SyncOptions {
        push_batch: 5,
        ..quick_retries()
    };
    let a = TestClient::at_url(&proxy.url(), &server.credentials(), options).await;
    let rows = (0..30)
        .map(|i| obj(json!({"name": format!("R{i}")})))
        .collect();
    a.client.store().insert_many("person", rows).unwrap();
    proxy.faults.truncate_answers.store(3, Ordering::SeqCst);
    proxy.faults.delay_ms.store(150, Ordering::SeqCst);
    let report = a.client.sync().await.unwrap();
    assert_eq!(proxy.faults.injected.load(Ordering::SeqCst), 3);
    assert_eq!((report.uploaded, report.conflicts_detected), (30, 0));
    assert_eq!(server.live("person").await.len(), 30);
    let versions: std::collections::BTreeSet<u64> =
        server.rows().await.values().map(|r| r.version).collect();
    assert_eq!(versions.len(), 30);
    assert_eq!(versions.last().copied(), Some(30), "30 inserts, 30 writes");
    assert_converged(&server, "person", &[&a]).await;
}

/// More lost answers than retries: the round fails with a transient error, keeps every
/// change pending, and the next round completes without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_runs_out_of_retries_loses_nothing() {
    let server = TestServer::start();
    let proxy = FaultProxy::start(server.addr()).await;
    let a = TestClient::at_url(&proxy.url(), &server.credentials(), quick_retries()).await;
    let id = a.insert("person", json!({"name": "Kept"}));
    proxy.faults.drop_answers.store(4, Ordering::SeqCst);
    let error = a.client.sync().await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    assert_eq!(a.pending(), 1, "unacknowledged means still pending");
    let report = a.client.sync().await.unwrap();
    // The insert was applied by the first attempt; the new round sends it again and the
    // server, already holding exactly those values, acknowledges it: no conflict.
    assert_eq!(report.conflicts_detected, 0, "{report:?}");
    assert_eq!(report.uploaded, 1);
    assert_eq!(server.live("person").await[&id]["name"], json!("Kept"));
    assert_converged(&server, "person", &[&a]).await;
}

/// The server is killed (SIGKILL) while it applies a large batch. After a restart the
/// batch is either wholly there or not at all, and the next sync completes with every
/// row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_batch_leaves_no_partial_batch() {
    const ROWS: usize = 5_000;
    let roomy = roster_e2e::TWO_TABLE_CONFIG.replace("max_body_bytes = 262144", "");
    let mut server = TestServer::start_with_config(&roomy);
    let proxy = FaultProxy::start(server.addr()).await;
    let options = SyncOptions {
        push_batch: ROWS,
        retries: 0,
        ..SyncOptions::default()
    };
    let a = TestClient::at_url(&proxy.url(), &server.credentials(), options).await;
    let rows = (0..ROWS)
        .map(|i| obj(json!({"name": format!("Row {i}"), "email": "x".repeat(200)})))
        .collect();
    a.client.store().insert_many("person", rows).unwrap();
    // The batch is about 1.7 MB of JSON: kill once most of it has reached the server,
    // so the kill lands while the request is read, decoded or applied.
    let start = proxy.faults.forwarded_up.load(Ordering::SeqCst);
    let syncing = tokio::spawn(async move {
        let result = a.client.sync().await;
        (a, result)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while proxy.faults.forwarded_up.load(Ordering::SeqCst) - start < 1_600_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch was not sent"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    let (a, result) = syncing.await.unwrap();
    assert!(result.is_err(), "the client never saw the answer");
    let sent = a.pending();
    assert_eq!(sent, ROWS as u64, "nothing acknowledged, nothing dropped");

    server.restart();
    let applied = server.live("person").await.len();
    assert!(
        applied == 0 || applied == ROWS,
        "partial batch on the server: {applied}"
    );
    eprintln!("rows the killed server had committed: {applied} of {ROWS}");
    let direct = roster_client::SyncClient::open(a.dir()).unwrap();
    let report = direct.sync().await.unwrap();
    assert_eq!(report.uploaded, ROWS as u64);
    assert_eq!(
        server.live("person").await.len(),
        ROWS,
        "every row exactly once"
    );
    assert_eq!(direct.store().status().unwrap().pending, 0);
}

/// A server with a smaller body limit than the client's batches: the client halves its
/// batches until they fit instead of failing every round.
#[tokio::test]
async fn batches_shrink_to_fit_the_servers_body_limit() {
    let server = TestServer::start();
    let options = SyncOptions {
        push_batch: 2_000,
        ..SyncOptions::default()
    };
    let a = TestClient::with_options(&server, options).await;
    let rows = (0..2_000)
        .map(|i| obj(json!({"name": format!("Row {i}"), "email": "x".repeat(300)})))
        .collect();
    a.client.store().insert_many("person", rows).unwrap();
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 2_000);
    assert!(
        report.requests > 2,
        "the 700 kB batch was split: {report:?}"
    );
    assert_eq!(server.live("person").await.len(), 2_000);
    assert_eq!(a.pending(), 0);
}
