//! Checks the systemd unit in `packaging/` with `systemd-analyze verify`, where that
//! tool exists (skipped with a message elsewhere: macOS, containers without systemd).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{on_path, run, warn};

/// The unit file, relative to the workspace root.
pub const UNIT_FILE: &str = "packaging/roster-server.service";

/// Where the unit expects the binary; replaced by the built one for the check, since
/// `systemd-analyze verify` requires `ExecStart`'s program to exist.
const INSTALLED_BINARY: &str = "/usr/local/bin/roster-server";

/// Verifies the unit file against the built `target/debug/roster-server`.
pub fn verify(root: &Path) -> Result<()> {
    if !on_path("systemd-analyze") {
        warn("systemd-analyze is not installed: the systemd unit was not checked");
        return Ok(());
    }
    let unit = root.join(UNIT_FILE);
    let text = std::fs::read_to_string(&unit)
        .with_context(|| format!("cannot read {}", unit.display()))?;
    let binary = root.join("target/debug/roster-server");
    let checked = text.replace(INSTALLED_BINARY, &binary.to_string_lossy());
    let dir = std::env::temp_dir().join(format!("roster-unit-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copy = dir.join("roster-server.service");
    std::fs::write(&copy, checked).with_context(|| format!("cannot write {}", copy.display()))?;
    let result = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    let _ = std::fs::remove_dir_all(&dir);
    result
}
