//! Data sets on one database see nothing of each other: rows, remembered batch answers,
//! the conflict log and (on PostgreSQL) version counters are all per data set, even for
//! the same client, batch and row ids. Exercised on the store directly, on both backends;
//! `auth.rs` checks the same isolation through HTTP and tokens.

use std::path::Path;

use roster_e2e::{Backend, TestDatabase};
use roster_protocol::{Change, ChangeOp, PROTOCOL_VERSION, RowId, SyncRequest};
use roster_server::ServerConfig;
use roster_server::resolve::Resolver;
use serde_json::json;

fn change(id: RowId, op: ChangeOp, base: Option<u64>, name: &str) -> Change {
    Change {
        table: "person".into(),
        id,
        op,
        base_version: base,
        fields: json!({ "name": name }).as_object().cloned(),
        base_fields: None,
        edited_at_ms: None,
    }
}

fn request(changes: Vec<Change>, batch: Option<uuid::Uuid>, client: uuid::Uuid) -> SyncRequest {
    SyncRequest {
        slice: None,
        protocol: PROTOCOL_VERSION,
        client_id: client,
        since: 0,
        changes,
        pull_limit: 100,
        round: None,
        batch_id: batch,
        epoch: None,
    }
}

#[test]
fn data_sets_share_a_database_and_nothing_else() {
    // PostgreSQL numbers each data set's changes on its own; SQLite draws versions from
    // one counter for the whole file (both keep versions ordered within a data set).
    let per_dataset_versions = Backend::from_env().is_postgres();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(dir.path());
    let store = roster_server::store::open(Path::new(db.url()))
        .unwrap()
        .sync;
    let resolver = Resolver::new(&ServerConfig::default());
    let client = uuid::Uuid::now_v7();
    let batch = Some(uuid::Uuid::now_v7());
    let shared_id = RowId::now_v7();

    // The same client, batch id and row id in two data sets: two independent writes.
    let a = store
        .sync(
            "a",
            &request(
                vec![change(shared_id, ChangeOp::Insert, None, "in a")],
                batch,
                client,
            ),
            &resolver,
        )
        .unwrap();
    let b = store
        .sync(
            "b",
            &request(
                vec![change(shared_id, ChangeOp::Insert, None, "in b")],
                batch,
                client,
            ),
            &resolver,
        )
        .unwrap();
    assert_eq!(a.acks[0].version, 1);
    assert_eq!(
        b.acks[0].version,
        if per_dataset_versions { 1 } else { 2 },
        "b's batch is applied in b, not answered with a's remembered answer"
    );
    assert!(b.conflicts.is_empty(), "b's insert does not meet a's row");

    // A conflict in a is logged in a only.
    let stale = change(shared_id, ChangeOp::Insert, None, "again");
    let clash = store
        .sync("a", &request(vec![stale], None, client), &resolver)
        .unwrap();
    assert_eq!(clash.conflicts.len(), 1);
    assert_eq!(store.conflict_log("a", 100, None).unwrap().len(), 1);
    assert!(store.conflict_log("b", 100, None).unwrap().is_empty());

    // Pulls see only their own data set.
    let pull = |dataset: &str| {
        store
            .sync(
                dataset,
                &request(vec![], None, uuid::Uuid::now_v7()),
                &resolver,
            )
            .unwrap()
    };
    let (in_a, in_b, in_c) = (pull("a"), pull("b"), pull("c"));
    assert_eq!(in_a.changes.len(), 1);
    assert_eq!(
        in_a.changes[0].row.fields.as_ref().unwrap()["name"],
        json!("in a")
    );
    assert_eq!(in_b.changes.len(), 1);
    assert_eq!(
        in_b.changes[0].row.fields.as_ref().unwrap()["name"],
        json!("in b")
    );
    assert!(in_c.changes.is_empty());
    if per_dataset_versions {
        assert_eq!(in_c.newest, 0, "an unused data set has no changes at all");
    }
    drop(store);
}
