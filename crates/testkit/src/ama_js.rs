//! The npm packages of the Azure Mobile Apps JS client that the end-to-end tests run
//! against Roster's `/tables` (`tests/ama-js/package.json` and its `package-lock.json`),
//! installed with `npm ci` once per content of those files into
//! `TARGET/ama-js/<hash>/node_modules` and reused after, by
//! `cargo xtask test` (its install step) and by the tests themselves when run alone.
//!
//! `sqlite3` has no prebuilt binary reachable here, so it is compiled from source
//! against the system's SQLite (Debian's `libsqlite3-dev`): its own SQLite amalgamation
//! took minutes to compile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A short content hash (FNV-1a) naming an install of a `package.json`.
fn fnv(text: &[u8]) -> String {
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The npm files of an install: the manifest and its lock.
const NPM_FILES: [&str; 2] = ["package.json", "package-lock.json"];

/// The `node_modules` of `sources/package.json` under `target_dir`, installed with npm
/// if it is not there yet. Concurrent callers may both install; one result is kept.
pub fn node_modules(target_dir: &Path, sources: &Path) -> Result<PathBuf, String> {
    let mut files = Vec::new();
    for name in NPM_FILES {
        let path = sources.join(name);
        files.push(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let root = target_dir.join("ama-js");
    let installed = root.join(fnv(&files.concat()));
    let modules = installed.join("node_modules");
    if modules.join(".roster-installed").exists() {
        return Ok(modules);
    }
    let staging = root.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    for (name, text) in NPM_FILES.iter().zip(&files) {
        std::fs::write(staging.join(name), text).map_err(|e| e.to_string())?;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--omit=dev"])
        .current_dir(&staging)
        .env("npm_config_build_from_source", "true")
        .env("npm_config_nodedir", "/usr")
        .env("npm_config_sqlite", "/usr")
        .output()
        .map_err(|e| format!("cannot run npm (Node 20 and npm are needed): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci in {} failed: {}{}",
            sources.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(staging.join("node_modules/.roster-installed"), b"")
        .map_err(|e| e.to_string())?;
    // Another process may have finished the same install first: either copy is fine.
    if std::fs::rename(&staging, &installed).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(modules)
}
