//! Conflicts end to end: the first source document's Jane scenario, and every conflict
//! kind under both table policies, with end states asserted on the server and on both
//! clients, plus the sync counts each round reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roster_client::SyncReport;
use roster_e2e::{TWO_TABLE_CONFIG, TestClient, TestServer, assert_converged};
use roster_protocol::{ConflictKind, RowId};
use serde_json::{Value, json};

/// The scenario of `000_f6b3d591941f9b3a.txt`, under the default server-wins policy.
#[tokio::test]
async fn jane_both_devices_edit_age_the_server_wins() {
    let server = TestServer::start();
    // Users A and B both synchronise the same Person {Name = Jane, Age = 25}.
    let user_a = TestClient::new(&server).await;
    let user_b = TestClient::new(&server).await;
    let jane = user_a.insert("person", json!({"name": "Jane", "age": 25}));
    user_a.client.sync().await.unwrap();
    user_b.client.sync().await.unwrap();
    // User A changes Age to 32, user B to 30.
    user_a.update("person", jane, json!({"age": 32}));
    user_b.update("person", jane, json!({"age": 30}));
    // User A synchronises first.
    let first = user_a.client.sync().await.unwrap();
    assert_eq!((first.uploaded, first.conflicts_detected), (1, 0));
    // User B attempts to synchronise: the server detects that the record changed since
    // B last synchronised, classifies the conflict, and its policy decides.
    let second = user_b.client.sync().await.unwrap();
    assert_eq!(
        (
            second.uploaded,
            second.downloaded,
            second.conflicts_detected,
            second.conflicts_resolved
        ),
        (1, 1, 1, 1)
    );
    let history = user_b.client.store().conflict_history(10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].kind, "both_updated");
    assert_eq!(history[0].resolution, "server_wins");
    assert_eq!(history[0].client_row.as_ref().unwrap()["age"], json!(30));
    assert_eq!(
        history[0].server_row.as_ref().unwrap()["fields"]["age"],
        json!(32)
    );
    // Both end equal, with the server's Age; B's rejected 30 is in the history, not lost.
    user_a.client.sync().await.unwrap();
    assert_eq!(server.live("person").await[&jane]["age"], json!(32));
    assert_converged(&server, "person", &[&user_a, &user_b]).await;
    assert_eq!(server.conflict_log().len(), 1);
}

/// The same story on a server whose person table is client-wins: B's Age stands.
#[tokio::test]
async fn jane_both_devices_edit_age_the_client_wins() {
    let config = TWO_TABLE_CONFIG.replacen(
        "name = \"person\"\npolicy = \"server-wins\"",
        "name = \"person\"\npolicy = \"client-wins\"",
        1,
    );
    assert_ne!(config, TWO_TABLE_CONFIG, "the policy line was replaced");
    let server = TestServer::start_with_config(&config);
    let user_a = TestClient::new(&server).await;
    let user_b = TestClient::new(&server).await;
    let jane = user_a.insert("person", json!({"name": "Jane", "age": 25}));
    user_a.client.sync().await.unwrap();
    user_b.client.sync().await.unwrap();
    user_a.update("person", jane, json!({"age": 32}));
    user_b.update("person", jane, json!({"age": 30}));
    user_a.client.sync().await.unwrap();
    let second = user_b.client.sync().await.unwrap();
    assert_eq!(
        (
            second.uploaded,
            second.downloaded,
            second.conflicts_detected,
            second.conflicts_resolved
        ),
        (1, 0, 1, 1)
    );
    let third = user_a.client.sync().await.unwrap();
    assert_eq!(third.downloaded, 1, "A receives B's winning row");
    assert_eq!(server.live("person").await[&jane]["age"], json!(30));
    assert_converged(&server, "person", &[&user_a, &user_b]).await;
}

/// Column names of a table used by the matrix: a required text and an integer.
fn columns(table: &str) -> (&'static str, &'static str) {
    match table {
        "person" => ("name", "age"),
        _ => ("title", "priority"),
    }
}

const A_VALUE: i64 = 32;
const B_VALUE: i64 = 30;

/// Two clients sharing one synced row of `table` (its integer column starts at 25).
async fn shared_row(server: &TestServer, table: &str) -> (TestClient, TestClient, RowId) {
    let (text, int) = columns(table);
    let a = TestClient::new(server).await;
    let b = TestClient::new(server).await;
    let id = a.insert(table, json!({text: "Shared", int: 25}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    (a, b, id)
}

/// Builds the situation of `kind` and runs B's conflicting sync. Returns both clients,
/// the row id and B's report.
async fn provoke(
    server: &TestServer,
    table: &str,
    kind: ConflictKind,
) -> (TestClient, TestClient, RowId, SyncReport) {
    let (text, int) = columns(table);
    let a_edit = json!({int: A_VALUE});
    let b_edit = json!({int: B_VALUE});
    let (a, b, id) = match kind {
        ConflictKind::ClientInsertedExisting | ConflictKind::ClientInsertedDeleted => {
            let a = TestClient::new(server).await;
            let b = TestClient::new(server).await;
            let id = RowId::now_v7();
            let row = |v: i64| roster_e2e::obj(json!({text: "Imported", int: v}));
            a.client
                .store()
                .insert_with_id(table, id, row(A_VALUE))
                .unwrap();
            a.client.sync().await.unwrap();
            if kind == ConflictKind::ClientInsertedDeleted {
                a.delete(table, id);
                a.client.sync().await.unwrap();
            }
            b.client
                .store()
                .insert_with_id(table, id, row(B_VALUE))
                .unwrap();
            (a, b, id)
        }
        _ => {
            let (a, b, id) = shared_row(server, table).await;
            match kind {
                ConflictKind::BothUpdated => {
                    a.update(table, id, a_edit);
                    b.update(table, id, b_edit);
                }
                ConflictKind::ClientUpdatedServerDeleted | ConflictKind::ClientUpdatedPurged => {
                    a.delete(table, id);
                    b.update(table, id, b_edit);
                }
                ConflictKind::ClientDeletedServerUpdated => {
                    a.update(table, id, a_edit);
                    b.delete(table, id);
                }
                _ => {
                    a.delete(table, id);
                    b.delete(table, id);
                }
            }
            a.client.sync().await.unwrap();
            if kind == ConflictKind::ClientUpdatedPurged {
                server.purge_all_tombstones();
            }
            (a, b, id)
        }
    };
    let report = b.client.sync().await.unwrap();
    (a, b, id, report)
}

/// The row every side must end with: `Some(value of the integer column)` or `None` when
/// the row must be gone.
fn expected_end(kind: ConflictKind, client_wins: bool) -> Option<i64> {
    use ConflictKind::*;
    match (kind, client_wins) {
        (BothUpdated, false) => Some(A_VALUE),
        (BothUpdated, true) => Some(B_VALUE),
        (ClientUpdatedServerDeleted | ClientUpdatedPurged | ClientInsertedDeleted, false) => None,
        (ClientUpdatedServerDeleted | ClientUpdatedPurged | ClientInsertedDeleted, true) => {
            Some(B_VALUE)
        }
        (ClientDeletedServerUpdated, false) => Some(A_VALUE),
        (ClientDeletedServerUpdated, true) => None,
        (BothDeleted, _) => None,
        (ClientInsertedExisting, false) => Some(A_VALUE),
        (ClientInsertedExisting, true) => Some(B_VALUE),
    }
}

/// Every kind × both policies (`person` is server-wins, `task` client-wins): the kind is
/// classified, logged on both sides with its resolution, B's counts are right, and after
/// A syncs again the server and both clients hold the same, expected row.
#[tokio::test]
async fn every_conflict_kind_under_each_policy() {
    for kind in ConflictKind::ALL {
        for (table, client_wins) in [("person", false), ("task", true)] {
            let case = format!("{kind} on {table}");
            let server = TestServer::start();
            let (a, b, id, report) = provoke(&server, table, kind).await;
            let resolution = if client_wins {
                "client_wins"
            } else {
                "server_wins"
            };

            assert_eq!(report.uploaded, 1, "{case}: uploaded");
            assert_eq!(report.conflicts_detected, 1, "{case}: detected");
            assert_eq!(report.conflicts_resolved, 1, "{case}: resolved");
            let b_changed = !client_wins && kind != ConflictKind::BothDeleted;
            assert_eq!(
                report.downloaded,
                u64::from(b_changed),
                "{case}: downloaded"
            );
            assert_eq!(
                report.reinitialised,
                kind == ConflictKind::ClientUpdatedPurged,
                "{case}: re-initialised"
            );

            let history = b.client.store().conflict_history(10).unwrap();
            assert_eq!(history.len(), 1, "{case}: client history");
            assert_eq!(history[0].kind, kind.as_str(), "{case}");
            assert_eq!(history[0].resolution, resolution, "{case}");
            assert_eq!(history[0].id, id, "{case}");
            let log = server.conflict_log();
            assert_eq!(
                log,
                vec![(
                    table.to_owned(),
                    id.to_string(),
                    kind.as_str().to_owned(),
                    resolution.to_owned()
                )],
                "{case}: server log"
            );

            a.client.sync().await.unwrap();
            let (_, int) = columns(table);
            let server_live = server.live(table).await;
            let end = server_live.get(&id).map(|fields| fields[int].clone());
            assert_eq!(
                end,
                expected_end(kind, client_wins).map(Value::from),
                "{case}: end state"
            );
            assert_converged(&server, table, &[&a, &b]).await;
        }
    }
}
