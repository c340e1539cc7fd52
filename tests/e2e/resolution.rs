//! The complete conflict model end to end: every conflict kind under every way of
//! resolving it (the server owner's handler returning each of its four results, each
//! table policy, and defer-to-client followed by each choice a person can make), with
//! the end state asserted on the server and on both clients, and the sync counts. Then
//! the two source documents' scenarios, automatic field merges and rollback of a
//! multi-batch round.

use std::sync::{Arc, Mutex};

use roster_client::{Choice, ClientError, DeviceConflictHandler, OpenConflict, SyncOptions};
use roster_e2e::scenario::{A_VALUE, B_VALUE, a_state, b_state, columns, jane_collides, provoke};
use roster_e2e::{TestClient, TestServer, assert_converged, obj};
use roster_protocol::{ConflictKind, Fields};
use roster_server::resolve::{ConflictContext, HandlerDecision, ServerConflictHandler};
use serde_json::{Value, json};

/// A one-table server config with the given policy; the merge policy's age rule is min.
fn config(policy: &str) -> String {
    format!(
        r#"
[[tables]]
name = "person"
policy = "{policy}"
fields = {{ age = "min" }}
columns = [
  {{ name = "name", type = "text", required = true }},
  {{ name = "email", type = "text" }},
  {{ name = "age", type = "integer" }},
  {{ name = "city", type = "text" }},
]
"#
    )
}

/// The row a MergeRow handler writes.
const HANDLER_MERGED_AGE: i64 = 99;
/// The row a person merges field by field.
const PERSON_MERGED_AGE: i64 = 77;

/// A server-side handler that always returns one decision and records what it saw.
struct FixedHandler {
    decision: HandlerDecision,
    seen: Mutex<Vec<(ConflictKind, bool, bool, bool)>>,
}

impl ServerConflictHandler for FixedHandler {
    fn resolve(&self, conflict: &ConflictContext<'_>) -> Option<HandlerDecision> {
        self.seen.lock().unwrap().push((
            conflict.kind,
            conflict.client_row.is_some(),
            conflict.server_row.is_some(),
            conflict.base_row.is_some(),
        ));
        Some(self.decision.clone())
    }
}

fn handler_row() -> Fields {
    obj(json!({"name": "Merged", "email": null, "age": HANDLER_MERGED_AGE, "city": null}))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    HandlerServerWins,
    HandlerClientWins,
    HandlerMergeRow,
    HandlerRollback,
    PolicyServerWins,
    PolicyClientWins,
    PolicyMerge,
    PersonKeepsMine,
    PersonKeepsTheirs,
    PersonMerges,
}

impl Way {
    fn handler(self) -> Option<HandlerDecision> {
        match self {
            Way::HandlerServerWins => Some(HandlerDecision::ServerWins),
            Way::HandlerClientWins => Some(HandlerDecision::ClientWins),
            Way::HandlerMergeRow => Some(HandlerDecision::MergeRow(handler_row())),
            Way::HandlerRollback => Some(HandlerDecision::Rollback("not on my watch".into())),
            _ => None,
        }
    }

    fn policy(self) -> &'static str {
        match self {
            Way::PolicyClientWins => "client-wins",
            Way::PolicyMerge => "merge",
            Way::PersonKeepsMine | Way::PersonKeepsTheirs | Way::PersonMerges => "defer-to-client",
            _ => "server-wins",
        }
    }

    fn person(self) -> Option<Choice> {
        match self {
            Way::PersonKeepsMine => Some(Choice::KeepMine),
            Way::PersonKeepsTheirs => Some(Choice::KeepTheirs),
            Way::PersonMerges => Some(Choice::Merge(obj(
                json!({"name": "Picked", "email": null, "age": PERSON_MERGED_AGE, "city": null}),
            ))),
            _ => None,
        }
    }

    /// The integer value every side ends with.
    fn expected_end(self, kind: ConflictKind) -> Option<i64> {
        let both_live = matches!(
            kind,
            ConflictKind::BothUpdated | ConflictKind::ClientInsertedExisting
        );
        match self {
            Way::HandlerServerWins | Way::PolicyServerWins | Way::PersonKeepsTheirs => {
                a_state(kind)
            }
            Way::HandlerClientWins | Way::PolicyClientWins | Way::PersonKeepsMine => b_state(kind),
            Way::HandlerMergeRow => Some(HANDLER_MERGED_AGE),
            Way::PolicyMerge if both_live => Some(A_VALUE.min(B_VALUE)),
            Way::PolicyMerge => a_state(kind),
            Way::PersonMerges if kind == ConflictKind::BothDeleted => None,
            Way::PersonMerges => Some(PERSON_MERGED_AGE),
            Way::HandlerRollback => a_state(kind),
        }
    }

    /// The resolution the server logs.
    fn logged(self, kind: ConflictKind) -> &'static str {
        let both_live = matches!(
            kind,
            ConflictKind::BothUpdated | ConflictKind::ClientInsertedExisting
        );
        match self {
            Way::HandlerServerWins | Way::PolicyServerWins => "server_wins",
            Way::HandlerClientWins | Way::PolicyClientWins => "client_wins",
            Way::HandlerMergeRow => "merge_row",
            Way::HandlerRollback => "rollback",
            Way::PolicyMerge if both_live => "merge_row",
            Way::PolicyMerge => "server_wins",
            _ if kind == ConflictKind::BothDeleted => "server_wins",
            _ => "deferred",
        }
    }
}

async fn start(way: Way) -> (TestServer, Option<Arc<FixedHandler>>) {
    match way.handler() {
        Some(decision) => {
            let handler = Arc::new(FixedHandler {
                decision,
                seen: Mutex::new(Vec::new()),
            });
            let server = TestServer::start_embedded(&config("server-wins"), handler.clone()).await;
            (server, Some(handler))
        }
        None => (TestServer::start_with_config(&config(way.policy())), None),
    }
}

fn age(fields: Option<&Fields>) -> Option<i64> {
    fields.map(|f| f["age"].as_i64().unwrap())
}

/// One test per way of resolving, so that nextest runs them side by side: each meets
/// every conflict kind, on a server of its own per kind.
macro_rules! every_kind_resolved_by {
    ($($name:ident: $way:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            every_kind_resolved_by($way).await;
        }
    )*};
}

every_kind_resolved_by! {
    every_kind_resolved_by_a_handler_server_wins: Way::HandlerServerWins,
    every_kind_resolved_by_a_handler_client_wins: Way::HandlerClientWins,
    every_kind_resolved_by_a_handler_merged_row: Way::HandlerMergeRow,
    every_kind_resolved_by_a_handler_rollback: Way::HandlerRollback,
    every_kind_resolved_by_the_server_wins_policy: Way::PolicyServerWins,
    every_kind_resolved_by_the_client_wins_policy: Way::PolicyClientWins,
    every_kind_resolved_by_the_merge_policy: Way::PolicyMerge,
    every_kind_resolved_by_a_person_keeping_mine: Way::PersonKeepsMine,
    every_kind_resolved_by_a_person_keeping_theirs: Way::PersonKeepsTheirs,
    every_kind_resolved_by_a_person_merging: Way::PersonMerges,
}

/// Every conflict kind resolved by `way`: the round's report, the end state on the
/// server and both devices, the server's conflict log, and what a handler saw.
async fn every_kind_resolved_by(way: Way) {
    for kind in ConflictKind::ALL {
        let case = format!("{kind} resolved by {way:?}");
        let (server, handler) = start(way).await;
        let (a, b, id) = provoke(&server, "person", kind, SyncOptions::default()).await;
        let before = server.rows().await;
        let result = b.client.sync().await;

        if way == Way::HandlerRollback {
            match result {
                Err(ClientError::RolledBack {
                    kind: k,
                    id: i,
                    ref reason,
                    ..
                }) => {
                    assert_eq!((k, i), (kind, id), "{case}");
                    assert_eq!(reason, "not on my watch");
                }
                other => panic!("{case}: expected a rollback, got {other:?}"),
            }
            assert_eq!(
                server.rows().await,
                before,
                "{case}: nothing applied on the server"
            );
            assert_eq!(b.pending(), 1, "{case}: B keeps its change");
            assert_eq!(
                age(b.live("person").get(&id)),
                b_state(kind),
                "{case}: B unchanged"
            );
        } else {
            let report = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(report.uploaded, 1, "{case}: uploaded");
            assert_eq!(report.conflicts_detected, 1, "{case}: detected");
            assert_eq!(report.conflicts_resolved, 1, "{case}: resolved");
            let deferred = way.person().is_some() && kind != ConflictKind::BothDeleted;
            if deferred {
                assert_eq!(report.conflicts_deferred, 1, "{case}: deferred");
                assert_eq!(report.downloaded, 1, "{case}: the remote row arrived");
                decide_as_a_person(&case, &b, kind, way).await;
            } else {
                assert_eq!(report.conflicts_deferred, 0, "{case}: deferred");
                let end_differs = way.expected_end(kind) != b_state(kind);
                assert_eq!(
                    report.downloaded,
                    u64::from(end_differs),
                    "{case}: downloaded"
                );
            }
            a.client.sync().await.unwrap();
            let end = age(server.live("person").await.get(&id));
            assert_eq!(end, way.expected_end(kind), "{case}: end state");
            assert_converged(&server, "person", &[&a, &b]).await;
        }
        let log = server.conflict_log();
        let last = log
            .last()
            .unwrap_or_else(|| panic!("{case}: nothing logged"));
        assert_eq!(
            (last.1.as_str(), last.2.as_str(), last.3.as_str()),
            (id.to_string().as_str(), kind.as_str(), way.logged(kind)),
            "{case}: server log"
        );
        if let Some(handler) = handler {
            let seen = handler.seen.lock().unwrap();
            let (seen_kind, client_row, server_row, base_row) = seen[0];
            assert_eq!(seen_kind, kind, "{case}: handler kind");
            assert_eq!(
                client_row,
                b_state(kind).is_some(),
                "{case}: handler client row"
            );
            assert_eq!(
                server_row,
                kind != ConflictKind::ClientUpdatedPurged,
                "{case}"
            );
            // Updates carry the base they started from; inserts and deletes do not.
            let update = matches!(
                kind,
                ConflictKind::BothUpdated
                    | ConflictKind::ClientUpdatedServerDeleted
                    | ConflictKind::ClientUpdatedPurged
            );
            assert_eq!(base_row, update, "{case}: handler base");
        }
    }
}

/// B's side of a deferred conflict: the edit stays visible and unpushed, a person sees
/// local, remote and base, chooses, and the next sync pushes the choice cleanly.
async fn decide_as_a_person(case: &str, b: &TestClient, kind: ConflictKind, way: Way) {
    let store = b.client.store();
    let open = store.open_conflicts().unwrap();
    assert_eq!(open.len(), 1, "{case}: open conflicts");
    let conflict = &open[0];
    assert_eq!(conflict.kind, kind, "{case}");
    assert_eq!(
        age(conflict.local.as_ref()),
        b_state(kind),
        "{case}: local side"
    );
    assert_eq!(
        age(conflict.remote.as_ref()),
        a_state(kind),
        "{case}: remote side"
    );
    if kind == ConflictKind::BothUpdated {
        assert_eq!(conflict.differing_fields, vec!["age"], "{case}");
        assert_eq!(
            conflict.base.as_ref().unwrap()["age"],
            json!(25),
            "{case}: base"
        );
    }
    assert_eq!(
        age(b.live("person").get(&conflict.id)),
        b_state(kind),
        "{case}: edit kept"
    );
    assert_eq!(store.status().unwrap().open_conflicts, 1);
    assert_eq!(
        store.status().unwrap().pending,
        0,
        "{case}: not pushed while open"
    );
    let idle = b.client.sync().await.unwrap();
    assert_eq!(idle.uploaded, 0, "{case}: an open conflict is not pushed");

    let choice = way.person().unwrap();
    store
        .resolve_conflict("person", conflict.id, choice.clone())
        .unwrap();
    assert!(store.open_conflicts().unwrap().is_empty());
    let history = store.conflict_history(1).unwrap();
    let name = match choice {
        Choice::KeepMine => "kept_mine",
        Choice::KeepTheirs => "kept_theirs",
        Choice::Merge(_) => "merged",
    };
    assert_eq!(history[0].resolution, name, "{case}: history");

    let second = b.client.sync().await.unwrap();
    let pushes = u64::from(!matches!(choice, Choice::KeepTheirs));
    assert_eq!(
        (
            second.uploaded,
            second.downloaded,
            second.conflicts_detected
        ),
        (pushes, 0, 0),
        "{case}: the choice applies cleanly"
    );
}

/// `003_093fd93dbe474337.txt`, "Handling conflicts from the client side": the server
/// hands the conflict over, the client's handler decides during the first sync, and the
/// second sync sends the decided row. The document's asserted counts hold.
#[tokio::test]
async fn two_sync_client_side_resolution_counts_match_the_document() {
    struct DecideName;
    impl DeviceConflictHandler for DecideName {
        fn decide(&self, conflict: &OpenConflict) -> Option<Choice> {
            let mut row = conflict.remote.clone()?;
            row.insert("name".into(), json!("BLA BLA BLA"));
            Some(Choice::Merge(row))
        }
    }
    let server = TestServer::start_with_config(&config("defer-to-client"));
    let seed = TestClient::new(&server).await;
    let id = seed.insert("person", json!({"name": "Initial"}));
    seed.client.sync().await.unwrap();
    let dir_client = TestClient::new(&server).await;
    dir_client.client.sync().await.unwrap();
    let mut client = dir_client;
    client.client = roster_client::SyncClient::open(client.dir())
        .unwrap()
        .with_handler(Arc::new(DecideName));
    seed.update("person", id, json!({"name": "SRV"}));
    seed.client.sync().await.unwrap();
    client.update("person", id, json!({"name": "CLI"}));

    let s = client.client.sync().await.unwrap();
    assert_eq!((s.downloaded, s.uploaded, s.conflicts_resolved), (1, 1, 1));
    assert_eq!(s.conflicts_decided_here, 1);
    // From this point the server row name is still "SRV"...
    assert_eq!(server.live("person").await[&id]["name"], json!("SRV"));
    // ...and a new sync sends "BLA BLA BLA" to the server.
    let s = client.client.sync().await.unwrap();
    assert_eq!((s.downloaded, s.uploaded, s.conflicts_resolved), (0, 1, 0));
    assert_eq!(
        server.live("person").await[&id]["name"],
        json!("BLA BLA BLA")
    );
    seed.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&seed, &client]).await;
}

/// `000_f6b3d591941f9b3a.txt`: Jane's conflict is stored next to the local row, a person
/// chooses "accept local", and the re-sync pushes it; the same counts as the document.
#[tokio::test]
async fn jane_accept_local_then_resync() {
    let server = TestServer::start_with_config(&config("defer-to-client"));
    let user_a = TestClient::new(&server).await;
    let user_b = TestClient::new(&server).await;
    let jane = jane_collides(&user_a, &user_b).await;

    let first = user_b.client.sync().await.unwrap();
    assert_eq!(
        (first.downloaded, first.uploaded, first.conflicts_resolved),
        (1, 1, 1)
    );
    let open = user_b.client.store().open_conflicts().unwrap();
    assert_eq!(age(open[0].local.as_ref()), Some(30));
    assert_eq!(age(open[0].remote.as_ref()), Some(32));
    user_b
        .client
        .store()
        .resolve_conflict("person", jane, Choice::KeepMine)
        .unwrap();
    let second = user_b.client.sync().await.unwrap();
    assert_eq!(
        (
            second.downloaded,
            second.uploaded,
            second.conflicts_resolved
        ),
        (0, 1, 0)
    );
    user_a.client.sync().await.unwrap();
    assert_eq!(server.live("person").await[&jane]["age"], json!(30));
    assert_converged(&server, "person", &[&user_a, &user_b]).await;
}

/// A choice made against a remote row that changed again meanwhile is a new conflict,
/// never a silent overwrite of the newer server row.
#[tokio::test]
async fn a_choice_against_a_stale_remote_is_a_new_conflict() {
    let server = TestServer::start_with_config(&config("defer-to-client"));
    let (a, b, id) = provoke(
        &server,
        "person",
        ConflictKind::BothUpdated,
        SyncOptions::default(),
    )
    .await;
    b.client.sync().await.unwrap();
    a.update("person", id, json!({"age": 50}));
    a.client.sync().await.unwrap();
    b.client
        .store()
        .resolve_conflict("person", id, Choice::KeepMine)
        .unwrap();
    let report = b.client.sync().await.unwrap();
    assert_eq!(
        report.conflicts_deferred, 1,
        "the newer server row is not overwritten"
    );
    assert_eq!(server.live("person").await[&id]["age"], json!(50));
    let open = b.client.store().open_conflicts().unwrap();
    assert_eq!(age(open[0].remote.as_ref()), Some(50));
    assert_eq!(age(open[0].local.as_ref()), Some(B_VALUE));
}

/// A starts a row, then A changes its city and B its age; returns B's sync report.
async fn city_and_age_edited(
    config: &str,
) -> (
    TestServer,
    TestClient,
    TestClient,
    roster_protocol::RowId,
    roster_client::SyncReport,
) {
    let server = TestServer::start_with_config(config);
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let id = a.insert("person", json!({"name": "Jane", "age": 25, "city": "Lyon"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    a.update("person", id, json!({"city": "Oslo"}));
    b.update("person", id, json!({"age": 26}));
    a.client.sync().await.unwrap();
    let report = b.client.sync().await.unwrap();
    (server, a, b, id, report)
}

/// Concurrent edits of different fields merge without anyone being asked; with
/// `auto_merge = false` the same edits are a conflict the policy decides.
#[tokio::test]
async fn edits_of_different_fields_merge_automatically() {
    let (server, a, b, id, report) = city_and_age_edited(&config("defer-to-client")).await;
    assert_eq!((report.auto_merged, report.conflicts_detected), (1, 0));
    assert_eq!(report.downloaded, 1, "B receives A's city");
    assert!(b.client.store().open_conflicts().unwrap().is_empty());
    a.client.sync().await.unwrap();
    let row = &server.live("person").await[&id];
    assert_eq!(
        (row["age"].clone(), row["city"].clone()),
        (json!(26), json!("Oslo"))
    );
    assert_converged(&server, "person", &[&a, &b]).await;

    let strict = config("server-wins").replace(
        "policy = \"server-wins\"",
        "policy = \"server-wins\"\nauto_merge = false",
    );
    let (server, _a, _b, id, report) = city_and_age_edited(&strict).await;
    assert_eq!((report.auto_merged, report.conflicts_detected), (0, 1));
    let row = &server.live("person").await[&id];
    assert_eq!(
        (row["age"].clone(), row["city"].clone()),
        (json!(25), json!("Oslo"))
    );
    assert_eq!(
        server.conflict_log().len(),
        1,
        "the lost age is logged, not silent"
    );
}

/// A rollback undoes every batch of the round, not just the one holding the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_every_batch_of_the_round() {
    struct RollbackUpdates;
    impl ServerConflictHandler for RollbackUpdates {
        fn resolve(&self, conflict: &ConflictContext<'_>) -> Option<HandlerDecision> {
            (conflict.kind == ConflictKind::BothUpdated)
                .then(|| HandlerDecision::Rollback(format!("{} is disputed", conflict.table)))
        }
    }
    let server =
        TestServer::start_embedded(&config("server-wins"), Arc::new(RollbackUpdates)).await;
    let one_per_batch = SyncOptions {
        push_batch: 1,
        ..SyncOptions::default()
    };
    let (a, b, id) = provoke(&server, "person", ConflictKind::BothUpdated, one_per_batch).await;
    // B's conflicting update was edited first, so it goes out in the first batch; two
    // clean inserts follow in their own batches.
    let first = b.insert("person", json!({"name": "New one"}));
    let second = b.insert("person", json!({"name": "New two"}));
    let before = server.rows().await;

    let error = b.client.sync().await.unwrap_err();
    assert!(
        matches!(error, ClientError::RolledBack { id: i, .. } if i == id),
        "{error}"
    );
    assert_eq!(
        server.rows().await,
        before,
        "no batch of the round was applied"
    );
    assert_eq!(b.pending(), 3, "B keeps all three changes");
    let live = server.live("person").await;
    assert!(!live.contains_key(&first) && !live.contains_key(&second));
    let (_, int) = columns("person");
    assert_eq!(b.live("person")[&id][int], json!(B_VALUE));
    assert_eq!(a.live("person")[&id][int], json!(A_VALUE));
    let log = server.conflict_log();
    assert_eq!(log.last().unwrap().3, "rollback");
    let entries = b.client.server_conflicts(10, None).await.unwrap();
    assert_eq!(entries[0].client_id, b.client.store().client_id());
    assert_eq!(entries[0].resolution.as_str(), "rollback");
    assert!(entries[0].base_row.is_some());
    let _: Value = serde_json::to_value(&entries).unwrap();
}
