//! Partial sync: devices subscribed to slices of one data set hold exactly the server rows
//! matching their subscriptions (plus their own unpushed rows), follow rows edited into
//! and out of them, deletes, subscriptions added and removed, and a pending edit of a row
//! that leaves the slice; a subscription binding `:user` or with a bad value is refused.
//! Each test checks the server and every device.

use std::collections::BTreeMap;

use roster_client::{Choice, ClientError, Subscription, SyncOptions};
use roster_e2e::cli::run_roster;
use roster_e2e::{DEFAULT_USER, TestClient, TestServer, assert_converged};
use roster_protocol::{ErrorCode, Fields, RowId};
use serde_json::{Value, json};

/// `person` with a city and an owner; `by_city` (one city or a list) and `mine` (rows
/// whose owner is the signed-in user).
const CONFIG: &str = r#"
[[tables]]
name = "person"
policy = "server-wins"
columns = [
  { name = "name", type = "text", required = true, max_len = 200 },
  { name = "city", type = "text", max_len = 40 },
  { name = "owner", type = "text" },
]

[[subscriptions]]
name = "by_city"
table = "person"
filter = { city = ":city" }

[[subscriptions]]
name = "mine"
table = "person"
filter = { owner = ":user" }
"#;

fn by_city(city: Value) -> Subscription {
    Subscription {
        name: "by_city".into(),
        params: BTreeMap::from([("city".to_owned(), city)]),
    }
}

/// Inserts a person on `device` and returns its id.
fn person(device: &TestClient, name: &str, city: &str, owner: &str) -> RowId {
    device.insert(
        "person",
        json!({"name": name, "city": city, "owner": owner}),
    )
}

/// A new device holding the slice of `subscriptions`, synced once.
async fn subscribed(server: &TestServer, subscriptions: &[Subscription]) -> TestClient {
    let device = TestClient::new(server).await;
    for subscription in subscriptions {
        assert!(device.client.subscribe(subscription.clone()).await.unwrap());
    }
    device.client.sync().await.unwrap();
    device
}

/// Asserts `device` holds exactly the server's live rows that `keep` accepts, with
/// nothing pending.
async fn assert_slice(server: &TestServer, device: &TestClient, keep: impl Fn(&Fields) -> bool) {
    let expected: BTreeMap<RowId, Fields> = server
        .live("person")
        .await
        .into_iter()
        .filter(|(_, fields)| keep(fields))
        .collect();
    assert_eq!(
        device.live("person"),
        expected,
        "the device's slice differs"
    );
    assert_eq!(device.pending(), 0, "the device still has pending changes");
}

fn city_in(cities: &'static [&'static str]) -> impl Fn(&Fields) -> bool {
    move |fields| cities.iter().any(|c| fields.get("city") == Some(&json!(c)))
}

/// Three Paris rows, two Lyon rows and one Nice row, pushed by a device holding all.
async fn seeded(server: &TestServer) -> (TestClient, Vec<RowId>, Vec<RowId>) {
    let writer = TestClient::new(server).await;
    let paris = (0..3)
        .map(|i| person(&writer, &format!("p{i}"), "Paris", "other"))
        .collect();
    let lyon = (0..2)
        .map(|i| person(&writer, &format!("l{i}"), "Lyon", "other"))
        .collect();
    person(&writer, "n0", "Nice", "other");
    writer.client.sync().await.unwrap();
    (writer, paris, lyon)
}

#[tokio::test]
async fn devices_hold_exactly_their_city_and_follow_an_edit_across_and_a_delete() {
    let server = TestServer::start_with_config(CONFIG);
    let (writer, paris, lyon) = seeded(&server).await;
    let a = subscribed(&server, &[by_city(json!("Paris"))]).await;
    let b = subscribed(&server, &[by_city(json!("Lyon"))]).await;
    assert_slice(&server, &a, city_in(&["Paris"])).await;
    assert_slice(&server, &b, city_in(&["Lyon"])).await;
    assert_eq!((a.live("person").len(), b.live("person").len()), (3, 2));

    writer.update("person", paris[0], json!({"city": "Lyon"}));
    writer.delete("person", lyon[0]);
    // Out of the slice and back between two of A's rounds: A keeps it, with its edit.
    writer.update("person", paris[2], json!({"city": "Nice"}));
    writer.client.sync().await.unwrap();
    writer.update("person", paris[2], json!({"city": "Paris", "name": "back"}));
    writer.client.sync().await.unwrap();
    let moved_out = a.client.sync().await.unwrap();
    let moved_in = b.client.sync().await.unwrap();
    assert_eq!(moved_out.evicted, 1, "{moved_out:?}");
    assert_eq!(a.live("person")[&paris[2]]["name"], json!("back"));
    assert_eq!(
        moved_in.downloaded, 2,
        "one row in, one delete: {moved_in:?}"
    );
    assert!(!a.live("person").contains_key(&paris[0]));
    assert!(b.live("person").contains_key(&paris[0]));
    assert!(!b.live("person").contains_key(&lyon[0]));
    assert_eq!(server.live("person").await.len(), 5);
    assert_slice(&server, &a, city_in(&["Paris"])).await;
    assert_slice(&server, &b, city_in(&["Lyon"])).await;
    assert_converged(&server, "person", &[&writer]).await;
}

#[tokio::test]
async fn a_subscription_added_fetches_only_its_rows_and_one_removed_evicts_them() {
    let server = TestServer::start_with_config(CONFIG);
    let (writer, _, _) = seeded(&server).await;
    let a = subscribed(&server, &[by_city(json!("Paris"))]).await;

    assert!(a.client.subscribe(by_city(json!("Lyon"))).await.unwrap());
    assert!(!a.client.subscribe(by_city(json!("Lyon"))).await.unwrap());
    let added = a.client.sync().await.unwrap();
    assert_eq!(added.downloaded, 2, "only the Lyon rows: {added:?}");
    assert_slice(&server, &a, city_in(&["Paris", "Lyon"])).await;

    assert!(
        a.client
            .unsubscribe(&by_city(json!("Paris")))
            .await
            .unwrap()
    );
    a.client.sync().await.unwrap();
    assert_slice(&server, &a, city_in(&["Lyon"])).await;

    // Small pages: each subscription's index is read a page at a time and the pages
    // merged by version, so nothing is skipped or duplicated.
    let paged = TestClient::with_options(
        &server,
        SyncOptions {
            pull_limit: 2,
            ..SyncOptions::default()
        },
    )
    .await;
    for city in ["Lyon", "Paris"] {
        paged.client.subscribe(by_city(json!(city))).await.unwrap();
    }
    let report = paged.client.sync().await.unwrap();
    assert!(report.requests >= 3, "{report:?}");
    assert_slice(&server, &paged, city_in(&["Paris", "Lyon"])).await;

    // A list is one subscription matching any of its values.
    let both = subscribed(&server, &[by_city(json!(["Nice", "Lyon"]))]).await;
    assert_slice(&server, &both, city_in(&["Nice", "Lyon"])).await;
    assert_eq!(server.live("person").await.len(), 6);
    assert_converged(&server, "person", &[&writer]).await;
}

#[tokio::test]
async fn a_pending_edit_of_a_row_leaving_the_slice_is_pushed_and_rows_written_outside_it_leave() {
    let server = TestServer::start_with_config(CONFIG);
    let (writer, paris, _) = seeded(&server).await;
    let a = subscribed(&server, &[by_city(json!("Paris"))]).await;

    // A renames a Paris row while the writer moves it to Lyon.
    a.update("person", paris[0], json!({"name": "renamed on a"}));
    writer.update("person", paris[0], json!({"city": "Lyon"}));
    writer.client.sync().await.unwrap();
    // A also creates a row outside its slice and moves one of its rows out.
    let made = person(&a, "made on a", "Nice", "other");
    a.update("person", paris[1], json!({"city": "Nice"}));
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 3, "{report:?}");
    assert_eq!(report.evicted, 3, "{report:?}");

    let rows = server.live("person").await;
    assert_eq!(
        rows[&paris[0]]["name"],
        json!("renamed on a"),
        "the edit is kept"
    );
    assert_eq!(rows[&paris[0]]["city"], json!("Lyon"));
    assert_eq!(rows[&made]["city"], json!("Nice"));
    assert_eq!(rows[&paris[1]]["city"], json!("Nice"));
    assert_slice(&server, &a, city_in(&["Paris"])).await;
    assert_eq!(a.live("person").len(), 1);
    writer.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&writer]).await;
}

#[tokio::test]
async fn user_is_bound_by_the_server_and_bad_subscriptions_change_nothing() {
    let server = TestServer::start_with_config(CONFIG);
    let (writer, _, _) = seeded(&server).await;
    let own = person(&writer, "mine", "Paris", DEFAULT_USER);
    writer.client.sync().await.unwrap();
    let a = subscribed(&server, &[by_city(json!("Lyon"))]).await;

    let refused = [
        Subscription {
            name: "mine".into(),
            params: BTreeMap::from([("user".to_owned(), json!("other"))]),
        },
        by_city(json!(5)),
        by_city(json!("x".repeat(41))),
        by_city(json!([])),
        Subscription {
            name: "by_town".into(),
            params: BTreeMap::new(),
        },
    ];
    for subscription in refused {
        match a.client.subscribe(subscription.clone()).await {
            Err(ClientError::Server { status, code, .. }) => {
                assert_eq!(
                    (status, code),
                    (400, ErrorCode::BadSubscription),
                    "{subscription}"
                );
            }
            other => panic!("{subscription}: expected a 400, got {other:?}"),
        }
    }
    assert_eq!(
        a.client.subscriptions().unwrap(),
        Some(vec![by_city(json!("Lyon"))])
    );
    a.client.sync().await.unwrap();
    assert_slice(&server, &a, city_in(&["Lyon"])).await;

    // `mine` is the signed-in user's rows, whatever the device asks.
    let mine = subscribed(
        &server,
        &[Subscription {
            name: "mine".into(),
            params: BTreeMap::new(),
        }],
    )
    .await;
    assert_slice(&server, &mine, |f| {
        f.get("owner") == Some(&json!(DEFAULT_USER))
    })
    .await;
    assert_eq!(mine.live("person").keys().collect::<Vec<_>>(), [&own]);
}

#[tokio::test]
async fn the_cli_subscribes_lists_and_unsubscribes() {
    let server = TestServer::start_with_config(CONFIG);
    let (_writer, _, _) = seeded(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = server.url();
    let ok = |args: &[&str]| {
        let run = run_roster(&dir, args, &[]);
        run.assert_exit(0);
        run
    };
    ok(&["init", "--server", &url, "--token", server.token()]);
    let refused = run_roster(&dir, &["subscribe", "mine", "user=other", "--json"], &[]);
    refused.assert_exit(5);
    assert!(
        refused.stderr.contains("bound by the server"),
        "{}",
        refused.stderr
    );
    let listed = ok(&["subscriptions", "--json"]).json();
    assert_eq!(listed["whole_dataset"], json!(true));

    ok(&["subscribe", "by_city", "city=Paris", "city=Nice", "--json"]);
    let listed = ok(&["subscriptions", "--json"]).json();
    assert_eq!(
        listed["subscriptions"][0]["params"]["city"],
        json!(["Paris", "Nice"])
    );
    let names = |run: Value| -> Vec<String> {
        let mut names: Vec<String> = run["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["fields"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(ok(&["list", "--json"]).json()),
        ["n0", "p0", "p1", "p2"]
    );

    ok(&["unsubscribe", "by_city", "city=Paris", "city=Nice"]);
    assert_eq!(names(ok(&["list", "--json"]).json()), Vec::<String>::new());
    ok(&["unsubscribe", "--all"]);
    assert_eq!(names(ok(&["list", "--json"]).json()).len(), 6);
}

#[tokio::test]
async fn a_conflict_on_a_row_that_left_the_slice_is_shown_and_resolvable() {
    let server = TestServer::start_with_config(&CONFIG.replace("server-wins", "defer-to-client"));
    let (writer, paris, _) = seeded(&server).await;
    let a = subscribed(&server, &[by_city(json!("Paris"))]).await;
    a.update("person", paris[0], json!({"name": "mine"}));
    writer.update(
        "person",
        paris[0],
        json!({"name": "theirs", "city": "Lyon"}),
    );
    writer.client.sync().await.unwrap();

    let report = a.client.sync().await.unwrap();
    assert_eq!(report.conflicts_deferred, 1, "{report:?}");
    let open = a.client.store().open_conflicts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, paris[0]);
    assert_eq!(
        a.live("person")[&paris[0]]["name"],
        json!("mine"),
        "kept while open"
    );

    a.client
        .store()
        .resolve_conflict("person", paris[0], Choice::KeepTheirs)
        .unwrap();
    assert!(
        !a.live("person").contains_key(&paris[0]),
        "theirs is outside the slice"
    );
    a.client.sync().await.unwrap();
    assert!(a.client.store().open_conflicts().unwrap().is_empty());
    let rows = server.live("person").await;
    assert_eq!(rows[&paris[0]]["name"], json!("theirs"));
    assert_slice(&server, &a, city_in(&["Paris"])).await;
    assert_converged(&server, "person", &[&writer]).await;
}
