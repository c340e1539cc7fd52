//! `cargo xtask bench`: build the release binaries, then run `roster-bench`, which
//! prints a table and writes JSON to `target/bench/` (see docs/BENCHMARKS.md).
//!
//! Not part of `cargo xtask test`: a full run takes minutes and its figures depend on
//! the machine's load.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::postgres::Postgres;
use crate::process::{run, step};
use crate::workspace;

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Smaller sizes for a fast check (about half a minute); targets are only judged at
    /// full size. Results go to target/bench/results-quick.json.
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (repeatable): baseline, first-sync, push, noop,
    /// conflicts, concurrent, queries, split, import, postgres, cli, app, large-server, ...
    /// The baseline always runs.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Also run the concurrent scenario on PostgreSQL (one and two server instances),
    /// and the postgres scenario (PostgreSQL against SQLite, issue 20):
    /// installs the `postgresql` package and runs a throwaway cluster (fsync on) on
    /// 127.0.0.1, stopped afterwards.
    #[arg(long)]
    postgres: bool,
    /// More arguments for roster-bench, after `--` (e.g. `-- --max-pull-secs 120`).
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Builds `roster-bench`, `roster-server`, `roster` and `roster-app` with `--release` and
/// runs the benchmarks.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let root = workspace::root()?;
    step("build the release binaries");
    // The CLI and the desktop app too: the cli and app scenarios spawn them.
    run(workspace::cargo(&root).args([
        "build",
        "--release",
        "-p",
        "roster-bench",
        "-p",
        "roster-server",
        "-p",
        "roster-cli",
        "-p",
        "roster-app",
    ]))?;
    let target = workspace::target_dir(&root);
    let release = target.join("release");
    let out_dir = target.join("bench");
    let out = out_dir.join(if args.quick {
        "results-quick.json"
    } else {
        "results.json"
    });
    step(if args.quick {
        "run the benchmarks (quick sizes)"
    } else {
        "run the benchmarks (a few minutes)"
    });
    let mut cmd = Command::new(release.join("roster-bench"));
    cmd.current_dir(&root)
        .arg("--server-bin")
        .arg(release.join("roster-server"))
        .arg("--out")
        .arg(relative(&root, &out))
        .arg("--work-dir")
        .arg(relative(&root, &out_dir));
    if args.quick {
        cmd.arg("--quick");
    }
    for scenario in &args.scenarios {
        cmd.arg("--scenario").arg(scenario);
    }
    let cluster = if args.postgres {
        Some(Postgres::start(&root, true)?)
    } else {
        None
    };
    if let Some(cluster) = &cluster {
        cmd.arg("--postgres-url").arg(cluster.url());
    }
    cmd.args(&args.extra);
    let result = run(&mut cmd);
    drop(cluster);
    result
}

/// `path` relative to `root` when inside it, for shorter command lines.
fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}
