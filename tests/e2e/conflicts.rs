//! Conflicts end to end: the first source document's Jane scenario, and every conflict
//! kind under both table policies, with end states asserted on the server and on both
//! clients, plus the sync counts each round reports.

use roster_client::SyncOptions;
use roster_e2e::scenario::{a_state, b_state, columns, jane_collides, provoke};
use roster_e2e::{TestClient, TestServer, assert_converged, two_table_config_with_person_policy};
use roster_protocol::ConflictKind;
use serde_json::{Value, json};

/// The scenario of `000_f6b3d591941f9b3a.txt`, under the default server-wins policy.
#[tokio::test]
async fn jane_both_devices_edit_age_the_server_wins() {
    let server = TestServer::start();
    // Users A and B both synchronise the same Person {Name = Jane, Age = 25}.
    let user_a = TestClient::new(&server).await;
    let user_b = TestClient::new(&server).await;
    // User A changes Age to 32, user B to 30; user A synchronises first.
    let jane = jane_collides(&user_a, &user_b).await;
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
    let server = TestServer::start_with_config(&two_table_config_with_person_policy("client-wins"));
    let user_a = TestClient::new(&server).await;
    let user_b = TestClient::new(&server).await;
    let jane = jane_collides(&user_a, &user_b).await;
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

/// The row every side must end with under a table policy.
fn expected_end(kind: ConflictKind, client_wins: bool) -> Option<i64> {
    if client_wins {
        b_state(kind)
    } else {
        a_state(kind)
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
            let (a, b, id) = provoke(&server, table, kind, SyncOptions::default()).await;
            let report = b.client.sync().await.unwrap();
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

/// A push of new rows with one id the server already holds, in the middle: that insert
/// is a conflict (server wins), and the new rows before and after it are stored once
/// each, in the push's order. (On PostgreSQL the first attempt stores the new rows of a
/// push together without reading their ids; the used id sends it back to read them.)
#[tokio::test]
async fn an_insert_of_a_used_id_among_new_rows_is_a_conflict_and_the_others_are_stored() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let used = roster_protocol::RowId::now_v7();
    let row = |name: &str| roster_e2e::obj(json!({"name": name, "age": 1}));
    a.client
        .store()
        .insert_with_id("person", used, row("a's"))
        .unwrap();
    a.client.sync().await.unwrap();

    let before = b.insert("person", json!({"name": "before", "age": 2}));
    b.client
        .store()
        .insert_with_id("person", used, row("b's"))
        .unwrap();
    let after = b.insert("person", json!({"name": "after", "age": 3}));
    let report = b.client.sync().await.unwrap();

    assert_eq!(report.uploaded, 3);
    assert_eq!(report.conflicts_detected, 1);
    let log = server.conflict_log();
    assert_eq!(log.len(), 1, "one conflict logged: {log:?}");
    assert_eq!(log[0].1, used.to_string());
    assert_eq!(log[0].2, ConflictKind::ClientInsertedExisting.as_str());
    let rows = server.rows().await;
    let version = |id| rows[&("person".to_owned(), id)].version;
    assert!(
        version(used) < version(before) && version(before) < version(after),
        "the used row keeps its version; the new rows follow in the push's order"
    );
    let live = server.live("person").await;
    assert_eq!(live.len(), 3);
    assert_eq!(live[&used]["name"], json!("a's"));
    assert_eq!(live[&before]["name"], json!("before"));
    assert_eq!(live[&after]["name"], json!("after"));
    a.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&a, &b]).await;
}
