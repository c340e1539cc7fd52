//! Microsoft's Azure Mobile Apps JS client (`azure-mobile-apps-client` 2.0.1) under
//! Node 20, the real counterpart of Roster's `/tables` (see `tests/ama-js/`).
//!
//! Its npm packages are installed once into `target/ama-js/<hash of package.json>` by
//! [`roster_testkit::ama_js`] (`cargo xtask test` does it in its install step; a test run
//! alone does it at first use) and reused while `tests/ama-js/package.json` and its
//! `package-lock.json` are unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

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
