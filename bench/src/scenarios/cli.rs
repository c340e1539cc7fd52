//! `roster list` on a device holding 100k synced rows, as a person runs it from a shell:
//! the release `roster` binary spawned again and again with its default page, timed from
//! spawn until it exited (wall time), with the CPU time the runs used.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::{Ctx, discard, label, sibling_binary, synced_device};
use crate::report::Entry;
use crate::stats::{Latency, waited_children_cpu_secs};

/// Rows on the default page of `roster list` (its `--limit` default).
const DEFAULT_PAGE: usize = 100;

/// One `roster --data-dir DIR list`: its wall time; fails unless it printed a full page.
fn list_once(roster: &Path, device: &Path) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(roster)
        .arg("--data-dir")
        .arg(device)
        .arg("list")
        .env_remove("ROSTER_TOKEN")
        .env_remove("ROSTER_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", roster.display()))?;
    let wall = started.elapsed();
    ensure!(
        out.status.success(),
        "roster list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    ensure!(
        lines > DEFAULT_PAGE,
        "roster list printed {lines} lines, expected a page of {DEFAULT_PAGE} rows"
    );
    Ok(wall)
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.query_rows;
    let runs = ctx.sizes.cli_runs;
    let roster = sibling_binary(ctx, "roster")?;
    let (server, device) = synced_device(ctx, "cli", n, None).await?;
    // `roster list` reads the local store only: the server is not needed any more.
    drop(server);
    // The first run reads the store's pages from disk into the OS cache.
    list_once(&roster, &device)?;
    let cpu_before = waited_children_cpu_secs().unwrap_or(0.0);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(list_once(&roster, &device)?);
    }
    let cpu_ms = (waited_children_cpu_secs().unwrap_or(0.0) - cpu_before) * 1e3 / runs as f64;
    let lat = Latency::of(&samples);
    let mut entry = Entry::new(
        "cli",
        format!("roster list (first page), {} synced rows", label(n)),
        runs as u64,
    )
    .metric("p50_ms", lat.p50_ms)
    .metric("p95_ms", lat.p95_ms)
    .metric("max_ms", lat.max_ms)
    .metric("cpu_ms_per_run", cpu_ms)
    .note(
        "wall time of the whole release process, spawn to exit (its output read from a \
         pipe), after one untimed run; cpu_ms_per_run: user + system CPU of the runs, \
         from the bench's waited-for children",
    );
    if ctx.targets() {
        entry = entry.target("p50 < 50 ms", lat.p50_ms < 50.0);
    }
    ctx.record(entry);
    if let Some(dir) = device.parent() {
        discard(dir);
    }
    Ok(())
}
