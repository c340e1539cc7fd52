//! Backup and restore with epochs: a server restored from a backup while its devices
//! hold newer data loses nothing they were told was stored, and no version number ends
//! up meaning two different rows.

use std::collections::BTreeMap;
use std::time::Duration;

use roster_e2e::{TestClient, TestServer, assert_converged};
use roster_protocol::{Fields, RowId};
use serde_json::json;

/// What one device wrote and the server acknowledged: its rows as they stand on it.
fn acknowledged(device: &TestClient, ids: &[RowId]) -> BTreeMap<RowId, Fields> {
    assert_eq!(
        device.pending(),
        0,
        "every write of the device was acknowledged"
    );
    let live = device.live("person");
    ids.iter().map(|id| (*id, live[id].clone())).collect()
}

/// Four devices write before, during and after a backup; the server is restored from
/// it while they keep what they wrote since. After two rounds each, every device and the
/// server hold exactly the union of all acknowledged writes: rows the server lost were
/// pushed again (inserts, and an update of an older row), deletes acknowledged after
/// the backup stay deleted (a row the backup holds, and a row it never saw), rows
/// written after the restore were pulled, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_server_and_its_devices_converge_on_every_acknowledged_write() {
    let mut server = TestServer::start();
    let mut devices = Vec::new();
    for _ in 0..4 {
        devices.push(TestClient::new(&server).await);
    }
    let mut written: Vec<Vec<RowId>> = vec![Vec::new(); 4];
    let mut doomed = Vec::new();
    // Before the backup: every device writes and syncs.
    for (n, device) in devices.iter().enumerate() {
        written[n].push(device.insert("person", json!({"name": format!("d{n} before")})));
        doomed.push(device.insert("person", json!({"name": format!("d{n} doomed")})));
        device.client.sync().await.unwrap();
    }
    // During the backup: the devices keep writing and syncing.
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_file = backup_dir.path().join("roster.backup");
    let backing_up = tokio::task::spawn_blocking({
        let (db, file) = (server.db().url().to_owned(), backup_file.clone());
        move || roster_e2e::backup_database(&db, &file)
    });
    for round in 0..3 {
        for (n, device) in devices.iter().enumerate() {
            written[n]
                .push(device.insert("person", json!({"name": format!("d{n} during {round}")})));
            device.client.sync().await.unwrap();
        }
    }
    backing_up.await.unwrap();
    // After the backup: new rows, each device renames its first row and deletes the
    // next device's doomed row (which the backup holds); one row lives and dies.
    for (n, device) in devices.iter().enumerate() {
        written[n].push(device.insert("person", json!({"name": format!("d{n} after")})));
        device.update(
            "person",
            written[n][0],
            json!({"name": format!("d{n} renamed")}),
        );
        device.delete("person", doomed[(n + 1) % 4]);
        device.client.sync().await.unwrap();
    }
    let short_lived = devices[1].insert("person", json!({"name": "short-lived"}));
    devices[1].client.sync().await.unwrap();
    devices[1].delete("person", short_lived);
    devices[1].client.sync().await.unwrap();
    let mut expected = BTreeMap::new();
    for (n, device) in devices.iter().enumerate() {
        expected.extend(acknowledged(device, &written[n]));
    }
    assert_eq!(expected.len(), 4 * 5);

    // The server is restored from the backup: it lost what was written after it.
    assert!(
        server.terminate(Duration::from_secs(10)).is_some(),
        "the server did not stop"
    );
    server.restore(&backup_file);
    server.restart();
    // The backup was complete before the writes after it began (its snapshot may be
    // taken anywhere during the writes before): it lacks the rows inserted after it
    // and still holds the rows deleted after it.
    let restored = server.live("person").await;
    for (n, (rows, doomed)) in written.iter().zip(&doomed).enumerate() {
        assert!(
            !restored.contains_key(&rows[4]),
            "the backup lacks d{n}'s row written after it"
        );
        assert!(
            restored.contains_key(doomed),
            "the backup holds d{n}'s doomed row, deleted after it"
        );
    }
    // One device writes before the others come back: they must pull it.
    let late = devices[0].insert("person", json!({"name": "after the restore"}));
    let mut late_fields = devices[0].live("person");
    expected.insert(late, late_fields.remove(&late).unwrap());

    let first_round = {
        let mut reports = Vec::new();
        for device in &devices {
            reports.push(device.client.sync().await.unwrap());
        }
        reports
    };
    assert!(
        first_round.iter().all(|report| report.reinitialised),
        "every device re-based on the restored server"
    );
    for device in &devices {
        device.client.sync().await.unwrap();
    }

    let on_server = server.live("person").await;
    assert_eq!(
        on_server, expected,
        "the server holds the union of acknowledged writes"
    );
    let all: Vec<&TestClient> = devices.iter().collect();
    assert_converged(&server, "person", &all).await;
    let stored = server.db().stored_rows();
    let live_stored = stored.iter().filter(|(_, (_, deleted, _))| !deleted);
    assert_eq!(live_stored.count(), expected.len(), "a row is stored twice");
    let mut versions: Vec<i64> = stored.iter().map(|(_, (version, _, _))| *version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), stored.len(), "two rows share a version");
}

/// `restore` while a server serves the database is refused with a clear message and a
/// failing exit code, and changes nothing: the server keeps serving every row it held.
/// (On PostgreSQL, `restore` refuses and points to `pg_restore`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_while_a_server_serves_the_database() {
    let server = TestServer::start();
    let device = TestClient::new(&server).await;
    device.insert("person", json!({"name": "in the backup"}));
    device.client.sync().await.unwrap();
    let backup_dir = tempfile::tempdir().unwrap();
    let backup_file = backup_dir.path().join("roster.backup");
    server.backup(&backup_file);
    device.insert("person", json!({"name": "after the backup"}));
    device.client.sync().await.unwrap();
    let before = server.live("person").await;
    assert_eq!(before.len(), 2);

    let (ok, _, stderr) = server.admin_with_config(
        roster_e2e::TWO_TABLE_CONFIG,
        &["restore", "--from", &backup_file.to_string_lossy()],
    );
    assert!(!ok, "the restore must fail");
    let expected = match roster_server::store::postgres::is_postgres_url(server.db().url()) {
        true => "pg_restore",
        false => "is in use by a running roster-server",
    };
    assert!(stderr.contains(expected), "unclear refusal: {stderr}");
    assert_eq!(server.live("person").await, before, "nothing changed");
    device.insert("person", json!({"name": "still served"}));
    device.client.sync().await.unwrap();
    assert_eq!(server.live("person").await.len(), 3);
}
