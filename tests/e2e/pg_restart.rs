//! PostgreSQL restarted during a 20,000-row push in batches of 200: the server answers
//! 503 with `Retry-After` meanwhile, reconnects by itself, the device retries, and the
//! server ends with every row once. The test runs a cluster of its own (the shared test
//! cluster serves every other test at the same time), so it runs on the PostgreSQL pass
//! only; on SQLite it says so and passes (its counterpart there is the busy-database
//! 503 of `http.rs`'s unit tests).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use roster_client::SyncOptions;
use roster_e2e::{Backend, TWO_TABLE_CONFIG, TestClient, TestDatabase, TestServer};

/// A PostgreSQL cluster of this test's own, run as the `postgres` user; stopped on drop.
struct OwnCluster {
    bin: PathBuf,
    data: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl OwnCluster {
    /// Creates and starts a cluster on a free port, or says why it cannot.
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()?;
        let dir = tempfile::tempdir().unwrap();
        Command::new("chmod")
            .arg("0777")
            .arg(dir.path())
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let initdb = pg(&bin, "initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        if !initdb.status.success() {
            eprintln!(
                "SKIPPED: cannot create a PostgreSQL cluster: {}",
                String::from_utf8_lossy(&initdb.stderr).trim()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            bin,
            data,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            _dir: dir,
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        );
        cluster.pg_ctl(&["start", "-w", "-o", &options]);
        Some(cluster)
    }

    /// Restarts the cluster (fast shutdown: open connections are cut).
    fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.data.with_file_name("server.log");
        let status = pg(&self.bin, "pg_ctl")
            .args(args)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(log)
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?} failed");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = pg(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .status();
    }
}

/// `program` of `bin`, run as the `postgres` user (initdb refuses root).
fn pg(bin: &std::path::Path, program: &str) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .current_dir("/");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_a_push_loses_nothing_and_applies_nothing_twice() {
    const ROWS: usize = 20_000;
    if !Backend::from_env().is_postgres() {
        eprintln!("SKIPPED on SQLite: this test restarts a PostgreSQL cluster");
        return;
    }
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let server =
        TestServer::start_with_database(TWO_TABLE_CONFIG, TestDatabase::postgres_at(&cluster.url));
    let options = SyncOptions {
        push_batch: 200,
        retries: 10,
        retry_delay: Duration::from_millis(200),
        ..SyncOptions::default()
    };
    let device = TestClient::with_options(&server, options).await;
    device.insert_numbered_people(ROWS);

    // Restart PostgreSQL once the first batches are in, while the push goes on.
    let watcher = {
        let cluster = &cluster;
        let server = &server;
        async move {
            server
                .db()
                .wait_for_a_stored_row(Duration::from_secs(30))
                .await;
            tokio::task::block_in_place(|| cluster.restart());
        }
    };
    let (report, ()) = tokio::join!(device.client.sync(), watcher);
    let report = report.expect("the push completed across the restart");
    assert_eq!(report.uploaded as usize, ROWS);

    assert_eq!(device.pending(), 0);
    let stored = server.db().stored_rows();
    assert_eq!(stored.len(), ROWS, "a row was lost or stored twice");
    assert_eq!(server.live("person").await.len(), ROWS);
    let ready = reqwest::get(format!("{}/ready", server.url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the server reconnected by itself");
    drop(server);
    drop(cluster);
}
