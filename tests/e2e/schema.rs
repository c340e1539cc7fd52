//! Schema evolution end to end: the server's owner changes the config's tables and
//! restarts the server; installed devices follow on their next sync without losing a
//! pending edit or an open conflict and without downloading their rows again; a device
//! that has not followed yet never nulls a column it was not told about; a change stored
//! rows or devices cannot follow is refused at start, naming the column.

use roster_client::Choice;
use roster_e2e::{TestClient, TestServer, assert_converged, obj};
use roster_protocol::{
    ChangeOp, PROTOCOL_VERSION, SCHEMA_PATH, SyncRequest, SyncResponse, VersionedSchema,
};
use serde_json::{Value, json};

/// The person table with `extra` columns appended and conflicts deferred to devices.
fn person_config(extra: &str) -> String {
    format!(
        r#"
[[tables]]
name = "person"
policy = "defer-to-client"
columns = [
  {{ name = "name", type = "text", required = true, max_len = 200 }},
  {{ name = "email", type = "text" }},
  {{ name = "city", type = "text", max_len = 100 }},
  {{ name = "age", type = "integer" }},
{extra}
]
"#
    )
}

/// A column `nickname` (optional) and a required `level` with a default.
const NEW_COLUMNS: &str = r#"
  { name = "nickname", type = "text" },
  { name = "level", type = "integer", required = true, default = 1 },
"#;

/// The schema `server` serves at `/v1/schema`, with its version and renames.
async fn served_schema(server: &TestServer) -> VersionedSchema {
    server
        .http()
        .get(format!("{}{SCHEMA_PATH}", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn served_version(server: &TestServer) -> u64 {
    served_schema(server).await.version
}

fn fields(value: Value) -> roster_protocol::Fields {
    obj(value)
}

/// Two devices hold pending edits and one an open conflict when the server gains two
/// columns: both follow on their next sync, the edits arrive, the conflict keeps its
/// three versions (with the new columns) and is resolved with a value in a new column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_while_devices_hold_edits_and_a_conflict_reaches_every_device() {
    let mut server = TestServer::start_with_config(&person_config(""));
    assert_eq!(served_version(&server).await, 1);
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let disputed = a.insert("person", json!({"name": "Ann"}));
    let edited = a.insert("person", json!({"name": "Bob"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    // An open conflict on b, and a pending edit on each device.
    a.update("person", disputed, json!({"city": "Oslo"}));
    a.client.sync().await.unwrap();
    b.update("person", disputed, json!({"city": "Rome"}));
    b.client.sync().await.unwrap();
    assert_eq!(b.client.store().open_conflicts().unwrap().len(), 1);
    a.update("person", edited, json!({"email": "bob@example.org"}));
    let inserted = b.insert("person", json!({"name": "Cy"}));

    server.restart_with_config(&person_config(NEW_COLUMNS));
    assert_eq!(served_version(&server).await, 2);
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    for device in [&a, &b] {
        assert_eq!(device.client.store().schema_version().unwrap(), 2);
        assert_eq!(device.pending(), 0, "the edits arrived");
    }
    let open = b.client.store().open_conflicts().unwrap();
    assert_eq!(open.len(), 1, "the conflict survived the migration");
    for side in [&open[0].local, &open[0].remote, &open[0].base] {
        let side = side.as_ref().unwrap();
        assert_eq!(side["nickname"], Value::Null, "{side:?}");
        assert_eq!(side["level"], json!(1), "{side:?}");
    }
    let mut merged = open[0].local.clone().unwrap();
    merged.insert("nickname".into(), json!("Annie"));
    b.client
        .store()
        .resolve_conflict("person", disputed, Choice::Merge(merged))
        .unwrap();
    b.client.sync().await.unwrap();
    a.client.sync().await.unwrap();

    let live = server.live("person").await;
    assert_eq!(live[&disputed]["nickname"], json!("Annie"));
    assert_eq!(live[&disputed]["city"], json!("Rome"));
    assert_eq!(live[&edited]["email"], json!("bob@example.org"));
    assert!(live.contains_key(&inserted));
    assert_converged(&server, "person", &[&a, &b]).await;
    assert_eq!(a.live("person")[&edited]["level"], json!(1));
    assert!(
        b.client.store().conflict_history(10).unwrap().len() >= 2,
        "the history kept the conflict and the choice"
    );
}

/// A device that has not followed the new schema yet pushes rows without the new
/// column, through the engine and as a raw request: the server keeps the column's value
/// another device gave it, and the device takes it in when it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_has_not_followed_keeps_a_column_it_never_knew() {
    let mut server = TestServer::start_with_config(&person_config(""));
    let old = TestClient::new(&server).await;
    let new = TestClient::new(&server).await;
    let row = old.insert("person", json!({"name": "Ann"}));
    let untouched = old.insert("person", json!({"name": "Bob"}));
    old.client.sync().await.unwrap();
    new.client.sync().await.unwrap();
    old.update("person", row, json!({"city": "Oslo"}));

    server.restart_with_config(&person_config(NEW_COLUMNS));
    new.client.sync().await.unwrap();
    new.update("person", row, json!({"nickname": "Annie"}));
    new.update("person", untouched, json!({"nickname": "Bobby"}));
    new.client.sync().await.unwrap();

    // An application that predates schema versions: an update of the current version
    // without the new columns is acknowledged with the values the server kept.
    let stored = server.rows().await;
    let version = stored[&("person".to_owned(), untouched)].version;
    let request = SyncRequest {
        protocol: PROTOCOL_VERSION,
        client_id: uuid::Uuid::now_v7(),
        since: 0,
        changes: vec![roster_protocol::Change {
            table: "person".into(),
            id: untouched,
            op: ChangeOp::Update,
            base_version: Some(version),
            fields: Some(fields(json!({"name": "Robert"}))),
            base_fields: Some(fields(json!({"name": "Bob"}))),
            edited_at_ms: None,
        }],
        pull_limit: 10,
        round: None,
        batch_id: Some(uuid::Uuid::now_v7()),
        epoch: None,
        slice: None,
    };
    let answer: SyncResponse = server
        .http()
        .post(format!("{}{}", server.url(), roster_protocol::SYNC_PATH))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.schema_version, 2);
    let kept = answer.acks[0].kept.as_ref().unwrap();
    assert_eq!(kept["nickname"], json!("Bobby"));

    // The engine's push of an edit made before the change (a conflict merged field by
    // field on the server).
    old.client.sync().await.unwrap();
    let live = server.live("person").await;
    assert_eq!(live[&row]["nickname"], json!("Annie"), "not nulled");
    assert_eq!(
        live[&row]["city"],
        json!("Oslo"),
        "the old device's edit arrived"
    );
    assert_eq!(live[&untouched]["nickname"], json!("Bobby"));
    assert_eq!(live[&untouched]["name"], json!("Robert"));
    new.client.sync().await.unwrap();
    old.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&old, &new]).await;
}

/// A table added to the config reaches a device holding data, and syncs both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_reaches_devices_and_syncs() {
    let mut server = TestServer::start_with_config(&person_config(""));
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    a.insert("person", json!({"name": "Ann"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    let pending = b.insert("person", json!({"name": "Bob"}));
    let config = format!(
        "{}\n[[tables]]\nname = \"task\"\ncolumns = [{{ name = \"title\", type = \"text\", required = true }}]\n",
        person_config("")
    );
    server.restart_with_config(&config);
    a.client.sync().await.unwrap();
    let task = a.insert("task", json!({"title": "write tests"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    assert_eq!(b.live("task")[&task]["title"], json!("write tests"));
    assert!(server.live("person").await.contains_key(&pending));
    a.client.sync().await.unwrap();
    assert_converged(&server, "task", &[&a, &b]).await;
    assert_converged(&server, "person", &[&a, &b]).await;
}

/// Each change stored rows or devices cannot follow is refused at start with the table,
/// the column and why; the running schema and its version stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_incompatible_change_is_refused_at_start_naming_the_column() {
    let server = TestServer::start_with_config(&person_config(NEW_COLUMNS));
    let cases = [
        (
            person_config(""),
            "person.nickname: column dropped or renamed",
        ),
        (
            person_config(NEW_COLUMNS).replace("\"nickname\"", "\"nick\""),
            "person.nickname: column dropped or renamed",
        ),
        (
            person_config(NEW_COLUMNS).replace(
                r#"name = "age", type = "integer""#,
                r#"name = "age", type = "text""#,
            ),
            "person.age: type changed from an integer to text",
        ),
        (
            person_config(NEW_COLUMNS).replace("max_len = 100", "max_len = 50"),
            "person.city: max_len narrowed from 100 to 50",
        ),
        (
            person_config(&format!(
                "{NEW_COLUMNS}  {{ name = \"badge\", type = \"text\", required = true }},"
            )),
            "person.badge: new required column without a default",
        ),
    ];
    for (config, named) in cases {
        let stderr = server.refused_start(&config);
        assert!(stderr.contains(named), "expected {named:?} in: {stderr}");
    }
    assert_eq!(served_version(&server).await, 1);
}

/// A device process killed (SIGKILL) in the middle of its local migration keeps its old
/// store whole (schema, version, pending edit), and its next sync migrates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_during_its_migration_keeps_its_store_and_migrates_next_time() {
    use std::io::BufRead;

    let mut server = TestServer::start_with_config(&person_config(""));
    let mut device = TestClient::new(&server).await;
    let row = device.insert("person", json!({"name": "Ann"}));
    device.client.sync().await.unwrap();
    device.update("person", row, json!({"city": "Oslo"}));
    server.restart_with_config(&person_config(NEW_COLUMNS));

    let mut child = roster_e2e::cli::roster_command(
        device.dir(),
        &["sync"],
        &[
            ("ROSTER_LOG", "info"),
            ("ROSTER_TEST_MIGRATION_PAUSE_MS", "20000"),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reached = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("migrating the store"))
    })
    .await
    .unwrap();
    assert!(reached, "the sync never started migrating");
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());

    device.reopen();
    let store = device.client.store();
    assert_eq!(store.schema_version().unwrap(), 1, "the old store stands");
    assert!(
        store
            .schema()
            .table("person")
            .unwrap()
            .column("nickname")
            .is_none()
    );
    assert_eq!(device.pending(), 1, "the edit is still pending");
    let conn = rusqlite::Connection::open(device.dir().join(roster_client::DB_FILE)).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");

    device.client.sync().await.unwrap();
    assert_eq!(device.client.store().schema_version().unwrap(), 2);
    assert_eq!(server.live("person").await[&row]["city"], json!("Oslo"));
    assert_converged(&server, "person", &[&device]).await;

    // The CLI works on the schema the store holds: the new column, without a rebuild.
    let id = row.to_string();
    roster_e2e::cli::run_roster(device.dir(), &["edit", &id, "nickname=Annie"], &[]).assert_exit(0);
    roster_e2e::cli::run_roster(device.dir(), &["sync"], &[]).assert_exit(0);
    assert_eq!(
        server.live("person").await[&row]["nickname"],
        json!("Annie")
    );
}

/// The person table with a `nick` column, and what an administrator migrates it to:
/// `nick` renamed `nickname`, `city` dropped. Conflicts wait for the device.
const WITH_NICK: &str = r#"
[[tables]]
name = "person"
policy = "defer-to-client"
columns = [
  { name = "name", type = "text", required = true },
  { name = "email", type = "text" },
  { name = "city", type = "text" },
  { name = "nick", type = "text" },
]
"#;
const RENAMED_AND_DROPPED: &str = r#"
[[tables]]
name = "person"
policy = "defer-to-client"
columns = [
  { name = "name", type = "text", required = true },
  { name = "email", type = "text" },
  { name = "nickname", type = "text" },
]
"#;

/// An administrator renames a column and drops another with `roster-server migrate`
/// while devices hold edits made before it (of the renamed column, of the dropped one)
/// and an open conflict on the renamed column: the start refuses the config until then,
/// the migration names what it needs and rewrites only the rows whose values change;
/// the edit of the renamed column arrives under its new name, the edit that touched the
/// dropped column still arrives (its value discarded), the open conflict follows the
/// rename and is resolved, and every device converges on the new columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rename_and_drop_keep_every_pending_edit_and_conflict() {
    let mut server = TestServer::start_with_config(WITH_NICK);
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let named = a.insert(
        "person",
        json!({"name": "Al", "nick": "Ally", "city": "Oslo"}),
    );
    let plain = a.insert("person", json!({"name": "Bo"}));
    let disputed = a.insert("person", json!({"name": "Cy", "nick": "Cee"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    // An open conflict on b about `nick`, then edits waiting on both devices.
    a.update("person", disputed, json!({"nick": "C1"}));
    a.client.sync().await.unwrap();
    b.update("person", disputed, json!({"nick": "C2"}));
    b.client.sync().await.unwrap();
    assert_eq!(b.client.store().open_conflicts().unwrap().len(), 1);
    b.update("person", named, json!({"nick": "Allie"}));
    b.update("person", plain, json!({"email": "bo@example.org"}));
    a.update("person", plain, json!({"city": "Rome", "name": "Bob"}));

    let refused = server.refused_start(RENAMED_AND_DROPPED);
    assert!(
        refused.contains("person.nick: column dropped or renamed"),
        "{refused}"
    );
    let (ok, _, stderr) = server.admin_with_config(RENAMED_AND_DROPPED, &["migrate"]);
    assert!(!ok && stderr.contains("person.city"), "{stderr}");
    let (ok, stdout, stderr) = server.admin_with_config(
        RENAMED_AND_DROPPED,
        &[
            "migrate",
            "--rename",
            "person.nick=nickname",
            "--drop",
            "person.city",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("schema version 2: 2 rows rewritten"),
        "only the rows with values move: {stdout}"
    );
    server.restart_with_config(RENAMED_AND_DROPPED);
    let served = served_schema(&server).await;
    assert_eq!(served.version, 2);
    assert_eq!(
        served.renames,
        vec![roster_protocol::ColumnRename {
            version: 2,
            table: "person".into(),
            from: "nick".into(),
            to: "nickname".into(),
        }],
        "the device learns it was a rename"
    );

    b.client.sync().await.unwrap();
    a.client.sync().await.unwrap();
    let live = server.live("person").await;
    assert_eq!(live[&named]["nickname"], json!("Allie"), "b's edit arrived");
    assert!(!live[&named].contains_key("nick"));
    assert!(!live[&named].contains_key("city"));
    assert_eq!(live[&plain]["email"], json!("bo@example.org"));
    assert_eq!(live[&plain]["name"], json!("Bob"), "a's edit arrived");
    assert!(
        !live[&plain].contains_key("city"),
        "the dropped value is gone"
    );
    for device in [&a, &b] {
        let schema = device.client.store().schema();
        let person = schema.table("person").unwrap();
        assert!(person.column("city").is_none() && person.column("nick").is_none());
        assert_eq!(device.client.store().schema_version().unwrap(), 2);
        assert_eq!(device.pending(), 0);
    }

    // The open conflict followed the rename: all three versions name `nickname`.
    let open = b.client.store().open_conflicts().unwrap();
    assert_eq!(open.len(), 1);
    for (side, value) in [
        (&open[0].local, "C2"),
        (&open[0].remote, "C1"),
        (&open[0].base, "Cee"),
    ] {
        let side = side.as_ref().unwrap();
        assert_eq!(side.get("nickname"), Some(&json!(value)), "{side:?}");
        assert!(!side.contains_key("nick"), "{side:?}");
    }
    b.client
        .store()
        .resolve_conflict("person", disputed, Choice::KeepMine)
        .unwrap();
    b.client.sync().await.unwrap();
    a.client.sync().await.unwrap();
    assert_eq!(
        server.live("person").await[&disputed]["nickname"],
        json!("C2")
    );
    assert_converged(&server, "person", &[&a, &b]).await;
}

/// Instances on one PostgreSQL database (or SQLite file) keep serving after another
/// instance restarts with a newer config: a stale instance takes the newer stored
/// schema on its next request, never answering or writing under the old one: a
/// device's round through it follows the new version and pulls the new column, and a
/// push with the new column is accepted instead of refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_take_a_schema_another_instance_stored() {
    let mut first = TestServer::start_with_config(&person_config(""));
    let stale = first.another_instance();
    let other = first.another_instance();
    let device = TestClient::new(&stale).await;
    let row = device.insert("person", json!({"name": "Ann"}));
    device.client.sync().await.unwrap();

    first.restart_with_config(&person_config(NEW_COLUMNS));
    let writer = TestClient::new(&first).await;
    writer.client.sync().await.unwrap();
    writer.update("person", row, json!({"nickname": "Annie"}));
    writer.client.sync().await.unwrap();

    // A pull through the stale instance: refused once, then answered under version 2.
    device.client.sync().await.unwrap();
    assert_eq!(device.client.store().schema_version().unwrap(), 2);
    assert_eq!(device.live("person")[&row]["nickname"], json!("Annie"));
    assert_eq!(served_version(&stale).await, 2);

    // A push with the new column through another stale instance: checked against the
    // newer schema, not refused.
    let request = SyncRequest {
        protocol: PROTOCOL_VERSION,
        client_id: uuid::Uuid::now_v7(),
        since: 0,
        changes: vec![roster_protocol::Change {
            table: "person".into(),
            id: uuid::Uuid::now_v7(),
            op: ChangeOp::Insert,
            base_version: None,
            fields: Some(fields(json!({"name": "Bea", "nickname": "B", "level": 2}))),
            base_fields: None,
            edited_at_ms: None,
        }],
        pull_limit: 10,
        round: None,
        batch_id: Some(uuid::Uuid::now_v7()),
        epoch: None,
        slice: None,
    };
    let answer = other
        .http()
        .post(format!("{}{}", other.url(), roster_protocol::SYNC_PATH))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: SyncResponse = answer.json().await.unwrap();
    assert_eq!(answer.schema_version, 2);
    assert_eq!(answer.acks.len(), 1);
    device.client.sync().await.unwrap();
    writer.client.sync().await.unwrap();
    assert_converged(&first, "person", &[&device, &writer]).await;
}

/// Instances on one database: two started together with a new compatible config store
/// one new version between them (not two), and an instance started afterwards with the
/// older config is refused, naming the column it lacks, so mixed configs never both
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_agree_on_one_version_and_an_older_config_is_refused() {
    let mut first = TestServer::start_with_config(&person_config(""));
    first.kill();
    std::fs::write(first.dir().join("config.toml"), person_config(NEW_COLUMNS)).unwrap();
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| first.another_instance());
        let two = scope.spawn(|| first.another_instance());
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(served_version(&one).await, 2);
    assert_eq!(served_version(&two).await, 2);
    let refused = one.refused_start(&person_config(""));
    assert!(
        refused.contains("person.level: column dropped or renamed"),
        "{refused}"
    );
    let device = TestClient::new(&one).await;
    let row = device.insert("person", json!({"name": "Ann", "nickname": "Annie"}));
    device.client.sync().await.unwrap();
    assert_eq!(two.live("person").await[&row]["nickname"], json!("Annie"));
}
