//! The device store encrypted at rest (SQLCipher), through the real `roster` binary:
//! * an encrypted store holds no plaintext, the `sqlite3` CLI cannot read it, and the
//!   CLI refuses it without its passphrase (exit 7);
//! * a wrong passphrase is refused clearly and changes nothing;
//! * a plain store is encrypted in place at its first use with `--passphrase-file`,
//!   keeping its pending edits, which then sync;
//! * SIGKILLs at several points of that migration leave the plain store usable, and the
//!   next run finishes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use roster_e2e::TestServer;
use roster_e2e::cli::{CliRun, run_roster, spawn_roster};
use serde_json::json;

/// A name that must never appear in an encrypted store's files.
const KNOWN_NAME: &str = "Zebediah Plaintextson";

/// Exit code of a store that is encrypted and not opened (no key, or a wrong one).
const EXIT_LOCKED: i32 = 7;

/// A data dir and a passphrase file in one temp dir.
struct Device {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    passphrase: PathBuf,
}

impl Device {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let passphrase = tmp.path().join("passphrase");
        std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
        Self {
            _tmp: tmp,
            dir,
            passphrase,
        }
    }

    /// A file holding another passphrase.
    fn other_passphrase(&self, text: &str) -> PathBuf {
        let path = self.passphrase.with_file_name("other");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `roster ARGS...` without a passphrase.
    fn plain(&self, args: &[&str]) -> CliRun {
        run_roster(&self.dir, args, &[])
    }

    /// `roster --passphrase-file FILE ARGS...`.
    fn keyed(&self, args: &[&str]) -> CliRun {
        let file = self.passphrase.to_string_lossy().into_owned();
        let mut all = vec!["--passphrase-file", file.as_str()];
        all.extend_from_slice(args);
        run_roster(&self.dir, &all, &[])
    }

    /// `roster [--passphrase-file FILE] init` against `server`.
    fn init(&self, server: &TestServer, encrypted: bool) {
        let url = server.url();
        let args = ["init", "--server", &url, "--token", server.token()];
        if encrypted {
            self.keyed(&args)
        } else {
            self.plain(&args)
        }
        .assert_exit(0);
    }

    fn store_file(&self) -> PathBuf {
        self.dir.join(roster_client::DB_FILE)
    }
}

/// Pending changes reported by `status --json` of a run that must succeed.
fn pending(run: &CliRun) -> u64 {
    run.assert_exit(0);
    run.json()["pending"].as_u64().unwrap()
}

/// Names of the `person` rows a `list --json` run printed.
fn names(run: &CliRun) -> Vec<String> {
    run.assert_exit(0);
    let mut names: Vec<String> = run.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Whether the store file starts with the plain SQLite header.
fn is_plain(file: &Path) -> bool {
    std::fs::read(file)
        .unwrap()
        .starts_with(b"SQLite format 3\0")
}

/// Every byte of every file in `dir` (store, WAL, shared memory), asserted free of
/// `needle`.
fn assert_no_plaintext(dir: &Path, needle: &str) {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        seen += bytes.len();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} holds {needle:?} in the clear",
            path.display()
        );
    }
    assert!(seen > 0, "no store files in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_shows_no_plaintext_without_its_key() {
    let server = TestServer::start();
    let d = Device::new();
    d.init(&server, true);
    d.keyed(&[
        "add",
        &format!("name={KNOWN_NAME}"),
        "email=zeb@example.org",
    ])
    .assert_exit(0);
    d.keyed(&["sync"]).assert_exit(0);
    assert_eq!(pending(&d.keyed(&["status", "--json"])), 0);
    // The encrypted store synced: the server has the row.
    let live = server.live("person").await;
    assert!(live.values().any(|f| f["name"] == json!(KNOWN_NAME)));

    assert!(!is_plain(&d.store_file()));
    assert_no_plaintext(&d.dir, KNOWN_NAME);
    assert_no_plaintext(&d.dir, "zeb@example.org");

    let sqlite3 = Command::new("sqlite3")
        .arg(d.store_file())
        .arg("SELECT name FROM person;")
        .output()
        .expect("the sqlite3 CLI is installed (apt package sqlite3; `cargo xtask test` does)");
    assert!(
        !sqlite3.status.success(),
        "sqlite3 read the encrypted store"
    );
    let said = String::from_utf8_lossy(&sqlite3.stderr);
    assert!(said.contains("not a database"), "sqlite3 said {said:?}");
    assert!(!String::from_utf8_lossy(&sqlite3.stdout).contains(KNOWN_NAME));

    let refused = d.plain(&["list", "--json"]);
    refused.assert_exit(EXIT_LOCKED);
    assert!(
        refused.stderr.contains("--passphrase-file"),
        "{}",
        refused.stderr
    );
    assert_eq!(names(&d.keyed(&["list", "--json"])), [KNOWN_NAME]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_refused_clearly_and_loses_nothing() {
    let server = TestServer::start();
    let d = Device::new();
    d.init(&server, true);
    d.keyed(&["add", "name=Ada"]).assert_exit(0);
    d.keyed(&["add", "name=Grace"]).assert_exit(0);
    let before = std::fs::read(d.store_file()).unwrap();

    let wrong = d.other_passphrase("correct horse battery stapler");
    let run = run_roster(
        &d.dir,
        &[
            "--passphrase-file",
            wrong.to_str().unwrap(),
            "add",
            "name=Eve",
        ],
        &[],
    );
    run.assert_exit(EXIT_LOCKED);
    assert!(run.stderr.contains("wrong passphrase"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);

    let empty = d.other_passphrase("\n");
    let run = run_roster(
        &d.dir,
        &["--passphrase-file", empty.to_str().unwrap(), "list"],
        &[],
    );
    run.assert_exit(2);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);

    let missing = d.dir.join("no-such-file");
    let run = run_roster(
        &d.dir,
        &["--passphrase-file", missing.to_str().unwrap(), "list"],
        &[],
    );
    run.assert_exit(2);
    assert!(
        run.stderr.contains("cannot read the passphrase file")
            && run.stderr.contains("no-such-file"),
        "{}",
        run.stderr
    );

    // The file is byte for byte what it was, and the right passphrase still opens it.
    assert_eq!(std::fs::read(d.store_file()).unwrap(), before);
    assert_eq!(names(&d.keyed(&["list", "--json"])), ["Ada", "Grace"]);
    assert_eq!(pending(&d.keyed(&["status", "--json"])), 2);
}

/// A plain store with two pending inserts (one of them edited) and one synced row.
async fn plain_store_with_pending_edits(server: &TestServer, d: &Device) {
    d.init(server, false);
    d.plain(&["add", "name=Synced Sam"]).assert_exit(0);
    d.plain(&["sync"]).assert_exit(0);
    d.plain(&["add", &format!("name={KNOWN_NAME}")])
        .assert_exit(0);
    let added = d.plain(&["add", "name=Pending Pat", "--json"]);
    added.assert_exit(0);
    let id = added.json()["id"].as_str().unwrap().to_owned();
    d.plain(&["edit", &id, "age=52"]).assert_exit(0);
    assert_eq!(pending(&d.plain(&["status", "--json"])), 2);
    assert!(is_plain(&d.store_file()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_store_is_migrated_and_keeps_pending_edits() {
    let server = TestServer::start();
    let d = Device::new();
    plain_store_with_pending_edits(&server, &d).await;

    assert_eq!(pending(&d.keyed(&["status", "--json"])), 2);
    assert!(!is_plain(&d.store_file()));
    assert_no_plaintext(&d.dir, KNOWN_NAME);
    assert!(!d.dir.join("roster.db.encrypting").exists());
    d.plain(&["status"]).assert_exit(EXIT_LOCKED);

    assert_eq!(
        names(&d.keyed(&["list", "--json"])),
        ["Pending Pat", "Synced Sam", KNOWN_NAME]
    );
    d.keyed(&["sync"]).assert_exit(0);
    assert_eq!(pending(&d.keyed(&["status", "--json"])), 0);
    let live = server.live("person").await;
    let pat = live.values().find(|f| f["name"] == json!("Pending Pat"));
    assert_eq!(pat.unwrap()["age"], json!(52));
    assert_eq!(live.len(), 3);
}

/// Size of the padding written into the plain store so the export runs long enough to
/// be killed in the middle (64 KiB random blobs: SQLCipher copies them page by page).
const PADDING_BLOBS: usize = 640;

/// Kills of the migrating process: when the encrypted copy exists, and when it has grown
/// past these many bytes.
const KILL_AT_COPIED_BYTES: [u64; 4] = [0, 1 << 20, 8 << 20, 24 << 20];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_migration_leaves_a_usable_store() {
    let server = TestServer::start();
    let d = Device::new();
    plain_store_with_pending_edits(&server, &d).await;
    {
        let conn = rusqlite::Connection::open(d.store_file()).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE test_padding (b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {PADDING_BLOBS})
             INSERT INTO test_padding SELECT randomblob(65536) FROM n;"
        ))
        .unwrap();
    }
    let copy = d.dir.join("roster.db.encrypting");
    let passphrase = d.passphrase.to_string_lossy().into_owned();
    for (kill, at) in KILL_AT_COPIED_BYTES.into_iter().enumerate() {
        let mut child = spawn_roster(&d.dir, &["--passphrase-file", &passphrase, "status"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&copy).map_or(true, |m| m.len() < at.max(1)) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "kill {kill}: the migration ended before its copy reached {at} bytes"
            );
            assert!(Instant::now() < deadline, "kill {kill}: no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        assert!(!child.wait().unwrap().success(), "kill {kill}: killed");

        // Killed before the rename: the plain store is complete and usable, edits kept.
        assert!(is_plain(&d.store_file()), "kill {kill}");
        assert_eq!(pending(&d.plain(&["status", "--json"])), 2, "kill {kill}");
        let integrity: String = rusqlite::Connection::open(d.store_file())
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "kill {kill}");
    }

    // The next run finishes it: encrypted, the half copy gone, every edit kept.
    assert_eq!(pending(&d.keyed(&["status", "--json"])), 2);
    assert!(!is_plain(&d.store_file()));
    assert!(!copy.exists());
    assert_eq!(
        names(&d.keyed(&["list", "--json"])),
        ["Pending Pat", "Synced Sam", KNOWN_NAME]
    );
    d.keyed(&["sync"]).assert_exit(0);
    assert_eq!(server.live("person").await.len(), 3);
}
