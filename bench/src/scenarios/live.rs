//! Live sync (issue 16): edit-to-visible latency through the change feed, and what
//! idle streams cost the server.
//!
//! * **Latency**: device A edits one person and syncs; device B follows the feed
//!   ([`roster_client::LiveFeed`]) and runs a round when told. A sample runs from the
//!   start of A's round (its edit is committed locally just before) to the moment B's
//!   round has committed the new value to B's store: A's push, the notification and
//!   B's pull, on loopback. The app's debounce before A's push is not included. Edits
//!   go one at a time. With a PostgreSQL cluster the same runs with A and B on two
//!   instances of one database (LISTEN/NOTIFY between them).
//! * **Idle streams**: that many change streams held open on one server (SQLite), then
//!   the server's resident memory and its CPU over a quiet period (keep-alives only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roster_client::{LiveEvent, SyncClient};
use roster_protocol::{CHANGES_PATH, Fields, RowId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::concurrent::BenchDatabase;
use super::{Ctx, discard, new_client};
use crate::report::Entry;
use crate::server::ServerProcess;
use crate::stats::{CpuMeter, Latency, proc_status_mb};

/// Edits timed per latency case.
const EDITS: usize = 200;
/// Longest one edit may take to show on B before the case fails.
const EDIT_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    latency(ctx, None).await?;
    if let Some(admin_url) = ctx.postgres_url.clone() {
        latency(ctx, Some(&admin_url)).await?;
    }
    idle_streams(ctx).await
}

/// Follows `client`'s feed, runs a round when one is due and reports the person's name
/// in B's store after each round, with when that round ended. Abort the task when done.
fn follow(
    client: Arc<SyncClient>,
    id: RowId,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<(String, Instant)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut feed = client.live();
        loop {
            let due = match feed.next().await {
                LiveEvent::Connected { behind, .. } => behind,
                LiveEvent::Changed { .. } => true,
                LiveEvent::Lost { error, .. } => {
                    tracing::warn!(%error, "bench follower lost its stream");
                    false
                }
            };
            if !due {
                continue;
            }
            if let Err(error) = client.sync().await {
                tracing::warn!(%error, "bench follower round failed");
                continue;
            }
            let done = Instant::now();
            let name = client
                .store()
                .get("person", id)
                .ok()
                .and_then(|record| record.fields.get("name").cloned())
                .and_then(|name| name.as_str().map(str::to_owned));
            if let Some(name) = name
                && tx.send((name, done)).is_err()
            {
                return;
            }
        }
    });
    (task, rx)
}

fn named(name: &str) -> Fields {
    let mut fields = Fields::new();
    fields.insert("name".into(), json!(name));
    fields
}

async fn latency(ctx: &mut Ctx, postgres: Option<&str>) -> Result<()> {
    let dir = ctx.dir("live")?;
    // The database outlives its servers: it is dropped at the end of the measurement.
    let (_db, servers) = match postgres {
        None => (
            None,
            vec![ServerProcess::start(
                &ctx.server_bin,
                &dir.join("server"),
                None,
            )?],
        ),
        Some(admin_url) => {
            let db = BenchDatabase::create(admin_url)?;
            let first = ServerProcess::start_on(
                &ctx.server_bin,
                &dir.join("s0"),
                None,
                Some(db.url()),
                None,
            )?;
            let token = first.token().to_owned();
            let second = ServerProcess::start_on(
                &ctx.server_bin,
                &dir.join("s1"),
                None,
                Some(db.url()),
                Some(&token),
            )?;
            (Some(db), vec![first, second])
        }
    };
    let (server_a, server_b) = (&servers[0], &servers[servers.len() - 1]);
    let a = new_client(&dir.join("a"), server_a.url(), server_a.token()).await?;
    let b = Arc::new(new_client(&dir.join("b"), server_b.url(), server_b.token()).await?);
    let id = a.store().insert("person", named("start"))?.id;
    a.sync().await?;
    let (follower, mut seen) = follow(b.clone(), id);
    // Warm up: B is live and holds the row.
    wait_for(&mut seen, "start").await?;
    let mut samples = Vec::with_capacity(EDITS);
    for n in 0..EDITS {
        let name = format!("edit {n}");
        a.store().update("person", id, named(&name))?;
        let started = Instant::now();
        a.sync().await?;
        let shown = wait_for(&mut seen, &name).await?;
        samples.push(shown.saturating_duration_since(started));
    }
    let lat = Latency::of(&samples);
    let case = match postgres {
        None => format!("edit-to-visible, {EDITS} edits, one server (SQLite)"),
        Some(_) => format!("edit-to-visible, {EDITS} edits, A and B on two PostgreSQL instances"),
    };
    ctx.record(
        Entry::new("live", case, EDITS as u64)
            .metric("p50_ms", lat.p50_ms)
            .metric("p99_ms", lat.p99_ms)
            .metric("max_ms", lat.max_ms)
            .target(
                "p50 < 50 ms and p99 < 250 ms",
                lat.p50_ms < 50.0 && lat.p99_ms < 250.0,
            )
            .note("from the start of A's round (edit committed locally) to B's round committed"),
    );
    follower.abort();
    drop(b);
    drop(servers);
    discard(&dir);
    Ok(())
}

/// Waits until B reports `name`; returns when its round ended.
async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + EDIT_LIMIT;
    loop {
        let (shown, at) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .with_context(|| format!("{name:?} did not reach B within {EDIT_LIMIT:?}"))?
            .context("B's follower stopped")?;
        if shown == name {
            return Ok(at);
        }
    }
}

/// Opens one change stream over a plain socket and reads (and drops) what it sends
/// until the socket closes; returns once the answer's head has arrived.
async fn open_stream(addr: &str, token: &str) -> Result<tokio::task::JoinHandle<()>> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {CHANGES_PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 512];
    let read = socket.read(&mut head).await?;
    if !head[..read].starts_with(b"HTTP/1.1 200") {
        bail!(
            "the change feed refused a stream: {}",
            String::from_utf8_lossy(&head[..read])
        );
    }
    Ok(tokio::spawn(async move {
        let mut buffer = [0u8; 256];
        while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
    }))
}

async fn idle_streams(ctx: &mut Ctx) -> Result<()> {
    // Devices connect at any time, not together: the streams open spread over one
    // keep-alive period (the server's default, 15 s), so their timers are not in step.
    let (streams, quiet, opening) = if ctx.quick {
        (500, Duration::from_secs(10), Duration::from_secs(3))
    } else {
        (2000, Duration::from_secs(60), Duration::from_secs(15))
    };
    let dir = ctx.dir("live-idle")?;
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), None)?;
    let pid = server.pid();
    let addr = server
        .url()
        .strip_prefix("http://")
        .context("the bench server speaks plain HTTP")?
        .to_owned();
    let rss_before = proc_status_mb(&pid, "VmRSS").unwrap_or(0.0);
    let mut readers = Vec::with_capacity(streams);
    let mut next = tokio::time::Instant::now();
    for _ in 0..streams {
        readers.push(open_stream(&addr, server.token()).await?);
        next += opening / streams as u32;
        tokio::time::sleep_until(next).await;
    }
    // Let the opening settle before the quiet period is measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = CpuMeter::start(&pid);
    let started = Instant::now();
    tokio::time::sleep(quiet).await;
    let cpu_secs = cpu.secs();
    let wall = started.elapsed().as_secs_f64();
    let rss = proc_status_mb(&pid, "VmRSS").unwrap_or(0.0);
    let alive = readers.iter().filter(|r| !r.is_finished()).count();
    let cpu_percent = 100.0 * cpu_secs / wall;
    ctx.record(
        Entry::new(
            "live",
            format!("{streams} idle streams, {:.0} s quiet", quiet.as_secs_f64()),
            streams as u64,
        )
        .metric("server_rss_mb", rss)
        .metric("server_rss_before_mb", rss_before)
        .metric("server_cpu_percent", cpu_percent)
        .metric("streams_open", alive as f64)
        .target(
            "RSS < 100 MB, CPU < 1% of a core, every stream open",
            rss < 100.0 && cpu_percent < 1.0 && alive == streams,
        )
        .note(
            "defaults: a keep-alive comment every 15 s and a token re-check every 60 s per stream; the streams opened spread over 15 s",
        ),
    );
    for reader in readers {
        reader.abort();
    }
    drop(server);
    discard(&dir);
    Ok(())
}
