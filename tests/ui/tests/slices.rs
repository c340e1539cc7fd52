//! UI test of partial sync: a subscription set in the app's Settings (a refused one shown
//! next to the form first), after which the list holds only that slice.

use roster_e2e::TestClient;
use roster_ui_tests::{Device, start_server};
use serde_json::json;

/// Another device puts three people in two cities on the server; the app pulls all
/// three; in Settings a subscription binding `user` is refused with the server's reason
/// and changes nothing, then `by_city` Paris is accepted and listed, and the People view
/// shows only the two Paris people; the server still holds all three.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_set_in_settings_leaves_only_its_slice_in_the_list() {
    let server = start_server();
    let other = TestClient::new(&server).await;
    for (name, city) in [("Ann", "Paris"), ("Bob", "Lyon"), ("Cy", "Paris")] {
        other.insert("person", json!({"name": name, "city": city}));
    }
    other.client.sync().await.unwrap();
    let device = Device::launch(&server, "slices").await;
    let app = &device.app;
    app.click("sync-now").await;
    app.wait_contains("result-count", "3 people").await;

    app.click("nav-settings").await;
    app.wait_contains("subscriptions-state", "all the people")
        .await;
    app.fill("subscribe-name", "by_city").await;
    app.fill("subscribe-params", "city=Paris, user=someone")
        .await;
    app.click("subscribe").await;
    app.wait_contains("subscribe-error", "bound by the server")
        .await;
    app.wait_contains("subscriptions-state", "all the people")
        .await;

    app.fill("subscribe-params", "city=Paris").await;
    app.click("subscribe").await;
    app.wait_contains("subscriptions-list", "by_city: city = Paris")
        .await;
    app.wait_contains("subscriptions-state", "only the people")
        .await;

    app.click("nav-records").await;
    app.wait_contains("result-count", "2 people").await;
    let rows = app.row_texts().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.contains("Paris")), "{rows:?}");
    assert!(!rows.iter().any(|r| r.contains("Bob")), "{rows:?}");
    assert_eq!(server.live("person").await.len(), 3);
    device.quit().await;
}
