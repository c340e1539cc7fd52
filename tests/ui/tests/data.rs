//! UI tests of moving data in and out and taking changes back: a CSV and a vCard file
//! imported through the Import/Export view (with the per-row report of refused rows),
//! everyone exported back to CSV and vCard, the Undo of an edit, and a delete restored
//! from the Trash, each checked on the server after a sync; the email's Write link.

use roster_ui_tests::{Device, start_server};
use serde_json::json;

/// Four CSV rows (one refused for two reasons) and two vCards; export, undo, trash.
#[tokio::test(flavor = "multi_thread")]
async fn import_export_undo_and_trash() {
    let server = start_server();
    let files = tempfile::tempdir().unwrap();
    let device = Device::launch(&server, "data").await;
    let app = &device.app;

    // A CSV from a spreadsheet: header names in other spellings, one unknown column,
    // one row breaking two rules.
    let csv = files.path().join("people.csv");
    std::fs::write(
        &csv,
        "Name,E-mail,Age,City,Shoe size\n\
         Ada,ada@example.org,36,London,40\n\
         Bob,bob@example.org,41,Oslo,44\n\
         Cy,not-an-email,old,Rome,39\n\
         \"Dee, Jr.\",,29,\"Paris, FR\",38\n",
    )
    .unwrap();
    app.click("nav-exchange").await;
    app.fill("import-path", csv.to_str().unwrap()).await;
    app.click("import-run").await;
    let result = app
        .wait_contains("import-result", "Imported 3 people")
        .await;
    assert!(result.contains("of 4 rows"), "{result}");
    assert!(result.contains("Shoe size"), "{result}");
    let refused = app.texts("[data-testid=\"import-refused-row\"]").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("Cy"), "{refused:?}");
    assert!(
        refused[0].contains("Email must look like name@example.org"),
        "{refused:?}"
    );
    assert!(
        refused[0].contains("Age must be a whole number"),
        "{refused:?}"
    );
    app.screenshot("import").await;

    // A vCard file from a contacts app (version 3.0, folded line, escaped comma).
    let vcf = files.path().join("contacts.vcf");
    std::fs::write(
        &vcf,
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Eve;Ed;;;\r\nFN:Ed Eve\r\nTEL;TYPE=cell:+33 1 23 45\r\n 67 89\r\n\
         ADR;TYPE=home:;;;Lyon\\, FR;;;\r\nEND:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Flo\r\n\
         EMAIL:flo@example.org\r\nEND:VCARD\r\n",
    )
    .unwrap();
    // This one through the file picker (WebDriver sets the file as a person picks it).
    app.fill("import-path", "").await;
    app.find("import-picker")
        .await
        .send_keys(vcf.to_str().unwrap())
        .await
        .unwrap();
    app.click("import-run").await;
    app.wait_contains("import-result", "Imported 2 people of 2 rows")
        .await;
    app.wait_gone("import-refused").await;

    // A path that does not exist says so and imports nothing.
    app.fill(
        "import-path",
        files.path().join("nope.csv").to_str().unwrap(),
    )
    .await;
    app.click("import-run").await;
    app.wait_contains("import-error", "nope.csv").await;

    // Everyone exported back, in both formats.
    let out_csv = files.path().join("out.csv");
    app.fill("export-path", out_csv.to_str().unwrap()).await;
    app.click("export-run").await;
    app.wait_contains("export-result", "Exported 5 people")
        .await;
    let exported = std::fs::read_to_string(&out_csv).unwrap();
    assert!(
        exported.starts_with("name,email,phone,age,city,notes\n"),
        "{exported}"
    );
    assert!(
        exported.contains("\"Dee, Jr.\",,,29,\"Paris, FR\","),
        "{exported}"
    );
    assert!(
        exported.contains("Ed Eve,,+33 1 23 4567 89,,\"Lyon, FR\","),
        "{exported}"
    );
    let out_vcf = files.path().join("out.vcf");
    app.fill("export-path", out_vcf.to_str().unwrap()).await;
    app.click("export-run").await;
    app.wait_contains("export-result", "Exported 5 people")
        .await;
    let cards = std::fs::read_to_string(&out_vcf).unwrap();
    assert_eq!(cards.matches("BEGIN:VCARD").count(), 5, "{cards}");
    assert!(cards.contains("FN:Flo\r\n"), "{cards}");

    // Only the people the People view's search finds.
    app.search("Eve").await;
    app.wait_contains("result-count", "1 person matches").await;
    app.click("nav-exchange").await;
    app.wait_contains("export-matching-label", "\u{201c}Eve\u{201d}")
        .await;
    app.click("export-matching").await;
    let some = files.path().join("some.csv");
    app.fill("export-path", some.to_str().unwrap()).await;
    app.click("export-run").await;
    app.wait_contains("export-result", "Exported 1 person")
        .await;
    let exported = std::fs::read_to_string(&some).unwrap();
    assert_eq!(exported.lines().count(), 2, "{exported}");
    assert!(exported.contains("Ed Eve"), "{exported}");
    app.search("").await;

    // The imported people reach the server.
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    let live = server.live("person").await;
    let mut names: Vec<String> = live
        .values()
        .map(|row| row["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Ada", "Bob", "Dee, Jr.", "Ed Eve", "Flo"]);

    // Undo of an edit puts the values from before it back, on the server too.
    app.click("nav-records").await;
    app.open_row("Ada").await;
    // A saved email gets a Write link (mailto:); an empty phone no Call link.
    app.wait_contains("open-email", "Write").await;
    app.wait_gone("open-phone").await;
    app.fill_and_save(&[("city", "Paris")]).await;
    app.wait_contains("toast-action", "Undo").await;
    app.click("toast-action").await;
    app.wait_contains("toast-text", "Undid").await;
    app.eventually("the editor shows the city from before", || async {
        (app.value("field-city").await == "London").then_some(())
    })
    .await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    let live = server.live("person").await;
    assert!(
        live.values()
            .any(|row| row["name"] == json!("Ada") && row["city"] == json!("London")),
        "{live:?}"
    );

    // A delete that reached the server is restored from the Trash, everywhere.
    app.open_row("Bob").await;
    app.click("delete").await;
    app.click("confirm-ok").await;
    app.wait_gone("editor").await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    let live = server.live("person").await;
    assert!(!live.values().any(|row| row["name"] == json!("Bob")));
    app.click("nav-trash").await;
    app.wait_contains("trash-item", "Bob").await;
    app.screenshot("trash").await;
    app.click("trash-restore").await;
    app.wait_for("no-trash").await;
    app.click("sync-now").await;
    app.wait_contains("pending-count", "No changes waiting")
        .await;
    let live = server.live("person").await;
    assert!(
        live.values()
            .any(|row| row["name"] == json!("Bob") && row["city"] == json!("Oslo")),
        "{live:?}"
    );
    app.click("nav-records").await;
    app.wait_text("record-list", "shows Bob again", |t| t.contains("Bob"))
        .await;
    device.quit().await;
}
