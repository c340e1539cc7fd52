//! UI tests of the workflows beyond the basic ones in `app.rs`: the keyboard alone in the
//! list and editor, resolving several conflicts at once, and settings validation and
//! persistence. Another device is a real `roster-client` on the same server.

use roster_e2e::TestClient;
use roster_ui_tests::{App, Display, start_server_without_feed};
use serde_json::json;

/// WebDriver key codes (W3C WebDriver, "keyboard actions").
const ARROW_DOWN: &str = "\u{E015}";
const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

/// Three people exist on the server and in the app; both this app and another device
/// change each one's city; the app shows three conflicts, "keep theirs" for all resolves
/// them at once after a confirmation, and after the next sync the app, the other device
/// and the server all hold the other device's cities. On the way, the list and editor
/// are driven by the keyboard alone, and the settings view rejects an invalid interval
/// inline and keeps a valid change across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn keyboard_resolve_all_and_settings() {
    let display = Display::start();
    // Feed off: the devices' edits meet at the server before either hears of the other's.
    let server = start_server_without_feed();
    let dir = tempfile::tempdir().unwrap();
    let mut app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        server.token(),
        "workflows",
    )
    .await;

    // Settings: an interval below the minimum is refused next to its field; nothing is saved.
    app.click("nav-settings").await;
    app.fill("setting-sync_interval_secs", "1").await;
    app.click("save-settings").await;
    let error = app.wait_for("error-setting-sync_interval_secs").await;
    let message = error.text().await.unwrap();
    assert!(
        !message.trim().is_empty(),
        "the interval error explains itself"
    );
    app.fill("setting-device_name", "Desk").await;
    app.fill("setting-sync_interval_secs", "600").await;
    app.click("save-settings").await;
    app.wait_for("settings-saved").await;
    app.wait_contains("device-name", "Desk").await;

    // Another device creates three people; the app pulls them.
    let other = TestClient::new(&server).await;
    let ids: Vec<_> = ["Ann", "Bob", "Cy"]
        .iter()
        .map(|name| other.insert("person", json!({"name": name, "city": "Lyon"})))
        .collect();
    other.client.sync().await.unwrap();
    app.click("nav-records").await;
    app.click("sync-now").await;
    app.wait_contains("result-count", "3 people").await;

    // Keyboard only: arrow down from the search box selects the first row, Enter opens
    // it, Escape closes the editor.
    let search = app.find("search").await;
    search.click().await.unwrap();
    search.send_keys(ARROW_DOWN).await.unwrap();
    app.find("record-list")
        .await
        .send_keys(ENTER)
        .await
        .unwrap();
    let title = app.wait_contains("editor-title", "Ann").await;
    assert!(
        title.contains("Ann"),
        "Enter opened the first person: {title}"
    );
    app.find("field-city")
        .await
        .send_keys(ESCAPE)
        .await
        .unwrap();
    app.wait_gone("editor").await;

    // Both sides change every city; the other device syncs first.
    for id in &ids {
        other.update("person", *id, json!({"city": "Rome"}));
    }
    other.client.sync().await.unwrap();
    for name in ["Ann", "Bob", "Cy"] {
        app.open_row(name).await;
        app.fill_and_save(&[("city", "Paris")]).await;
    }
    app.click("sync-now").await;
    app.wait_contains("status-conflicts", "3 conflicts").await;
    app.click("status-conflicts").await;
    app.wait_for("conflict-card").await;
    app.screenshot("conflicts-resolve-all").await;

    // Resolve all, keeping the other device's version; the dialog asks first.
    app.click("resolve-all-theirs").await;
    app.wait_contains("confirm-dialog", "3 conflicts").await;
    app.click("confirm-ok").await;
    app.wait_for("no-conflicts").await;
    app.wait_gone("conflicts-badge").await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    app.click("nav-records").await;
    app.wait_text("record-list", "shows Rome three times", |text| {
        text.matches("Rome").count() == 3
    })
    .await;
    other.client.sync().await.unwrap();
    let live = server.live("person").await;
    for id in &ids {
        assert_eq!(
            live[id]["city"],
            json!("Rome"),
            "the server keeps their value"
        );
        assert_eq!(other.live("person")[id]["city"], json!("Rome"));
    }
    assert_eq!(other.pending(), 0);

    // The saved settings survive a restart.
    app = app.restart().await;
    app.click("nav-settings").await;
    assert_eq!(app.value("setting-device_name").await, "Desk");
    assert_eq!(app.value("setting-sync_interval_secs").await, "600");
    app.quit().await;
}
