//! First sync (pull) into an empty client with its peak memory, push of local changes,
//! and the latency of a sync with nothing to do. All over real HTTP on 127.0.0.1 to the
//! real `roster-server` binary.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::baseline::database_bytes;
use super::{Ctx, discard, label, new_client};
use crate::child::{PullOutcome, run_pull_child};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, seed, seed_ids};
use crate::stats::{CpuMeter, Latency};

/// Seeds one server up to each pull size in turn and measures a first sync of it into a
/// new, empty client running in a child process.
pub async fn first_sync(ctx: &mut Ctx) -> Result<()> {
    let dir = ctx.dir("first-sync-server")?;
    let mut server = ServerProcess::start(&ctx.server_bin, &dir, None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let mut generator = RowGen::new(1);
    let mut on_server = 0u64;
    let mut peaks: Vec<(u64, f64, bool)> = Vec::new();
    for n in ctx.sizes.pull.clone() {
        let deadline = Instant::now() + ctx.max_pull.max(Duration::from_secs(60));
        let seeded = seed(&raw, n - on_server, &mut generator, deadline).await?;
        on_server += seeded.rows;
        ctx.record(
            Entry::new(
                "first-sync",
                format!("seed server to {} rows (raw push, 5000/request)", label(n)),
                seeded.rows,
            )
            .timed(seeded.secs)
            .note("setup, not a target: the server's ingest rate with the largest batches"),
        );
        if on_server < n {
            bail!(
                "seeding reached only {on_server} of {n} rows within the time limit; \
                 raise --max-pull-secs"
            );
        }
        let client_dir = ctx.dir(&format!("first-sync-client-{}", label(n)))?;
        let (exe, url, token, limit) = (
            ctx.exe.clone(),
            server.url().to_owned(),
            server.token().to_owned(),
            ctx.max_pull,
        );
        let dir_for_child = client_dir.clone();
        let server_cpu = server.cpu();
        let outcome = tokio::task::spawn_blocking(move || {
            run_pull_child(&exe, &url, &token, &dir_for_child, limit)
        })
        .await??;
        server.check_alive()?;
        let store_bytes = if outcome.complete {
            Some(database_bytes(&client_dir.join(roster_client::DB_FILE))?)
        } else {
            None
        };
        discard(&client_dir);
        let rate = outcome.rows as f64 / outcome.secs.max(1e-9);
        let mut entry = pull_entry(
            ctx,
            format!("pull {} rows into an empty client", label(n)),
            n,
            &outcome,
            server_cpu.secs(),
        );
        if ctx.targets() && n == 100_000 {
            let vs_raw = entry.vs_baseline.unwrap_or(0.0);
            entry = entry.target(">= 0.7x raw (issue 20)", outcome.complete && vs_raw >= 0.7);
        }
        if ctx.targets() && n == 1_000_000 {
            let secs = if outcome.complete {
                outcome.secs
            } else {
                n as f64 / rate
            };
            entry = entry.target("<= 4 s (issue 20)", outcome.complete && secs <= 4.0);
        }
        ctx.record(entry);
        if let Some(bytes) = store_bytes {
            store_size_entry(ctx, n, bytes);
        }
        peaks.push((n, outcome.peak_rss_mb, outcome.complete));
    }
    drop(server);
    discard(&dir);
    if let Some(n) = ctx.sizes.pull.first().copied() {
        random_order_pull(ctx, n).await?;
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last())
        && peaks.len() > 1
    {
        // Flat: growing N tenfold adds at most a quarter to the peak.
        let flat = last.1 <= first.1 * 1.25;
        let mut entry = Entry::new(
            "first-sync",
            format!(
                "client peak RSS, {} vs {} rows",
                label(first.0),
                label(last.0)
            ),
            last.0,
        )
        .metric(&format!("rss_{}_mb", label(first.0)), first.1)
        .metric(&format!("rss_{}_mb", label(last.0)), last.1)
        .note(if last.2 {
            "VmHWM of the client process (bench re-invoked as pull-child) over init + first sync"
        } else {
            "VmHWM of the client process; the largest pull was stopped at its time limit: \
             peak so far"
        });
        if ctx.targets() {
            entry = entry.target("< 150 MB at 1M, flat in N", last.1 < 150.0 && flat);
        }
        ctx.record(entry);
    }
    Ok(())
}

/// The client store's size after a first sync of `n` rows, against the raw table holding
/// the same rows (the baseline's), when the baseline ran at that size.
fn store_size_entry(ctx: &mut Ctx, n: u64, bytes: u64) {
    let Some(raw) = ctx
        .raw_bytes
        .iter()
        .find(|(rows, _)| *rows == n)
        .map(|(_, raw)| *raw)
    else {
        return;
    };
    let ratio = bytes as f64 / raw.max(1) as f64;
    let mut entry = Entry::new(
        "first-sync",
        format!(
            "client store on disk after {} rows, vs the raw table",
            label(n)
        ),
        n,
    )
    .metric("store_mb", bytes as f64 / 1e6)
    .metric("raw_mb", raw as f64 / 1e6)
    .metric("ratio", ratio)
    .note(
        "the client's database file plus its WAL after a truncating checkpoint, against the \
         baseline's plain table of the same rows (same pragmas)",
    );
    if ctx.targets() && n == 100_000 {
        entry = entry.target("<= 1.5x the raw table (issue 20)", ratio <= 1.5);
    }
    ctx.record(entry);
}

/// The entry of one child-process pull of `n` rows; a pull stopped at its time limit is
/// reported with the rows it got, its rate and a projected total.
fn pull_entry(
    ctx: &Ctx,
    case: String,
    n: u64,
    outcome: &PullOutcome,
    server_cpu_secs: f64,
) -> Entry {
    let mut entry = Entry::new("first-sync", case, outcome.rows)
        .timed(outcome.secs)
        .vs(ctx.baseline_for(n))
        .metric("peak_rss_mb", outcome.peak_rss_mb)
        .metric("server_cpu_s", server_cpu_secs);
    if outcome.complete {
        entry = entry
            .metric("requests", f64::from(outcome.requests))
            .metric("rss_after_init_mb", outcome.rss_after_init_mb)
            .metric("client_cpu_s", outcome.cpu_secs);
        if outcome.rows != n {
            entry = entry.note(format!("pulled {} rows, expected {n}", outcome.rows));
        }
    } else if outcome.rows == 0 {
        entry = entry.note(format!(
            "stopped at the {}s limit before its first page was applied",
            ctx.max_pull.as_secs()
        ));
    } else {
        let rate = outcome.rows as f64 / outcome.secs.max(1e-9);
        let projected = n as f64 / rate.max(1e-9);
        entry = entry.metric("projected_s", projected).note(format!(
            "stopped at the {}s limit after {} of {n} rows; projected total {projected:.1}s \
             at the rate measured so far",
            ctx.max_pull.as_secs(),
            outcome.rows,
        ));
    }
    entry
}

/// A first sync of `n` rows whose ids come in random order (v4 ids): the user table's
/// B-trees (its rows and its id index) then grow by inserts all over, not by appends.
async fn random_order_pull(ctx: &mut Ctx, n: u64) -> Result<()> {
    let dir = ctx.dir("first-sync-random-ids")?;
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let deadline = Instant::now() + ctx.max_pull.max(Duration::from_secs(60));
    let seeded = seed_ids(&raw, n, &mut RowGen::new(11), deadline, true).await?;
    if seeded.rows < n {
        bail!("seeding reached only {} of {n} rows", seeded.rows);
    }
    let (exe, url, token, limit) = (
        ctx.exe.clone(),
        server.url().to_owned(),
        server.token().to_owned(),
        ctx.max_pull,
    );
    let client_dir = dir.join("client");
    let server_cpu = server.cpu();
    let outcome =
        tokio::task::spawn_blocking(move || run_pull_child(&exe, &url, &token, &client_dir, limit))
            .await??;
    server.check_alive()?;
    let mut entry = pull_entry(
        ctx,
        format!("pull {} rows, ids in random order", label(n)),
        n,
        &outcome,
        server_cpu.secs(),
    );
    if entry.note.is_none() {
        entry = entry.note(
            "v4 ids: rows arrive in version order but not in id order, as from a server \
             whose rows were edited after creation (the v7 case above appends)",
        );
    }
    ctx.record(entry);
    drop(server);
    discard(&dir);
    Ok(())
}

/// Pushes N local inserts (made with `insert_many`) in one sync round, for each size.
pub async fn push(ctx: &mut Ctx) -> Result<()> {
    for n in ctx.sizes.push.clone() {
        let dir = ctx.dir(&format!("push-{}", label(n)))?;
        let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
        let client = new_client(&dir.join("client"), server.url(), server.token()).await?;
        let rows = RowGen::new(100 + n).fields(usize::try_from(n)?);
        let store = client.store_handle();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || store.insert_many("person", rows)).await??;
        let insert_secs = started.elapsed().as_secs_f64();
        ctx.record(
            Entry::new(
                "push",
                format!("local insert_many {} rows (setup)", label(n)),
                n,
            )
            .timed(insert_secs)
            .vs(ctx.baseline_for(n))
            .note("one transaction through LocalStore: the client's local write path"),
        );
        let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
        let started = Instant::now();
        let report = client.sync().await?;
        let secs = started.elapsed().as_secs_f64();
        server.check_alive()?;
        let mut entry = Entry::new("push", format!("push {} local changes", label(n)), n)
            .timed(secs)
            .vs(ctx.baseline_for(n))
            .metric("requests", f64::from(report.requests))
            .metric("client_cpu_s", client_cpu.secs())
            .metric("server_cpu_s", server_cpu.secs());
        if report.uploaded != n {
            entry = entry.note(format!("uploaded {} of {n}", report.uploaded));
        }
        if ctx.targets() && n == 100_000 {
            let vs_raw = entry.vs_baseline.unwrap_or(0.0);
            entry = entry.target(">= 0.4x raw (issue 20)", vs_raw >= 0.4);
        }
        ctx.record(entry);
        drop(client);
        drop(server);
        discard(&dir);
    }
    Ok(())
}

/// Latency of `client.sync()` when neither side has anything new, over many rounds;
/// then the same request sent raw (server + HTTP only), without and with the round and
/// idempotency fields the engine sends.
pub async fn noop(ctx: &mut Ctx) -> Result<()> {
    let dir = ctx.dir("noop")?;
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let rows = ctx.sizes.noop_server_rows;
    let deadline = Instant::now() + Duration::from_secs(300);
    seed(&raw, rows, &mut RowGen::new(7), deadline).await?;
    let client = new_client(&dir.join("client"), server.url(), server.token()).await?;
    client.sync().await?;
    let watermark = client.store().watermark()?;
    let rounds = ctx.sizes.noop_rounds;
    let limit = Duration::from_secs(120);

    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..10 {
        client.sync().await?;
    }
    let (client_cpu, server_cpu) = (CpuMeter::start("self"), server.cpu());
    let started = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        let report = client.sync().await?;
        samples.push(t.elapsed());
        if report.downloaded > 0 || report.uploaded > 0 {
            bail!("a no-op sync moved rows: {report:?}");
        }
        if started.elapsed() > limit {
            break;
        }
    }
    let total = started.elapsed().as_secs_f64();
    let per_round = |cpu: f64| cpu * 1e3 / samples.len().max(1) as f64;
    let (client_cpu, server_cpu) = (per_round(client_cpu.secs()), per_round(server_cpu.secs()));
    let lat = Latency::of(&samples);
    let mut entry = Entry::new(
        "noop",
        format!("sync with nothing to do ({} rounds)", samples.len()),
        samples.len() as u64,
    )
    .metric("p50_ms", lat.p50_ms)
    .metric("p99_ms", lat.p99_ms)
    .metric("max_ms", lat.max_ms)
    .metric("mean_ms", lat.mean_ms)
    .metric("rounds_per_s", samples.len() as f64 / total)
    .metric("client_cpu_ms", client_cpu)
    .metric("server_cpu_ms", server_cpu)
    .note(format!(
        "client.sync() against a server holding {rows} rows, client up to date"
    ));
    entry = entry.target("p50 < 5 ms", lat.p50_ms < 5.0);
    ctx.record(entry);

    for (case, extra) in [
        ("raw request, read only (no round, no batch id)", None),
        (
            "raw request as the engine sends it (round + batch id)",
            Some(()),
        ),
    ] {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let extras = extra.map(|()| {
                json!({
                    "round": {"id": uuid::Uuid::now_v7(), "final_batch": true},
                    "batch_id": uuid::Uuid::now_v7(),
                })
            });
            let t = Instant::now();
            raw.sync_with(watermark, &[], 2_000, extras).await?;
            samples.push(t.elapsed());
        }
        let lat = Latency::of(&samples);
        ctx.record(
            Entry::new("noop", case, samples.len() as u64)
                .metric("p50_ms", lat.p50_ms)
                .metric("p99_ms", lat.p99_ms)
                .metric("max_ms", lat.max_ms)
                .note("server + loopback HTTP share of the no-op sync (no client store work)"),
        );
    }
    server.check_alive()?;
    drop(client);
    drop(server);
    discard(&dir);
    Ok(())
}
