//! Convergence property: three clients make random offline inserts, updates and deletes,
//! sync in random order through a proxy that randomly loses answers, under a random table
//! policy, each holding the whole data set or random subscriptions (by city, some added
//! on the way). After final rounds every client holds exactly the server rows matching
//! its subscriptions (all of them without any), nothing is left pending,
//! open conflicts exist only where a person must choose (and after choosing, none), and
//! every conflict the server logged was reported to the client that caused it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use proptest::prelude::*;
use std::collections::BTreeMap;

use roster_client::{Choice, Subscription, SyncOptions};
use roster_e2e::proxy::FaultProxy;
use roster_e2e::{TWO_TABLE_CONFIG, TestClient, TestServer, assert_converged};
use roster_protocol::RowId;
use serde_json::json;

const CLIENTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        client: usize,
        age: i64,
    },
    Update {
        client: usize,
        row: usize,
        age: i64,
        city: bool,
    },
    Delete {
        client: usize,
        row: usize,
    },
    Sync {
        client: usize,
    },
    Subscribe {
        client: usize,
        city: usize,
    },
    LoseNextAnswer,
}

/// Cities rows move between (`C0`..`C3`); `by_city` subscriptions pick among them.
const CITIES: usize = 4;

/// The partial-sync declaration added to the two-table config.
const BY_CITY: &str = r#"
[[subscriptions]]
name = "by_city"
table = "person"
filter = { city = ":city" }
"#;

fn by_city(cities: &[usize]) -> Subscription {
    let names: Vec<serde_json::Value> = cities.iter().map(|c| json!(format!("C{c}"))).collect();
    Subscription {
        name: "by_city".into(),
        params: BTreeMap::from([("city".to_owned(), json!(names))]),
    }
}

/// The cities a device's subscriptions name; `None` while it holds everything.
fn held_cities(subscriptions: Option<Vec<Subscription>>) -> Option<Vec<serde_json::Value>> {
    subscriptions.map(|list| {
        list.iter()
            .flat_map(|s| s.params["city"].as_array().cloned().unwrap_or_default())
            .collect()
    })
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    prop_oneof![
        2 => (client.clone(), 0..100i64).prop_map(|(client, age)| Op::Insert { client, age }),
        4 => (client.clone(), 0..8usize, 0..100i64, any::<bool>())
            .prop_map(|(client, row, age, city)| Op::Update { client, row, age, city }),
        1 => (client.clone(), 0..8usize).prop_map(|(client, row)| Op::Delete { client, row }),
        3 => client.clone().prop_map(|client| Op::Sync { client }),
        1 => (client, 0..CITIES).prop_map(|(client, city)| Op::Subscribe { client, city }),
        1 => Just(Op::LoseNextAnswer),
    ]
}

fn policy() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("server-wins"),
        Just("client-wins"),
        Just("merge"),
        Just("defer-to-client")
    ]
}

/// Each client's first subscriptions (`None`: the whole data set).
fn subscriptions() -> impl Strategy<Value = Vec<Option<Vec<usize>>>> {
    prop::collection::vec(
        prop::option::of(prop::collection::vec(0..CITIES, 1..3)),
        CLIENTS,
    )
}

async fn run(policy: &str, subscriptions: Vec<Option<Vec<usize>>>, ops: Vec<Op>) {
    let config = TWO_TABLE_CONFIG.replacen(
        "policy = \"server-wins\"",
        &format!("policy = \"{policy}\""),
        1,
    ) + BY_CITY;
    let server = TestServer::start_with_config(&config);
    let proxy = FaultProxy::start(server.addr()).await;
    let options = SyncOptions {
        retry_delay: Duration::from_millis(5),
        push_batch: 3,
        ..SyncOptions::default()
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients
            .push(TestClient::at_url(&proxy.url(), &server.credentials(), options.clone()).await);
    }
    for (client, cities) in clients.iter().zip(&subscriptions) {
        if let Some(cities) = cities {
            client.client.subscribe(by_city(cities)).await.unwrap();
        }
    }
    let mut ids: Vec<RowId> = Vec::new();
    for op in ops {
        match op {
            Op::Insert { client, age } => {
                ids.push(clients[client].insert("person", json!({"name": "P", "age": age})));
            }
            Op::Update {
                client,
                row,
                age,
                city,
            } => {
                let c = &clients[client];
                if let Some(id) = ids.get(row).filter(|id| c.live("person").contains_key(id)) {
                    let patch = if city {
                        json!({"city": format!("C{}", age % CITIES as i64)})
                    } else {
                        json!({"age": age})
                    };
                    c.update("person", *id, patch);
                }
            }
            Op::Delete { client, row } => {
                let c = &clients[client];
                if let Some(id) = ids.get(row).filter(|id| c.live("person").contains_key(id)) {
                    c.delete("person", *id);
                }
            }
            Op::Sync { client } => {
                // More lost answers than retries fail the round; that must be a transient
                // error, and the next round picks up where it stopped.
                if let Err(error) = clients[client].client.sync().await {
                    assert!(error.is_transient(), "{error}");
                }
            }
            Op::Subscribe { client, city } => {
                // Checked by the server first: lost answers may fail it (transiently).
                if let Err(error) = clients[client].client.subscribe(by_city(&[city])).await {
                    assert!(error.is_transient(), "{error}");
                }
            }
            Op::LoseNextAnswer => {
                proxy.faults.drop_answers.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    proxy.faults.drop_answers.store(0, Ordering::SeqCst);

    // A person settles every open conflict (alternating choices), then everyone syncs
    // until nothing moves.
    for round in 0..3 {
        for c in &clients {
            c.client.sync().await.unwrap();
        }
        for c in &clients {
            for (n, open) in c
                .client
                .store()
                .open_conflicts()
                .unwrap()
                .into_iter()
                .enumerate()
            {
                let choice = if (n + round) % 2 == 0 {
                    Choice::KeepMine
                } else {
                    Choice::KeepTheirs
                };
                c.client
                    .store()
                    .resolve_conflict(&open.table, open.id, choice)
                    .unwrap();
            }
        }
    }
    for c in &clients {
        c.client.sync().await.unwrap();
    }
    for c in &clients {
        assert!(
            c.client.store().open_conflicts().unwrap().is_empty(),
            "conflict left open"
        );
    }
    // Each client holds exactly the server rows its subscriptions match.
    let rows = server.live("person").await;
    for (index, c) in clients.iter().enumerate() {
        let cities = held_cities(c.client.subscriptions().unwrap());
        let expected: BTreeMap<RowId, roster_protocol::Fields> = rows
            .iter()
            .filter(|(_, fields)| {
                cities
                    .as_ref()
                    .is_none_or(|cities| fields.get("city").is_some_and(|c| cities.contains(c)))
            })
            .map(|(id, fields)| (*id, fields.clone()))
            .collect();
        assert_eq!(c.live("person"), expected, "client #{index} ({cities:?})");
        assert_eq!(c.pending(), 0, "client #{index} still has pending changes");
    }
    let whole: Vec<&TestClient> = clients
        .iter()
        .filter(|c| c.client.subscriptions().unwrap().is_none())
        .collect();
    assert_converged(&server, "person", &whole).await;

    // Every conflict the server logged was reported to the client that pushed it.
    let reported: usize = clients
        .iter()
        .map(|c| {
            c.client
                .store()
                .conflict_history(100_000)
                .unwrap()
                .iter()
                .filter(|h| {
                    !matches!(
                        h.resolution.as_str(),
                        "kept_mine" | "kept_theirs" | "merged"
                    )
                })
                .count()
        })
        .sum();
    assert_eq!(
        reported,
        server.conflict_log().len(),
        "a logged conflict went unreported"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_offline_edits_converge(
        policy in policy(),
        subscriptions in subscriptions(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(policy, subscriptions, ops));
    }
}
