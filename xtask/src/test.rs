//! `cargo xtask test`: install what is needed, lint, build, and run every test.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::postgres::{self, Postgres};
use crate::process::{run, step, succeeds};
use crate::system::{ensure_cargo_tool, ensure_rust_components, ensure_system_packages};
use crate::workspace;

/// Debian packages the build and the tests need: the toolchain basics, the libraries the
/// Tauri desktop app links (WebKitGTK 4.1, libsoup 3, librsvg, appindicator, OpenSSL),
/// and for the UI tests the WebKit WebDriver, a virtual X server and a font.
const SYSTEM_PACKAGES: &[&str] = &[
    "pkg-config",
    "build-essential",
    "libwebkit2gtk-4.1-dev",
    "libsoup-3.0-dev",
    "librsvg2-dev",
    "libayatana-appindicator3-dev",
    "libssl-dev",
    "webkit2gtk-driver",
    "xvfb",
    "fonts-dejavu-core",
];

/// The end-to-end package, run a second time against PostgreSQL.
const E2E_PACKAGE: &str = "roster-e2e";

/// The package of the WebDriver UI tests: run on their own, after every other test.
pub const UI_TEST_PACKAGE: &str = "roster-ui-tests";

/// How long `cargo xtask test` fuzzes the request decoder.
const FUZZ_SECONDS: u32 = 30;

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
    /// Skip the WebDriver UI tests of the desktop app (they need Xvfb and tauri-driver).
    #[arg(long)]
    no_ui: bool,
    /// Skip the second end-to-end pass against PostgreSQL (which installs the
    /// `postgresql` package and runs a throwaway cluster on 127.0.0.1).
    #[arg(long)]
    no_postgres: bool,
    /// Skip the short fuzzing run of the request decoder.
    #[arg(long)]
    no_fuzz: bool,
    /// Extra arguments for the test runners (cargo nextest run, or cargo test), e.g. a
    /// filter; given to the main run and to the UI test run.
    #[arg(last = true, value_name = "RUNNER_ARGS")]
    runner_args: Vec<String>,
}

/// Runs every step in order, stopping at the first failure.
pub fn test(args: &TestArgs) -> Result<()> {
    let root = workspace::root()?;
    if !args.skip_install {
        install(!args.no_lint, !args.no_ui, !args.no_postgres, !args.no_fuzz)?;
    }
    if !args.no_lint {
        fmt(&root)?;
        clippy(&root)?;
    }
    build(&root)?;
    if !args.no_fuzz {
        crate::fuzz::run_target(&root, FUZZ_SECONDS)?;
    }
    // Doctests first: the main runner's summary must be the run's closing line.
    doctests(&root)?;
    unit_and_integration_tests(&root, &args.runner_args)?;
    if !args.no_postgres {
        postgres_e2e_tests(&root, &args.runner_args)?;
    }
    if !args.no_ui {
        // Last, so its runner's summary closes the output.
        ui_tests(&root, &args.runner_args)?;
    }
    step("all tests passed");
    Ok(())
}

/// Installs the system packages (PostgreSQL's when `pg` is set), cargo-fuzz when `fuzz`
/// is set, the lint components when `lint` is set, and tauri-driver when `ui` is set.
fn install(lint: bool, ui: bool, pg: bool, fuzz: bool) -> Result<()> {
    step("system packages");
    ensure_system_packages(SYSTEM_PACKAGES)?;
    if pg {
        ensure_system_packages(&[postgres::PACKAGE])?;
    }
    if fuzz {
        step("cargo-fuzz (short fuzzing run of the request decoder)");
        ensure_cargo_tool("cargo-fuzz", "cargo-fuzz")?;
    }
    if lint {
        step("rust components");
        ensure_rust_components(RUST_COMPONENTS)?;
    }
    if ui {
        step("tauri-driver (WebDriver server of the UI tests)");
        ensure_cargo_tool("tauri-driver", "tauri-driver")?;
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

/// Builds the binaries the end-to-end and UI tests spawn from target/debug: the server,
/// the CLI and the desktop app (built once; every UI test runs this binary).
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
            .args(["--exclude", UI_TEST_PACKAGE])
            .env_remove("NEXTEST_TEST_THREADS");
    } else {
        step("tests (cargo test; install cargo-nextest for a faster run)");
        cmd.args(["test", "--workspace", "--no-fail-fast"])
            .args(["--exclude", UI_TEST_PACKAGE]);
    }
    run(cmd.args(runner_args))
}

/// Runs the end-to-end suite again with every test server on its own database of a
/// throwaway PostgreSQL cluster, stopped afterwards whether the tests pass or not.
fn postgres_e2e_tests(root: &Path, runner_args: &[String]) -> Result<()> {
    let started = Instant::now();
    let cluster = Postgres::start(root, false)?;
    let mut cmd = workspace::cargo(root);
    if succeeds(workspace::cargo(root).args(["nextest", "--version"])) {
        step("end-to-end tests on PostgreSQL (cargo nextest)");
        cmd.args(["nextest", "run", "-p", E2E_PACKAGE, "--no-fail-fast"])
            .env_remove("NEXTEST_TEST_THREADS");
    } else {
        step("end-to-end tests on PostgreSQL (cargo test)");
        cmd.args(["test", "-p", E2E_PACKAGE, "--no-fail-fast"]);
    }
    cmd.env("ROSTER_TEST_BACKEND", "postgres")
        .env("ROSTER_TEST_PG_URL", cluster.url())
        .args(runner_args);
    let result = run(&mut cmd);
    drop(cluster);
    println!(
        "end-to-end tests on PostgreSQL took {}s",
        started.elapsed().as_secs()
    );
    result
}

/// Runs the WebDriver UI tests against the app built by [`build`], one at a time (each
/// starts its own Xvfb, server and app instances). They fail, never skip, when Xvfb,
/// tauri-driver or WebKitWebDriver is missing.
fn ui_tests(root: &Path, runner_args: &[String]) -> Result<()> {
    let started = Instant::now();
    let mut cmd = workspace::cargo(root);
    if succeeds(workspace::cargo(root).args(["nextest", "--version"])) {
        step("UI tests (cargo nextest, one at a time)");
        cmd.args(["nextest", "run", "-p", UI_TEST_PACKAGE, "--no-fail-fast"])
            .args(["--test-threads", "1"])
            .env_remove("NEXTEST_TEST_THREADS");
    } else {
        step("UI tests (cargo test, one at a time)");
        cmd.args(["test", "-p", UI_TEST_PACKAGE, "--no-fail-fast"]);
    }
    cmd.args(runner_args);
    if !succeeds(workspace::cargo(root).args(["nextest", "--version"])) {
        cmd.args(["--", "--test-threads=1"]);
    }
    let result = run(&mut cmd);
    println!("UI tests took {}s", started.elapsed().as_secs());
    result
}

/// Runs the doctests, which cargo-nextest does not run.
fn doctests(root: &Path) -> Result<()> {
    step("doctests");
    run(workspace::cargo(root).args(["test", "--workspace", "--doc"]))
}
