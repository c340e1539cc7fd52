//! `cargo xtask test`: install what is needed, lint, build, and run every test.
//!
//! invariant: every cargo invocation of a run selects the whole workspace with the same
//! targets, profile and compiler wrapper ([`Build`]), so the dependency tree, Tauri
//! included, is compiled once: clippy lints while the one build compiles (clippy-driver
//! as the workspace wrapper, exactly what `cargo clippy` does for `cargo check`), and
//! each test pass picks its tests with a nextest filter instead of `-p`, which would
//! unify features differently and rebuild dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::postgres::{self, Postgres};
use crate::process::{run, run_captured, step, succeeds};
use crate::system::{ensure_cargo_tool, ensure_rust_components, ensure_system_packages};
use crate::workspace;

/// Debian packages the build and the tests need: the toolchain basics, the libraries the
/// Tauri desktop app links (WebKitGTK 4.1, libsoup 3, librsvg, appindicator, OpenSSL),
/// and for the UI tests the WebKit WebDriver, a virtual X server and a font.
pub(crate) const SYSTEM_PACKAGES: &[&str] = &[
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
    // The encryption e2e test shows the `sqlite3` CLI cannot read an encrypted store.
    "sqlite3",
    // The Azure Mobile Apps JS client of the `/tables` tests runs under Node (its npm
    // ships with it); its `sqlite3` module is compiled against the system's SQLite.
    "nodejs",
    "libsqlite3-dev",
];

/// The package of the WebDriver UI tests: run on their own, after every other test.
pub const UI_TEST_PACKAGE: &str = "roster-ui-tests";

/// nextest filter of the main pass: every test but the UI tests.
const MAIN_TESTS: &str = "not package(roster-ui-tests)";

/// nextest filter of the second pass against PostgreSQL: the end-to-end package, less
/// the tests whose subject is not the server's store, which the first pass covers whole:
/// the client against fake or hostile servers (`bad_answers`, `transport`) or against
/// the Azure Mobile Apps backend (`ama_backend`, no Roster server at all), the device
/// store (`encryption`, a client killed mid-pull), and the HTTP edge in front of the
/// store (`tls`, `limits`).
const POSTGRES_TESTS: &str = "package(roster-e2e) and not (test(/^bad_answers::/) \
    | test(/^transport::/) | test(/^ama_backend::/) | test(/^encryption::/) | test(/^tls::/) \
    | test(/^limits::/) \
    | test(=client_crash::a_client_killed_mid_pull_keeps_a_consistent_store_and_finishes_later))";

/// nextest filter of the UI pass.
const UI_TESTS: &str = "package(roster-ui-tests)";

/// What clippy-driver reads its own arguments from (`cargo clippy -- ARGS` sets it the
/// same way): `-D warnings`, each argument followed by the separator.
const CLIPPY_ARGS: &str = "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__";

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

/// Runs every step in order, stopping at the first failure, then prints how long each
/// step took.
pub fn test(args: &TestArgs) -> Result<()> {
    let root = workspace::root()?;
    let mut timings = Timings::default();
    if !args.skip_install {
        timings.time("install", || {
            install(!args.no_lint, !args.no_ui, !args.no_postgres, !args.no_fuzz)
        })?;
    }
    // The npm packages download and compile beside the Rust build, which keeps both
    // cores busy anyway: the install (about 25 s cold) then costs the run next to nothing.
    let npm = (!args.skip_install).then(|| NpmInstall::start(&root));
    let build = Build::new(&root, !args.no_lint)?;
    if !args.no_lint {
        timings.time("format check", || fmt(&root))?;
    }
    timings.time("lint and build", || build.compile())?;
    if let Some(npm) = npm {
        timings.time("npm packages (wait)", || npm.finish())?;
    }
    if !args.no_lint {
        timings.time("unit file check", || crate::unit_file::verify(&root))?;
    }
    // Doctests first: the main runner's summary must be the run's closing line.
    timings.time("doctests", || build.doctests())?;
    timings.time("tests", || {
        build.tests(MAIN_TESTS, &args.runner_args, None, &[])
    })?;
    if !args.no_postgres {
        timings.time("tests on PostgreSQL", || {
            postgres_e2e_tests(&root, &build, &args.runner_args)
        })?;
    }
    // The fuzzing run (its own build, one compile job, then one libFuzzer process) goes
    // beside the UI tests: they run one at a time and leave a core idle, where the build
    // and the other test passes keep both busy.
    let fuzz = if args.no_fuzz {
        None
    } else {
        Some(crate::fuzz::Background::start(&root, FUZZ_SECONDS)?)
    };
    if !args.no_ui {
        timings.time("UI tests", || build.ui_tests(&args.runner_args))?;
    }
    if let Some(fuzz) = fuzz {
        timings.time("fuzz (wait for the end)", || fuzz.finish())?;
    }
    timings.print();
    step("all tests passed");
    Ok(())
}

/// The npm packages of the Azure Mobile Apps JS client and backend, installed on their
/// own thread (cached in `target/ama-js`, see `roster_testkit::ama_js`).
struct NpmInstall(std::thread::JoinHandle<Result<(), String>>);

impl NpmInstall {
    fn start(root: &Path) -> Self {
        step("npm packages of the Azure Mobile Apps JS client and backend, beside the build");
        let target = workspace::target_dir(root);
        let sources = root.join("tests/ama-js");
        Self(std::thread::spawn(move || {
            roster_testkit::ama_js::node_modules(&target, &sources).map(drop)
        }))
    }

    /// Waits for the install and returns its error, if any.
    fn finish(self) -> Result<()> {
        match self.0.join() {
            Ok(result) => result.map_err(anyhow::Error::msg),
            Err(_) => anyhow::bail!("the npm install thread panicked"),
        }
    }
}

/// How long each step of a run took, printed at its end.
#[derive(Default)]
struct Timings {
    steps: Vec<(&'static str, Duration)>,
}

impl Timings {
    /// Runs `f` as the step `name`, recording its duration whether it succeeds or not.
    fn time(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = Instant::now();
        let result = f();
        self.steps.push((name, started.elapsed()));
        if result.is_err() {
            self.print();
        }
        result
    }

    fn print(&self) {
        step("step times");
        let total: Duration = self.steps.iter().map(|(_, d)| *d).sum();
        for (name, duration) in &self.steps {
            println!("{name:>22}: {:>6.1} s", duration.as_secs_f64());
        }
        println!("{:>22}: {:>6.1} s", "total", total.as_secs_f64());
    }
}

/// The one build configuration of a run: the whole workspace, all targets, the dev
/// profile, and clippy-driver as the workspace's compiler wrapper when linting.
struct Build {
    root: PathBuf,
    /// clippy-driver, when the run lints.
    clippy_driver: Option<PathBuf>,
    /// Whether cargo-nextest is installed (else `cargo test` runs the tests).
    nextest: bool,
}

impl Build {
    fn new(root: &Path, lint: bool) -> Result<Self> {
        let clippy_driver = if lint {
            Some(clippy_driver_path(root)?)
        } else {
            None
        };
        let nextest = succeeds(workspace::cargo(root).args(["nextest", "--version"]));
        Ok(Self {
            root: root.to_path_buf(),
            clippy_driver,
            nextest,
        })
    }

    /// A cargo command with this build's environment.
    fn cargo(&self) -> Command {
        let mut cmd = workspace::cargo(&self.root);
        if let Some(driver) = &self.clippy_driver {
            cmd.env("RUSTC_WORKSPACE_WRAPPER", driver)
                .env("CLIPPY_ARGS", CLIPPY_ARGS);
        }
        cmd.env_remove("NEXTEST_TEST_THREADS");
        cmd
    }

    /// Compiles every target of the workspace once (`--locked` when Cargo.lock exists):
    /// the binaries the end-to-end and UI tests spawn from target/debug (the desktop app
    /// included), the test binaries, and, when linting, clippy's verdict on each
    /// workspace crate, warnings denied.
    fn compile(&self) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.args(["build", "--workspace", "--all-targets"]);
        if self.root.join("Cargo.lock").exists() {
            cmd.arg("--locked");
        }
        run(&mut cmd)
    }

    /// Runs the doctests, which cargo-nextest does not run.
    fn doctests(&self) -> Result<()> {
        step("doctests");
        run(self.cargo().args(["test", "--workspace", "--doc"]))
    }

    /// Runs the tests `filter` selects (a nextest filter expression) with cargo-nextest,
    /// with `env` set for the test processes and at most `threads` at once. Without
    /// nextest, `cargo test` runs the same packages (selected with `-p`, so such a run
    /// may compile some dependencies again).
    fn tests(
        &self,
        filter: &str,
        runner_args: &[String],
        threads: Option<u32>,
        env: &[(&str, &str)],
    ) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.envs(env.iter().copied());
        if self.nextest {
            step(&format!("tests: {filter} (cargo nextest)"));
            cmd.args([
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "-E",
                filter,
            ]);
            if let Some(threads) = threads {
                cmd.arg("--test-threads").arg(threads.to_string());
            }
            cmd.args(runner_args);
        } else {
            step(&format!(
                "tests: {filter} (cargo test; install cargo-nextest for a faster run)"
            ));
            cmd.args(["test", "--no-fail-fast"])
                .args(cargo_test_selection(filter))
                .args(runner_args);
            if let Some(threads) = threads {
                cmd.args(["--", &format!("--test-threads={threads}")]);
            }
        }
        run(&mut cmd)
    }

    /// Runs the WebDriver UI tests against the app [`Build::compile`] built, one at a
    /// time (each starts its own Xvfb, server and app instances). They fail, never skip,
    /// when Xvfb, tauri-driver or WebKitWebDriver is missing.
    fn ui_tests(&self, runner_args: &[String]) -> Result<()> {
        self.tests(UI_TESTS, runner_args, Some(1), &[])
    }
}

/// Where clippy-driver is: beside rustc in the active toolchain (`rustc --print
/// sysroot`), else the rustup proxy on `PATH`.
fn clippy_driver_path(root: &Path) -> Result<PathBuf> {
    let mut rustc = Command::new("rustc");
    rustc.current_dir(root).args(["--print", "sysroot"]);
    let sysroot = run_captured(&mut rustc)?;
    let beside_rustc = Path::new(sysroot.trim()).join("bin").join("clippy-driver");
    if beside_rustc.is_file() {
        return Ok(beside_rustc);
    }
    crate::system::cargo_tool_path("clippy-driver")
        .context("clippy-driver not found: install clippy (`rustup component add clippy`)")
}

/// The `cargo test` package selection of a nextest filter of this file.
fn cargo_test_selection(filter: &str) -> &'static [&'static str] {
    match filter {
        UI_TESTS => &["-p", UI_TEST_PACKAGE],
        POSTGRES_TESTS => &["-p", "roster-e2e"],
        _ => &["--workspace", "--exclude", UI_TEST_PACKAGE],
    }
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

/// Runs the end-to-end suite again with every test server on its own database of a
/// throwaway PostgreSQL cluster, stopped afterwards whether the tests pass or not.
fn postgres_e2e_tests(root: &Path, build: &Build, runner_args: &[String]) -> Result<()> {
    let cluster = Postgres::start(root, false)?;
    // The harness reads the backend from the environment of the test processes.
    let result = build.tests(
        POSTGRES_TESTS,
        runner_args,
        None,
        &[
            ("ROSTER_TEST_BACKEND", "postgres"),
            ("ROSTER_TEST_PG_URL", cluster.url()),
        ],
    );
    drop(cluster);
    result
}
