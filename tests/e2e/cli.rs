//! The real `roster` binary against a real server: the documented workflow, exit codes,
//! error output, and a conflict seen through the CLI.

use std::path::Path;

use roster_e2e::cli::{CliRun, run_roster};
use roster_e2e::{DEFAULT_USER, TestServer};
use roster_protocol::RowId;
use serde_json::{Value, json};

/// Runs a command that must succeed.
fn ok(dir: &Path, args: &[&str]) -> CliRun {
    let run = run_roster(dir, args, &[]);
    run.assert_exit(0);
    run
}

/// Runs a command that must fail with `code`, saying why on stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> CliRun {
    let run = run_roster(dir, args, &[]);
    run.assert_exit(code);
    run
}

/// Initialises a data dir for `server` and checks what `init --json` reports.
fn init(dir: &Path, server: &TestServer) {
    let url = server.url();
    let run = ok(
        dir,
        &[
            "init",
            "--server",
            &url,
            "--token",
            server.token(),
            "--json",
        ],
    );
    let out = run.json();
    assert_eq!(out["status"]["server_url"], json!(url));
    assert_eq!(out["status"]["pending"], json!(0));
    let tables: Vec<&str> = out["schema"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["person", "task"]);
    assert!(dir.join("roster.db").exists());
}

fn list(dir: &Path) -> Value {
    ok(dir, &["list", "--json"]).json()
}

fn show(dir: &Path, id: &str) -> Value {
    ok(dir, &["show", "--json", id]).json()
}

fn pending(dir: &Path) -> u64 {
    ok(dir, &["status", "--json"]).json()["pending"]
        .as_u64()
        .unwrap()
}

fn sync(dir: &Path) -> Value {
    ok(dir, &["sync", "--json"]).json()
}

/// Adds Jane (age 25) and returns her id.
fn add_jane(dir: &Path) -> String {
    let added = ok(dir, &["add", "name=Jane", "age=25", "--json"]).json();
    assert_eq!(added["fields"]["name"], json!("Jane"));
    assert_eq!(added["fields"]["age"], json!(25));
    assert_eq!(added["pending"], json!("insert"));
    let id = added["id"].as_str().expect("add --json returns an id");
    assert!(RowId::parse_str(id).is_ok(), "{id} is not a UUID");
    id.to_owned()
}

#[tokio::test]
async fn add_edit_sync_delete_across_two_data_dirs() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));

    // Plain-text init succeeds too.
    let run = ok(
        &one,
        &["init", "--server", &server.url(), "--token", server.token()],
    );
    assert!(run.stdout.contains("person"), "init output: {}", run.stdout);

    let id = add_jane(&one);
    let listed = list(&one);
    assert_eq!(listed["total"], json!(1));
    let records = listed["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], json!(id));
    assert_eq!(records[0]["fields"]["name"], json!("Jane"));
    assert_eq!(records[0]["fields"]["age"], json!(25));

    ok(&one, &["edit", &id, "age=32"]);
    let shown = show(&one, &id);
    assert_eq!(shown["id"], json!(id));
    assert_eq!(shown["fields"]["name"], json!("Jane"));
    assert_eq!(shown["fields"]["age"], json!(32));
    assert_eq!(
        shown["pending"],
        json!("insert"),
        "never synced, so still an insert"
    );
    assert_eq!(pending(&one), 1);
    assert!(
        server.live("person").await.is_empty(),
        "nothing reaches the server before sync"
    );

    let report = sync(&one);
    assert_eq!(report["uploaded"], json!(1));
    assert_eq!(report["conflicts_detected"], json!(0));
    assert_eq!(pending(&one), 0);
    assert_eq!(show(&one, &id)["pending"], Value::Null);
    let row_id = RowId::parse_str(&id).unwrap();
    let on_server = server.live("person").await;
    assert_eq!(on_server.len(), 1);
    assert_eq!(on_server[&row_id]["name"], json!("Jane"));
    assert_eq!(on_server[&row_id]["age"], json!(32));

    init(&two, &server);
    let report = sync(&two);
    assert_eq!(report["uploaded"], json!(0));
    assert_eq!(report["downloaded"], json!(1));
    let listed = list(&two);
    assert_eq!(listed["total"], json!(1));
    assert_eq!(listed["records"][0]["id"], json!(id));
    assert_eq!(listed["records"][0]["fields"]["name"], json!("Jane"));
    assert_eq!(listed["records"][0]["fields"]["age"], json!(32));
    assert_eq!(listed["records"][0]["pending"], Value::Null);
    assert_eq!(show(&two, &id), show(&one, &id));

    let run = ok(&one, &["delete", &id]);
    assert!(run.stdout.contains(&id), "delete output: {}", run.stdout);
    fails(&one, &["show", &id], 4);
    assert_eq!(pending(&one), 1);
    assert_eq!(sync(&one)["uploaded"], json!(1));
    assert_eq!(sync(&two)["downloaded"], json!(1));
    for dir in [&one, &two] {
        let listed = list(dir);
        assert_eq!(listed["total"], json!(0));
        assert_eq!(listed["records"], json!([]));
        fails(dir, &["show", &id], 4);
        assert_eq!(pending(dir), 0);
        let status = ok(dir, &["status", "--json"]).json();
        assert_eq!(status["pending"], json!(0));
        assert!(
            status["last_sync_ms"].is_i64(),
            "status after sync: {status}"
        );
    }
    let rows = server.rows().await;
    assert_eq!(rows.len(), 1);
    assert!(rows[&("person".to_owned(), row_id)].deleted);
    assert!(server.live("person").await.is_empty());
}

#[tokio::test]
async fn bad_input_gives_exit_code_2_and_changes_nothing() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &server);
    let id = add_jane(&dir);
    let before = show(&dir, &id);

    let run = fails(&dir, &["edit", &id, "age=old"], 2);
    assert!(run.stderr.contains("age"), "stderr: {}", run.stderr);
    let run = fails(&dir, &["edit", &id, "shoe=9"], 2);
    assert!(run.stderr.contains("shoe"), "stderr: {}", run.stderr);
    let run = fails(&dir, &["edit", &id, "name="], 2);
    assert!(run.stderr.contains("name"), "stderr: {}", run.stderr);
    let run = fails(&dir, &["edit", &id, "age"], 2);
    assert!(run.stderr.contains("FIELD=VALUE"), "stderr: {}", run.stderr);
    let run = fails(&dir, &["add", "age=3"], 2);
    assert!(run.stderr.contains("name"), "stderr: {}", run.stderr);
    let long = format!("name={}", "n".repeat(201));
    fails(&dir, &["add", &long], 2);

    fails(&dir, &["show", &RowId::now_v7().to_string()], 4);
    fails(&dir, &["edit", &RowId::now_v7().to_string(), "age=1"], 4);
    fails(&dir, &["delete", &RowId::now_v7().to_string()], 4);
    let run = fails(&dir, &["show", "not-a-uuid"], 2);
    assert!(run.stderr.contains("not-a-uuid"), "stderr: {}", run.stderr);

    // None of that touched the store.
    assert_eq!(show(&dir, &id), before);
    assert_eq!(list(&dir)["total"], json!(1));
    assert_eq!(pending(&dir), 1);

    // A second init of the same dir is refused and keeps the store.
    let client_id = ok(&dir, &["status", "--json"]).json()["client_id"].clone();
    let run = fails(
        &dir,
        &["init", "--server", &server.url(), "--token", server.token()],
        2,
    );
    assert!(run.stderr.contains("already"), "stderr: {}", run.stderr);
    assert_eq!(
        ok(&dir, &["status", "--json"]).json()["client_id"],
        client_id
    );
    assert_eq!(show(&dir, &id), before);

    // Commands on a dir without a store say to run init, and create nothing.
    let empty = tmp.path().join("empty");
    for args in [&["list"][..], &["status"], &["sync"], &["add", "name=X"]] {
        let run = fails(&empty, args, 2);
        assert!(
            run.stderr.contains("init"),
            "`roster {}` should say to run init: {}",
            run.args,
            run.stderr
        );
        assert!(!empty.join("roster.db").exists());
    }

    // A bad server URL is bad input; nothing is created.
    let other = tmp.path().join("other");
    fails(&other, &["init", "--server", "not a url"], 2);
    assert!(!other.join("roster.db").exists());

    // Nothing of the above reached the server.
    assert!(server.rows().await.is_empty());
}

#[tokio::test]
async fn unreachable_server_gives_exit_code_3_and_keeps_pending_edits() {
    let mut server = TestServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &server);
    let id = add_jane(&dir);
    assert_eq!(sync(&dir)["uploaded"], json!(1));
    ok(&dir, &["edit", &id, "age=33"]);
    assert_eq!(pending(&dir), 1);

    server.kill();
    let run = fails(&dir, &["sync"], 3);
    assert!(
        run.stderr.contains(&url),
        "stderr names the server: {}",
        run.stderr
    );
    assert_eq!(pending(&dir), 1);
    let shown = show(&dir, &id);
    assert_eq!(shown["fields"]["age"], json!(33));
    assert_eq!(shown["pending"], json!("update"));

    // Local work goes on offline.
    ok(&dir, &["edit", &id, "city=Bergen"]);
    assert_eq!(pending(&dir), 1);

    // init against a server that is down is exit 3 and leaves no store behind.
    let other = tmp.path().join("other");
    fails(&other, &["init", "--server", &url], 3);
    assert!(!other.join("roster.db").exists());

    // Once the server is back, the pending edit goes through.
    server.restart();
    assert_eq!(sync(&dir)["uploaded"], json!(1));
    assert_eq!(pending(&dir), 0);
    let row = &server.live("person").await[&RowId::parse_str(&id).unwrap()];
    assert_eq!(row["age"], json!(33));
    assert_eq!(row["city"], json!("Bergen"));
}

#[tokio::test]
async fn refused_request_gives_exit_code_5_and_keeps_pending_edits() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // A client whose schema declares a table the server does not have.
    let schema_file = tmp.path().join("schema.json");
    std::fs::write(
        &schema_file,
        json!({"tables": [{"name": "pet", "columns": [
            {"name": "name", "type": "text", "required": true}
        ]}]})
        .to_string(),
    )
    .unwrap();
    let dir = tmp.path().join("data");
    ok(
        &dir,
        &[
            "init",
            "--server",
            &server.url(),
            "--token",
            server.token(),
            "--schema",
            schema_file.to_str().unwrap(),
        ],
    );
    ok(&dir, &["add", "name=Rex"]);
    let run = fails(&dir, &["sync", "--json"], 5);
    let error = run.error_json();
    assert_eq!(
        error["error"]["kind"],
        json!("server"),
        "stderr: {}",
        run.stderr
    );
    assert!(
        error["error"]["message"].as_str().unwrap().contains("pet"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(pending(&dir), 1);
    assert_eq!(list(&dir)["total"], json!(1));
    assert!(server.rows().await.is_empty());
}

/// A device whose token expired is told so in plain words, exits 5 like any refusal, and
/// keeps its pending edit for when a new token is set.
#[tokio::test]
async fn an_expired_token_says_so_and_keeps_pending_edits() {
    let server = TestServer::start();
    let (expired, _) =
        server.admin(&["create-token", "--user", DEFAULT_USER, "--expires-in", "0s"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &server);
    ok(&dir, &["add", "name=Rex"]);
    let run = fails(&dir, &["sync", "--json", "--token", expired.trim()], 5);
    let message = run.error_json()["error"]["message"].to_string();
    assert!(message.contains("expired"), "stderr: {}", run.stderr);
    assert_eq!(pending(&dir), 1);
    assert!(server.rows().await.is_empty());
}

#[tokio::test]
async fn json_errors_are_objects_with_a_kind() {
    let mut server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &server);
    let id = add_jane(&dir);

    let expect = |args: &[&str], code: i32, kind: &str| {
        let run = fails(&dir, args, code);
        assert!(
            run.stdout.is_empty(),
            "`roster {}` stdout: {}",
            run.args,
            run.stdout
        );
        let error = run.error_json();
        assert_eq!(
            error["error"]["kind"],
            json!(kind),
            "`roster {}`: {error}",
            run.args
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        error
    };
    let missing = RowId::now_v7().to_string();
    let error = expect(&["show", "--json", &missing], 4, "not_found");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&missing)
    );
    let error = expect(&["show", "--json", "not-a-uuid"], 2, "invalid");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-a-uuid")
    );
    expect(&["add", "--json", "age=3"], 2, "invalid");
    // Exit code 2 with some kind: the assertion on the exact kind is in
    // `field_errors_have_kind_invalid`.
    let run = fails(&dir, &["edit", "--json", &id, "age=old"], 2);
    assert!(
        run.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("age")
    );

    server.kill();
    expect(&["sync", "--json"], 3, "unreachable");
    assert_eq!(pending(&dir), 1);
}

#[tokio::test]
async fn field_errors_have_kind_invalid() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &server);
    let id = add_jane(&dir);
    for args in [
        &["edit", "--json", &id, "age=old"][..],
        &["edit", "--json", &id, "shoe=9"],
        &["add", "--json", "name=X", "age=old"],
    ] {
        let run = fails(&dir, args, 2);
        assert_eq!(
            run.error_json()["error"]["kind"],
            json!("invalid"),
            "`roster {}`",
            run.args
        );
    }
}

#[tokio::test]
async fn conflicting_edits_through_the_cli() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    init(&one, &server);
    init(&two, &server);
    let id = add_jane(&one);
    sync(&one);
    assert_eq!(sync(&two)["downloaded"], json!(1));
    assert_eq!(show(&two, &id)["fields"]["age"], json!(25));

    ok(&one, &["edit", &id, "age=31"]);
    ok(&two, &["edit", &id, "age=40"]);
    let first = sync(&one);
    assert_eq!(first["uploaded"], json!(1));
    assert_eq!(first["conflicts_detected"], json!(0));
    let second = sync(&two);
    assert_eq!(second["uploaded"], json!(1));
    assert_eq!(second["conflicts_detected"], json!(1));

    let conflicts = ok(&two, &["conflicts", "--history", "--json"]).json();
    let conflicts = conflicts.as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let conflict = &conflicts[0];
    assert_eq!(conflict["kind"], json!("both_updated"));
    assert_eq!(conflict["resolution"], json!("server_wins"));
    assert_eq!(conflict["table"], json!("person"));
    assert_eq!(conflict["id"], json!(id));
    assert_eq!(conflict["client_row"]["age"], json!(40));
    assert_eq!(
        ok(&one, &["conflicts", "--history", "--json"]).json(),
        json!([])
    );
    let text = ok(&two, &["conflicts", "--history"]);
    assert!(text.stdout.contains("both_updated"), "{}", text.stdout);
    // Server-wins left nothing waiting for a person.
    assert_eq!(ok(&two, &["conflicts", "--json"]).json(), json!([]));
    let log = ok(&two, &["conflicts", "--server", "--json"]).json();
    assert_eq!(log.as_array().map(Vec::len), Some(1), "{log}");
    assert_eq!(log[0]["kind"], json!("both_updated"));

    // Server wins: both dirs show the first writer's value and nothing is pending.
    sync(&one);
    let (a, b) = (show(&one, &id), show(&two, &id));
    assert_eq!(a, b);
    assert_eq!(a["fields"]["age"], json!(31));
    assert_eq!(a["pending"], Value::Null);
    assert_eq!(pending(&one), 0);
    assert_eq!(pending(&two), 0);
    assert_eq!(
        server.live("person").await[&RowId::parse_str(&id).unwrap()]["age"],
        json!(31)
    );
    let log = server.conflict_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].2, "both_updated");
    assert_eq!(log[0].3, "server_wins");
}

/// A deferred conflict through the CLI: `conflicts` shows mine, theirs and the base;
/// `resolve ... merge --theirs F --set F=V` picks field by field; the next sync pushes
/// it and the other device receives it.
#[tokio::test]
async fn deferred_conflict_resolved_field_by_field_through_the_cli() {
    let config = roster_e2e::TWO_TABLE_CONFIG.replacen(
        "policy = \"server-wins\"",
        "policy = \"defer-to-client\"",
        1,
    );
    let server = TestServer::start_with_config(&config);
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    init(&one, &server);
    init(&two, &server);
    let id = add_jane(&one);
    sync(&one);
    sync(&two);
    ok(&one, &["edit", &id, "age=31", "city=Oslo"]);
    ok(&two, &["edit", &id, "age=40", "city=Rome"]);
    sync(&one);
    let report = sync(&two);
    assert_eq!(report["conflicts_deferred"], json!(1));
    assert_eq!(
        show(&two, &id)["fields"]["age"],
        json!(40),
        "my edit stays visible"
    );

    let open = ok(&two, &["conflicts", "--json"]).json();
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open[0]["local"]["age"], json!(40));
    assert_eq!(open[0]["remote"]["age"], json!(31));
    assert_eq!(open[0]["base"]["age"], json!(25));
    assert_eq!(open[0]["differing_fields"], json!(["age", "city"]));
    let text = ok(&two, &["conflicts"]).stdout;
    assert!(text.contains("Oslo") && text.contains("Rome"), "{text}");

    fails(&two, &["resolve", &id, "keep-mine", "--theirs", "age"], 2);
    fails(&two, &["resolve", &id, "merge", "--theirs", "shoe"], 2);
    ok(
        &two,
        &[
            "resolve",
            &id,
            "merge",
            "--theirs",
            "age",
            "--set",
            "email=j@x.org",
        ],
    );
    assert_eq!(ok(&two, &["conflicts", "--json"]).json(), json!([]));
    fails(&two, &["resolve", &id, "keep-mine"], 2);

    let pushed = sync(&two);
    assert_eq!(
        (
            pushed["uploaded"].clone(),
            pushed["conflicts_detected"].clone()
        ),
        (json!(1), json!(0))
    );
    sync(&one);
    for dir in [&one, &two] {
        let row = show(dir, &id);
        assert_eq!(row["fields"]["age"], json!(31), "theirs");
        assert_eq!(row["fields"]["city"], json!("Rome"), "mine");
        assert_eq!(row["fields"]["email"], json!("j@x.org"), "set");
    }
    let history = ok(&two, &["conflicts", "--history", "--json"]).json();
    assert_eq!(history[0]["resolution"], json!("merged"));
    assert_eq!(history[1]["resolution"], json!("deferred"));
}

#[tokio::test]
async fn import_reports_refused_rows_and_export_round_trips_through_the_server() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a, &server);
    init(&b, &server);
    let csv = tmp.path().join("in.csv");
    std::fs::write(
        &csv,
        "name,age,city\nJane,25,Lyon\n,3,Nowhere\nKen,x,Rome\n\"Lee, Jr.\",40,\"Nice\nFrance\"\n",
    )
    .unwrap();
    let report = ok(&a, &["import", csv.to_str().unwrap(), "--json"]).json();
    assert_eq!(report["rows"], json!(4));
    assert_eq!(report["imported"], json!(2));
    let refused = report["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["row"], json!(2));
    assert_eq!(refused[0]["reasons"], json!(["Name is required"]));
    assert_eq!(refused[1]["row"], json!(3));
    assert_eq!(refused[1]["reasons"], json!(["Age must be a whole number"]));
    // A second import adds the same people again (an import never overwrites); its text
    // output names each refused row.
    let text = ok(&a, &["import", csv.to_str().unwrap()]);
    assert!(
        text.stdout
            .contains("row 3 (Ken): Age must be a whole number"),
        "{}",
        text.stdout
    );
    ok(
        &a,
        &[
            "delete",
            "--json",
            list(&a)["records"][3]["id"].as_str().unwrap(),
        ],
    );
    sync(&a);

    // The other data dir exports what it pulled; a fresh one imports that file back.
    sync(&b);
    let exported = tmp.path().join("out.vcf");
    let run = ok(&b, &["export", exported.to_str().unwrap(), "--json"]).json();
    assert_eq!(run["exported"], json!(3));
    let fresh = tmp.path().join("fresh");
    init(&fresh, &server);
    let report = ok(&fresh, &["import", exported.to_str().unwrap(), "--json"]).json();
    assert_eq!(report["imported"], json!(3));
    let values = |dir: &Path| -> Vec<Value> {
        let mut rows: Vec<Value> = list(dir)["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["fields"].clone())
            .collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    assert_eq!(values(&fresh), values(&b));
    assert!(
        values(&b)
            .iter()
            .any(|r| r["city"] == json!("Nice\nFrance"))
    );

    // Bad files and unknown formats change nothing and exit with 2.
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "name\nX\n").unwrap();
    fails(&fresh, &["import", bad.to_str().unwrap()], 2);
    fails(
        &fresh,
        &["import", tmp.path().join("missing.csv").to_str().unwrap()],
        2,
    );
    assert_eq!(list(&fresh)["total"], json!(3));
}
