//! `cargo xtask fuzz`: a bounded libFuzzer run of the request-decoding target in `fuzz/`
//! (cargo-fuzz, stable toolchain: no sanitizer, coverage instrumentation only).

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::process::{run, step};
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

/// Runs the decoding target for `seconds` (also called by `cargo xtask test`).
pub fn run_target(root: &Path, seconds: u32) -> Result<()> {
    step(&format!("fuzz {TARGET} for {seconds} s (libFuzzer)"));
    let target = workspace::target_dir(root);
    let corpus = target.join("fuzz").join("corpus").join(TARGET);
    std::fs::create_dir_all(&corpus)?;
    let seeds = root.join("fuzz").join("seeds").join(TARGET);
    run(workspace::cargo(root)
        .args([
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
        .arg("-max_len=65536"))
}
