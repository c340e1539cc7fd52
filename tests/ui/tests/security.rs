//! The app's security surface, through the real window:
//! * where no keyring keeps the store's key, the unlock screen asks for a passphrase
//!   (chosen twice the first time, at least 8 characters); the store is then encrypted,
//!   a restart asks for it again, and a wrong one is refused in words;
//! * the connect screen refuses cleartext `http://` to another machine until "Allow
//!   unencrypted HTTP" is ticked, which shows a warning; a CA file that cannot be read
//!   is named next to its field.

use roster_client::LocalStore;
use roster_e2e::DEFAULT_USER;
use roster_ui_tests::{App, Display, start_server};

#[tokio::test(flavor = "multi_thread")]
async fn without_a_keyring_a_passphrase_unlocks_the_data_and_cleartext_needs_consent() {
    let display = Display::start();
    let server = start_server();
    let (_, token) = server.create_token(DEFAULT_USER);
    let dir = tempfile::tempdir().unwrap();

    // First start, no keyring: choose a passphrase.
    let app = App::launch_without_key(&display.name(), dir.path(), "locked").await;
    app.wait_for("view-unlock").await;
    app.wait_contains("unlock-reason", "Choose a passphrase")
        .await;
    app.fill("unlock-passphrase", "short").await;
    app.fill("unlock-confirm", "short").await;
    app.click("unlock").await;
    app.wait_contains("error-unlock-passphrase", "at least 8")
        .await;
    app.fill("unlock-passphrase", "correct horse battery").await;
    app.fill("unlock-confirm", "correct horse battery!").await;
    app.click("unlock").await;
    app.wait_contains("error-unlock-passphrase", "differ").await;
    app.fill("unlock-confirm", "correct horse battery").await;
    app.click("unlock").await;
    app.wait_for("view-connect").await;
    assert!(LocalStore::is_encrypted(dir.path()).unwrap());

    // Cleartext to an address that is not loopback (0.0.0.0 reaches this machine's
    // server) is refused until allowed, with a warning shown while allowed.
    let remote = format!("http://0.0.0.0:{}", server.addr().port());
    app.fill("connect-server_url", &remote).await;
    app.fill("connect-token", &token).await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "is not encrypted")
        .await;
    app.wait_gone("warning-connect-allow_http").await;
    app.click("connect-allow_http").await;
    app.wait_contains("warning-connect-allow_http", "anyone on the network")
        .await;
    app.click("test-connection").await;
    app.wait_contains("connect-result", "Connected").await;
    app.fill("connect-ca_cert", "/nonexistent/roster-ca.pem")
        .await;
    app.click("test-connection").await;
    app.wait_contains(
        "error-connect-ca_cert",
        "Can't read the CA certificate file",
    )
    .await;
    app.screenshot("connect-cleartext").await;
    app.quit().await;

    // The next start asks for the passphrase; a wrong one is refused in words.
    let app = App::launch_without_key(&display.name(), dir.path(), "locked-again").await;
    app.wait_contains("unlock-reason", "Enter its passphrase")
        .await;
    app.fill("unlock-passphrase", "wrong horse battery").await;
    app.click("unlock").await;
    app.wait_contains("error-unlock-passphrase", "does not open")
        .await;
    app.fill("unlock-passphrase", "correct horse battery").await;
    app.click("unlock").await;
    app.wait_for("view-connect").await;
    app.quit().await;
}
