//! Issue 20: the PostgreSQL backend against the SQLite one, in the same run. Each round
//! starts a fresh `roster-server` (SQLite: its own file; PostgreSQL: a new database on
//! the `--postgres-url` cluster), times a client's push of N local inserts (the engine's
//! normal request size), then the first sync of a second, empty client pulling those N
//! rows. Rounds alternate SQLite / PostgreSQL / SQLite / PostgreSQL ...; each figure is
//! the median of its backend's rounds, and PostgreSQL's is given as `ratio_to_sqlite`.
//! CPU time is measured too (less noisy than wall time on a shared machine): the
//! `roster-server` process, and on PostgreSQL the cluster's processes (the postmaster,
//! its backends, WAL writer and checkpointer).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use roster_client::SyncClient;

use super::concurrent::BenchDatabase;
use super::{Ctx, discard, label, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::ServerProcess;
use crate::stats::{median, parent_pid, tree_cpu_secs};

/// Rounds per backend (interleaved).
const ROUNDS: usize = 3;

/// What one timed sync cost.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    secs: f64,
    /// The `roster-server` process.
    server_cpu: f64,
    /// The PostgreSQL cluster's processes (0 on SQLite).
    postgres_cpu: f64,
    requests: u32,
}

/// The CPU time of a PostgreSQL cluster's processes from now on.
struct ClusterCpu {
    postmaster: String,
    start: f64,
}

impl ClusterCpu {
    /// Finds the postmaster as the parent of the cluster's checkpointer (a process that
    /// lives as long as the cluster).
    fn start(admin_url: &str) -> Result<Self> {
        let out = std::process::Command::new("psql")
            .args([
                "-Atq",
                admin_url,
                "-c",
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
            ])
            .output()
            .context("cannot run psql (package postgresql-client)")?;
        let checkpointer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let postmaster =
            parent_pid(&checkpointer).context("cannot find the PostgreSQL postmaster process")?;
        let start = tree_cpu_secs(&postmaster).unwrap_or(0.0);
        Ok(Self { postmaster, start })
    }

    fn secs(&self) -> f64 {
        tree_cpu_secs(&self.postmaster).map_or(0.0, |now| now - self.start)
    }
}

/// Where a round's server keeps its data.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite,
    Postgres(&'a str),
}

impl Backend<'_> {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

/// Times `client.sync()`, with the server's (and cluster's) CPU over it.
async fn timed_sync(
    client: &SyncClient,
    server: &ServerProcess,
    cluster: Option<&ClusterCpu>,
) -> Result<(Sample, roster_client::SyncReport)> {
    let server_cpu = server.cpu();
    let cluster_start = cluster.map(ClusterCpu::secs);
    let started = Instant::now();
    let report = client.sync().await?;
    let secs = started.elapsed().as_secs_f64();
    let postgres_cpu = match (cluster, cluster_start) {
        (Some(cluster), Some(start)) => cluster.secs() - start,
        _ => 0.0,
    };
    Ok((
        Sample {
            secs,
            server_cpu: server_cpu.secs(),
            postgres_cpu,
            requests: report.requests,
        },
        report,
    ))
}

/// One round on a fresh server: push of `n` local inserts, then a new client's first
/// sync of them. Returns (push, first sync).
async fn round(ctx: &mut Ctx, backend: Backend<'_>, n: u64) -> Result<(Sample, Sample)> {
    let dir = ctx.dir(&format!("postgres-{}", backend.name()))?;
    // The database outlives its server: it is dropped at the end of the round.
    let (_db, mut server, cluster) = match backend {
        Backend::Sqlite => (
            None,
            ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?,
            None,
        ),
        Backend::Postgres(admin_url) => {
            let db = BenchDatabase::create(admin_url)?;
            let server = ServerProcess::start_on(
                &ctx.server_bin,
                &dir.join("server"),
                None,
                Some(db.url()),
                None,
            )?;
            (Some(db), server, Some(ClusterCpu::start(admin_url)?))
        }
    };
    let pusher = new_client(&dir.join("pusher"), server.url(), server.token()).await?;
    let rows = RowGen::new(2000).fields(usize::try_from(n)?);
    let store = pusher.store_handle();
    tokio::task::spawn_blocking(move || store.insert_many("person", rows)).await??;
    let (push, report) = timed_sync(&pusher, &server, cluster.as_ref()).await?;
    if report.uploaded != n {
        bail!("{}: pushed {} of {n} rows", backend.name(), report.uploaded);
    }
    drop(pusher);
    let puller = new_client(&dir.join("puller"), server.url(), server.token()).await?;
    let (pull, report) = timed_sync(&puller, &server, cluster.as_ref()).await?;
    if report.downloaded != n {
        bail!(
            "{}: pulled {} of {n} rows",
            backend.name(),
            report.downloaded
        );
    }
    drop(puller);
    server.check_alive()?;
    drop(server);
    discard(&dir);
    tracing::info!(
        backend = backend.name(),
        push_s = push.secs,
        pull_s = pull.secs,
        "round"
    );
    Ok((push, pull))
}

/// Picks one sample (push or first sync) of a round's pair.
type PickSample = fn(&(Sample, Sample)) -> Sample;

/// Runs [`ROUNDS`] interleaved rounds per backend and records the medians.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let Some(admin_url) = ctx.postgres_url.clone() else {
        ctx.record(
            Entry::new("postgres", "not measured", 0)
                .note("needs a PostgreSQL cluster: run `cargo xtask bench --postgres`"),
        );
        return Ok(());
    };
    let n = ctx.sizes.postgres;
    let load = crate::report::load_average();
    let (mut sqlite, mut postgres) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        sqlite.push(round(ctx, Backend::Sqlite, n).await?);
        postgres.push(round(ctx, Backend::Postgres(&admin_url), n).await?);
    }
    let cases: [(&str, PickSample); 2] = [
        ("push {} local inserts", |r| r.0),
        ("first sync of {} rows", |r| r.1),
    ];
    for (case, pick) in cases {
        let case = case.replace("{}", &label(n));
        let of = |rounds: &[(Sample, Sample)], field: fn(&Sample) -> f64| {
            median(
                &rounds
                    .iter()
                    .map(pick)
                    .map(|s| field(&s))
                    .collect::<Vec<_>>(),
            )
        };
        let (sqlite_secs, postgres_secs) = (of(&sqlite, |s| s.secs), of(&postgres, |s| s.secs));
        let sqlite_cpu = of(&sqlite, |s| s.server_cpu);
        let (server_cpu, cluster_cpu) = (
            of(&postgres, |s| s.server_cpu),
            of(&postgres, |s| s.postgres_cpu),
        );
        ctx.record(
            Entry::new("postgres", format!("{case}, SQLite server"), n)
                .timed(sqlite_secs)
                .metric("server_cpu_s", sqlite_cpu)
                .metric("requests", of(&sqlite, |s| f64::from(s.requests)))
                .note(format!(
                    "median of {ROUNDS} rounds interleaved with PostgreSQL's; load average \
                     at start {load}"
                )),
        );
        let ratio = postgres_secs / sqlite_secs.max(1e-9);
        let mut entry = Entry::new("postgres", format!("{case}, PostgreSQL server"), n)
            .timed(postgres_secs)
            .metric("ratio_to_sqlite", ratio)
            .metric("server_cpu_s", server_cpu)
            .metric("postgres_cpu_s", cluster_cpu)
            .metric(
                "cpu_ratio_to_sqlite",
                (server_cpu + cluster_cpu) / sqlite_cpu.max(1e-9),
            )
            .metric("requests", of(&postgres, |s| f64::from(s.requests)))
            .note(
                "ratio_to_sqlite: wall time over the SQLite server's in the same run; \
                 cpu_ratio_to_sqlite: roster-server + PostgreSQL cluster CPU over the SQLite \
                 server's CPU",
            );
        if ctx.targets() {
            entry = entry.target("≤ 1.5x SQLite", ratio <= 1.5);
        }
        ctx.record(entry);
    }
    Ok(())
}
