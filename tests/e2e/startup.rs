//! One way to start the server: an embedded server (`EmbeddedServer::start`, the
//! documented way to plug in a conflict handler) runs the same background tasks as
//! `roster-server serve`, the periodic tombstone purge among them.

use std::time::{Duration, Instant};

use roster_e2e::{TWO_TABLE_CONFIG, TestClient, TestServer};
use serde_json::json;

/// Tombstones of the server's data sets, read from its database.
fn tombstones(server: &TestServer) -> usize {
    server
        .db()
        .stored_rows()
        .into_iter()
        .filter(|(_, (_, deleted, _))| *deleted)
        .count()
}

/// With no retention and a one-second purge interval, a delete synced to an embedded
/// server is purged by the server itself, without the `purge-tombstones` command; and a
/// client that missed it is told to re-initialise, as after any purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_purges_tombstones_periodically() {
    let config =
        format!("tombstone_retention_days = 0\npurge_interval_secs = 1\n{TWO_TABLE_CONFIG}");
    let server = TestServer::start_embedded_with(&config, None).await;
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let goes = a.insert("person", json!({"name": "Goes"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    a.delete("person", goes);
    a.client.sync().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while tombstones(&server) > 0 {
        assert!(
            Instant::now() < deadline,
            "the embedded server kept its tombstone for 15 s with a 1 s purge interval"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = b.client.sync().await.unwrap();
    assert!(report.reinitialised, "B's watermark predates the purge");
    assert!(!b.live("person").contains_key(&goes));
}
