//! A client process killed (SIGKILL) while it pulls and applies pages, or while it pushes:
//! the local file is never corrupt or half-applied, no local edit is lost, and the next
//! sync completes (after a push, without a single conflict).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roster_e2e::{TestClient, TestServer, assert_converged, bin_path, obj};
use serde_json::json;

/// Rows the server holds before the killed client's first sync: enough pages (2000 rows
/// each) that every kill lands while the pull is still running.
const SERVER_ROWS: usize = 30_000;

/// Starts `roster --data-dir DIR sync` as its own process.
fn spawn_sync(dir: &Path) -> Child {
    Command::new(bin_path("roster"))
        .arg("--data-dir")
        .arg(dir)
        .arg("sync")
        .env_remove("ROSTER_DATA_DIR")
        .env("ROSTER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `progressed()` (polled every 2 ms, for at most 2 minutes, while the child
/// must still run), then SIGKILLs the child and reaps it.
async fn kill_after(child: &mut Child, mut progressed: impl FnMut() -> bool, kill: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !progressed() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "kill {kill}: the sync ended before it made the awaited progress"
        );
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "kill {kill}: killed");
}

/// Opens the client's SQLite file on its own connection and checks it is intact.
fn integrity_check(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join(roster_client::DB_FILE)).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(verdict, "ok", "the killed client's database is damaged");
}

/// Three SIGKILLs at increasing points of a 30k-row first sync. After each one the store
/// holds exactly the rows of the pages it committed (every server row with a version up
/// to the stored watermark, no other), the offline edit made before the sync is still
/// there (pending, or acknowledged and on the server), and a final sync converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_pull_keeps_a_consistent_store_and_finishes_later() {
    let server = TestServer::start();
    let seeder = TestClient::new(&server).await;
    let rows = (0..SERVER_ROWS)
        .map(|i| obj(json!({"name": format!("Seed {i}"), "email": format!("seed{i}@example.org")})))
        .collect();
    seeder.client.store().insert_many("person", rows).unwrap();
    seeder.client.sync().await.unwrap();
    let server_rows = server.rows().await;
    let newest = server_rows.values().map(|r| r.version).max().unwrap();

    let mut device = TestClient::new(&server).await;
    let mine = device.insert("person", json!({"name": "Made offline", "age": 41}));

    let mut last_watermark = 0;
    for kill in 1..=3 {
        // Kill this run once it has committed at least one more page.
        let mut child = spawn_sync(device.dir());
        let committed = || device.client.store().watermark().unwrap() > last_watermark;
        kill_after(&mut child, committed, kill).await;

        integrity_check(device.dir());
        device.reopen();
        let watermark = device.client.store().watermark().unwrap();
        assert!(
            watermark < newest,
            "kill {kill} landed after the pull finished (watermark {watermark}); \
             the test needs more rows"
        );
        let expected: Vec<_> = server_rows
            .iter()
            .filter(|((table, id), row)| {
                table == "person" && row.version <= watermark && *id != mine
            })
            .map(|((_, id), _)| *id)
            .collect();
        let mut local = device.live("person");
        let made_offline = local.remove(&mine).expect("the offline edit was lost");
        assert_eq!(made_offline["name"], json!("Made offline"));
        assert_eq!(
            local.keys().copied().collect::<Vec<_>>(),
            {
                let mut ids = expected.clone();
                ids.sort();
                ids
            },
            "kill {kill}: the store must hold exactly the pages it committed"
        );
        let on_server = server.live("person").await.contains_key(&mine);
        assert!(
            on_server || device.pending() == 1,
            "kill {kill}: the offline edit is neither on the server nor pending"
        );
        eprintln!(
            "kill {kill}: watermark {watermark} of {newest}, {} rows committed",
            local.len()
        );
        last_watermark = watermark;
    }

    let status = spawn_sync(device.dir()).wait().unwrap();
    assert!(status.success(), "the sync after the kills completes");
    device.reopen();
    assert_eq!(server.live("person").await[&mine]["age"], json!(41));
    assert_converged(&server, "person", &[&device]).await;
}

/// Rows the killed client pushes: new rows, plus edits of rows the server already has.
const PUSHED_NEW: usize = 20_000;
const PUSHED_EDITS: usize = 1_000;

/// Two SIGKILLs during a 21k-change push. A batch is at the server while the previous
/// answer is applied, so a kill can leave batches the server applied but the client never
/// recorded. After each kill the store is intact and every change is pending or on the
/// server with the client's values; the next round sends the unrecorded ones again and
/// the server acknowledges them: zero conflicts, every row once, both sides equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_push_sends_again_without_conflicts() {
    let server = TestServer::start();
    let mut device = TestClient::new(&server).await;
    let synced = (0..PUSHED_EDITS)
        .map(|i| obj(json!({"name": format!("Old {i}")})))
        .collect();
    let edited = device.client.store().insert_many("person", synced).unwrap();
    device.client.sync().await.unwrap();
    for (i, id) in edited.iter().enumerate() {
        device.update("person", *id, json!({"name": format!("Edited {i}")}));
    }
    let fresh = (0..PUSHED_NEW)
        .map(|i| obj(json!({"name": format!("New {i}"), "email": format!("n{i}@example.org")})))
        .collect();
    device.client.store().insert_many("person", fresh).unwrap();
    let total = PUSHED_EDITS + PUSHED_NEW;
    assert_eq!(device.pending(), total as u64);

    let mut last_pending = device.pending();
    for kill in 1..=2 {
        // Kill this run once it has recorded at least one more answer.
        let mut child = spawn_sync(device.dir());
        kill_after(&mut child, || device.pending() < last_pending, kill).await;

        integrity_check(device.dir());
        device.reopen();
        let pending = device.pending();
        assert!(pending > 0, "kill {kill} landed after the push finished");
        let local = device.live("person");
        assert_eq!(local.len(), total, "kill {kill}: a local row was lost");
        let on_server = server.live("person").await;
        let applied = local
            .iter()
            .filter(|(id, fields)| on_server.get(*id) == Some(*fields))
            .count();
        let recorded = total - usize::try_from(pending).unwrap();
        assert!(
            applied >= recorded,
            "kill {kill}: {recorded} changes recorded as acknowledged, {applied} on the server"
        );
        let unrecorded = applied - recorded;
        eprintln!(
            "kill {kill}: {pending} changes pending, {unrecorded} of them already applied \
             by the server"
        );
        last_pending = pending;
    }

    let report = device.client.sync().await.unwrap();
    assert_eq!(report.uploaded, last_pending, "{report:?}");
    assert_eq!(report.conflicts_detected, 0, "{report:?}");
    assert!(
        server.conflict_log().is_empty(),
        "{:?}",
        server.conflict_log()
    );
    assert_eq!(device.pending(), 0);
    let on_server = server.live("person").await;
    assert_eq!(on_server.len(), total, "every row exactly once");
    assert_eq!(on_server[&edited[0]]["name"], json!("Edited 0"));
    assert_converged(&server, "person", &[&device]).await;
}
