//! The desktop app's cold start: the release `roster-app` binary started under Xvfb on a
//! data dir holding 100k rows from a real first sync, timed from spawn until the app logs
//! that the UI painted its first list page (the UI reports it from the second animation
//! frame after the rows went into the DOM; src-tauri `commands::app::first_page_painted`).
//! Memory: the app process and every process it spawned (WebKit's web and network
//! processes), summed, at that moment.
//!
//! The store is encrypted with a random raw key, as an installed app keeps in the OS
//! keyring; no keyring answers under Xvfb, so the app reads the same hex key from
//! `ROSTER_STORE_KEY_FILE`: that start is the one the target judges. A store encrypted with
//! a passphrase (`ROSTER_PASSPHRASE_FILE`, the app's fallback where no keyring answers)
//! costs SQLCipher's key derivation at every open: those starts are reported beside it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roster_client::{LocalStore, StoreKey};
use roster_testkit::display::{XDisplay, software_rendering, terminate};

use super::{Ctx, discard, label, sibling_binary, synced_device};
use crate::report::Entry;
use crate::stats::{Latency, process_tree, sum_field_mb, sum_status_mb};

/// The line the app logs once the first list page is painted (the app's
/// `commands::app::FIRST_PAGE_PAINTED`; the bench does not link the app).
const FIRST_PAGE_PAINTED: &str = "first list page painted";

/// How long one start may take before the scenario fails.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The first X display number tried (the UI tests start from 99).
const FIRST_DISPLAY: u32 = 140;

/// What one start measured.
struct Launch {
    /// Spawn until the painted line was read from the app's log.
    painted: Duration,
    /// The app's own figure: from its `run` until the line.
    app_ms: f64,
    /// VmRSS summed over the app's processes at that moment.
    rss_mb: f64,
    /// VmHWM (each process's peak so far) summed: an upper bound of the peak.
    peak_mb: f64,
    /// Pss summed: shared pages (WebKit's libraries) counted once over the processes.
    pss_mb: f64,
    /// VmRSS of each process, by name.
    parts: Vec<(String, f64)>,
}

/// The environment of one start.
struct AppEnv<'a> {
    bin: &'a Path,
    display: String,
    data_dir: &'a Path,
    /// The key's variable (`ROSTER_STORE_KEY_FILE` or `ROSTER_PASSPHRASE_FILE`) and file.
    key_var: &'static str,
    key_file: &'a Path,
    url: &'a str,
    token: &'a str,
}

/// Text without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after `name=` in a log line.
fn field(line: &str, name: &str) -> Option<f64> {
    let rest = line.split(&format!("{name}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .parse()
        .ok()
}

/// Starts the app once, waits for the painted line, samples memory, stops the app.
fn launch(env: &AppEnv<'_>) -> Result<Launch> {
    let mut cmd = Command::new(env.bin);
    software_rendering(&mut cmd)
        .env("DISPLAY", &env.display)
        .env("ROSTER_DATA_DIR", env.data_dir)
        .env_remove("ROSTER_PASSPHRASE_FILE")
        .env_remove("ROSTER_STORE_KEY_FILE")
        .env(env.key_var, env.key_file)
        .env("ROSTER_SERVER_URL", env.url)
        .env("ROSTER_TOKEN", env.token)
        .env("ROSTER_DEVICE_NAME", "bench")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", env.bin.display()))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), strip_ansi(&line))).is_err() {
                break;
            }
        }
    });
    let deadline = started + LAUNCH_TIMEOUT;
    let mut tail: VecDeque<String> = VecDeque::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) if line.contains(FIRST_PAGE_PAINTED) => {
                let pids = process_tree(child.id());
                let (rss_mb, parts) = sum_status_mb(&pids, "VmRSS");
                let (peak_mb, _) = sum_status_mb(&pids, "VmHWM");
                let (pss_mb, _) = sum_field_mb(&pids, "smaps_rollup", "Pss");
                break Ok(Launch {
                    painted: at - started,
                    app_ms: field(&line, "since_start_ms").unwrap_or(f64::NAN),
                    rss_mb,
                    peak_mb,
                    pss_mb,
                    parts,
                });
            }
            Ok((_, line)) => {
                tail.push_back(line);
                if tail.len() > 20 {
                    tail.pop_front();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "no {FIRST_PAGE_PAINTED:?} within {LAUNCH_TIMEOUT:?}"
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(format!("the app exited before {FIRST_PAGE_PAINTED:?}"));
            }
        }
    };
    terminate(&mut child, true);
    match outcome {
        Ok(launch) => Ok(launch),
        Err(why) => bail!(
            "{why}; end of its log:\n{}",
            tail.into_iter().collect::<Vec<_>>().join("\n")
        ),
    }
}

/// Milliseconds to open the store in `dir` with `key` (median of 5), to show what the
/// passphrase's key derivation adds to every start.
fn open_ms(dir: &Path, key: &StoreKey) -> Result<f64> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        drop(LocalStore::open_with_key(dir, Some(key))?);
        samples.push(t.elapsed());
    }
    Ok(Latency::of(&samples).p50_ms)
}

/// How a store of the scenario is keyed.
struct Keying {
    /// Words for the entries' names.
    what: &'static str,
    /// The app's variable naming the key file.
    var: &'static str,
    /// The file the app reads the key from.
    file: PathBuf,
    key: StoreKey,
    /// Whether the targets apply to these starts.
    judged: bool,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.query_rows;
    let launches = ctx.sizes.app_launches;
    let bin = sibling_binary(ctx, "roster-app")?;
    let secrets = ctx.dir("app-keys")?;
    let raw = StoreKey::generate()?;
    let hex = raw.to_hex().context("a generated key has a hex form")?;
    let raw_file = secrets.join("store-key");
    std::fs::write(&raw_file, format!("{}\n", hex.as_str()))?;
    let passphrase_file = secrets.join("passphrase");
    std::fs::write(&passphrase_file, "bench passphrase\n")?;
    let keyings = [
        Keying {
            what: "raw key (keyring)",
            var: "ROSTER_STORE_KEY_FILE",
            file: raw_file,
            key: raw,
            judged: true,
        },
        Keying {
            what: "passphrase",
            var: "ROSTER_PASSPHRASE_FILE",
            key: StoreKey::from_passphrase_file(&passphrase_file)?,
            file: passphrase_file,
            judged: false,
        },
    ];
    let display = XDisplay::start(FIRST_DISPLAY).context("cannot start Xvfb")?;
    for (index, keying) in keyings.iter().enumerate() {
        let (server, data_dir) =
            synced_device(ctx, &format!("app-{index}"), n, Some(&keying.key)).await?;
        let store_open_ms = open_ms(&data_dir, &keying.key)?;
        let env = AppEnv {
            bin: &bin,
            display: display.name(),
            data_dir: &data_dir,
            key_var: keying.var,
            key_file: &keying.file,
            url: server.url(),
            token: server.token(),
        };
        let mut runs = Vec::with_capacity(launches);
        for _ in 0..launches {
            runs.push(launch(&env)?);
        }
        drop(server);
        record(ctx, n, keying.what, keying.judged, store_open_ms, &runs);
        if let Some(dir) = data_dir.parent() {
            discard(dir);
        }
    }
    drop(display);
    discard(&secrets);
    Ok(())
}

/// Records the start and memory entries of one keying's starts (`judged`: the targets
/// apply to it).
fn record(ctx: &mut Ctx, n: u64, what: &str, judged: bool, store_open_ms: f64, runs: &[Launch]) {
    let first = &runs[0];
    let painted: Vec<Duration> = runs.iter().map(|r| r.painted).collect();
    let lat = Latency::of(&painted);
    let median_of = |f: fn(&Launch) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[(values.len() - 1) / 2]
    };
    let rss = median_of(|r| r.rss_mb);
    let peak = runs.iter().map(|r| r.peak_mb).fold(0.0, f64::max);
    let parts = first
        .parts
        .iter()
        .map(|(name, mb)| format!("{name} {mb:.0} MB"))
        .collect::<Vec<_>>()
        .join(", ");
    let load = crate::report::load_average();
    let mut entry = Entry::new(
        "app",
        format!(
            "cold start until the first list page is painted, {} synced rows, {what}",
            label(n)
        ),
        runs.len() as u64,
    )
    .metric("p50_ms", lat.p50_ms)
    .metric("max_ms", lat.max_ms)
    .metric("first_start_ms", first.painted.as_secs_f64() * 1e3)
    .metric("app_log_p50_ms", median_of(|r| r.app_ms))
    .metric("store_open_ms", store_open_ms)
    .note(format!(
        "wall time from spawn of the release app under Xvfb to its '{FIRST_PAGE_PAINTED}' \
         log line, {} starts on the same data dir (the first also writes the settings); \
         app_log: from the app's run() to the line; store_open_ms: opening the store with \
         this key in the bench process (a passphrase pays SQLCipher's key derivation), \
         part of every start; load {load}",
        runs.len(),
    ));
    if judged && ctx.targets() {
        entry = entry.target("p50 < 1 s", lat.p50_ms < 1000.0);
    }
    ctx.record(entry);
    let mut entry = Entry::new(
        "app",
        format!(
            "app memory at the first painted page, {} synced rows, {what}",
            label(n)
        ),
        runs.len() as u64,
    )
    .metric("rss_mb", rss)
    .metric("peak_mb", peak)
    .metric("pss_mb", median_of(|r| r.pss_mb))
    .metric("processes", first.parts.len() as f64)
    .note(format!(
        "VmRSS summed over the app and the processes it spawned, at the painted line \
         (median of the starts); peak: the largest sum of their VmHWM (each process's own \
         peak, so an upper bound); pss: Pss summed (shared library pages divided among the \
         processes), median; first start: {parts}"
    ));
    if judged && ctx.targets() {
        entry = entry.target("rss < 200 MB", rss < 200.0);
    }
    ctx.record(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_field_of_a_log_line_without_its_colours() {
        let line = strip_ansi(
            "2026-11-28T05:00:00Z \u{1b}[32m INFO\u{1b}[0m first list page painted \
             \u{1b}[3mrows\u{1b}[0m\u{1b}[2m=\u{1b}[0m100 since_start_ms=734",
        );
        assert!(line.contains(FIRST_PAGE_PAINTED));
        assert_eq!(field(&line, "since_start_ms"), Some(734.0));
        assert_eq!(field(&line, "rows"), Some(100.0));
        assert_eq!(field(&line, "missing"), None);
    }
}
