//! The scenarios of issue 5, each timing only its own part and recording [`Entry`]s.

pub mod app;
pub mod baseline;
pub mod cli;
pub mod concurrent;
pub mod conflicts;
pub mod encryption;
pub mod import;
pub mod large;
pub mod live;
pub mod postgres;
pub mod queries;
pub mod schema;
pub mod slices;
pub mod split;
pub mod sync;
pub mod tables;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::ValueEnum;
use roster_client::{ConnectionSecurity, Credentials, StoreKey, SyncClient};

use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, seed};

/// Scenario names accepted by `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// Raw rusqlite bulk insert of the Person rows (the local limit); always runs.
    Baseline,
    /// First sync (pull) into an empty client, 100k and 1M rows, with the client's
    /// peak RSS measured in a child process.
    FirstSync,
    /// Push of 10k and 100k local changes.
    Push,
    /// A sync with nothing to do: latency over many rounds.
    Noop,
    /// 10k conflicting rows in one round under each policy.
    Conflicts,
    /// 100 clients with 100 changes each, syncing at once.
    Concurrent,
    /// List page sorted by name, search, and a one-row edit on 100k local rows.
    Queries,
    /// Where the time of a pull and of a push goes: server + HTTP, JSON, local SQLite.
    Split,
    /// First sync into an encrypted (SQLCipher) store against a plain one, A/B.
    Encryption,
    /// Export to CSV and import from CSV of 100k people through the client API.
    Import,
    /// A device holding 1M rows following a server schema with an added column, 1% of
    /// the rows given a value (issue 13): migration time and bytes of the next round,
    /// against a full re-download in the same run.
    Schema,
    /// Live sync: edit-to-visible latency through the change feed (also across two
    /// PostgreSQL instances), and the server's cost of idle streams.
    Live,
    /// Partial sync: a device holding 1% of the data set against one holding all of it
    /// (first sync, no-op round, 1000 rows moved into and out of the slice).
    Slices,
    /// First pull of 100k rows through `/tables` by the client in Azure Mobile Apps mode,
    /// against the same pull through Roster's own protocol.
    Tables,
    /// (Issue 20) push of 100k local inserts and a first sync of them on the PostgreSQL
    /// backend against the SQLite one, interleaved rounds in one run (needs `--postgres`).
    Postgres,
    /// `roster list` on a device holding 100k synced rows: the whole process, spawned
    /// again and again (issue 20).
    Cli,
    /// The release desktop app under Xvfb on a data dir holding 100k synced rows: time
    /// from spawn until the first list page is painted, and the memory of the app with
    /// its WebKit processes (issue 20).
    App,
    /// No-op round and a 100-row delta against a server holding 10M rows, next to the
    /// same on a 100k-row server; the seeded databases are kept between runs (issue 20).
    LargeServer,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::FirstSync => "first-sync",
            Scenario::Push => "push",
            Scenario::Noop => "noop",
            Scenario::Conflicts => "conflicts",
            Scenario::Concurrent => "concurrent",
            Scenario::Queries => "queries",
            Scenario::Split => "split",
            Scenario::Encryption => "encryption",
            Scenario::Import => "import",
            Scenario::Schema => "schema",
            Scenario::Live => "live",
            Scenario::Slices => "slices",
            Scenario::Tables => "tables",
            Scenario::Postgres => "postgres",
            Scenario::Cli => "cli",
            Scenario::App => "app",
            Scenario::LargeServer => "large-server",
        }
    }

    pub const ALL: [Scenario; 18] = [
        Scenario::Baseline,
        Scenario::FirstSync,
        Scenario::Push,
        Scenario::Noop,
        Scenario::Conflicts,
        Scenario::Concurrent,
        Scenario::Queries,
        Scenario::Split,
        Scenario::Encryption,
        Scenario::Import,
        Scenario::Schema,
        Scenario::Live,
        Scenario::Slices,
        Scenario::Tables,
        Scenario::Postgres,
        Scenario::Cli,
        Scenario::App,
        Scenario::LargeServer,
    ];
}

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub baseline: u64,
    /// First sync sizes; the largest also gets its own baseline.
    pub pull: Vec<u64>,
    pub push: Vec<u64>,
    pub noop_rounds: usize,
    pub noop_server_rows: u64,
    pub conflicts: u64,
    pub clients: usize,
    pub changes_per_client: usize,
    pub query_rows: u64,
    pub query_reps: usize,
    pub split: u64,
    pub import: u64,
    /// Rows of the store that follows a new schema.
    pub schema: u64,
    /// Rows pushed and pulled in each round of the PostgreSQL-against-SQLite scenario.
    pub postgres: u64,
    /// Runs of `roster list` (cli scenario, on `query_rows` rows).
    pub cli_runs: usize,
    /// Cold starts of the app (app scenario, on `query_rows` rows).
    pub app_launches: usize,
    /// Rows of the large server, and of the small one it is compared with.
    pub large_server: u64,
    pub large_reference: u64,
    /// No-op rounds and 100-row delta rounds timed on each of them.
    pub large_noop_rounds: usize,
    pub large_delta_rounds: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            baseline: 100_000,
            pull: vec![100_000, 1_000_000],
            push: vec![10_000, 100_000],
            noop_rounds: 500,
            noop_server_rows: 10_000,
            conflicts: 10_000,
            clients: 100,
            changes_per_client: 100,
            query_rows: 100_000,
            query_reps: 30,
            split: 100_000,
            import: 100_000,
            schema: 1_000_000,
            postgres: 100_000,
            cli_runs: 20,
            app_launches: 5,
            large_server: 10_000_000,
            large_reference: 100_000,
            large_noop_rounds: 200,
            large_delta_rounds: 20,
        }
    }

    pub fn quick() -> Self {
        Self {
            baseline: 20_000,
            pull: vec![20_000, 100_000],
            push: vec![2_000, 10_000],
            noop_rounds: 100,
            noop_server_rows: 1_000,
            conflicts: 1_000,
            clients: 100,
            changes_per_client: 10,
            query_rows: 20_000,
            query_reps: 10,
            split: 20_000,
            import: 20_000,
            schema: 100_000,
            postgres: 20_000,
            cli_runs: 10,
            app_launches: 2,
            large_server: 200_000,
            large_reference: 20_000,
            large_noop_rounds: 50,
            large_delta_rounds: 5,
        }
    }
}

/// Shared state of a run: settings, where data goes, the baseline rates measured so
/// far and the entries recorded.
pub struct Ctx {
    pub quick: bool,
    pub sizes: Sizes,
    pub server_bin: PathBuf,
    /// This binary, re-invoked for the child-process pulls.
    pub exe: PathBuf,
    pub work: PathBuf,
    pub max_pull: Duration,
    /// Raw insert rate (rows/s) by row count.
    pub baselines: Vec<(u64, f64)>,
    /// Bytes on disk of the raw table (the baseline's plain user rows) by row count.
    pub raw_bytes: Vec<(u64, u64)>,
    /// Whether the baseline is also measured at the largest first-sync size.
    pub large_baseline: bool,
    pub entries: Vec<Entry>,
    /// Admin URL of a PostgreSQL cluster: the concurrent scenario also runs there.
    pub postgres_url: Option<String>,
    /// Where seeded databases kept between runs live (`seed-<generator>-<rows>/`).
    pub seed_root: PathBuf,
    dirs: u32,
}

impl Ctx {
    pub fn new(
        quick: bool,
        server_bin: PathBuf,
        exe: PathBuf,
        work: PathBuf,
        max_pull: Duration,
    ) -> Self {
        Self {
            quick,
            sizes: if quick { Sizes::quick() } else { Sizes::full() },
            server_bin,
            exe,
            work,
            max_pull,
            baselines: Vec::new(),
            raw_bytes: Vec::new(),
            large_baseline: false,
            entries: Vec::new(),
            postgres_url: None,
            seed_root: std::env::temp_dir(),
            dirs: 0,
        }
    }

    /// A new, empty directory under the run's work dir.
    pub fn dir(&mut self, name: &str) -> Result<PathBuf> {
        self.dirs += 1;
        let dir = self.work.join(format!("{:02}-{name}", self.dirs));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// The raw insert rate measured at the row count nearest to `rows`.
    pub fn baseline_for(&self, rows: u64) -> Option<f64> {
        self.baselines
            .iter()
            .min_by_key(|(n, _)| n.abs_diff(rows))
            .map(|(_, rate)| *rate)
    }

    /// Records an entry and logs it, so progress shows while the run goes on.
    pub fn record(&mut self, entry: Entry) {
        tracing::info!(
            scenario = %entry.scenario,
            case = %entry.case,
            secs = entry.secs.map(|s| format!("{s:.3}")),
            rows_per_s = entry.rows_per_s.map(|r| format!("{r:.0}")),
            vs_raw = entry.vs_baseline.map(|r| format!("{r:.2}")),
            metrics = ?entry.metrics.iter().map(|m| format!("{}={:.3}", m.name, m.value)).collect::<Vec<_>>(),
            "measured"
        );
        self.entries.push(entry);
    }

    /// Whether targets apply: they are stated for the full sizes.
    pub fn targets(&self) -> bool {
        !self.quick
    }
}

/// A new client of `url` presenting `token`, with its store in `dir` (schema fetched
/// from the server).
pub async fn new_client(dir: &Path, url: &str, token: &str) -> Result<SyncClient> {
    Ok(SyncClient::init(dir, url, &roster_client::Credentials::token(token), None).await?)
}

/// The binary `name` next to this one (the release build of `cargo xtask bench`).
pub fn sibling_binary(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let path = ctx
        .exe
        .parent()
        .context("this binary has no directory")?
        .join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run `cargo xtask bench`, which builds it",
        path.display()
    );
    Ok(path)
}

/// A server holding `n` generated Person rows, and a device store in `DIR/device` that
/// pulled all of them in one first sync (encrypted with `key` when given): the store as a
/// real first sync leaves it. The server keeps running for the caller.
pub async fn synced_device(
    ctx: &mut Ctx,
    name: &str,
    n: u64,
    key: Option<&StoreKey>,
) -> Result<(ServerProcess, PathBuf)> {
    let dir = ctx.dir(name)?;
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let seeded = seed(&raw, n, &mut RowGen::new(n + 17), deadline).await?;
    ensure!(seeded.rows == n, "seeded {} of {n} rows", seeded.rows);
    let device = dir.join("device");
    let client = SyncClient::init_with_key(
        &device,
        server.url(),
        &Credentials::token(server.token()),
        &ConnectionSecurity::default(),
        key,
        None,
    )
    .await?;
    let report = client.sync().await?;
    ensure!(
        report.downloaded == n,
        "the first sync pulled {} of {n} rows",
        report.downloaded
    );
    Ok((server, device))
}

/// Removes a data dir that is no longer needed (large stores would fill the disk).
pub fn discard(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(%error, dir = %dir.display(), "cannot remove bench data");
    }
}

/// `rows` as a short label: 100000 -> 100k.
pub fn label(rows: u64) -> String {
    if rows >= 1_000_000 && rows % 1_000_000 == 0 {
        format!("{}M", rows / 1_000_000)
    } else if rows >= 1_000 && rows % 1_000 == 0 {
        format!("{}k", rows / 1_000)
    } else {
        rows.to_string()
    }
}
