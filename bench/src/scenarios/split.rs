//! Where the time of a pull and of a push goes. The engine's loop is replayed step by
//! step with the same public calls it makes (`LocalStore::pending_batch`,
//! `LocalStore::apply_response`) and raw HTTP requests shaped like its own, timing each
//! phase: local collect, JSON encode, server + loopback HTTP, JSON decode, local apply.
//! Here they run one after another, so each is measured alone; the engine overlaps some of
//! them (see ARCHITECTURE.md, "One sync round"), so its wall time is below their sum.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use roster_client::SyncOptions;
use roster_client::local::LocalStore;
use roster_protocol::{PROTOCOL_VERSION, RoundInfo, Schema, SyncRequest};

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
        store.apply_response(&[], &page, None)?;
        pull.apply += t.elapsed();
        since = page.watermark;
        if !page.has_more {
            break;
        }
    }
    ensure!(rows == n, "pulled {rows} of {n} rows");
    pull.record(ctx, "pull", n);
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
        let request = SyncRequest {
            protocol: PROTOCOL_VERSION,
            client_id: raw.client_id(),
            since,
            changes: batch.changes(),
            pull_limit: options.pull_limit,
            round: Some(RoundInfo {
                id: round,
                final_batch,
            }),
            batch_id: Some(uuid::Uuid::now_v7()),
        };
        // Encoded as the engine's transport does (reqwest's `json`: serde_json::to_vec).
        let t = Instant::now();
        let body = serde_json::to_vec(&request)?;
        push.encode += t.elapsed();
        let (answer, timing) = raw.post_body(body).await?;
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
    discard(&dir);
    Ok(())
}
