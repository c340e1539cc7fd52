//! Many clients, each with its own store and pending changes, syncing at the same time
//! against one server: throughput, latency of each round, and errors (there must be
//! none, and the server must hold every change afterwards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinSet;

use super::{Ctx, discard, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess};
use crate::stats::{CpuMeter, Latency};

/// Time limit of the concurrent part.
const LIMIT: Duration = Duration::from_secs(300);

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let (clients, changes) = (ctx.sizes.clients, ctx.sizes.changes_per_client);
    let dir = ctx.dir("concurrent")?;
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let mut generator = RowGen::new(500);
    let mut all = Vec::with_capacity(clients);
    for index in 0..clients {
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
    let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
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
    let (client_cpu, server_cpu) = (client_cpu.secs(), server_cpu.secs());
    server.check_alive()?;
    let on_server = Raw::new(server.url(), server.token())?.count_rows().await?;
    let expected = (clients * changes) as u64;
    if on_server != expected {
        errors.push(format!(
            "the server holds {on_server} rows, expected {expected}"
        ));
    }
    let lat = Latency::of(&latencies);
    let mut entry = Entry::new(
        "concurrent",
        format!("{clients} clients x {changes} changes at once"),
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
        entry = entry.note(
            "rows/s = pushed changes / wall time; each round also pulls the rows of the \
             clients that finished before it",
        );
    }
    ctx.record(entry);
    drop(all);
    drop(server);
    discard(&dir);
    Ok(())
}
