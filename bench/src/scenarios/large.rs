//! A server holding 10M rows in the data set: the latency of a sync with nothing to do
//! and of a sync that pulls 100 rows another device edited, against the same on a
//! server holding 100k rows, in the same run (their ratio shows whether any cost grows
//! with the data set). SQLite backend.
//!
//! The device is in sync without holding the rows: its store was made by `init`, then
//! given the server's current watermark and epoch, as a device that pulled everything
//! would have them. Every round goes through `SyncClient::sync` over real HTTP.
//!
//! Seeding: the server's own `create-user` makes the database, one row goes in through
//! a real push (the template: every column as the server writes it), and the other rows
//! are bulk-inserted with that row's column values, new ids, versions and generated
//! fields, in id and version order (as a server that took them in order would hold
//! them). The database is kept in `<work dir>/seed-v<GENERATOR>-<rows>/` and reused by
//! later runs (an older generator's is removed); the delta rounds edit the same 100
//! rows, so the row count never changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use roster_client::SyncClient;
use roster_protocol::{Fields, RowId};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::{Ctx, discard, label, new_client};
use crate::data::RowGen;
use crate::report::Entry;
use crate::server::{Raw, ServerProcess, create_user, insert_change, update_change};
use crate::stats::Latency;

/// Version of the seeded database's generator: change it whenever the rows or the way
/// they are written change, so older seeds are not reused (they are removed).
///
/// Version 2: the SQLite server keeps its rows in version order (a database of version 1
/// would be rebuilt by the server's migration at its first start, about 70 s for 10M rows).
pub const GENERATOR_VERSION: u32 = 2;

/// Rows edited by the other device before each delta round.
const DELTA_ROWS: usize = 100;

/// Rows per transaction while bulk-inserting.
const SEED_CHUNK: u64 = 500_000;

/// A seeded server database kept between runs.
struct Seed {
    db: PathBuf,
    token: String,
}

/// The seed of `n` rows under `ctx.seed_root`, made now unless a complete one exists.
async fn seeded_database(ctx: &mut Ctx, n: u64) -> Result<(Seed, Option<f64>)> {
    let dir = ctx
        .seed_root
        .join(format!("seed-v{GENERATOR_VERSION}-{}", label(n)));
    remove_older_seeds(&ctx.seed_root, n);
    let ready = dir.join("READY");
    if ready.is_file() {
        let token = std::fs::read_to_string(dir.join("token"))
            .with_context(|| format!("cannot read the token of {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "reusing the seeded server database");
        return Ok((
            Seed {
                db: dir.join("server.db"),
                token: token.trim().to_owned(),
            },
            None,
        ));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the unfinished {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let db = dir.join("server.db");
    let token = create_user(&ctx.server_bin, &db)?;
    {
        // The template row, written by the server itself.
        let server = ServerProcess::start_on(
            &ctx.server_bin,
            &dir.join("template-run"),
            None,
            db.to_str(),
            Some(&token),
        )?;
        let raw = Raw::new(server.url(), server.token())?;
        let change = insert_change(RowId::now_v7(), &RowGen::new(0).person().fields());
        raw.sync(0, &[change], 0).await?;
    }
    let path = db.clone();
    tokio::task::spawn_blocking(move || bulk_insert(&path, n - 1)).await??;
    std::fs::write(dir.join("token"), &token)?;
    std::fs::write(&ready, format!("{n}\n"))?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(rows = n, secs, dir = %dir.display(), "seeded a server database");
    Ok((Seed { db, token }, Some(secs)))
}

/// Removes the seeds of `n` rows that an older generator made (a 10M-row one holds
/// about 4 GB), since no run reuses them.
fn remove_older_seeds(root: &Path, n: u64) {
    let current = format!("seed-v{GENERATOR_VERSION}-{}", label(n));
    let suffix = format!("-{}", label(n));
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seed-v") && name.ends_with(&suffix) && name != current {
            tracing::info!(dir = %entry.path().display(), "removing an older seed");
            discard(&entry.path());
        }
    }
}

/// Appends `more` rows copied from the one row of `db` (new id, version and fields).
fn bulk_insert(db: &Path, more: u64) -> Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    // Seeding only: the file is complete (and switched back to WAL) before it is used.
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;",
    )?;
    let (columns, template): (Vec<String>, Vec<SqlValue>) = {
        let mut stmt = conn.prepare("SELECT * FROM rows")?;
        let columns: Vec<String> = stmt
            .column_names()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            bail!("the template row is missing");
        };
        let values = (0..columns.len())
            .map(|i| row.get::<_, SqlValue>(i))
            .collect::<Result<_, _>>()?;
        ensure!(rows.next()?.is_none(), "more than one template row");
        (columns, values)
    };
    let position = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .with_context(|| format!("the rows table has no column {name}"))
    };
    let (id_at, version_at, data_at) = (position("id")?, position("version")?, position("data")?);
    let last_seq: i64 =
        conn.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
            r.get(0)
        })?;
    let sql = format!(
        "INSERT INTO rows ({}) VALUES ({})",
        columns.join(", "),
        (1..=columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // v7 ids after the template's: 4096 per millisecond, in order.
    let base_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )? + 1_000;
    let mut generator = RowGen::new(GENERATOR_VERSION.into());
    let mut values = template;
    let mut done = 0u64;
    while done < more {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(&sql)?;
            for i in done..more.min(done + SEED_CHUNK) {
                let mut counter = [0u8; 10];
                counter[..2].copy_from_slice(&u16::try_from(i % 4096)?.to_be_bytes());
                let id = uuid::Builder::from_unix_timestamp_millis(base_ms + i / 4096, &counter)
                    .into_uuid();
                values[id_at] = SqlValue::Text(id.to_string());
                values[version_at] = SqlValue::Integer(last_seq + 1 + i64::try_from(i)?);
                values[data_at] =
                    SqlValue::Text(serde_json::to_string(&generator.person().fields())?);
                insert.execute(rusqlite::params_from_iter(values.iter()))?;
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'last_seq'",
            [last_seq + i64::try_from(more.min(done + SEED_CHUNK))?],
        )?;
        tx.commit()?;
        done = more.min(done + SEED_CHUNK);
        tracing::info!(rows = done + 1, "seeding the large server database");
    }
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    Ok(())
}

/// Latencies on one server.
struct Figures {
    noop: Latency,
    noop_rounds: u64,
    delta: Latency,
    delta_rounds: u64,
    noop_server_cpu_ms: f64,
}

/// Another device's edit of the first `DELTA_ROWS` rows: their ids, versions, fields.
struct Edited {
    rows: Vec<(RowId, u64, Fields)>,
}

impl Edited {
    /// Edits every row once (new notes), as another device's push, and takes the new
    /// versions from the acknowledgements.
    async fn edit(&mut self, raw: &Raw) -> Result<()> {
        let mut changes = Vec::with_capacity(self.rows.len());
        let mut next = Vec::with_capacity(self.rows.len());
        for (id, version, fields) in &self.rows {
            let mut edited = fields.clone();
            // A value no row holds yet: an edit that changes nothing is not a new version.
            edited.insert(
                "notes".into(),
                Value::from(format!("edited by the bench ({})", uuid::Uuid::now_v7())),
            );
            changes.push(update_change(*id, *version, fields, &edited));
            next.push(edited);
        }
        let (answer, _) = raw.sync(0, &changes, 0).await?;
        ensure!(
            answer.acks.len() == self.rows.len(),
            "{} of {} edits acknowledged ({} conflicts)",
            answer.acks.len(),
            self.rows.len(),
            answer.conflicts.len()
        );
        for (row, fields) in self.rows.iter_mut().zip(next) {
            let ack = answer
                .acks
                .iter()
                .find(|ack| ack.id == row.0)
                .context("an edit without its acknowledgement")?;
            row.1 = ack.version;
            row.2 = fields;
        }
        Ok(())
    }
}

/// Gives the device store in `dir` the server's watermark and epoch (as a device that
/// pulled every row holds them).
fn set_in_sync(dir: &Path, watermark: u64, epoch: u64) -> Result<()> {
    let conn = rusqlite::Connection::open(dir.join(roster_client::DB_FILE))?;
    for (key, value) in [("watermark", watermark), ("server_epoch", epoch)] {
        conn.execute(
            "INSERT INTO _roster_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value.to_string()],
        )?;
    }
    Ok(())
}

async fn measure(ctx: &mut Ctx, n: u64, seed: &Seed) -> Result<Figures> {
    let dir = ctx.dir(&format!("large-server-{}", label(n)))?;
    let mut server = ServerProcess::start_on(
        &ctx.server_bin,
        &dir.join("server"),
        None,
        seed.db.to_str(),
        Some(&seed.token),
    )?;
    let raw = Raw::new(server.url(), server.token())?;
    let (page, _) = raw.sync(0, &[], u32::try_from(DELTA_ROWS)?).await?;
    ensure!(
        page.changes.len() == DELTA_ROWS,
        "the server holds {} rows",
        page.changes.len()
    );
    let mut edited = Edited {
        rows: page
            .changes
            .into_iter()
            .map(|c| Ok((c.id, c.row.version, c.row.fields.context("a deleted row")?)))
            .collect::<Result<_>>()?,
    };
    let device_dir = dir.join("device");
    drop(new_client(&device_dir, server.url(), server.token()).await?);
    set_in_sync(&device_dir, page.newest, page.epoch)?;
    let client = SyncClient::open(&device_dir)?;
    let first = client.sync().await?;
    ensure!(
        first.downloaded == 0,
        "a device in sync pulled {} rows",
        first.downloaded
    );
    for _ in 0..5 {
        client.sync().await?;
    }
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    let server_cpu = server.cpu();
    let mut noop = Vec::new();
    for _ in 0..ctx.sizes.large_noop_rounds {
        let t = Instant::now();
        let report = client.sync().await?;
        noop.push(t.elapsed());
        if report.downloaded > 0 || report.uploaded > 0 {
            bail!("a no-op sync moved rows: {report:?}");
        }
        if started.elapsed() > limit {
            break;
        }
    }
    let noop_server_cpu_ms = server_cpu.secs() * 1e3 / noop.len().max(1) as f64;
    let mut delta = Vec::new();
    for _ in 0..ctx.sizes.large_delta_rounds {
        edited.edit(&raw).await?;
        let t = Instant::now();
        let report = client.sync().await?;
        delta.push(t.elapsed());
        ensure!(
            report.downloaded == DELTA_ROWS as u64,
            "the delta round pulled {} rows",
            report.downloaded
        );
    }
    server.check_alive()?;
    drop(client);
    drop(server);
    discard(&dir);
    Ok(Figures {
        noop: Latency::of(&noop),
        noop_rounds: noop.len() as u64,
        delta: Latency::of(&delta),
        delta_rounds: delta.len() as u64,
        noop_server_cpu_ms,
    })
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let sizes = [ctx.sizes.large_reference, ctx.sizes.large_server];
    let mut figures = Vec::new();
    for n in sizes {
        let (seed, seeded_secs) = seeded_database(ctx, n).await?;
        let mut entry = Entry::new(
            "large-server",
            format!("seeded database of {} rows (setup)", label(n)),
            n,
        );
        entry = match seeded_secs {
            Some(secs) => entry
                .timed(secs)
                .note("made in this run (create-user, one pushed row, bulk insert)"),
            None => entry.note("reused from an earlier run (same generator version)"),
        };
        ctx.record(entry);
        figures.push((n, measure(ctx, n, &seed).await?));
    }
    let (small_n, small) = &figures[0];
    let large_n = figures[1].0;
    for (n, f) in &figures {
        let is_large = *n == large_n;
        let mut entry = Entry::new(
            "large-server",
            format!("no-op round, server holding {} rows", label(*n)),
            f.noop_rounds,
        )
        .metric("p50_ms", f.noop.p50_ms)
        .metric("p99_ms", f.noop.p99_ms)
        .metric("server_cpu_ms", f.noop_server_cpu_ms);
        if is_large {
            entry = entry
                .metric("p50_vs_small", f.noop.p50_ms / small.noop.p50_ms.max(1e-9))
                .note(format!(
                    "SyncClient::sync of a device whose watermark is current (it holds \
                     none of the rows); p50_vs_small: against the {}-row server",
                    label(*small_n)
                ));
            if ctx.targets() {
                entry = entry.target("p50 < 5 ms", f.noop.p50_ms < 5.0);
            }
        }
        ctx.record(entry);
        let mut entry = Entry::new(
            "large-server",
            format!(
                "{DELTA_ROWS}-row delta round, server holding {} rows",
                label(*n)
            ),
            f.delta_rounds,
        )
        .metric("p50_ms", f.delta.p50_ms)
        .metric("p99_ms", f.delta.p99_ms);
        if is_large {
            entry = entry
                .metric(
                    "p50_vs_small",
                    f.delta.p50_ms / small.delta.p50_ms.max(1e-9),
                )
                .note(format!(
                    "SyncClient::sync pulling {DELTA_ROWS} rows another device just \
                     edited (the same rows each round)"
                ));
            if ctx.targets() {
                entry = entry.target("p50 < 20 ms", f.delta.p50_ms < 20.0);
            }
        }
        ctx.record(entry);
    }
    Ok(())
}
