//! `cargo xtask fuzz`: a bounded libFuzzer run of the request-decoding target in `fuzz/`
//! (cargo-fuzz, stable toolchain: no sanitizer, coverage instrumentation only).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::process::{display, run, step};
use crate::system::ensure_cargo_tool;
use crate::workspace;

/// The fuzz target run by CI.
const TARGET: &str = "sync_request";

/// Options of `cargo xtask fuzz`.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// How long libFuzzer runs, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
}

/// Installs cargo-fuzz when missing, then runs the target for `args.seconds`, starting
/// from the committed seeds. New corpus entries go to `target/fuzz/corpus/` (not the
/// repository); a crashing input is saved under `fuzz/artifacts/` and fails the run.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let root = workspace::root()?;
    step("cargo-fuzz");
    ensure_cargo_tool("cargo-fuzz", "cargo-fuzz")?;
    run_target(&root, args.seconds)
}

/// Runs the decoding target for `seconds` in the foreground.
pub fn run_target(root: &Path, seconds: u32) -> Result<()> {
    step(&format!("fuzz {TARGET} for {seconds} s (libFuzzer)"));
    run(&mut fuzz_command(root, seconds)?)
}

/// The cargo-fuzz command that builds the target and runs it for `seconds` from the
/// committed seeds; new corpus entries go to `target/fuzz/corpus/`.
fn fuzz_command(root: &Path, seconds: u32) -> Result<Command> {
    let target = workspace::target_dir(root);
    let corpus = target.join("fuzz").join("corpus").join(TARGET);
    std::fs::create_dir_all(&corpus)?;
    let seeds = root.join("fuzz").join("seeds").join(TARGET);
    let mut cmd = workspace::cargo(root);
    cmd.args([
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        "--release",
        "--target-dir",
    ])
    .arg(target.join("fuzz"))
    .arg(TARGET)
    .arg(&corpus)
    .arg(&seeds)
    .arg("--")
    .arg(format!("-max_total_time={seconds}"))
    .arg("-max_len=65536");
    Ok(cmd)
}

/// A fuzzing run in the background of `cargo xtask test`, its output in a log file.
///
/// It builds in its own target dir (`target/fuzz`) with one compile job, so it runs
/// beside the UI tests, which leave a core idle, instead of adding a step of its own
/// (the build and the other test passes keep both cores busy). Dropped before
/// [`Background::finish`] (a step failed), it kills the run.
pub struct Background {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Background {
    /// Starts the build and a `seconds`-long run of the decoding target.
    pub fn start(root: &Path, seconds: u32) -> Result<Self> {
        let log = workspace::target_dir(root)
            .join("fuzz")
            .join("xtask-fuzz.log");
        let mut cmd = fuzz_command(root, seconds)?;
        // One compile job: the run shares the machine with the UI tests.
        cmd.env("CARGO_BUILD_JOBS", "1");
        step(&format!(
            "fuzz {TARGET} for {seconds} s in the background (log: {})",
            log.display()
        ));
        println!("$ {}", display(&cmd));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("cannot start cargo fuzz")?;
        Ok(Self {
            child,
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the run to end, prints the end of its log (all of it when it failed),
    /// and fails when libFuzzer found a crash or the build failed.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait().context("cannot wait for cargo fuzz")?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let shown = if status.success() {
            &lines[lines.len().saturating_sub(LOG_TAIL)..]
        } else {
            &lines[..]
        };
        step(&format!(
            "fuzz {TARGET}: ended after {:.0} s in the background ({status})",
            self.started.elapsed().as_secs_f64()
        ));
        for line in shown {
            println!("{line}");
        }
        if status.success() {
            Ok(())
        } else {
            bail!(
                "the fuzzing run failed ({status}): see {}",
                self.log.display()
            )
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many lines of a successful background run's log are printed.
const LOG_TAIL: usize = 6;
