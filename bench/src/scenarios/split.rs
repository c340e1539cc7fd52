//! Where the time of a pull and of a push goes. The engine's round is driven step by step
//! through the same state machine the engine drives (`bench_internals::RoundState`), with
//! the same local steps (`collect_batch`, `apply_answer`) and the machine's own requests
//! sent as raw HTTP, timing each phase: local collect, JSON encode, server + loopback
//! HTTP, JSON decode, local apply. Here they run one after another, so each is measured
//! alone; the engine overlaps some of them (see docs/ROUND.md), so its wall time is below
//! their sum.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use roster_client::bench_internals::{
    self, Event, Received, RoundParams, RoundState, Step, collect_batch,
};
use roster_client::{LocalStore, SyncOptions};
use roster_protocol::{PulledResponse, Schema};

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
            ("client: collect pending rows (collect_batch)", self.collect),
            ("client: encode request JSON", self.encode),
            ("server + loopback HTTP (incl. server JSON)", self.http),
            ("client: decode answer JSON", self.decode),
            ("client: apply_answer (local SQLite)", self.apply),
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

/// What one driven round moved.
struct Moved {
    pulled: u64,
    pushed: u64,
}

/// Applies an answer the round handed out, timed, counting its pulled rows.
fn apply(
    store: &LocalStore,
    received: &Received,
    round_done: bool,
    phases: &mut Phases,
    moved: &mut Moved,
) -> Result<roster_client::bench_internals::ApplyCounts, roster_client::ClientError> {
    moved.pulled += received.response.changes.len() as u64;
    let t = Instant::now();
    let counts = bench_internals::apply_answer(store, received, round_done);
    phases.apply += t.elapsed();
    counts
}

/// Runs one sync round of `store` against `raw`'s server, one step after another, as the
/// engine's state machine asks for them.
async fn drive(
    store: &LocalStore,
    raw: &Raw,
    options: &SyncOptions,
    phases: &mut Phases,
) -> Result<Moved> {
    let mut round = RoundState::new(RoundParams {
        client_id: raw.client_id(),
        up_to_rev: bench_internals::edit_counter(store)?,
        start_watermark: store.watermark()?,
        push_batch: options.push_batch,
        push_max_bytes: options.push_max_bytes,
        pull_limit: options.pull_limit,
        epoch: None,
    });
    let mut moved = Moved {
        pulled: 0,
        pushed: 0,
    };
    let mut step = round.start();
    loop {
        step = match step {
            Step::Collect(spec) => {
                let t = Instant::now();
                let batch = collect_batch(store, &spec);
                phases.collect += t.elapsed();
                round.on(Event::Collected(batch))
            }
            // Nothing is sent ahead here (no `follow`): each phase is timed alone.
            Step::Send {
                request,
                apply: answer_to_apply,
                collect_ahead,
                ..
            } => {
                // Encoded as the engine's transport does (reqwest's `json`: serde_json::to_vec).
                let t = Instant::now();
                let body = serde_json::to_vec(&request)?;
                phases.encode += t.elapsed();
                let (answer, timing) = raw.post_body::<PulledResponse>(body).await?;
                phases.http += timing.http;
                phases.decode += timing.decode;
                phases.bytes += timing.bytes;
                phases.requests += 1;
                moved.pushed += answer.acks.len() as u64;
                let applied = match &answer_to_apply {
                    Some(received) => apply(store, received, false, phases, &mut moved).map(Some),
                    None => Ok(None),
                };
                let ahead = match collect_ahead {
                    Some(spec) => {
                        let t = Instant::now();
                        let batch = collect_batch(store, &spec).ok();
                        phases.collect += t.elapsed();
                        batch
                    }
                    None => None,
                };
                round.on(Event::Answered {
                    request,
                    answer: Ok(answer),
                    applied,
                    ahead,
                    followed: None,
                })
            }
            Step::Reset => round.on(Event::ResetDone(bench_internals::reset_for_full_pull(
                store,
            ))),
            Step::ApplyLast(received) => {
                let counts = apply(store, &received, true, phases, &mut moved);
                round.on(Event::LastApplied(counts))
            }
            Step::Rebase(_) => bail!("the benchmark's server asked for a re-base"),
            Step::Done(_) => return Ok(moved),
            Step::Fail(error) => bail!("sync round failed: {error}"),
        };
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
    let rows = drive(&store, &raw, &options, &mut pull).await?.pulled;
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
    let mut push = Phases::default();
    let pushed = drive(&store, &raw, &options, &mut push).await?.pushed;
    ensure!(pushed == n, "pushed {pushed} of {n} rows");
    push.record(ctx, "push", n);
    server.check_alive()?;
    drop(store);
    drop(server);
    discard(&dir);
    Ok(())
}
