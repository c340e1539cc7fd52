//! The real Azure Mobile Apps software under Node 20 (see `tests/ama-js/`): Microsoft's
//! JS client (`azure-mobile-apps-client` 2.0.1), the counterpart of Roster's `/tables`,
//! and its Node backend (`azure-mobile-apps` 4.0.2 with the sqlite provider,
//! [`AmaBackend`]), the counterpart of Roster's client in `--protocol azure-mobile-apps`.
//!
//! Their npm packages (one `package.json`, one install) are installed once into `target/ama-js/<hash of package.json>` by
//! [`roster_testkit::ama_js`] (`cargo xtask test` does it in its install step; a test run
//! alone does it at first use) and reused while `tests/ama-js/package.json` and its
//! `package-lock.json` are unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use roster_protocol::{Fields, RowId};
use serde_json::{Value, json};

/// `tests/ama-js`: the client script, the SQLite stand-in and `package.json`.
fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ama-js")
}

/// The `node_modules` of the JS client, installed if missing (see
/// [`roster_testkit::ama_js`]).
pub fn node_modules() -> PathBuf {
    let target = crate::bin_path("roster-server")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    roster_testkit::ama_js::node_modules(&target, &sources()).unwrap()
}

/// Runs one phase of `tests/ama-js/client.js` against the server at `url` as `token`,
/// with its store in `dir`; returns the JSON line it prints.
pub fn run_client(phase: &str, url: &str, token: &str, dir: &Path) -> Value {
    let out = Command::new("node")
        .arg(sources().join("client.js"))
        .args([phase, url, token])
        .arg(dir)
        .env("NODE_PATH", node_modules())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the AMA JS client's {phase} phase failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// A running `tests/ama-js/server.js`: the real AMA backend serving the `person` table
/// of Roster's default schema (soft delete on) from its own SQLite file, on a free port
/// of 127.0.0.1. Killed on drop.
pub struct AmaBackend {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl AmaBackend {
    /// Starts the backend on an empty database and waits until it listens.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("node");
        command
            .arg(sources().join("server.js"))
            .arg(dir.path().join("ama.sqlite"))
            .env("NODE_PATH", node_modules());
        let started = roster_testkit::start_process_announcing(
            &mut command,
            roster_testkit::AMA_BACKEND_LISTENING_ON,
            Duration::from_secs(30),
            |_| {},
        )
        .unwrap_or_else(|e| panic!("the AMA backend (tests/ama-js/server.js): {e}"));
        Self {
            child: started.child,
            url: started.url,
            dir,
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`); the tables are under `/tables`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Its SQLite database file (table `person`, the provider's own layout).
    pub fn db_file(&self) -> PathBuf {
        self.dir.path().join("ama.sqlite")
    }

    /// Its live rows of `person`, read from its own SQLite file, as a device holds them
    /// (the declared columns; `age` is REAL there and an integer here).
    pub fn live_rows(&self) -> BTreeMap<RowId, Fields> {
        let conn = rusqlite::Connection::open(self.db_file()).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT id, name, email, phone, age, city, notes FROM person WHERE deleted = 0",
            )
            .unwrap();
        stmt.query_map([], |r| {
            let text = |i: usize| -> rusqlite::Result<Value> {
                Ok(r.get::<_, Option<String>>(i)?
                    .map_or(Value::Null, Value::String))
            };
            let age = r
                .get::<_, Option<f64>>(4)?
                .map_or(Value::Null, |a| json!(a as i64));
            Ok((
                r.get::<_, String>(0)?,
                crate::obj(
                    json!({"name": text(1)?, "email": text(2)?, "phone": text(3)?,
                                  "age": age, "city": text(5)?, "notes": text(6)?}),
                ),
            ))
        })
        .unwrap()
        .map(|row| {
            let (id, fields) = row.unwrap();
            (id.parse().unwrap(), fields)
        })
        .collect()
    }
}

impl Drop for AmaBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
