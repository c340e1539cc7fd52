//! `cargo xtask test`: install what is needed, lint, build, and run every test.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::process::{run, step, succeeds};
use crate::system::{ensure_rust_components, ensure_system_packages};
use crate::workspace;

/// Debian packages the build and the tests need.
const SYSTEM_PACKAGES: &[&str] = &["pkg-config", "build-essential"];

/// Rustup components the lint steps need.
const RUST_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// Options of `cargo xtask test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Do not check for or install system packages and Rust components.
    #[arg(long)]
    skip_install: bool,
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments for the test runner (cargo nextest run, or cargo test), e.g. a filter.
    #[arg(last = true, value_name = "RUNNER_ARGS")]
    runner_args: Vec<String>,
}

/// Runs every step in order, stopping at the first failure.
pub fn test(args: &TestArgs) -> Result<()> {
    let root = workspace::root()?;
    if !args.skip_install {
        install(!args.no_lint)?;
    }
    if !args.no_lint {
        fmt(&root)?;
        clippy(&root)?;
    }
    build(&root)?;
    // Doctests first: the main runner's summary must be the run's closing line.
    doctests(&root)?;
    unit_and_integration_tests(&root, &args.runner_args)?;
    step("all tests passed");
    Ok(())
}

/// Installs the system packages, and the lint components when `lint` is set.
fn install(lint: bool) -> Result<()> {
    step("system packages");
    ensure_system_packages(SYSTEM_PACKAGES)?;
    if lint {
        step("rust components");
        ensure_rust_components(RUST_COMPONENTS)?;
    }
    Ok(())
}

/// Checks formatting of the whole workspace.
fn fmt(root: &Path) -> Result<()> {
    step("format check");
    run(workspace::cargo(root).args(["fmt", "--all", "--check"]))
}

/// Runs clippy on every target, warnings denied; `--locked` when Cargo.lock exists.
fn clippy(root: &Path) -> Result<()> {
    step("clippy");
    let mut cmd = workspace::cargo(root);
    cmd.args(["clippy", "--workspace", "--all-targets"]);
    if root.join("Cargo.lock").exists() {
        cmd.arg("--locked");
    }
    run(cmd.args(["--", "-D", "warnings"]))
}

/// Builds the binaries the end-to-end tests spawn from target/debug.
fn build(root: &Path) -> Result<()> {
    step("build binaries");
    run(workspace::cargo(root).args(["build", "--workspace", "--bins"]))
}

/// Runs the tests with cargo-nextest when installed, else with `cargo test`.
fn unit_and_integration_tests(root: &Path, runner_args: &[String]) -> Result<()> {
    let mut cmd = workspace::cargo(root);
    if succeeds(workspace::cargo(root).args(["nextest", "--version"])) {
        step("tests (cargo nextest)");
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .env_remove("NEXTEST_TEST_THREADS");
    } else {
        step("tests (cargo test; install cargo-nextest for a faster run)");
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    run(cmd.args(runner_args))
}

/// Runs the doctests, which cargo-nextest does not run.
fn doctests(root: &Path) -> Result<()> {
    step("doctests");
    run(workspace::cargo(root).args(["test", "--workspace", "--doc"]))
}
