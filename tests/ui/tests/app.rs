//! UI tests of the Roster desktop app: the real app binary under Xvfb, driven through
//! tauri-driver and WebKitWebDriver, against the real sync server. Each test asserts what
//! a person would see on screen.

use std::time::Duration;

use roster_client::LocalStore;
use roster_client::SyncClient;
use roster_protocol::{Fields, Schema};
use roster_ui_tests::{
    App, Display, TwoDevices, free_port, start_server, start_server_without_feed,
};
use serde_json::json;

/// A server URL where nothing listens: the app starts offline.
fn nowhere() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Text of the pending-changes counter for `n` changes.
fn waiting(n: u64) -> String {
    match n {
        0 => "No changes waiting".to_owned(),
        1 => "1 change waiting".to_owned(),
        n => format!("{n} changes waiting"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_create_edit_delete_survive_a_restart() {
    let display = Display::start();
    let dir = tempfile::tempdir().unwrap();
    let app = App::launch(
        &display.name(),
        dir.path(),
        &nowhere(),
        "rst_offline",
        "offline",
    )
    .await;

    app.wait_contains("sync-state", "Offline").await;
    app.create_person(&[("name", "Ada Lovelace"), ("age", "36"), ("city", "London")])
        .await;
    app.create_person(&[("name", "Grace Hopper"), ("city", "Arlington")])
        .await;
    app.create_person(&[("name", "Alan Turing"), ("city", "Wilmslow")])
        .await;
    app.wait_contains("result-count", "3 people").await;

    // Validation messages sit next to their field, in words.
    app.open_row("Ada Lovelace").await;
    app.fill("field-age", "thirty-six").await;
    app.fill("field-city", "Paris").await;
    app.click("save").await;
    let error = app.text("error-age").await;
    assert_eq!(error, "Age must be a whole number");
    app.screenshot("editor").await;
    app.fill("field-age", "37").await;
    app.click("save").await;
    app.wait_for("saved").await;
    app.wait_gone("error-age").await;
    app.wait_text("record-list", "shows Ada in Paris", |t| {
        t.lines().any(|l| l.contains("Paris")) && !t.contains("London")
    })
    .await;

    // Delete asks first; cancelling keeps the person.
    app.open_row("Alan Turing").await;
    app.click("delete").await;
    app.wait_contains("confirm-dialog", "Delete Alan Turing?")
        .await;
    app.click("confirm-cancel").await;
    app.wait_gone("confirm-dialog").await;
    app.wait_for("editor").await;
    app.click("delete").await;
    app.click("confirm-ok").await;
    app.wait_gone("editor").await;
    app.wait_contains("result-count", "2 people").await;
    // Alan was never synced, so deleting him leaves nothing to send.
    app.wait_contains("pending-count", &waiting(2)).await;
    app.open_row("Ada Lovelace").await;
    app.screenshot("editor-saved").await;

    let app = app.restart().await;
    app.wait_contains("result-count", "2 people").await;
    let rows = app.row_texts().await;
    assert!(
        rows.iter()
            .any(|r| r.contains("Ada Lovelace") && r.contains("Paris")),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.contains("Grace Hopper")), "{rows:?}");
    assert!(!rows.iter().any(|r| r.contains("Alan Turing")), "{rows:?}");
    app.open_row("Ada Lovelace").await;
    assert_eq!(app.value("field-age").await, "37");
    assert_eq!(app.value("field-city").await, "Paris");
    app.wait_contains("pending-count", &waiting(2)).await;
    app.wait_contains("sync-state", "Offline").await;
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_queue_while_the_server_is_down_and_drain_when_it_returns() {
    let display = Display::start();
    let mut server = start_server();
    let dir = tempfile::tempdir().unwrap();
    let app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        server.token(),
        "reconnect",
    )
    .await;

    app.create_person(&[("name", "Jane Doe"), ("city", "Lyon")])
        .await;
    app.wait_contains("pending-count", &waiting(0)).await;
    app.wait_contains("sync-state", "Synced").await;
    app.wait_contains("last-sync", "Last sync").await;

    server.kill();
    app.open_row("Jane Doe").await;
    app.fill_and_save(&[("city", "Marseille")]).await;
    app.wait_contains("sync-state", "Offline").await;
    app.create_person(&[("name", "John Roe")]).await;
    app.wait_contains("pending-count", &waiting(2)).await;
    app.screenshot("status-offline").await;

    server.restart();
    // No click: the app notices the server is back and sends the queue.
    app.wait_contains("pending-count", &waiting(0)).await;
    app.wait_contains("sync-state", "Synced").await;

    // The server has both changes: a fresh device pulls them.
    let other = tempfile::tempdir().unwrap();
    let client = SyncClient::init(other.path(), &server.url(), &server.credentials(), None)
        .await
        .unwrap();
    client.sync().await.unwrap();
    let rows = client.store().list("person", &Default::default()).unwrap();
    let cities: Vec<_> = rows.iter().map(|r| r.fields["city"].clone()).collect();
    assert!(cities.contains(&json!("Marseille")), "{cities:?}");
    assert_eq!(rows.len(), 2);
    app.quit().await;
}

/// Puts Jane on both devices through the server: created on `first`, pulled by `second`.
async fn jane_on_both(first: &App, second: &App) {
    first
        .create_person(&[("name", "Jane"), ("age", "25"), ("city", "Lyon")])
        .await;
    first.wait_contains("pending-count", &waiting(0)).await;
    second.click("sync-now").await;
    second.wait_contains("result-count", "1 person").await;
    second
        .wait_text("record-list", "shows Jane", |t| t.contains("Jane"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_devices_edit_jane_and_the_second_keeps_its_value() {
    // Feed off: the devices' edits meet at the server before either hears of the other's.
    let server = start_server_without_feed();
    let devices = TwoDevices::launch(&server, "jane").await;
    let (first, second) = (&devices.first, &devices.second);
    jane_on_both(first, second).await;

    first.open_row("Jane").await;
    first.fill_and_save(&[("age", "32")]).await;
    first.wait_contains("pending-count", &waiting(0)).await;

    second.open_row("Jane").await;
    second.fill_and_save(&[("age", "30")]).await;
    second.wait_contains("status-conflicts", "1 conflict").await;
    second.wait_contains("conflicts-badge", "1").await;
    second.click("status-conflicts").await;
    second.wait_for("conflict-card").await;
    assert_eq!(second.text("mine-age").await, "30");
    assert_eq!(second.text("theirs-age").await, "32");
    assert_eq!(second.text("base-age").await, "25");
    second
        .wait_contains("conflict-kind", "Changed on this device and on another one")
        .await;
    second.screenshot("conflicts-keep-mine").await;

    second.click("keep-mine").await;
    second.wait_for("no-conflicts").await;
    second.wait_gone("conflicts-badge").await;
    second.click("sync-now").await;
    second.wait_contains("pending-count", &waiting(0)).await;

    first.click("sync-now").await;
    first
        .wait_text("record-list", "shows age 30", |t| t.contains("30"))
        .await;
    first.open_row("Jane").await;
    assert_eq!(first.value("field-age").await, "30");

    second.click("nav-history").await;
    second.wait_for("history-row").await;
    second.screenshot("history").await;
    devices.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn field_by_field_merge_through_the_ui() {
    let display = Display::start();
    // Feed off: the devices' edits meet at the server before either hears of the other's.
    let server = start_server_without_feed();
    let dir = tempfile::tempdir().unwrap();
    let app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        server.token(),
        "merge",
    )
    .await;
    app.slow_interval("Desk").await;

    // The other device is a library client: only this app's UI is under test here.
    let other_dir = tempfile::tempdir().unwrap();
    let other = SyncClient::init(other_dir.path(), &server.url(), &server.credentials(), None)
        .await
        .unwrap();
    app.create_person(&[
        ("name", "Jane"),
        ("email", "jane@old.example"),
        ("age", "25"),
        ("city", "Lyon"),
    ])
    .await;
    app.wait_contains("pending-count", &waiting(0)).await;
    other.sync().await.unwrap();
    let jane = other.store().list("person", &Default::default()).unwrap()[0].id;
    let mut patch = Fields::new();
    patch.insert("age".into(), json!(32));
    patch.insert("city".into(), json!("Paris"));
    other.store().update("person", jane, patch).unwrap();
    other.sync().await.unwrap();

    app.open_row("Jane").await;
    app.fill_and_save(&[
        ("age", "30"),
        ("city", "Berlin"),
        ("email", "jane@new.example"),
    ])
    .await;
    app.wait_contains("status-conflicts", "1 conflict").await;
    app.click("nav-conflicts").await;
    app.wait_for("conflict-card").await;
    assert_eq!(app.text("mine-city").await, "Berlin");
    assert_eq!(app.text("theirs-city").await, "Paris");
    assert_eq!(app.text("mine-age").await, "30");
    assert_eq!(app.text("theirs-age").await, "32");
    // Differing fields are highlighted; equal ones are not.
    let differing = app.texts("tr.differs th").await;
    assert!(differing.iter().any(|t| t.contains("Age")), "{differing:?}");
    assert!(
        differing.iter().any(|t| t.contains("City")),
        "{differing:?}"
    );
    assert!(
        !differing.iter().any(|t| t.contains("Name")),
        "{differing:?}"
    );
    app.screenshot("conflicts").await;

    // Their age, my city and email.
    app.click("pick-age-theirs").await;
    app.click("apply-merge").await;
    app.wait_for("no-conflicts").await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", &waiting(0)).await;

    other.sync().await.unwrap();
    let merged = other.store().get("person", jane).unwrap().fields;
    assert_eq!(merged["age"], json!(32));
    assert_eq!(merged["city"], json!("Berlin"));
    assert_eq!(merged["email"], json!("jane@new.example"));
    app.click("nav-records").await;
    app.open_row("Jane").await;
    assert_eq!(app.value("field-age").await, "32");
    assert_eq!(app.value("field-city").await, "Berlin");
    app.quit().await;
}

const FIRST: &[&str] = &[
    "Amara", "Bruno", "Chloé", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Keira", "Luca", "Mei", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq",
];
const LAST: &[&str] = &[
    "Almeida", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Laurent", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi",
];
const CITIES: &[&str] = &[
    "Lyon", "Porto", "Berlin", "Oslo", "Turin", "Ghent", "Kraków", "Seville", "Lagos", "Osaka",
];

/// 100,000 people in a fresh store at `dir`, all pending; one of them is Zelda Quintero.
fn seed_100k(dir: &std::path::Path, server_url: &str) {
    let store = LocalStore::create(dir, server_url, &Schema::default_person()).unwrap();
    let rows: Vec<Fields> = (0..100_000usize)
        .map(|i| {
            let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
            let name = if i == 77_777 {
                "Zelda Quintero".to_owned()
            } else {
                format!("{first} {last}")
            };
            let email = format!(
                "{}.{}{i}@example.org",
                first.to_lowercase(),
                last.to_lowercase()
            );
            let value = json!({
                "name": name,
                "email": email,
                "age": 18 + (i * 7) % 70,
                "city": CITIES[(i / 3) % CITIES.len()],
            });
            value.as_object().cloned().unwrap()
        })
        .collect();
    store.insert_many("person", rows).unwrap();
}

/// `n` with commas between thousands, as the UI shows it.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_people_list_search_and_sync() {
    let display = Display::start();
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    seed_100k(dir.path(), &server.url());
    let app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        server.token(),
        "100k",
    )
    .await;

    app.wait_contains("result-count", "100,000 people").await;
    // The first sync sends 100,000 rows in batches while the list stays usable.
    app.wait_contains("progress-text", "of 100,000 sent").await;
    app.screenshot("status-syncing").await;

    // Jump to the middle of the list: the rows there load.
    app.client
        .execute(
            "const l = document.querySelector('[data-testid=\"record-list\"]'); \
             l.scrollTop = l.scrollHeight / 2;",
            vec![],
        )
        .await
        .unwrap();
    app.eventually("rows in the middle of the list are shown", || async {
        let rows = app.row_texts().await;
        (!rows.is_empty() && rows.iter().all(|r| r.contains('@'))).then_some(())
    })
    .await;

    app.search("zelda").await;
    app.wait_contains("result-count", "1 person matches").await;
    app.wait_text("record-list", "shows Zelda", |t| {
        t.contains("Zelda Quintero")
    })
    .await;

    let krakow = (0..100_000usize)
        .filter(|i| CITIES[(i / 3) % CITIES.len()] == "Kraków")
        .count();
    app.search("Kraków").await;
    app.wait_contains(
        "result-count",
        &format!("{} people match", thousands(krakow)),
    )
    .await;
    app.click("sort-age").await;
    app.eventually("the youngest come first", || async {
        (app.first_cell("age").await.as_deref() == Some("18")).then_some(())
    })
    .await;
    app.search("").await;
    app.wait_contains("result-count", "100,000 people").await;
    app.click("sort-name").await;
    app.eventually("Amara Almeida comes first", || async {
        (app.first_cell("name").await.as_deref() == Some("Amara Almeida")).then_some(())
    })
    .await;
    app.screenshot("list").await;

    // Phone width: one column of names and cities, still searchable.
    app.resize(390, 800).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.screenshot("list-phone").await;
    app.quit().await;
}
