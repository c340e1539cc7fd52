//! UI tests of the app's own surface (issue 14): values holding HTML or script show as
//! text in the list, the editor, Conflicts and History, and an expired access token
//! gets a clear message with a way to Settings while every pending edit is kept.
//! The other device is a real `roster-client` on the same server.

use roster_e2e::{DEFAULT_USER, TestClient};
use roster_ui_tests::{App, Display, start_server_without_feed};
use serde_json::{Value, json};

/// Markup that would add elements (and change the title) if it were ever parsed.
const NAME: &str = "<img src=x onerror=\"document.title='pwned'\">Mal";
const THEIRS: &str = "<b>theirs</b><script>document.title='pwned'</script>";
const MINE: &str = "<i>mine</i>";

/// Elements inside `selector` that only parsed markup can have created.
async fn injected(app: &App, selector: &str) -> Value {
    app.js(&format!(
        "return document.querySelectorAll('{selector} img, {selector} b, {selector} i, \
         {selector} script').length;"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_shows_as_text_and_an_expired_token_asks_for_a_new_one() {
    let display = Display::start();
    // Without the change feed: the app must meet the other device's edit as a conflict.
    let server = start_server_without_feed();
    let dir = tempfile::tempdir().unwrap();
    let other = TestClient::new(&server).await;
    let id = other.insert("person", json!({"name": NAME, "city": "Lyon"}));
    other.client.sync().await.unwrap();
    let app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        server.token(),
        "surface",
    )
    .await;

    // List and editor.
    app.click("sync-now").await;
    app.wait_text("record-list", "shows the markup as text", |t| {
        t.contains(NAME)
    })
    .await;
    app.open_row("Mal").await;
    app.wait_contains("editor-title", NAME).await;
    assert_eq!(app.value("field-name").await, NAME);
    assert_eq!(injected(&app, "#view-records").await, json!(0));

    // Both devices change the city: the conflict card shows all three versions as text.
    other.update("person", id, json!({"city": THEIRS}));
    other.client.sync().await.unwrap();
    app.fill_and_save(&[("city", MINE)]).await;
    app.click("sync-now").await;
    app.wait_contains("status-conflicts", "1 conflict").await;
    app.click("status-conflicts").await;
    app.wait_for("conflict-card").await;
    assert_eq!(app.text("theirs-city").await, THEIRS);
    assert_eq!(app.text("mine-city").await, MINE);
    assert_eq!(app.text("base-city").await, "Lyon");
    app.wait_contains("conflict-card", NAME).await;
    assert_eq!(injected(&app, "#view-conflicts").await, json!(0));
    app.click("keep-mine").await;
    app.wait_for("no-conflicts").await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;

    // History names the person by the markup, as text.
    app.click("nav-history").await;
    app.wait_for("history-row").await;
    let people = app.texts("[data-testid=\"history-person\"]").await;
    assert!(people.iter().any(|t| t == NAME), "{people:?}");
    assert_eq!(injected(&app, "#view-history").await, json!(0));
    assert_ne!(app.js("return document.title;").await, json!("pwned"));
    app.quit().await;

    // The device's token expires; an edit made meanwhile is kept and the app says what
    // to do, with a link to Settings.
    let (expiring, _) =
        server.admin(&["create-token", "--user", DEFAULT_USER, "--expires-in", "1s"]);
    let expiring = expiring.trim().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let app = App::launch(
        &display.name(),
        dir.path(),
        &server.url(),
        &expiring,
        "expired",
    )
    .await;
    app.create_person(&[("name", "Kept")]).await;
    app.click("sync-now").await;
    app.wait_contains("sync-state", "access token has expired")
        .await;
    app.wait_contains("pending-count", "1 change waiting").await;
    app.wait_contains("status-settings", "Open Settings").await;
    app.click("status-settings").await;
    app.wait_for("view-settings").await;
    let live = server.live("person").await;
    assert!(!live.values().any(|row| row["name"] == json!("Kept")));
    app.quit().await;
}
