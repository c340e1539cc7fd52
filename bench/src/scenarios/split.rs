//! Where the time of a pull and of a push goes. The engine's loop is replayed step by
//! step with the same public calls it makes (`LocalStore::pending_batch`,
//! `LocalStore::apply_response`) and raw HTTP requests shaped like its own, timing each
//! phase: local collect, JSON encode, server + loopback HTTP, JSON decode, local apply.
//! The engine runs these phases one after another, so their sum is its floor; the
//! largest one is what a pipelined engine would be bound by.
//!
//! The EXPERIMENT entries then run that pipelined loop (see [`pipelined_round`]) with
//! the same public calls, to measure what the proposed engine change would bring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use roster_client::SyncOptions;
use roster_client::local::{LocalStore, SentChange};
use roster_protocol::Schema;
use roster_protocol::SyncResponse;
use serde_json::{Value, json};

use super::{Ctx, discard, label};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, seed};

#[derive(Default)]
struct Phases {
    collect: Duration,
    encode: Duration,
    http: Duration,
    decode: Duration,
    apply: Duration,
    bytes: usize,
    requests: u32,
}

impl Phases {
    fn record(&self, ctx: &mut Ctx, what: &str, rows: u64) {
        let base = ctx.baseline_for(rows);
        let n = label(rows);
        let phases = [
            ("client: collect pending rows (pending_batch)", self.collect),
            ("client: encode request JSON", self.encode),
            ("server + loopback HTTP (incl. server JSON)", self.http),
            ("client: decode answer JSON", self.decode),
            ("client: apply_response (local SQLite)", self.apply),
        ];
        let total: Duration = phases.iter().map(|(_, time)| *time).sum();
        for (phase, time) in phases {
            // Phases under 1% of the round (e.g. a pull's tiny request bodies) are noise.
            if time.as_secs_f64() < total.as_secs_f64() / 100.0 {
                continue;
            }
            ctx.record(
                Entry::new("split", format!("{what} {n}: {phase}"), rows)
                    .timed(time.as_secs_f64())
                    .vs(base),
            );
        }
        ctx.record(
            Entry::new("split", format!("{what} {n}: sum of phases"), rows)
                .timed(total.as_secs_f64())
                .vs(base)
                .metric("requests", f64::from(self.requests))
                .metric(
                    "answer_bytes_per_row",
                    self.bytes as f64 / rows.max(1) as f64,
                ),
        );
    }
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.split;
    let dir = ctx.dir("split")?;
    let options = SyncOptions::default();

    // Pull: a full first sync, page by page.
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server-pull"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    seed(
        &raw,
        n,
        &mut RowGen::new(1),
        Instant::now() + Duration::from_secs(300),
    )
    .await?;
    let store = LocalStore::create(
        &dir.join("client-pull"),
        server.url(),
        &Schema::default_person(),
    )?;
    let mut pull = Phases::default();
    let mut flat_decode = Duration::ZERO;
    let mut since = 0;
    let mut rows = 0u64;
    loop {
        let (page, timing) = raw.sync(since, &[], options.pull_limit).await?;
        pull.encode += timing.encode;
        pull.http += timing.http;
        pull.decode += timing.decode;
        pull.bytes += timing.bytes;
        pull.requests += 1;
        rows += page.changes.len() as u64;
        let t = Instant::now();
        let flat: FlatAnswer = serde_json::from_slice(&timing.body)?;
        flat_decode += t.elapsed();
        ensure!(
            flat.changes.len() == page.changes.len(),
            "flat decode lost rows"
        );
        let t = Instant::now();
        store.apply_response(&[], &page, None)?;
        pull.apply += t.elapsed();
        since = page.watermark;
        if !page.has_more {
            break;
        }
    }
    ensure!(rows == n, "pulled {rows} of {n} rows");
    pull.record(ctx, "pull", n);
    ctx.record(
        Entry::new(
            "split",
            format!(
                "EXPERIMENT pull {}: decode answers without serde flatten",
                label(n)
            ),
            n,
        )
        .timed(flat_decode.as_secs_f64())
        .vs(ctx.baseline_for(n))
        .note(
            "the same bodies decoded into a mirror of ServerChange whose row fields are \
             declared inline instead of #[serde(flatten)] (same JSON)",
        ),
    );
    server.check_alive()?;
    drop(store);
    drop(server);

    // Push: N local inserts, batch by batch as the engine sends them.
    let mut server = ServerProcess::start(&ctx.server_bin, &dir.join("server-push"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let store = LocalStore::create(
        &dir.join("client-push"),
        server.url(),
        &Schema::default_person(),
    )?;
    store.insert_many("person", RowGen::new(2).fields(usize::try_from(n)?))?;
    let up_to = store.edit_counter()?;
    let round = uuid::Uuid::now_v7();
    let mut push = Phases::default();
    let (mut cursor, mut since, mut pushed) = (0i64, 0u64, 0u64);
    loop {
        let t = Instant::now();
        let batch =
            store.pending_batch(cursor, up_to, options.push_batch, options.push_max_bytes)?;
        let Some(last) = batch.sent.last() else {
            break;
        };
        cursor = last.local_rev;
        let final_batch = !store.has_pending_between(cursor, up_to)?;
        push.collect += t.elapsed();
        let t = Instant::now();
        let changes: Vec<Value> = batch
            .changes()
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        push.encode += t.elapsed();
        let extras = json!({
            "round": {"id": round, "final_batch": final_batch},
            "batch_id": uuid::Uuid::now_v7(),
        });
        let (answer, timing) = raw
            .sync_with(since, &changes, options.pull_limit, Some(extras))
            .await?;
        push.encode += timing.encode;
        push.http += timing.http;
        push.decode += timing.decode;
        push.bytes += timing.bytes;
        push.requests += 1;
        pushed += answer.acks.len() as u64;
        let t = Instant::now();
        store.apply_response(&batch.sent, &answer, None)?;
        push.apply += t.elapsed();
        since = answer.watermark;
    }
    ensure!(pushed == n, "pushed {pushed} of {n} rows");
    push.record(ctx, "push", n);
    server.check_alive()?;
    drop(store);
    drop(server);

    // The same rounds, pipelined.
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server-pull"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    for page in [options.pull_limit, roster_protocol::MAX_PULL_LIMIT] {
        let client_dir = dir.join(format!("client-pull-pipelined-{page}"));
        let store = Arc::new(LocalStore::create(
            &client_dir,
            server.url(),
            &Schema::default_person(),
        )?);
        let done = pipelined_round(&raw, store, &options, page).await?;
        ensure!(done.pulled == n, "pulled {} of {n} rows", done.pulled);
        ctx.record(
            Entry::new(
                "split",
                format!("EXPERIMENT pull {} pipelined, {page} rows/page", label(n)),
                n,
            )
            .timed(done.secs)
            .vs(ctx.baseline_for(n))
            .metric("requests", f64::from(done.requests))
            .note(
                "next request sent as soon as an answer arrives, answer applied while the \
                 next one is at the server (public calls only, no engine change)",
            ),
        );
        discard(&client_dir);
    }
    drop(server);
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server-push-pipelined"), None)?;
    let raw = Raw::new(server.url(), server.token())?;
    let store = Arc::new(LocalStore::create(
        &dir.join("client-push-pipelined"),
        server.url(),
        &Schema::default_person(),
    )?);
    store.insert_many("person", RowGen::new(3).fields(usize::try_from(n)?))?;
    let done = pipelined_round(&raw, store, &options, options.pull_limit).await?;
    ensure!(done.pushed == n, "pushed {} of {n} rows", done.pushed);
    ctx.record(
        Entry::new(
            "split",
            format!("EXPERIMENT push {} pipelined", label(n)),
            n,
        )
        .timed(done.secs)
        .vs(ctx.baseline_for(n))
        .metric("requests", f64::from(done.requests))
        .note(
            "batch k+1 collected and encoded while request k is at the server; answer k \
             applied while request k+1 is",
        ),
    );
    drop(server);
    discard(&dir);
    Ok(())
}

/// A pulled change as on the wire, with the row's fields inline: the same JSON as
/// `ServerChange`, whose `#[serde(flatten)] row` makes serde buffer every change.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FlatChange {
    table: String,
    id: uuid::Uuid,
    version: u64,
    deleted: bool,
    fields: Option<roster_protocol::Fields>,
}

/// The part of a `SyncResponse` a pull decodes.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FlatAnswer {
    changes: Vec<FlatChange>,
    watermark: u64,
    has_more: bool,
}

/// What a pipelined round moved.
struct RoundDone {
    pushed: u64,
    pulled: u64,
    requests: u32,
    secs: f64,
}

/// A batch collected for the next request, with its request body parts.
struct Prepared {
    sent: Vec<SentChange>,
    changes: Vec<Value>,
    final_batch: bool,
}

fn prepare(
    store: &LocalStore,
    cursor: &mut i64,
    up_to: i64,
    options: &SyncOptions,
) -> Result<Prepared> {
    let batch = store.pending_batch(*cursor, up_to, options.push_batch, options.push_max_bytes)?;
    if let Some(last) = batch.sent.last() {
        *cursor = last.local_rev;
    }
    let final_batch = !store.has_pending_between(*cursor, up_to)?;
    let changes = batch
        .changes()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        sent: batch.sent,
        changes,
        final_batch,
    })
}

/// One sync round as the engine runs it (push every pending change, then pull until the
/// server has no more), pipelined: the next batch is collected and encoded while a
/// request is at the server; the next request leaves as soon as an answer arrives, with
/// that answer's watermark; the answer is applied while the next request is at the
/// server. Answers are still applied in order, each in its own transaction with its
/// watermark, as today.
async fn pipelined_round(
    raw: &Raw,
    store: Arc<LocalStore>,
    options: &SyncOptions,
    pull_limit: u32,
) -> Result<RoundDone> {
    let started = Instant::now();
    let up_to = store.edit_counter()?;
    let round = uuid::Uuid::now_v7();
    let mut cursor = 0i64;
    let mut since = store.watermark()?;
    let mut open = true;
    let mut done = RoundDone {
        pushed: 0,
        pulled: 0,
        requests: 0,
        secs: 0.0,
    };
    let mut next = {
        let store = store.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            prepare(&store, &mut cursor, up_to, &options).map(|p| (p, cursor))
        })
        .await??
    };
    cursor = next.1;
    let mut to_apply: Option<(Vec<SentChange>, SyncResponse)> = None;
    loop {
        let (prepared, _) = next;
        let extras = open.then(|| {
            json!({
                "round": {"id": round, "final_batch": prepared.final_batch},
                "batch_id": uuid::Uuid::now_v7(),
            })
        });
        if prepared.final_batch {
            open = false;
        }
        let request = {
            let raw = raw.clone();
            let changes = prepared.changes;
            tokio::spawn(async move { raw.sync_with(since, &changes, pull_limit, extras).await })
        };
        // While the request is at the server: apply the previous answer, then collect
        // the next batch.
        let local = {
            let store = store.clone();
            let options = options.clone();
            let previous = to_apply.take();
            let collect = open;
            let mut cursor = cursor;
            tokio::task::spawn_blocking(move || -> Result<(Prepared, i64)> {
                if let Some((sent, answer)) = previous {
                    store.apply_response(&sent, &answer, None)?;
                }
                let prepared = if collect {
                    prepare(&store, &mut cursor, up_to, &options)?
                } else {
                    Prepared {
                        sent: Vec::new(),
                        changes: Vec::new(),
                        final_batch: true,
                    }
                };
                Ok((prepared, cursor))
            })
        };
        let (answer, _) = request.await??;
        next = local.await??;
        cursor = next.1;
        done.requests += 1;
        done.pushed += (answer.acks.len() + answer.conflicts.len()) as u64;
        done.pulled += answer.changes.len() as u64;
        since = answer.watermark;
        let finished = !open && !answer.has_more;
        to_apply = Some((prepared.sent, answer));
        if finished {
            break;
        }
    }
    if let Some((sent, answer)) = to_apply {
        tokio::task::spawn_blocking(move || store.apply_response(&sent, &answer, None)).await??;
    }
    done.secs = started.elapsed().as_secs_f64();
    Ok(done)
}
