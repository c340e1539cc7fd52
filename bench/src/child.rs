//! The first sync measured in a child process (this binary re-invoked as `pull-child`),
//! so its peak resident set (`VmHWM`) is the client's alone and the pull can be stopped
//! at a time limit.
//!
//! The child prints `PROGRESS {json}` about twice a second and `RESULT {json}` at the end;
//! the parent samples `/proc/<pid>/status` meanwhile.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use roster_client::SyncClient;
use serde::Deserialize;
use serde_json::json;

use crate::stats::proc_status_mb;

/// Arguments of the hidden `pull-child` subcommand.
#[derive(Args, Debug)]
pub struct PullChildArgs {
    /// Server base URL.
    #[arg(long)]
    url: String,
    /// Empty data dir for the new client.
    #[arg(long)]
    dir: PathBuf,
    /// Bearer token (passed by the parent in the environment, not on the command line).
    #[arg(long, env = "ROSTER_TOKEN", hide_env_values = true)]
    token: String,
}

/// Child side: create an empty client, time one sync round, report memory.
pub async fn run_child(args: &PullChildArgs) -> Result<()> {
    let credentials = roster_client::Credentials::token(args.token.clone());
    let client = SyncClient::init(&args.dir, &args.url, &credentials, None).await?;
    let rss_after_init = proc_status_mb("self", "VmHWM").unwrap_or(0.0);
    let cpu = crate::stats::CpuMeter::start("self");
    let started = Instant::now();
    let mut last = Instant::now();
    let report = client
        .sync_with_progress(|p| {
            if last.elapsed() >= Duration::from_millis(500) {
                last = Instant::now();
                let line = json!({
                    "downloaded": p.downloaded,
                    "requests": p.requests,
                    "secs": started.elapsed().as_secs_f64(),
                    "rss_mb": proc_status_mb("self", "VmRSS").unwrap_or(0.0),
                });
                println!("PROGRESS {line}");
                let _ = std::io::stdout().flush();
            }
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let line = json!({
        "downloaded": report.downloaded,
        "requests": report.requests,
        "secs": secs,
        "peak_rss_mb": proc_status_mb("self", "VmHWM").unwrap_or(0.0),
        "rss_after_init_mb": rss_after_init,
        "cpu_secs": cpu.secs(),
    });
    println!("RESULT {line}");
    std::io::stdout().flush()?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Progress {
    downloaded: u64,
    secs: f64,
}

#[derive(Debug, Deserialize)]
struct Final {
    downloaded: u64,
    requests: u32,
    secs: f64,
    peak_rss_mb: f64,
    rss_after_init_mb: f64,
    cpu_secs: f64,
}

/// What the parent saw of one child pull.
#[derive(Debug, Clone, Copy)]
pub struct PullOutcome {
    /// Rows pulled (all of them when `complete`).
    pub rows: u64,
    /// Time of the sync round (or until the last progress report when stopped).
    pub secs: f64,
    /// Whether the round finished before the time limit.
    pub complete: bool,
    pub requests: u32,
    /// Peak resident set of the child: its own final `VmHWM`, or the parent's last
    /// sample of it when the child was stopped.
    pub peak_rss_mb: f64,
    /// `VmHWM` once the empty client was created (runtime, HTTP client, SQLite).
    pub rss_after_init_mb: f64,
    /// CPU time of the client process during the sync round (0 when stopped).
    pub cpu_secs: f64,
}

/// Parent side: runs `exe pull-child` against `url` with `token` and the client in
/// `dir`, stops it after `limit`.
pub fn run_pull_child(
    exe: &Path,
    url: &str,
    token: &str,
    dir: &Path,
    limit: Duration,
) -> Result<PullOutcome> {
    let mut child = Command::new(exe)
        .arg("pull-child")
        .arg("--url")
        .arg(url)
        .arg("--dir")
        .arg(dir)
        .env("ROSTER_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {} pull-child", exe.display()))?;
    let pid = child.id().to_string();
    let stdout = child.stdout.take().context("child stdout not captured")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut sampled_peak = 0.0f64;
    let mut progress: Option<Progress> = None;
    let mut result: Option<Final> = None;
    let mut timed_out = false;
    loop {
        if let Some(mb) = proc_status_mb(&pid, "VmHWM") {
            sampled_peak = sampled_peak.max(mb);
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(json) = line.strip_prefix("PROGRESS ") {
                    progress = Some(serde_json::from_str(json)?);
                    if let Some(p) = &progress {
                        tracing::info!(rows = p.downloaded, secs = p.secs, "first sync running");
                    }
                } else if let Some(json) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str(json)?);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if started.elapsed() > limit {
            timed_out = true;
            tracing::warn!(?limit, "first sync stopped at its time limit");
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    match (result, timed_out) {
        (Some(r), _) => Ok(PullOutcome {
            rows: r.downloaded,
            secs: r.secs,
            complete: true,
            requests: r.requests,
            peak_rss_mb: r.peak_rss_mb.max(sampled_peak),
            rss_after_init_mb: r.rss_after_init_mb,
            cpu_secs: r.cpu_secs,
        }),
        (None, true) => {
            let (rows, secs) =
                progress.map_or((0, limit.as_secs_f64()), |p| (p.downloaded, p.secs));
            Ok(PullOutcome {
                rows,
                secs,
                complete: false,
                requests: 0,
                peak_rss_mb: sampled_peak,
                rss_after_init_mb: 0.0,
                cpu_secs: 0.0,
            })
        }
        (None, false) => bail!("pull-child failed ({status})"),
    }
}
