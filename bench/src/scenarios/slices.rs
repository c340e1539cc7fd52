//! Partial sync: a device subscribed to 1% of a data set (one city of a hundred) against
//! a device holding all of it, in the same run: the first sync, the no-op round, and
//! 1000 rows edited into and out of the slice reaching each device in one round.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use roster_client::{Subscription, SyncClient};
use roster_protocol::{Fields, RowId};
use serde_json::{Value, json};

use super::{Ctx, discard, label, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, insert_change, push_raw_acked, update_change};
use crate::stats::Latency;

/// The one city of the slice; every hundredth seeded row lives there.
const SLICE_CITY: &str = "Quimper";

/// The server config: the shipped person table and one subscription.
const CONFIG: &str = r#"
[[subscriptions]]
name = "by_city"
table = "person"
filter = { city = ":city" }
"#;

/// Rows edited into and out of the slice (half each way).
const MOVED: usize = 1_000;

/// No-op rounds measured per device.
const NOOP_ROUNDS: usize = 200;

/// A seeded row the edit step moves: id, version, values.
type Seeded = (RowId, u64, Fields);

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.pull.last().copied().unwrap_or(100_000);
    let dir = ctx.dir("slices")?;
    let server = ServerProcess::start(&ctx.server_bin, &dir.join("server"), Some(CONFIG))?;
    let raw = Raw::new(server.url(), server.token())?;
    let (inside, outside) = seed(&raw, n).await?;
    let slice_rows = n / 100;

    let full = new_client(&dir.join("full"), server.url(), server.token()).await?;
    let part = new_client(&dir.join("part"), server.url(), server.token()).await?;
    part.subscribe(Subscription {
        name: "by_city".into(),
        params: BTreeMap::from([("city".to_owned(), json!(SLICE_CITY))]),
    })
    .await?;
    let full_secs = timed_sync(&full).await?;
    let part_secs = timed_sync(&part).await?;
    let held = part.store().status()?;
    if full.store().watermark()? != part.store().watermark()? {
        bail!("the two devices ended at different watermarks");
    }
    let mut entry = Entry::new(
        "slices",
        format!(
            "first sync of a 1% slice ({} of {} rows)",
            label(slice_rows),
            label(n)
        ),
        slice_rows,
    )
    .timed(part_secs)
    .metric("whole_data_set_s", full_secs)
    .metric("ratio_to_whole", part_secs / full_secs.max(1e-9))
    .note(format!(
        "the same server, the whole data set pulled by another device just before \
         (watermark {})",
        held.watermark
    ));
    if ctx.targets() && n == 1_000_000 {
        entry = entry.target("< 1 s", part_secs < 1.0);
    }
    ctx.record(entry);

    let part_noop = noop(&part).await?;
    let full_noop = noop(&full).await?;
    ctx.record(
        Entry::new(
            "slices",
            format!("no-op round of the 1% device ({NOOP_ROUNDS} rounds)"),
            NOOP_ROUNDS as u64,
        )
        .metric("p50_ms", part_noop.p50_ms)
        .metric("p99_ms", part_noop.p99_ms)
        .metric("whole_data_set_p50_ms", full_noop.p50_ms)
        .metric(
            "ratio_to_whole",
            part_noop.p50_ms / full_noop.p50_ms.max(1e-9),
        )
        .target("p50 < 5 ms", part_noop.p50_ms < 5.0),
    );

    move_rows(&raw, &inside, &outside).await?;
    let t = Instant::now();
    let report = part.sync().await?;
    let part_move = t.elapsed().as_secs_f64();
    let t = Instant::now();
    full.sync().await?;
    let full_move = t.elapsed().as_secs_f64();
    let half = (MOVED / 2) as u64;
    if report.downloaded != half || report.evicted != half {
        bail!("the 1% device got {report:?}, expected {half} rows in and {half} out");
    }
    ctx.record(
        Entry::new(
            "slices",
            format!("{MOVED} rows edited into and out of the slice, one round"),
            MOVED as u64,
        )
        .timed(part_move)
        .metric("whole_data_set_s", full_move)
        .metric("ratio_to_whole", part_move / full_move.max(1e-9))
        .target("< 100 ms", part_move < 0.1),
    );
    drop((full, part, server));
    discard(&dir);
    Ok(())
}

/// Seeds `n` rows, every hundredth in [`SLICE_CITY`]; returns some rows inside the slice
/// and some outside it, with the versions their acks gave.
async fn seed(raw: &Raw, n: u64) -> Result<(Vec<Seeded>, Vec<Seeded>)> {
    let mut generator = RowGen::new(11);
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut written = 0u64;
    let mut versions = std::collections::HashMap::new();
    while written < n {
        let take = 100_000.min(n - written);
        let mut changes = Vec::with_capacity(take as usize);
        for i in written..written + take {
            let mut fields = generator.person().fields();
            if i % 100 == 0 {
                fields.insert("city".into(), Value::String(SLICE_CITY.into()));
            }
            let id = RowId::now_v7();
            let moved = if i % 100 == 0 {
                &mut inside
            } else {
                &mut outside
            };
            if moved.len() < MOVED / 2 {
                moved.push((id, 0, fields.clone()));
                versions.insert(id, 0);
            }
            changes.push(insert_change(id, &fields));
        }
        let done = push_raw_acked(raw, changes, deadline, |ack| {
            if let Some(version) = versions.get_mut(&ack.id) {
                *version = ack.version;
            }
        })
        .await?;
        if done.rows < take {
            bail!("seeding stopped at {} of {n} rows", written + done.rows);
        }
        written += take;
    }
    for (id, version, _) in inside.iter_mut().chain(outside.iter_mut()) {
        *version = versions.get(id).copied().unwrap_or_default();
    }
    Ok((inside, outside))
}

/// Moves the `inside` rows out of the slice and the `outside` rows into it, in one
/// request from a third party.
async fn move_rows(raw: &Raw, inside: &[Seeded], outside: &[Seeded]) -> Result<()> {
    let moved = |rows: &[Seeded], city: &str| -> Vec<Value> {
        rows.iter()
            .map(|(id, version, base)| {
                let mut fields = base.clone();
                fields.insert("city".into(), Value::String(city.into()));
                update_change(*id, *version, base, &fields)
            })
            .collect()
    };
    let mut changes = moved(inside, "Lyon");
    changes.extend(moved(outside, SLICE_CITY));
    let (answer, _) = raw.sync(0, &changes, 0).await?;
    if answer.acks.len() != changes.len() {
        bail!(
            "{} of {} moves applied cleanly (the seeded versions were not 1..n?)",
            answer.acks.len(),
            changes.len()
        );
    }
    Ok(())
}

async fn timed_sync(client: &SyncClient) -> Result<f64> {
    let t = Instant::now();
    client.sync().await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn noop(client: &SyncClient) -> Result<Latency> {
    for _ in 0..10 {
        client.sync().await?;
    }
    let mut samples = Vec::with_capacity(NOOP_ROUNDS);
    for _ in 0..NOOP_ROUNDS {
        let t = Instant::now();
        let report = client.sync().await?;
        samples.push(t.elapsed());
        if report.downloaded > 0 || report.evicted > 0 {
            bail!("a no-op round moved rows: {report:?}");
        }
    }
    Ok(Latency::of(&samples))
}
