//! Schema evolution in the app: the server gains a column while the app runs; after the
//! next sync (started by another device's write, heard on the change feed) the editor
//! shows the column, with no restart, and saves a value in it that reaches the server.

use roster_e2e::TestClient;
use roster_ui_tests::{Device, SERVER_CONFIG, start_server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_column_the_server_gains_shows_in_the_editor_after_the_next_sync_and_saves() {
    let mut server = start_server();
    let device = Device::launch(&server, "schema").await;
    let app = &device.app;
    app.create_person(&[("name", "Ada Lovelace")]).await;
    app.wait_until_server_holds(&server, "Ada Lovelace").await;
    app.click("close-editor").await;

    let notes = r#"{ name = "notes", type = "text" },"#;
    assert!(SERVER_CONFIG.contains(notes));
    server.restart_with_config(&SERVER_CONFIG.replace(
        notes,
        &format!("{notes}\n  {{ name = \"nickname\", type = \"text\", max_len = 50 }},"),
    ));
    let other = TestClient::new(&server).await;
    other.insert(
        "person",
        json!({"name": "Grace Hopper", "nickname": "Amazing Grace"}),
    );
    other.client.sync().await.unwrap();

    app.eventually("the other device's row is listed", || async {
        app.row_texts()
            .await
            .iter()
            .any(|row| row.contains("Grace Hopper"))
            .then_some(())
    })
    .await;
    app.open_row("Ada Lovelace").await;
    app.wait_for("field-nickname").await;
    app.fill_and_save(&[("nickname", "Countess")]).await;
    app.eventually("the new column's value reached the server", || async {
        let live = server.live("person").await;
        live.values()
            .any(|row| row["name"] == json!("Ada Lovelace") && row["nickname"] == json!("Countess"))
            .then_some(())
    })
    .await;
    app.open_row("Grace Hopper").await;
    assert_eq!(app.value("field-nickname").await, "Amazing Grace");
    device.quit().await;
}
