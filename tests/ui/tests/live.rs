//! Live sync in the app: two windows on one server, both with a 10-minute sync interval
//! (so no interval round runs during the test), show "Live" in the status bar, and a
//! person saved in one shows in the other's list within 2 s, with no click; an edit
//! too.

use std::time::{Duration, Instant};

use roster_ui_tests::{App, TwoDevices, start_server};

/// The bound from the save in one window to the row in the other's list.
const SHOWN_WITHIN: Duration = Duration::from_secs(2);

/// Waits (polling the DOM, no click) until `app`'s list shows `name`; returns how long
/// that took from `since`.
async fn shown_after(app: &App, name: &str, since: Instant) -> Duration {
    app.eventually(&format!("the list shows {name}"), || async {
        app.row_texts()
            .await
            .iter()
            .any(|row| row.contains(name))
            .then(|| since.elapsed())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_saved_in_one_window_shows_in_the_other_within_two_seconds() {
    let server = start_server();
    let devices = TwoDevices::launch(&server, "live").await;
    let (first, second) = (&devices.first, &devices.second);
    first.wait_for("sync-live").await;
    second.wait_for("sync-live").await;

    first.create_person(&[("name", "Ada Lovelace")]).await;
    let saved = Instant::now();
    let took = shown_after(second, "Ada Lovelace", saved).await;
    assert!(took <= SHOWN_WITHIN, "shown after {took:?}");

    first.open_row("Ada Lovelace").await;
    first.fill_and_save(&[("name", "Ada King")]).await;
    let saved = Instant::now();
    let took = shown_after(second, "Ada King", saved).await;
    assert!(took <= SHOWN_WITHIN, "edit shown after {took:?}");
    second.screenshot("status-live").await;
    devices.quit().await;
}
