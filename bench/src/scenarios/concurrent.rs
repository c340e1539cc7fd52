//! Many clients, each with its own store and pending changes, syncing at the same time
//! against one server: throughput, latency of each round, and errors (there must be
//! none, and the server must hold every change afterwards). With a PostgreSQL cluster
//! (`--postgres-url`) the same runs on PostgreSQL with one and with two server
//! instances on one database, the clients spread evenly over the instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;

use super::{Ctx, discard, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess};
use crate::stats::{CpuMeter, Latency};

/// Time limit of the concurrent part.
const LIMIT: Duration = Duration::from_secs(300);

/// Where the servers of one measurement keep their data.
enum Backend<'a> {
    Sqlite,
    Postgres {
        admin_url: &'a str,
        instances: usize,
    },
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    measure(ctx, Backend::Sqlite).await?;
    if let Some(admin_url) = ctx.postgres_url.clone() {
        for instances in [1, 2] {
            measure(
                ctx,
                Backend::Postgres {
                    admin_url: &admin_url,
                    instances,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// A database of its own on the cluster at `admin_url`, for one round: dropped when the
/// guard is (its servers stopped or not), so that autovacuum does not work on earlier
/// rounds' rows during later ones, as an SQLite round's files are removed after it.
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    /// Creates a database with a fresh name with `psql`.
    pub fn create(admin_url: &str) -> Result<Self> {
        let name = format!("roster_bench_{}", uuid::Uuid::now_v7().simple());
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("the PostgreSQL URL must end with /DATABASE")?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let dropped = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if let Err(error) = dropped {
            tracing::warn!(%error, database = %self.name, "could not drop a bench database");
        }
    }
}

/// Runs one statement with `psql` on the cluster at `admin_url`.
fn psql(admin_url: &str, sql: &str) -> Result<()> {
    let status = std::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c", sql])
        .status()
        .context("cannot run psql (package postgresql-client)")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

async fn measure(ctx: &mut Ctx, backend: Backend<'_>) -> Result<()> {
    let (clients, changes) = (ctx.sizes.clients, ctx.sizes.changes_per_client);
    let dir = ctx.dir("concurrent")?;
    // The database outlives its servers: it is dropped at the end of the round.
    let (_db, mut servers, label) = match backend {
        Backend::Sqlite => (
            None,
            vec![ServerProcess::start(
                &ctx.server_bin,
                &dir.join("server"),
                None,
            )?],
            String::new(),
        ),
        Backend::Postgres {
            admin_url,
            instances,
        } => {
            let db = BenchDatabase::create(admin_url)?;
            let mut servers = Vec::with_capacity(instances);
            for index in 0..instances {
                // The first instance creates the bench user; the others share its token.
                let token = servers
                    .first()
                    .map(|s: &ServerProcess| s.token().to_owned());
                servers.push(ServerProcess::start_on(
                    &ctx.server_bin,
                    &dir.join(format!("server-{index}")),
                    None,
                    Some(db.url()),
                    token.as_deref(),
                )?);
            }
            let plural = if instances == 1 { "" } else { "s" };
            (
                Some(db),
                servers,
                format!(", PostgreSQL, {instances} instance{plural}"),
            )
        }
    };
    let mut generator = RowGen::new(500);
    let mut all = Vec::with_capacity(clients);
    for index in 0..clients {
        let server = &servers[index % servers.len()];
        let client = new_client(
            &dir.join(format!("client-{index:03}")),
            server.url(),
            server.token(),
        )
        .await?;
        let store = client.store_handle();
        let rows = generator.fields(changes);
        tokio::task::spawn_blocking(move || store.insert_many("person", rows)).await??;
        all.push(Arc::new(client));
    }
    let client_cpu = CpuMeter::start("self");
    let server_cpus: Vec<CpuMeter> = servers.iter().map(ServerProcess::cpu).collect();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in &all {
        let client = client.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let result = client.sync().await;
            (t.elapsed(), result)
        });
    }
    let mut latencies = Vec::with_capacity(clients);
    let mut errors = Vec::new();
    let mut downloaded = 0u64;
    let outcome = tokio::time::timeout(LIMIT, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((elapsed, Ok(report))) => {
                    latencies.push(elapsed);
                    downloaded += report.downloaded;
                }
                Ok((_, Err(error))) => errors.push(error.to_string()),
                Err(error) => errors.push(format!("task failed: {error}")),
            }
        }
    })
    .await;
    if outcome.is_err() {
        errors.push(format!("{} rounds unfinished after {LIMIT:?}", tasks.len()));
        tasks.abort_all();
    }
    let wall = started.elapsed().as_secs_f64();
    let client_cpu = client_cpu.secs();
    let server_cpu: f64 = server_cpus.iter().map(CpuMeter::secs).sum();
    for server in &mut servers {
        server.check_alive()?;
    }
    let on_server = Raw::new(servers[0].url(), servers[0].token())?
        .count_rows()
        .await?;
    let expected = (clients * changes) as u64;
    if on_server != expected {
        errors.push(format!(
            "the server holds {on_server} rows, expected {expected}"
        ));
    }
    let lat = Latency::of(&latencies);
    let mut entry = Entry::new(
        "concurrent",
        format!("{clients} clients x {changes} changes at once{label}"),
        expected,
    )
    .timed(wall)
    .vs(ctx.baseline_for(expected))
    .metric("p50_ms", lat.p50_ms)
    .metric("p99_ms", lat.p99_ms)
    .metric("max_ms", lat.max_ms)
    .metric("errors", errors.len() as f64)
    .metric("pulled", downloaded as f64)
    .metric("moved_rows_per_s", (expected + downloaded) as f64 / wall)
    .metric("clients_cpu_s", client_cpu)
    .metric("server_cpu_s", server_cpu)
    .target("zero errors", errors.is_empty());
    if let Some(first) = errors.first() {
        entry = entry.note(format!("{} errors; first: {first}", errors.len()));
        for error in &errors {
            tracing::error!(%error, "concurrent sync failed");
        }
    } else {
        let mut note = String::from(
            "rows/s = pushed changes / wall time; each round also pulls the rows of the \
             clients that finished before it",
        );
        if !label.is_empty() {
            note.push_str("; server CPU counts the roster-server processes, not PostgreSQL's");
        }
        entry = entry.note(note);
    }
    ctx.record(entry);
    drop(all);
    drop(servers);
    discard(&dir);
    Ok(())
}
