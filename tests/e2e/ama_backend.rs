//! Roster devices (`--protocol azure-mobile-apps`) sync with the real Azure Mobile Apps
//! backend, `azure-mobile-apps` 4.0.2 on express with its sqlite provider
//! (`tests/ama-js/server.js`): the Jane scenario, deferred resolution ("keep mine"
//! pushed on the backend's version), deletes both ways, offline edits, and a 10k-row
//! first pull through a run of equal `updatedAt` longer than a page. Each test checks
//! the devices against the backend's own database.
//!
//! No Roster server runs here, so the storage backend of the e2e pass does not apply:
//! the PostgreSQL pass leaves this file out (`POSTGRES_TESTS` in `xtask/src/test.rs`).

use roster_client::Choice;
use roster_e2e::TestClient;
use roster_e2e::ama_js::AmaBackend;
use roster_e2e::cli::run_roster;
use roster_e2e::scenario::jane_collides;
use roster_protocol::{ConflictPolicy, RowId, Schema};
use serde_json::json;

/// Asserts every device holds exactly the backend's live rows, with nothing pending.
fn assert_converged(backend: &AmaBackend, devices: &[&TestClient]) {
    let expected = backend.live_rows();
    for (index, device) in devices.iter().enumerate() {
        assert_eq!(
            device.live("person"),
            expected,
            "device #{index} differs from the backend"
        );
        assert_eq!(device.pending(), 0, "device #{index} has pending changes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jane_against_the_real_backend_the_server_wins_and_different_columns_merge() {
    let backend = AmaBackend::start();
    let a = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    let b = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    // Users A and B both synchronise Jane; A changes Age to 32, B to 30; A goes first.
    let jane = jane_collides(&a, &b).await;
    // B's PATCH carries its stale version: the backend answers 412, B classifies the
    // conflict and its policy (server-wins) takes the backend's row.
    let second = b.client.sync().await.unwrap();
    assert_eq!(
        (
            second.uploaded,
            second.downloaded,
            second.conflicts_detected,
            second.conflicts_resolved
        ),
        (1, 1, 1, 1)
    );
    let history = b.client.store().conflict_history(10).unwrap();
    assert_eq!(
        (history[0].kind.as_str(), history[0].resolution.as_str()),
        ("both_updated", "server_wins")
    );
    assert_eq!(history[0].client_row.as_ref().unwrap()["age"], json!(30));
    assert_eq!(
        history[0].server_row.as_ref().unwrap()["fields"]["age"],
        json!(32)
    );
    assert_eq!(backend.live_rows()[&jane]["age"], json!(32));
    a.client.sync().await.unwrap();
    assert_converged(&backend, &[&a, &b]);

    // Different columns on both sides: merged and pushed on the backend's version.
    a.update("person", jane, json!({"city": "Oslo"}));
    b.update("person", jane, json!({"email": "jane@example.com"}));
    a.client.sync().await.unwrap();
    let merged = b.client.sync().await.unwrap();
    assert_eq!((merged.auto_merged, merged.conflicts_detected), (1, 0));
    a.client.sync().await.unwrap();
    let row = &backend.live_rows()[&jane];
    assert_eq!(
        (row["city"].clone(), row["email"].clone()),
        (json!("Oslo"), json!("jane@example.com"))
    );
    assert_converged(&backend, &[&a, &b]);

    // The CLI: `--protocol azure-mobile-apps` needs the schema (the backend serves none),
    // then pulls the same row.
    let url = backend.url();
    let cli = tempfile::tempdir().unwrap();
    let init = [
        "init",
        "--protocol",
        "azure-mobile-apps",
        "--server",
        url.as_str(),
    ];
    let refused = tokio::task::block_in_place(|| run_roster(cli.path(), &init, &[]));
    refused.assert_exit(2);
    assert!(refused.stderr.contains("--schema"), "{}", refused.stderr);
    let schema = cli.path().join("person.json");
    std::fs::write(
        &schema,
        serde_json::to_string(&Schema::default_person()).unwrap(),
    )
    .unwrap();
    let schema = schema.to_str().unwrap();
    let dir = cli.path().join("data");
    tokio::task::block_in_place(|| {
        let mut args = init.to_vec();
        args.extend(["--schema", schema, "--conflict-policy", "defer-to-client"]);
        run_roster(&dir, &args, &[]).assert_exit(0);
        run_roster(&dir, &["sync"], &[]).assert_exit(0);
        let listed = run_roster(&dir, &["list", "--json"], &[]);
        listed.assert_exit(0);
        let records = listed.json()["records"].as_array().unwrap().clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["id"], json!(jane.to_string()));
        assert_eq!(records[0]["fields"]["age"], json!(32));
    });
}

#[tokio::test]
async fn a_deferred_conflict_kept_mine_is_pushed_on_the_backends_version() {
    let backend = AmaBackend::start();
    let a = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::DeferToClient).await;
    let b = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::DeferToClient).await;
    let jane = jane_collides(&a, &b).await;
    let deferred = b.client.sync().await.unwrap();
    assert_eq!(
        (deferred.conflicts_detected, deferred.conflicts_deferred),
        (1, 1)
    );
    // B keeps its edit, visible and not pushed, beside the backend's row.
    let open = b.client.store().open_conflicts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (
            open[0].local.as_ref().unwrap()["age"].clone(),
            open[0].remote.as_ref().unwrap()["age"].clone()
        ),
        (json!(30), json!(32))
    );
    assert_eq!(open[0].differing_fields, ["age"]);
    assert_eq!(
        b.client.sync().await.unwrap().uploaded,
        0,
        "waits for a choice"
    );
    assert_eq!(backend.live_rows()[&jane]["age"], json!(32));
    // "Keep mine": pushed on the backend's version, so no new conflict.
    b.client
        .store()
        .resolve_conflict("person", jane, Choice::KeepMine)
        .unwrap();
    let pushed = b.client.sync().await.unwrap();
    assert_eq!((pushed.uploaded, pushed.conflicts_detected), (1, 0));
    assert_eq!(backend.live_rows()[&jane]["age"], json!(30));
    a.client.sync().await.unwrap();
    assert_converged(&backend, &[&a, &b]);
    let history = b.client.store().conflict_history(10).unwrap();
    let names: Vec<&str> = history.iter().map(|h| h.resolution.as_str()).collect();
    assert!(
        names.contains(&"deferred") && names.contains(&"kept_mine"),
        "{names:?}"
    );
}

#[tokio::test]
async fn deletes_and_offline_edits_go_both_ways_with_the_backend() {
    let backend = AmaBackend::start();
    let a = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    let b = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    let ids: Vec<RowId> = ["Ann", "Bob", "Cy", "Di"]
        .iter()
        .map(|name| a.insert("person", json!({"name": name, "age": 40})))
        .collect();
    a.client.sync().await.unwrap();
    assert_eq!(b.client.sync().await.unwrap().downloaded, 4);
    // A deletes Ann: soft-deleted on the backend, and a delete on B.
    a.delete("person", ids[0]);
    a.client.sync().await.unwrap();
    let pulled = b.client.sync().await.unwrap();
    assert_eq!(pulled.downloaded, 1);
    assert!(!b.live("person").contains_key(&ids[0]));
    // B works offline: edits Bob twice, deletes Cy, adds Eve and edits her.
    b.update("person", ids[1], json!({"age": 41}));
    b.update("person", ids[1], json!({"city": "Rome"}));
    b.delete("person", ids[2]);
    let eve = b.insert("person", json!({"name": "Eve"}));
    b.update("person", eve, json!({"age": 22}));
    // Meanwhile A deletes Di, which B then edits: the backend's delete stands.
    a.delete("person", ids[3]);
    a.client.sync().await.unwrap();
    b.update("person", ids[3], json!({"age": 44}));
    let back_online = b.client.sync().await.unwrap();
    assert_eq!(back_online.uploaded, 4);
    assert_eq!(back_online.conflicts_detected, 1);
    let history = b.client.store().conflict_history(10).unwrap();
    assert_eq!(history[0].kind, "client_updated_server_deleted");
    a.client.sync().await.unwrap();
    let rows = backend.live_rows();
    assert_eq!(rows.len(), 2, "Bob and Eve: {rows:?}");
    assert_eq!(
        (rows[&ids[1]]["age"].clone(), rows[&ids[1]]["city"].clone()),
        (json!(41), json!("Rome"))
    );
    assert_eq!(rows[&eve]["age"], json!(22));
    assert_converged(&backend, &[&a, &b]);
    // Nothing left: a round reads the boundary again and changes nothing.
    let idle = a.client.sync().await.unwrap();
    assert_eq!((idle.uploaded, idle.downloaded), (0, 0));
}

#[tokio::test]
async fn a_10k_row_first_pull_through_a_run_of_equal_updated_at() {
    let backend = AmaBackend::start();
    // Make the table exist, then write 10,000 rows in one statement: they share one
    // `updatedAt`, ten times the backend's largest page.
    let seed = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    seed.insert("person", json!({"name": "First"}));
    seed.client.sync().await.unwrap();
    let conn = rusqlite::Connection::open(backend.db_file()).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO person (id, name, age, city)
         SELECT printf('0191e5a0-0000-7000-8000-%012d', i), 'Person ' || i, i % 90, 'Oslo'
         FROM n",
        [],
    )
    .unwrap();
    drop(conn);
    let device = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    let report = device.client.sync().await.unwrap();
    assert_eq!(report.downloaded, 10_001);
    assert!(
        report.requests >= 11,
        "pages of at most 1000: {}",
        report.requests
    );
    assert_converged(&backend, &[&device]);
    // The next round reads the boundary's run again and keeps nothing twice.
    let again = device.client.sync().await.unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(device.live("person").len(), 10_001);
}
