//! UI tests of what the app tells a person: every view updates after a sync, a row held
//! by a conflict is marked and counted, "mine wins" is pushed at once, "server wins"
//! tells the person and History words it truthfully, unsaved typing is never dropped
//! silently, validation shows every problem at once in words, the "I deleted, they
//! edited" conflict shows the last known values, phone width keeps Conflicts and History
//! readable, a delete can be undone, and field values holding HTML show as text.
//! The other device is a real `roster-client` on the same server.

use std::collections::BTreeMap;

use roster_e2e::TestClient;
use roster_protocol::{Fields, RowId};
use roster_ui_tests::{App, Device, start_server_without_feed};
use serde_json::{Value, json};

/// WebDriver key code of Escape.
const ESCAPE: &str = "\u{E00C}";

/// Sets what this device does with conflicts (`ask`, `server_wins`, `mine_wins`).
async fn conflict_mode(app: &App, mode: &str) {
    app.click("nav-settings").await;
    app.find("setting-conflict_mode")
        .await
        .select_by_value(mode)
        .await
        .unwrap();
    app.click("save-settings").await;
    app.wait_for("settings-saved").await;
    app.click("nav-records").await;
}

/// The id of the person called `name` on `other`.
fn id_of(live: &BTreeMap<RowId, Fields>, name: &str) -> RowId {
    *live
        .iter()
        .find(|(_, row)| row["name"] == json!(name))
        .unwrap_or_else(|| panic!("no {name} in {live:?}"))
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn status_conflicts_and_edits_tell_the_truth() {
    // Feed off: the devices' edits meet at the server before either hears of the other's.
    let server = start_server_without_feed();
    let device = Device::launch(&server, "status").await;
    let app = &device.app;
    app.click("nav-settings").await;
    app.fill("setting-sync_interval_secs", "600").await;
    app.click("save-settings").await;
    app.wait_for("settings-saved").await;

    // An empty list says how to begin; every invalid field shows at once, in words.
    app.click("nav-records").await;
    app.wait_contains("empty-state", "add the first one").await;
    app.click("new-record").await;
    app.fill("field-age", "thirty").await;
    app.fill("field-email", "jane-at-home").await;
    app.fill("field-phone", "call me").await;
    app.click("save").await;
    app.wait_contains("error-name", "Name is required").await;
    app.wait_contains("error-age", "Age must be a whole number")
        .await;
    app.wait_contains("error-email", "Email must look like name@example.org")
        .await;
    app.wait_contains("error-phone", "Phone may hold only")
        .await;
    app.fill("field-age", "-3").await;
    app.click("save").await;
    app.wait_contains("error-age", "Age must be 0 or more")
        .await;
    app.fill_and_save(&[
        ("name", "Jane"),
        ("age", "25"),
        ("email", "jane@example.org"),
        ("phone", "+33 1 23 45"),
        ("city", "Lyon"),
    ])
    .await;

    // After the sync, the list, the pill and the editor's line all say so. The editor's
    // line first: it names a server version only once the sync is done, so the checks
    // after it cannot pass on the screen as it was before the save.
    app.wait_text("editor-meta", "names a server version", |t| {
        t.contains("server version") && !t.contains("not on the server yet")
    })
    .await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    app.wait_gone("pending-dot").await;
    app.wait_gone("editor-pending").await;
    app.create_person(&[("name", "Ken"), ("city", "Bergen")])
        .await;
    // The list may not show Ken's pending dot yet, so wait on the server, then the dot.
    app.wait_until_server_holds(&server, "Ken").await;
    app.wait_gone("pending-dot").await;
    let other = TestClient::new(&server).await;
    other.client.sync().await.unwrap();
    let live = other.live("person");
    let (jane, ken) = (id_of(&live, "Jane"), id_of(&live, "Ken"));

    // Unsaved typing: another row or Esc asks; "Keep editing" keeps it, "Discard" drops it.
    app.open_row("Jane").await;
    app.fill("field-city", "Rome").await;
    app.open_row("Ken").await;
    app.wait_contains("confirm-dialog", "Unsaved changes").await;
    app.click("confirm-cancel").await;
    app.wait_gone("confirm-dialog").await;
    app.wait_contains("editor-title", "Jane").await;
    assert_eq!(app.value("field-city").await, "Rome");
    app.find("field-city")
        .await
        .send_keys(ESCAPE)
        .await
        .unwrap();
    app.wait_contains("confirm-dialog", "did not save").await;
    app.click("confirm-alt").await;
    app.wait_gone("editor").await;
    app.open_row("Jane").await;
    assert_eq!(app.value("field-city").await, "Lyon");

    // A row held by an open conflict is marked, in the list and the editor, and counted.
    other.update("person", jane, json!({"age": 40}));
    other.client.sync().await.unwrap();
    app.fill_and_save(&[("age", "30")]).await;
    app.wait_contains("status-conflicts", "1 conflict").await;
    app.wait_for("conflict-dot").await;
    app.wait_for("editor-conflict").await;
    app.wait_contains("pending-count", "1 change waiting (1 held by a conflict)")
        .await;
    app.click("status-conflicts").await;
    app.click("keep-mine").await;
    app.wait_for("no-conflicts").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;

    // "Mine wins" by the device rule reaches the server without waiting for the interval.
    conflict_mode(app, "mine_wins").await;
    other.update("person", ken, json!({"city": "Oslo"}));
    other.client.sync().await.unwrap();
    app.open_row("Ken").await;
    app.fill_and_save(&[("city", "Tromsø")]).await;
    app.eventually("the server holds this device's city for Ken", || async {
        (server.live("person").await[&ken]["city"] == json!("Tromsø")).then_some(())
    })
    .await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;

    // "Server wins" by the device rule tells the person, and History says who decided.
    conflict_mode(app, "server_wins").await;
    other.client.sync().await.unwrap();
    other.update("person", ken, json!({"city": "Paris"}));
    other.client.sync().await.unwrap();
    app.open_row("Ken").await;
    app.fill_and_save(&[("city", "Lima")]).await;
    app.wait_contains("editor-notice", "won by this device's rule")
        .await;
    app.eventually("the editor shows the server's city", || async {
        (app.value("field-city").await == "Paris").then_some(())
    })
    .await;
    app.click("nav-history").await;
    app.wait_for("history-row").await;
    let outcomes = app.texts("[data-testid=\"history-outcome\"]").await;
    assert!(
        outcomes
            .iter()
            .any(|t| t == "The server's version won by this device's rule"),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|t| t == "This device's version won by this device's rule"),
        "{outcomes:?}"
    );
    let people = app.texts("[data-testid=\"history-person\"]").await;
    assert!(people.iter().any(|t| t == "Ken"), "{people:?}");
    assert!(people.iter().any(|t| t == "Jane"), "{people:?}");
    let when = app.texts("[data-testid=\"history-when\"]").await;
    let year = app.js("return String(new Date().getFullYear());").await;
    let year = year.as_str().unwrap_or("20");
    assert!(when.iter().all(|t| t.contains(year)), "{when:?}");

    // I deleted, they edited: the base shows the last known values and what changed there.
    conflict_mode(app, "ask").await;
    other.client.sync().await.unwrap();
    other.update("person", jane, json!({"city": "Nice"}));
    other.client.sync().await.unwrap();
    app.open_row("Jane").await;
    app.click("delete").await;
    app.click("confirm-ok").await;
    app.wait_contains("status-conflicts", "1 conflict").await;
    app.click("status-conflicts").await;
    app.wait_contains("conflict-kind", "Deleted here").await;
    assert_eq!(app.text("base-city").await, "Lyon");
    assert_eq!(app.text("base-name").await, "Jane");
    assert_eq!(app.text("theirs-city").await, "Nice");
    assert_eq!(app.text("mine-city").await, "(deleted)");
    app.wait_for("changed-there-city").await;

    // Phone width: all three versions stay on screen, nothing scrolls sideways.
    app.resize(390, 800).await;
    app.wait_no_sideways_scroll("view-conflicts").await;
    app.wait_for("base-city").await;
    app.wait_for("mine-city").await;
    app.wait_for("theirs-city").await;
    app.screenshot("conflicts-phone").await;
    app.click("keep-theirs").await;
    app.wait_for("no-conflicts").await;
    app.click("nav-history").await;
    app.wait_for("history-row").await;
    app.wait_no_sideways_scroll("view-history").await;
    app.screenshot("history-phone").await;
    app.resize(1100, 720).await;

    // Undo on the delete toast brings the person back.
    app.click("nav-records").await;
    app.open_row("Ken").await;
    app.click("delete").await;
    app.click("confirm-ok").await;
    app.wait_gone("editor").await;
    app.wait_text("record-list", "no longer shows Ken", |t| !t.contains("Ken"))
        .await;
    app.wait_contains("toast-action", "Undo").await;
    app.click("toast-action").await;
    app.wait_text("record-list", "shows Ken again", |t| t.contains("Ken"))
        .await;

    // Values holding HTML are shown as text everywhere.
    let html = "<b>Bold</b><img src=x onerror=\"document.title='pwned'\">";
    app.create_person(&[("name", html)]).await;
    app.wait_text("record-list", "shows the markup as text", |t| {
        t.contains("<b>Bold</b>")
    })
    .await;
    app.wait_contains("editor-title", "<b>Bold</b>").await;
    let injected = app
        .js("return document.querySelectorAll('#record-list b, #record-list img, #editor-title b').length;")
        .await;
    assert_eq!(injected, Value::from(0));
    assert_ne!(app.js("return document.title;").await, json!("pwned"));
    device.quit().await;
}
