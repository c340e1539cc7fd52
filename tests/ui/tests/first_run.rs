//! The first run of an installed app: started without `ROSTER_SERVER_URL` and
//! `ROSTER_TOKEN`, it shows the connect screen; "Test connection" names what is wrong;
//! "Work offline for now" lets a person add people, which move to the server chosen later
//! in Settings; a revoked token shows in plain words with a link to Settings; "Reset local
//! data" warns with the count of waiting changes. The same screen connects to an existing
//! Azure Mobile Apps backend.

use std::io::{Read, Write};
use std::net::TcpListener;

use roster_e2e::ama_js::AmaBackend;
use roster_e2e::{DEFAULT_USER, TestClient};
use roster_protocol::{ConflictPolicy, Schema};
use roster_ui_tests::{App, Display, free_port, start_server};
use serde_json::json;

/// An HTTP server on 127.0.0.1 that answers every request with a web page: something
/// listens, but it is not a Roster server. Returns its URL.
fn not_roster_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "<html><body>It works!</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_without_environment_connects_through_the_connect_screen() {
    let display = Display::start();
    let server = start_server();
    // Another device already put someone on the server.
    let other = TestClient::new(&server).await;
    other.insert("person", json!({"name": "Server Sam", "city": "Oslo"}));
    other.client.sync().await.unwrap();
    let (token_id, token) = server.create_token(DEFAULT_USER);

    let dir = tempfile::tempdir().unwrap();
    let app = App::launch_installed(&display.name(), dir.path(), "first-run").await;
    app.wait_for("view-connect").await;
    app.wait_gone("view-records").await;

    // Test connection says what is wrong, in words.
    app.fill(
        "connect-server_url",
        &format!("http://127.0.0.1:{}", free_port()),
    )
    .await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "Can't reach a server")
        .await;
    app.fill("connect-server_url", &not_roster_server()).await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "not a Roster server")
        .await;
    app.fill("connect-server_url", &server.url()).await;
    app.fill("connect-token", "rst_wrong").await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "does not accept this access token")
        .await;
    app.fill("connect-token", &token).await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "Connected").await;
    app.screenshot("connect").await;

    // Work offline for now: people added meanwhile stay on this device.
    app.click("work-offline").await;
    app.wait_for("view-records").await;
    app.wait_contains("sync-state", "Not connected").await;
    app.create_person(&[("name", "Offline Olga"), ("city", "Lyon")])
        .await;
    app.wait_contains("pending-count", "1 change waiting").await;
    app.wait_contains("status-settings", "Connect").await;

    // Later, Settings connects; Olga moves to the server and Sam arrives.
    app.click("status-settings").await;
    app.wait_for("view-settings").await;
    app.fill("setting-server_url", &server.url()).await;
    app.fill("setting-token", &token).await;
    app.click("switch-server").await;
    app.wait_for("view-records").await;
    app.wait_contains("result-count", "2 people").await;
    app.wait_text("record-list", "shows Sam and Olga", |t| {
        t.contains("Server Sam") && t.contains("Offline Olga")
    })
    .await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    app.wait_contains("sync-state", "Synced").await;
    let live = server.live("person").await;
    assert!(
        live.values()
            .any(|row| row["name"] == json!("Offline Olga")),
        "{live:?}"
    );

    // The choice survives a restart: no connect screen, still synced.
    let app = app.restart().await;
    app.wait_for("view-records").await;
    app.wait_contains("result-count", "2 people").await;

    // A revoked token: plain words and a way to Settings.
    server.revoke_token(token_id);
    app.create_person(&[("name", "Refused Rita")]).await;
    app.wait_contains("sync-state", "did not accept this device's access token")
        .await;
    app.wait_contains("status-settings", "Open Settings").await;

    // Reset warns with the number of changes that would be lost; cancel keeps them.
    app.click("status-settings").await;
    app.click("reset-local").await;
    app.wait_contains("confirm-dialog", "1 change has not reached the server yet")
        .await;
    app.click("confirm-cancel").await;
    app.wait_gone("confirm-dialog").await;
    app.click("nav-records").await;
    app.wait_contains("result-count", "3 people").await;
    app.quit().await;
}

/// The connect screen's other kind of server: an existing Azure Mobile Apps backend (the
/// real `azure-mobile-apps` 4.0.2, `tests/ama-js/server.js`), which serves no schema, so
/// the screen asks for a schema file. The check reaches the backend's table, its rows
/// arrive, the status says the app polls (no live feed there), an edit made in the app
/// reaches the backend's database, and Settings shows the server kind.
#[tokio::test(flavor = "multi_thread")]
async fn an_azure_mobile_apps_backend_connects_through_the_connect_screen() {
    let display = Display::start();
    let backend = AmaBackend::start();
    let other = TestClient::of_ama_backend(&backend.url(), ConflictPolicy::ServerWins).await;
    other.insert("person", json!({"name": "Ama Alice", "city": "Porto"}));
    other.client.sync().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("person.json");
    std::fs::write(
        &schema_file,
        serde_json::to_string(&Schema::default_person()).unwrap(),
    )
    .unwrap();

    let app = App::launch_installed(&display.name(), &dir.path().join("data"), "ama").await;
    app.wait_for("view-connect").await;
    app.fill("connect-server_url", &backend.url()).await;
    // As a Roster server it is refused; as an AMA backend it needs the schema file.
    app.click("test-connection").await;
    app.wait_contains("connect-result", "not a Roster server")
        .await;
    app.find("connect-protocol")
        .await
        .select_by_value("azure-mobile-apps")
        .await
        .unwrap();
    app.wait_contains("hint-connect-protocol", "no live changes")
        .await;
    app.click("test-connection").await;
    app.wait_contains("error-connect-schema_file", "schema file")
        .await;
    app.fill("connect-schema_file", schema_file.to_str().unwrap())
        .await;
    app.click("test-connection").await;
    app.wait_contains(
        "connect-result",
        "Azure Mobile Apps backend serves every table",
    )
    .await;

    app.click("connect").await;
    app.wait_for("view-records").await;
    app.wait_text("record-list", "shows Alice", |t| t.contains("Ama Alice"))
        .await;
    app.wait_contains("sync-polling", "Polling every 30 s")
        .await;
    assert_eq!(
        app.js("return document.querySelector('[data-testid=\"sync-live\"]').hidden;")
            .await,
        json!(true),
        "an AMA backend has no live feed"
    );

    // An edit in the app reaches the backend; one made on the backend arrives at the
    // next round ("Sync now" here, instead of waiting for the interval).
    app.open_row("Ama Alice").await;
    app.fill_and_save(&[("city", "Lisbon")]).await;
    app.eventually("the edit reached the backend", || async {
        backend
            .live_rows()
            .values()
            .any(|row| row["name"] == json!("Ama Alice") && row["city"] == json!("Lisbon"))
            .then_some(())
    })
    .await;
    other.insert("person", json!({"name": "Ama Bob"}));
    other.client.sync().await.unwrap();
    app.eventually("Bob arrived", || async {
        if app.text("record-list").await.contains("Ama Bob") {
            return Some(());
        }
        // A press while a round runs does nothing: press again after it.
        app.js("document.querySelector('[data-testid=\"sync-now\"]').click();")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        None
    })
    .await;

    // Settings shows the kind of server and its schema file.
    app.click("nav-settings").await;
    app.wait_for("view-settings").await;
    assert_eq!(app.value("setting-protocol").await, "azure-mobile-apps");
    assert_eq!(
        app.value("setting-schema_file").await,
        schema_file.to_str().unwrap()
    );
    app.quit().await;
}
