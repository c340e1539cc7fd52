//! System set-up: Debian packages through dpkg/apt, Rust components through rustup.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::process::{on_path, run, succeeds, warn};

/// Set once `apt-get update` has succeeded, so later calls do not repeat it.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Makes sure the given Debian packages are installed.
///
/// Asks `dpkg-query` which ones are missing; only if some are, runs
/// `apt-get update` (once per process) and then
/// `apt-get install -y --no-install-recommends <missing>`, through `sudo`
/// when not root. On a system without dpkg/apt it warns and does nothing.
pub fn ensure_system_packages(packages: &[&str]) -> Result<()> {
    if !on_path("dpkg-query") || !on_path("apt-get") {
        warn(&format!(
            "dpkg-query/apt-get not found (not Debian?): make sure these are installed: {}",
            packages.join(" ")
        ));
        return Ok(());
    }
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        println!("already installed: {}", packages.join(" "));
        return Ok(());
    }
    println!("missing: {}", missing.join(" "));
    let sudo = needs_sudo()?;
    if !APT_UPDATED.load(Ordering::Relaxed) {
        run(&mut apt_get(sudo, &["update"]))?;
        APT_UPDATED.store(true, Ordering::Relaxed);
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(missing.iter().map(String::as_str));
    run(&mut apt_get(sudo, &install))
}

/// The packages among `packages` that dpkg does not report as installed.
pub fn missing_packages(packages: &[&str]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for package in packages {
        if !is_installed(package)? {
            missing.push((*package).to_owned());
        }
    }
    Ok(missing)
}

/// Whether dpkg reports `package` as installed (`dpkg-query -W -f='${Status}'`).
pub fn is_installed(package: &str) -> Result<bool> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\n", package])
        .output()
        .context("cannot run dpkg-query")?;
    // dpkg-query exits 1 for a package it has never heard of.
    Ok(output.status.success() && status_is_installed(&String::from_utf8_lossy(&output.stdout)))
}

/// Whether a `${Status}` value (one line per architecture) says "installed",
/// e.g. `install ok installed`, as opposed to `deinstall ok config-files`.
fn status_is_installed(status: &str) -> bool {
    status
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("installed"))
}

/// Whether apt must run through `sudo`: fails when not root and sudo is absent.
fn needs_sudo() -> Result<bool> {
    if is_root()? {
        Ok(false)
    } else if on_path("sudo") {
        Ok(true)
    } else {
        bail!("installing packages needs root, and sudo is not installed: run as root")
    }
}

/// Whether this process runs as uid 0, according to `id -u`.
pub fn is_root() -> Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run `id -u`")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// An `apt-get` command with `DEBIAN_FRONTEND=noninteractive`, via `sudo env` if asked.
fn apt_get(sudo: bool, args: &[&str]) -> Command {
    let mut cmd;
    if sudo {
        // sudo resets the environment, so pass the variable through env(1).
        cmd = Command::new("sudo");
        cmd.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
    } else {
        cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
    }
    cmd.args(args);
    cmd
}

/// Makes sure the program `binary` runs (`binary --version`), from `PATH` or cargo's bin
/// dir; otherwise installs the crates.io package `package` with `cargo install --locked`.
pub fn ensure_cargo_tool(binary: &str, package: &str) -> Result<()> {
    if let Some(path) = cargo_tool_path(binary)
        && succeeds(Command::new(&path).arg("--version"))
    {
        println!("{binary} present: {}", path.display());
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "--locked", package]))?;
    if cargo_tool_path(binary).is_none() {
        bail!("`cargo install {package}` did not put {binary} on PATH or in cargo's bin dir");
    }
    Ok(())
}

/// Where `binary` is: on `PATH`, else in `$CARGO_HOME/bin` or `~/.cargo/bin`.
pub fn cargo_tool_path(binary: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(std::path::PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::PathBuf::from(home).join(".cargo").join("bin"));
    }
    dirs.into_iter()
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}

/// Makes sure the cargo subcommands of the given rustup components work
/// (`rustfmt` → `cargo fmt`, `clippy` → `cargo clippy`), adding the missing
/// ones with `rustup component add`. Without rustup it only warns.
pub fn ensure_rust_components(components: &[&str]) -> Result<()> {
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|component| !cargo_subcommand_works(component))
        .collect();
    if missing.is_empty() {
        println!("rust components present: {}", components.join(" "));
        return Ok(());
    }
    if !on_path("rustup") {
        warn(&format!(
            "rust components missing and rustup not found: {}",
            missing.join(" ")
        ));
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["component", "add"])
        .args(&missing))
}

/// Whether `cargo <subcommand> --version` works for a rustup component name.
fn cargo_subcommand_works(component: &str) -> bool {
    let subcommand = if component == "rustfmt" {
        "fmt"
    } else {
        component
    };
    succeeds(Command::new("cargo").args([subcommand, "--version"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dpkg_status() {
        assert!(status_is_installed("install ok installed"));
        assert!(status_is_installed("hold ok installed\n"));
        assert!(status_is_installed(
            "deinstall ok config-files\ninstall ok installed\n"
        ));
        assert!(!status_is_installed("deinstall ok config-files"));
        assert!(!status_is_installed("install ok half-configured"));
        assert!(!status_is_installed(""));
    }

    #[test]
    fn installed_packages_need_no_apt() {
        if !on_path("dpkg-query") {
            return;
        }
        // dpkg itself is always installed on Debian: nothing to do, apt is not run.
        assert!(missing_packages(&["dpkg"]).unwrap().is_empty());
        ensure_system_packages(&["dpkg"]).unwrap();
        assert!(!APT_UPDATED.load(Ordering::Relaxed));
        assert_eq!(
            missing_packages(&["dpkg", "surely-no-such-package-xtask"]).unwrap(),
            ["surely-no-such-package-xtask"]
        );
    }
}
