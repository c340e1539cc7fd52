//! Where things are: the workspace root, the target directory and the `cargo` to call.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::on_path;

/// The workspace root: the parent of the `xtask` crate's directory.
pub fn root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the xtask crate has no parent directory")
}

/// The directory `cargo build` writes to: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A binary built by `cargo build` in the dev profile, e.g. `roster-server`.
pub fn debug_binary(root: &Path, name: &str) -> PathBuf {
    target_dir(root).join("debug").join(name)
}

/// A `cargo` command that runs from the workspace root.
///
/// Uses `cargo` from `PATH` (so rustup picks the same toolchain), or `$CARGO`
/// (set by `cargo run`) when `cargo` is not on `PATH`.
pub fn cargo(root: &Path) -> Command {
    let program = if on_path("cargo") {
        OsString::from("cargo")
    } else {
        std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(root);
    cmd
}
