//! Microsoft's Azure Mobile Apps JS client (`azure-mobile-apps-client` 2.0.1, under Node
//! with its offline SQLite store) syncs with a Roster server through `/tables`: push,
//! incremental pull, a delete, and a 412 it resolves; a Roster device syncing through
//! `/v1/sync` sees the same rows.

use roster_e2e::ama_js::run_client;
use roster_e2e::{TestClient, TestServer};
use roster_protocol::RowId;
use serde_json::{Value, json};

/// The JS client's local rows as (id, name, age).
fn rows(answer: &Value) -> Vec<(RowId, String, i64)> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().parse().unwrap(),
                r["name"].as_str().unwrap().to_owned(),
                r["age"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The device's live rows as (id, name, age).
fn device_rows(device: &TestClient) -> Vec<(RowId, String, i64)> {
    device
        .live("person")
        .into_iter()
        .map(|(id, f)| {
            (
                id,
                f["name"].as_str().unwrap().to_owned(),
                f["age"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_ama_js_client_and_a_roster_device_sync_through_one_server() {
    let server = TestServer::start();
    let js_store = tempfile::tempdir().unwrap();
    let (url, token) = (server.url(), server.token().to_owned());
    let js = |phase: &'static str| {
        let (url, token, dir) = (url.clone(), token.clone(), js_store.path().to_owned());
        tokio::task::spawn_blocking(move || run_client(phase, &url, &token, &dir))
    };

    // The JS app inserts Ann and Bob offline and pushes them.
    let first = js("push").await.unwrap();
    assert_eq!(first["unresolved"], json!(0));
    let pushed = rows(&first);
    assert_eq!(pushed.len(), 2);
    let ann = pushed.iter().find(|r| r.1 == "Ann").unwrap().0;
    let bob = pushed.iter().find(|r| r.1 == "Bob").unwrap().0;

    // A Roster device sees them, changes Ann's age and adds Cy.
    let device = TestClient::new(&server).await;
    device.client.sync().await.unwrap();
    assert_eq!(device_rows(&device), pushed);
    device.update("person", ann, json!({"age": 32}));
    let cy = device.insert("person", json!({"name": "Cy", "age": 7}));
    device.client.sync().await.unwrap();

    // The JS app, not having pulled that, sets Ann's age to 30 and deletes Bob. Its push
    // meets a 412 for Ann (with the server's row), which its handler resolves by keeping
    // its values on the server's version; the pull then brings Cy.
    let second = js("conflict").await.unwrap();
    let conflicts = second["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{second}");
    assert_eq!(conflicts[0]["status"], json!(412));
    assert_eq!(conflicts[0]["server"]["age"], json!(32));
    assert_eq!(second["unresolved"], json!(0));
    let mut expected = vec![(ann, "Ann".to_owned(), 30), (cy, "Cy".to_owned(), 7)];
    expected.sort();
    assert_eq!(rows(&second), expected);

    // The server holds the JS app's resolution and logged the conflict with its kind.
    let live = server.live("person").await;
    assert_eq!(live[&ann]["age"], json!(30));
    assert!(!live.contains_key(&bob), "Bob's delete reached the server");
    let logged = server.conflict_log();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        (logged[0].2.as_str(), logged[0].3.as_str()),
        ("both_updated", "server_wins")
    );

    // The device ends with the same rows as the JS app.
    device.client.sync().await.unwrap();
    assert_eq!(device_rows(&device), expected);
}
