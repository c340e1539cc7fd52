//! The trash: a person deleted on one device and restored from its trash is back on the
//! server and on the other devices after their syncs, whether the delete had reached the
//! server or not, and even once the server purged the delete's tombstone.

use roster_e2e::{TestClient, TestServer};
use serde_json::{Value, json};

/// The values of every live person on `client`, sorted, without ids.
fn people(client: &TestClient) -> Vec<Value> {
    let mut rows: Vec<Value> = client
        .live("person")
        .into_values()
        .map(Value::Object)
        .collect();
    rows.sort_by_key(Value::to_string);
    rows
}

#[tokio::test]
async fn a_restored_delete_that_reached_the_server_is_back_everywhere() {
    let server = TestServer::start();
    let (a, b) = (
        TestClient::new(&server).await,
        TestClient::new(&server).await,
    );
    let id = a.insert("person", json!({"name": "Ann", "city": "Oslo"}));
    a.insert("person", json!({"name": "Bo"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    let before = people(&b);
    a.delete("person", id);
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    assert_eq!(people(&b).len(), 1, "the delete reached the other device");
    // Even a purged tombstone does not stand in the way.
    server.purge_all_tombstones();

    let restored = a.client.store().restore_from_trash("person", id).unwrap();
    assert_ne!(restored.id, id, "the server has the delete: a new row");
    assert!(a.client.store().trash("person", 10).unwrap().is_empty());
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.conflicts_resolved, 0);
    b.client.sync().await.unwrap();
    assert_eq!(people(&b), before);
    assert_eq!(people(&a), before);
    assert_eq!(server.live("person").await.len(), 2);
    assert_eq!(a.pending(), 0);
}

#[tokio::test]
async fn a_restored_delete_not_yet_pushed_keeps_its_id_and_changes_nothing_elsewhere() {
    let server = TestServer::start();
    let (a, b) = (
        TestClient::new(&server).await,
        TestClient::new(&server).await,
    );
    let id = a.insert("person", json!({"name": "Cy", "age": 30}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    a.delete("person", id);
    let restored = a.client.store().restore_from_trash("person", id).unwrap();
    assert_eq!(restored.id, id);
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.conflicts_resolved, 0);
    assert_eq!(a.pending(), 0);
    b.client.sync().await.unwrap();
    assert_eq!(b.live("person")[&id]["name"], json!("Cy"));
    assert_eq!(server.live("person").await[&id]["age"], json!(30));
}
