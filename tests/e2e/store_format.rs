//! A device store written in the previous store format (7: every synced row has a
//! `_roster_rows` entry, and the user tables have no `_roster_version` column) opens,
//! converts itself and syncs, with its pending edits and open conflicts intact.
//!
//! How the old store is made: device B syncs with a real server, gets a deferred
//! conflict and pending edits through the current code, then its file is rewritten into
//! format 7's layout (`write_as_format_7`: each clean row's base version back into a
//! `_roster_rows` entry, the column dropped, `user_version` 7) — the state format 7 code
//! left after the same steps. Reopening it runs the conversion (`local/mod.rs`
//! `move_clean_rows_out`).

use roster_client::{Choice, DB_FILE};
use roster_e2e::scenario::jane_collides;
use roster_e2e::{TestClient, TestServer, assert_converged, two_table_config_with_person_policy};
use serde_json::json;

/// Rewrites the (closed) store in `dir` into store format 7's layout; returns how many
/// clean rows got their entry back.
fn write_as_format_7(dir: &std::path::Path) -> usize {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let clean = conn
        .execute(
            "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
             SELECT 'person', id, _roster_version, NULL, NULL, 0 FROM person
             WHERE _roster_version IS NOT NULL
               AND id NOT IN (SELECT id FROM _roster_rows WHERE tbl = 'person')",
            [],
        )
        .unwrap();
    conn.execute_batch(
        "ALTER TABLE person DROP COLUMN _roster_version;
         ALTER TABLE task DROP COLUMN _roster_version;
         PRAGMA user_version = 7;",
    )
    .unwrap();
    clean
}

/// The store in `dir` as laid out on disk: (`_roster_rows` entries, person rows with a
/// `_roster_version`).
fn layout(dir: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM _roster_rows), (SELECT COUNT(_roster_version) FROM person)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_format_keeps_its_edits_and_conflicts_and_syncs() {
    let server =
        TestServer::start_with_config(&two_table_config_with_person_policy("defer-to-client"));
    let a = TestClient::new(&server).await;
    let mut b = TestClient::new(&server).await;
    // Jane's conflict, and three more people; B's sync pulls them and defers the
    // conflict to B's person.
    let jane = jane_collides(&a, &b).await;
    let kim = a.insert("person", json!({"name": "Kim", "age": 40}));
    let lee = a.insert("person", json!({"name": "Lee", "age": 50}));
    let ola = a.insert("person", json!({"name": "Ola", "age": 60}));
    a.client.sync().await.unwrap();
    let deferred = b.client.sync().await.unwrap();
    assert_eq!((deferred.conflicts_deferred, deferred.downloaded), (1, 4));
    // Pending edits of every kind on B.
    b.update("person", kim, json!({"age": 41}));
    b.delete("person", lee);
    let new = b.insert("person", json!({"name": "New", "age": 1}));
    let before = b.client.store().status().unwrap();
    assert_eq!((before.pending, before.open_conflicts), (3, 1));

    // B is idle (nothing runs in the background of a `SyncClient`): rewrite its file,
    // then open it as a new process would.
    let clean_rows = tokio::task::block_in_place(|| write_as_format_7(b.dir()));
    assert_eq!(clean_rows, 1, "Ola is B's one clean row");
    b.reopen();

    // Converted: only the four rows with a change keep an entry (Kim, Lee, New, and
    // Jane waiting for a choice), Ola's version is in her row; the same state as before.
    assert_eq!(tokio::task::block_in_place(|| layout(b.dir())), (4, 1));
    let after = b.client.store().status().unwrap();
    assert_eq!(
        (after.pending, after.open_conflicts, after.watermark),
        (3, 1, before.watermark)
    );
    let store = b.client.store();
    let ola_row = store.get("person", ola).unwrap();
    assert_eq!(ola_row.pending, None);
    assert!(ola_row.base_version.is_some(), "Ola keeps her version");
    let kim_row = store.get("person", kim).unwrap();
    assert_eq!(kim_row.pending, Some(roster_protocol::ChangeOp::Update));
    assert_eq!(kim_row.fields["age"], json!(41));
    assert_eq!(store.get("person", new).unwrap().base_version, None);
    assert_eq!(store.open_conflicts().unwrap()[0].id, jane);

    // The person keeps their Age; the next round pushes exactly the four changes, pulls
    // nothing again, and both devices end equal to the server.
    store
        .resolve_conflict("person", jane, Choice::KeepMine)
        .unwrap();
    let round = b.client.sync().await.unwrap();
    assert_eq!(
        (round.uploaded, round.downloaded, round.conflicts_detected),
        (4, 0, 0),
        "{round:?}"
    );
    assert_eq!(b.pending(), 0);
    assert_eq!(
        tokio::task::block_in_place(|| layout(b.dir())),
        (0, 4),
        "every row clean, with its version: Jane, Kim, Ola, New"
    );
    a.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&a, &b]).await;
    let live = server.live("person").await;
    assert_eq!(live[&jane]["age"], json!(30));
    assert_eq!(live[&kim]["age"], json!(41));
    assert!(!live.contains_key(&lee));
    assert_eq!(live[&new]["name"], json!("New"));
}
