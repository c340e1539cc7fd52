//! The local limit: the same Person rows inserted with rusqlite, a prepared statement and
//! one transaction, with the client's pragmas (WAL, synchronous=FULL), into a table
//! shaped like the client's `person` table. A second variant also writes the per-row
//! sync metadata a pulled row needs in the client's layout (`_roster_rows`).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use roster_protocol::RowId;
use rusqlite::{Connection, params};

use super::{Ctx, label};
use crate::data::{Person, RowGen};
use crate::report::Entry;

const PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

const USER_TABLE: &str = r#"CREATE TABLE "person" (id TEXT PRIMARY KEY NOT NULL, "name" TEXT,
    "email" TEXT, "phone" TEXT, "age" INTEGER, "city" TEXT, "notes" TEXT)"#;

const META_TABLE: &str = "CREATE TABLE _roster_rows (
        tbl TEXT NOT NULL, id TEXT NOT NULL, base_version INTEGER, base_data TEXT,
        pending TEXT, local_rev INTEGER NOT NULL DEFAULT 0, edited_at_ms INTEGER,
        PRIMARY KEY (tbl, id)) WITHOUT ROWID;
    CREATE INDEX _roster_rows_pending ON _roster_rows(local_rev) WHERE pending IS NOT NULL;";

/// What the raw insert writes per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The user row only: the local limit.
    UserRow,
    /// Plus a `_roster_rows` entry with the base version and the base values as JSON,
    /// as the client writes for every pulled row today.
    WithBaseValues,
    /// Plus a `_roster_rows` entry with the base version only.
    WithBaseVersion,
    /// The user row, with an index on `name COLLATE NOCASE, id` (what a sorted list
    /// page needs): the write cost of that index.
    UserRowNameIndex,
    /// The user row with its base version in a `_roster_version` column: the client's
    /// layout of a clean row since store format 8.
    UserRowVersion,
}

/// One way of running the raw insert.
#[derive(Debug, Clone, Copy)]
struct Variant {
    layout: Layout,
    /// Random (v4) ids instead of time-ordered v7 ids: B-tree inserts all over.
    random_ids: bool,
    /// `PRAGMA cache_size` in MiB; `None` keeps SQLite's default (2 MiB), as the
    /// client does.
    cache_mib: Option<u32>,
}

/// Bytes a SQLite database takes on disk: its file plus its WAL after a truncating
/// checkpoint (so pages still in the WAL are counted once, in the file).
pub fn database_bytes(path: &Path) -> Result<u64> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok(size(path) + size(Path::new(&wal)))
}

/// Inserts `rows` into a new database in `dir`; returns the seconds the transaction
/// took (prepare, inserts and the durable commit). Rows, ids and JSON are prepared
/// before the clock starts.
fn raw_insert(dir: &Path, rows: &[Person], variant: Variant) -> Result<f64> {
    let layout = variant.layout;
    let mut conn = Connection::open(dir.join("raw.db"))?;
    conn.execute_batch(PRAGMAS)?;
    if let Some(mib) = variant.cache_mib {
        conn.execute_batch(&format!("PRAGMA cache_size = -{}", mib * 1024))?;
    }
    match layout {
        Layout::UserRowVersion => conn.execute_batch(&USER_TABLE.replace(
            "id TEXT PRIMARY KEY NOT NULL,",
            "id TEXT PRIMARY KEY NOT NULL, _roster_version INTEGER,",
        ))?,
        _ => conn.execute_batch(USER_TABLE)?,
    }
    match layout {
        Layout::UserRow | Layout::UserRowVersion => {}
        Layout::UserRowNameIndex => conn.execute_batch(
            r#"CREATE INDEX person_by_name ON "person" ("name" COLLATE NOCASE, id)"#,
        )?,
        Layout::WithBaseValues | Layout::WithBaseVersion => conn.execute_batch(META_TABLE)?,
    }
    let mut id_gen = RowGen::new(77);
    let ids: Vec<String> = rows
        .iter()
        .map(|_| {
            if variant.random_ids {
                id_gen.random_id().to_string()
            } else {
                RowId::now_v7().to_string()
            }
        })
        .collect();
    let json: Vec<Option<String>> = rows
        .iter()
        .map(|p| {
            (layout == Layout::WithBaseValues)
                .then(|| serde_json::to_string(&p.fields()))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(if layout == Layout::UserRowVersion {
            r#"INSERT INTO "person" (id, "name", "email", "phone", "age", "city", "notes",
                 _roster_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#
        } else {
            r#"INSERT INTO "person" (id, "name", "email", "phone", "age", "city", "notes")
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#
        })?;
        let mut meta = if matches!(
            layout,
            Layout::UserRow | Layout::UserRowNameIndex | Layout::UserRowVersion
        ) {
            None
        } else {
            Some(tx.prepare(
                "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
                 VALUES ('person', ?1, ?2, ?3, NULL, 0)",
            )?)
        };
        for (index, (p, id)) in rows.iter().zip(&ids).enumerate() {
            if layout == Layout::UserRowVersion {
                insert.execute(params![
                    id,
                    p.name,
                    p.email,
                    p.phone,
                    p.age,
                    p.city,
                    p.notes,
                    index as i64 + 1
                ])?;
            } else {
                insert.execute(params![
                    id, p.name, p.email, p.phone, p.age, p.city, p.notes
                ])?;
            }
            if let Some(meta) = meta.as_mut() {
                meta.execute(params![id, index as i64 + 1, json[index]])?;
            }
        }
    }
    tx.commit()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Measures the raw insert rate for `n` rows, and the variants with sync metadata; at
/// the main size also with ids in random order and with a larger page cache.
pub fn run(ctx: &mut Ctx, n: u64) -> Result<()> {
    let rows = RowGen::new(1).people(usize::try_from(n)?);
    let main_size = n == ctx.sizes.baseline;
    let n_label = label(n);
    let plain = |layout| Variant {
        layout,
        random_ids: false,
        cache_mib: None,
    };
    let mut cases = vec![
        (
            plain(Layout::UserRow),
            format!("raw insert {n_label} rows"),
            "rusqlite, prepared statement, one transaction, WAL + synchronous=FULL: \
             the local limit",
        ),
        (
            plain(Layout::UserRowVersion),
            format!("raw insert {n_label} rows with a _roster_version column"),
            "the user row with its base version as a column: the client's layout since \
             store format 8, the SQLite floor of a pull",
        ),
        (
            plain(Layout::WithBaseValues),
            format!("raw insert {n_label} rows + _roster_rows with base values"),
            "also one sync-metadata row per record with the base version and the base \
             values as JSON: the client's layout before store format 3",
        ),
        (
            plain(Layout::WithBaseVersion),
            format!("raw insert {n_label} rows + _roster_rows, base version only"),
            "the same without the base values: the client's layout of formats 3 to 7",
        ),
        (
            plain(Layout::UserRowNameIndex),
            format!("raw insert {n_label} rows, index on name"),
            "the user row with an index on (name COLLATE NOCASE, id): what that index \
             would cost every insert and pulled row",
        ),
        (
            Variant {
                cache_mib: Some(64),
                ..plain(Layout::UserRowNameIndex)
            },
            format!("raw insert {n_label} rows, index on name, 64 MiB cache"),
            "the same with PRAGMA cache_size = 64 MiB (SQLite's default, kept by the \
             client, is 2 MiB)",
        ),
    ];
    if main_size {
        cases.push((
            Variant {
                random_ids: true,
                ..plain(Layout::WithBaseValues)
            },
            format!("raw insert {n_label} rows + _roster_rows, random ids"),
            "ids in random order: both B-trees grow by inserts all over (2 MiB cache)",
        ));
        cases.push((
            Variant {
                random_ids: true,
                cache_mib: Some(64),
                layout: Layout::WithBaseValues,
            },
            format!("raw insert {n_label} rows + _roster_rows, random ids, 64 MiB cache"),
            "the same with PRAGMA cache_size = 64 MiB",
        ));
    }
    let mut rate = None;
    for (variant, case, note) in cases {
        let dir = ctx.dir(&format!("baseline-{n_label}"))?;
        let secs = raw_insert(&dir, &rows, variant)?;
        if variant.layout == Layout::UserRow && !variant.random_ids {
            let measured = n as f64 / secs;
            ctx.baselines.push((n, measured));
            ctx.raw_bytes
                .push((n, database_bytes(&dir.join("raw.db"))?));
            rate = Some(measured);
        }
        super::discard(&dir);
        ctx.record(
            Entry::new("baseline", case, n)
                .timed(secs)
                .vs(rate)
                .note(note),
        );
    }
    Ok(())
}
