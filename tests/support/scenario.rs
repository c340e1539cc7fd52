//! Building each conflict kind between two real clients A and B: A's change reaches the
//! server first, B's change is the one that collides. Shared by the conflict suites.

use roster_client::SyncOptions;
use roster_protocol::{ConflictKind, RowId};
use serde_json::json;

use crate::{TestClient, TestServer, obj};

/// The value A writes into the integer column.
pub const A_VALUE: i64 = 32;
/// The value B writes into the integer column.
pub const B_VALUE: i64 = 30;
/// The integer column's value before either edit.
pub const START_VALUE: i64 = 25;

/// A table's required text column and its integer column.
pub fn columns(table: &str) -> (&'static str, &'static str) {
    match table {
        "person" => ("name", "age"),
        _ => ("title", "priority"),
    }
}

/// The seed document's story (`000_f6b3d591941f9b3a.txt`) up to B's sync: A and B both
/// synchronise Person {Name = Jane, Age = 25}, A changes Age to 32 and B to 30, and A
/// synchronises first (its one change goes up without a conflict). Works against a Roster
/// server and an Azure Mobile Apps backend alike; the caller runs B's colliding sync.
pub async fn jane_collides(a: &TestClient, b: &TestClient) -> RowId {
    let jane = a.insert("person", json!({"name": "Jane", "age": START_VALUE}));
    assert_eq!(a.client.sync().await.unwrap().uploaded, 1);
    assert_eq!(b.client.sync().await.unwrap().downloaded, 1);
    a.update("person", jane, json!({"age": A_VALUE}));
    b.update("person", jane, json!({"age": B_VALUE}));
    let first = a.client.sync().await.unwrap();
    assert_eq!((first.uploaded, first.conflicts_detected), (1, 0));
    jane
}

/// Two clients sharing one synced row of `table`; B batches pushes as `b_options` says.
async fn shared_row(
    server: &TestServer,
    table: &str,
    b_options: SyncOptions,
) -> (TestClient, TestClient, RowId) {
    let (text, int) = columns(table);
    let a = TestClient::new(server).await;
    let b = TestClient::with_options(server, b_options).await;
    let id = a.insert(table, json!({text: "Shared", int: START_VALUE}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    (a, b, id)
}

/// Builds the situation of `kind` up to B's conflicting sync, which the caller runs.
/// A's change is already on the server; B holds its own, pending.
pub async fn provoke(
    server: &TestServer,
    table: &str,
    kind: ConflictKind,
    b_options: SyncOptions,
) -> (TestClient, TestClient, RowId) {
    let (text, int) = columns(table);
    match kind {
        ConflictKind::ClientInsertedExisting | ConflictKind::ClientInsertedDeleted => {
            let a = TestClient::new(server).await;
            let b = TestClient::with_options(server, b_options).await;
            let id = RowId::now_v7();
            let row = |v: i64| obj(json!({text: "Imported", int: v}));
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
            let (a, b, id) = shared_row(server, table, b_options).await;
            let (a_edit, b_edit) = (json!({int: A_VALUE}), json!({int: B_VALUE}));
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
    }
}

/// The row's integer value after A's change alone (`None`: no live row).
pub fn a_state(kind: ConflictKind) -> Option<i64> {
    use ConflictKind::*;
    match kind {
        BothUpdated | ClientDeletedServerUpdated | ClientInsertedExisting => Some(A_VALUE),
        ClientUpdatedServerDeleted | BothDeleted | ClientUpdatedPurged | ClientInsertedDeleted => {
            None
        }
    }
}

/// The row's integer value as B wants it (`None`: deleted).
pub fn b_state(kind: ConflictKind) -> Option<i64> {
    use ConflictKind::*;
    match kind {
        ClientDeletedServerUpdated | BothDeleted => None,
        _ => Some(B_VALUE),
    }
}
