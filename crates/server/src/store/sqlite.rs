//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Rows of every table live in one `rows` table keyed by `(tbl, id)`, holding the row's
//! values as JSON. A row's `version` is its position in the change log: a strictly
//! increasing number drawn from `meta.last_seq` by each write, so "changes after S" is an
//! index range scan and every version is unique. Writers take SQLite's write lock up front
//! (`BEGIN IMMEDIATE`) and every update is a compare-and-set on the version, so the
//! read-then-write gap of a check outside the transaction cannot occur.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use roster_protocol::{
    Change, Conflict, ConflictKind, ConflictLogEntry, RowId, ServerRow, SyncRequest,
};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

pub use super::round::PULL_PAGE_MAX_BYTES;
use super::round::{
    APPLIED_BATCH_LIFETIME_MS, Applied, LogContext, PageBuilder, PullScan, RoundTx, RowWrite,
    STAGED_ROUND_LIFETIME_MS, StoredRow, applied_response, apply_changes, check_round_unique,
    check_watermark, decode_fields, encode, is_idempotent_write, json_column, now_ms,
    rollback_outcome, staged_response, to_i64, to_u64, word_column,
};
use super::{Answer, PulledChange, PurgeReport, StoreError, SyncStore};
use crate::resolve::Resolver;

/// Versioned schema migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE rows (
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT    NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX rows_by_version ON rows(version);
    CREATE INDEX tombstones_by_age ON rows(updated_at_ms) WHERE deleted = 1;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('purge_horizon', 0);
    CREATE TABLE conflict_log (
        seq         INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        client_id   TEXT    NOT NULL,
        tbl         TEXT    NOT NULL,
        row_id      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        resolution  TEXT    NOT NULL,
        client_row  TEXT,
        server_row  TEXT,
        outcome     TEXT
    );
    CREATE INDEX conflict_log_by_row ON conflict_log(tbl, row_id);
"#,
    r#"
    ALTER TABLE rows ADD COLUMN edited_at_ms INTEGER;
    ALTER TABLE conflict_log ADD COLUMN server_client_id TEXT;
    ALTER TABLE conflict_log ADD COLUMN base_row TEXT;
    ALTER TABLE conflict_log ADD COLUMN conflicting_fields TEXT;
    CREATE TABLE staged_changes (
        round_id      TEXT    NOT NULL,
        ord           INTEGER NOT NULL,
        client_id     TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        change        TEXT    NOT NULL,
        PRIMARY KEY (round_id, ord)
    ) WITHOUT ROWID;
    CREATE INDEX staged_changes_by_age ON staged_changes(created_at_ms);
"#,
    r#"
    CREATE TABLE applied_batches (
        batch_id  TEXT    NOT NULL,
        client_id TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL,
        response  TEXT    NOT NULL,
        PRIMARY KEY (client_id, batch_id)
    ) WITHOUT ROWID;
    CREATE INDEX applied_batches_by_age ON applied_batches(at_ms);
"#,
    // Data sets: every row, conflict, staged change and remembered answer belongs to one.
    // Rows stored before this migration go to the data set `default` (see accounts).
    r#"
    CREATE TABLE rows_scoped (
        dataset       TEXT    NOT NULL,
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT    NOT NULL,
        edited_at_ms  INTEGER,
        PRIMARY KEY (dataset, tbl, id)
    ) WITHOUT ROWID;
    INSERT INTO rows_scoped (dataset, tbl, id, version, deleted, data, updated_at_ms,
        updated_by, edited_at_ms)
        SELECT 'default', tbl, id, version, deleted, data, updated_at_ms, updated_by,
               edited_at_ms FROM rows;
    DROP TABLE rows;
    ALTER TABLE rows_scoped RENAME TO rows;
    CREATE UNIQUE INDEX rows_by_version ON rows(version);
    CREATE INDEX rows_by_dataset_version ON rows(dataset, version);
    CREATE INDEX tombstones_by_age ON rows(updated_at_ms) WHERE deleted = 1;

    ALTER TABLE conflict_log ADD COLUMN dataset TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX conflict_log_by_dataset ON conflict_log(dataset, seq);

    CREATE TABLE staged_scoped (
        dataset       TEXT    NOT NULL,
        round_id      TEXT    NOT NULL,
        ord           INTEGER NOT NULL,
        client_id     TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        change        TEXT    NOT NULL,
        PRIMARY KEY (dataset, round_id, ord)
    ) WITHOUT ROWID;
    INSERT INTO staged_scoped SELECT 'default', round_id, ord, client_id, created_at_ms, change
        FROM staged_changes;
    DROP TABLE staged_changes;
    ALTER TABLE staged_scoped RENAME TO staged_changes;
    CREATE INDEX staged_changes_by_age ON staged_changes(created_at_ms);

    CREATE TABLE applied_scoped (
        dataset   TEXT    NOT NULL,
        batch_id  TEXT    NOT NULL,
        client_id TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL,
        response  TEXT    NOT NULL,
        PRIMARY KEY (dataset, client_id, batch_id)
    ) WITHOUT ROWID;
    INSERT INTO applied_scoped SELECT 'default', batch_id, client_id, at_ms, response
        FROM applied_batches;
    DROP TABLE applied_batches;
    ALTER TABLE applied_scoped RENAME TO applied_batches;
    CREATE INDEX applied_batches_by_age ON applied_batches(at_ms);
"#,
    crate::accounts::sqlite::MIGRATION,
    // One version index instead of two: pulls read by (dataset, version), and versions,
    // drawn from one counter under the write lock, stay unique per data set by index.
    // The global unique index cost every write a third B-tree insert.
    r#"
    DROP INDEX rows_by_version;
    DROP INDEX rows_by_dataset_version;
    CREATE UNIQUE INDEX rows_by_dataset_version ON rows(dataset, version);
"#,
];

/// How long a connection waits for SQLite's write lock before the request fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The SQLite store. Cheap to share: it holds a connection pool.
pub struct SqliteStore {
    pub(crate) pool: r2d2::Pool<SqliteConnectionManager>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(e.to_string())
            }
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, with WAL and full fsync on
    /// commit, and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // WAL mode is a property of the file: set it once here, not on every pooled
        // connection, where switching modes needs a lock and fails under load.
        {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Database(format!(
                    "cannot use WAL mode (got {mode})"
                )));
            }
        }
        let manager = SqliteConnectionManager::file(path).with_init(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        });
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        let store = Self { pool };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let done = usize::try_from(done).unwrap_or(usize::MAX);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {done} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
            tracing::info!(migration = index + 1, "applied database migration");
        }
        tx.commit()?;
        Ok(())
    }
}

fn meta(tx: &Transaction<'_>, key: &str) -> Result<u64, StoreError> {
    let value: i64 = tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
    Ok(to_u64(value))
}

fn set_meta(tx: &Transaction<'_>, key: &str, value: u64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE meta SET value = ?2 WHERE key = ?1",
        params![key, to_i64(value)],
    )?;
    Ok(())
}

fn load_row(
    tx: &Transaction<'_>,
    dataset: &str,
    table: &str,
    id: RowId,
) -> Result<Option<StoredRow>, StoreError> {
    let row = tx
        .prepare_cached(
            "SELECT version, deleted, data, edited_at_ms, updated_by FROM rows
             WHERE dataset = ?3 AND tbl = ?1 AND id = ?2",
        )?
        .query_row(params![table, id.to_string(), dataset], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    row.map(|(version, deleted, data, edited_at_ms, updated_by)| {
        Ok(StoredRow {
            row: ServerRow {
                version: to_u64(version),
                deleted,
                fields: decode_fields(data)?,
            },
            edited_at_ms,
            updated_by,
        })
    })
    .transpose()
}

/// Runs `sql`, an insert or a compare-and-set update of one row, with the row's values
/// as `?1`..`?9` (table, id, version, deleted, data, updated at, by, edited at, data set)
/// and, for an update, the expected version as `?10`. Returns whether a row was written.
fn store_row(
    tx: &Transaction<'_>,
    sql: &str,
    dataset: &str,
    w: &RowWrite<'_>,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    let (id, version, deleted, data) =
        (w.id.to_string(), to_i64(w.version), w.deleted(), w.data()?);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![
        &w.table,
        &id,
        &version,
        &deleted,
        &data,
        &w.at_ms,
        &w.client,
        &w.edited_at_ms,
        &dataset,
    ];
    let expected = expected.map(to_i64);
    if let Some(expected) = &expected {
        values.push(expected);
    }
    Ok(tx.prepare_cached(sql)?.execute(values.as_slice())? == 1)
}

fn insert_row(tx: &Transaction<'_>, dataset: &str, w: &RowWrite<'_>) -> Result<bool, StoreError> {
    let sql = "INSERT INTO rows (tbl, id, version, deleted, data, updated_at_ms, updated_by,
               edited_at_ms, dataset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
               ON CONFLICT DO NOTHING";
    store_row(tx, sql, dataset, w, None)
}

fn update_row(
    tx: &Transaction<'_>,
    dataset: &str,
    w: &RowWrite<'_>,
    expected: u64,
) -> Result<bool, StoreError> {
    let sql = "UPDATE rows SET version = ?3, deleted = ?4, data = ?5, updated_at_ms = ?6,
               updated_by = ?7, edited_at_ms = ?8
               WHERE dataset = ?9 AND tbl = ?1 AND id = ?2 AND version = ?10";
    store_row(tx, sql, dataset, w, Some(expected))
}

fn log_conflict(
    tx: &Transaction<'_>,
    dataset: &str,
    context: &LogContext<'_>,
    conflict: &Conflict,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO conflict_log (at_ms, client_id, tbl, row_id, kind, resolution,
         client_row, server_row, outcome, server_client_id, base_row, conflicting_fields,
         dataset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        context.at_ms,
        context.client,
        conflict.table,
        conflict.id.to_string(),
        conflict.kind.as_str(),
        conflict.resolution.as_str(),
        conflict.client_row.as_ref().map(encode).transpose()?,
        conflict.server_row.as_ref().map(encode).transpose()?,
        conflict.outcome.as_ref().map(encode).transpose()?,
        context.server_client,
        context.base_row.map(encode).transpose()?,
        encode(&conflict.conflicting_fields)?,
        dataset,
    ])?;
    Ok(())
}

/// Reads one page of the changes in `scan` (at most its limit, and about
/// [`PULL_PAGE_MAX_BYTES`]), skipping rows in `skip`. Returns the page, the new watermark
/// and whether more wait.
fn pull_page(
    tx: &Transaction<'_>,
    dataset: &str,
    scan: PullScan,
    skip: &HashSet<(String, RowId)>,
) -> Result<(Vec<PulledChange>, u64, bool), StoreError> {
    if scan.limit == 0 {
        return Ok(PageBuilder::nothing(scan));
    }
    let mut stmt = tx.prepare_cached(
        "SELECT tbl, id, version, deleted, data FROM rows
         WHERE dataset = ?3 AND version > ?1 AND version <= ?4 ORDER BY version LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![
        to_i64(scan.since),
        i64::from(scan.limit),
        dataset,
        to_i64(scan.upto)
    ])?;
    let mut page = PageBuilder::new(scan, skip);
    while let Some(r) = rows.next()? {
        let id_text: String = r.get(1)?;
        if !page.push(r.get(0)?, &id_text, to_u64(r.get(2)?), r.get(3)?, r.get(4)?)? {
            break;
        }
    }
    Ok(page.finish())
}

/// The answer first given to this client's batch with the same id, if any.
fn replayed(
    tx: &Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
) -> Result<Option<Answer>, StoreError> {
    let Some(batch_id) = request.batch_id.filter(|_| is_idempotent_write(request)) else {
        return Ok(None);
    };
    let text: Option<String> = tx
        .prepare_cached(
            "SELECT response FROM applied_batches
             WHERE dataset = ?3 AND client_id = ?1 AND batch_id = ?2",
        )?
        .query_row(
            params![request.client_id.to_string(), batch_id.to_string(), dataset],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Keeps the answer to a batch that wrote something (`wrote`) so that a retry gets it
/// again. Answers that changed nothing are not kept: repeating such a batch is harmless.
fn remember(
    tx: &Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
    response: &Answer,
    wrote: bool,
) -> Result<(), StoreError> {
    if let Some(batch_id) = request.batch_id.filter(|_| wrote) {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO applied_batches (batch_id, client_id, at_ms, response,
             dataset) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            batch_id.to_string(),
            request.client_id.to_string(),
            now_ms(),
            encode(response)?,
            dataset
        ])?;
    }
    Ok(())
}

/// The changes a final batch applies: the round's staged batches, then its own.
fn round_changes(
    tx: &Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
    round_id: &str,
) -> Result<Vec<Change>, StoreError> {
    let mut changes: Vec<Change> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT change FROM staged_changes WHERE dataset = ?2 AND round_id = ?1
                 ORDER BY ord",
        )?;
        let mut rows = stmt.query([round_id, dataset])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            changes
                .push(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
    }
    changes.extend(request.changes.iter().cloned());
    check_round_unique(&changes, round_id)?;
    tx.execute(
        "DELETE FROM staged_changes WHERE dataset = ?2 AND round_id = ?1",
        [round_id, dataset],
    )?;
    Ok(changes)
}

impl SqliteStore {
    /// Stores a non-final batch of an atomic round; nothing is applied yet.
    fn stage(
        &self,
        dataset: &str,
        request: &SyncRequest,
        round_id: &str,
    ) -> Result<Answer, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(answer) = replayed(&tx, dataset, request)? {
            return Ok(answer);
        }
        let newest = meta(&tx, "last_seq")?;
        let first: i64 = tx.query_row(
            "SELECT COALESCE(MAX(ord), 0) FROM staged_changes
             WHERE dataset = ?2 AND round_id = ?1",
            [round_id, dataset],
            |r| r.get(0),
        )?;
        let client = request.client_id.to_string();
        let at_ms = now_ms();
        for (offset, change) in (1..).zip(&request.changes) {
            tx.prepare_cached(
                "INSERT INTO staged_changes (round_id, ord, client_id, created_at_ms, change,
                 dataset) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                round_id,
                first + offset,
                client,
                at_ms,
                encode(change)?,
                dataset
            ])?;
        }
        let response = staged_response(request, newest);
        remember(
            &tx,
            dataset,
            request,
            &response,
            !request.changes.is_empty(),
        )?;
        tx.commit()?;
        Ok(response)
    }

    /// Undoes a round: the transaction that applied it was dropped by the caller; this
    /// forgets its staged batches and logs the conflict that caused it.
    fn roll_back(
        &self,
        dataset: &str,
        request: &SyncRequest,
        change: &Change,
        current: Option<StoredRow>,
        kind: ConflictKind,
        reason: String,
    ) -> Result<Answer, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(round) = &request.round {
            tx.execute(
                "DELETE FROM staged_changes WHERE dataset = ?2 AND round_id = ?1",
                [round.id.to_string(), dataset.to_owned()],
            )?;
        }
        let newest = meta(&tx, "last_seq")?;
        let (conflict, response) = rollback_outcome(
            request,
            change,
            current.as_ref(),
            kind,
            reason.clone(),
            newest,
        );
        let client = request.client_id.to_string();
        let context = LogContext {
            client: &client,
            at_ms: now_ms(),
            server_client: current.as_ref().map(|c| c.updated_by.as_str()),
            base_row: change.base_fields.as_ref(),
        };
        log_conflict(&tx, dataset, &context, &conflict)?;
        tracing::info!(table = %change.table, id = %change.id, kind = %kind, %reason,
            client = %client, "sync round rolled back by the conflict handler");
        remember(&tx, dataset, request, &response, true)?;
        tx.commit()?;
        Ok(response)
    }
}

/// A request's SQLite transaction, scoped to one data set, as the storage half of
/// [`apply_changes`]: every row it reads or writes and every conflict it logs belongs to
/// `dataset`.
struct SqliteRound<'a, 'conn> {
    tx: &'a Transaction<'conn>,
    dataset: &'a str,
}

impl RoundTx for SqliteRound<'_, '_> {
    fn load_row(&mut self, table: &str, id: RowId) -> Result<Option<StoredRow>, StoreError> {
        load_row(self.tx, self.dataset, table, id)
    }

    fn insert_row(&mut self, w: &RowWrite<'_>) -> Result<bool, StoreError> {
        insert_row(self.tx, self.dataset, w)
    }

    fn update_row(&mut self, w: &RowWrite<'_>, expected: u64) -> Result<bool, StoreError> {
        update_row(self.tx, self.dataset, w, expected)
    }

    fn log_conflict(
        &mut self,
        context: &LogContext<'_>,
        conflict: &Conflict,
    ) -> Result<(), StoreError> {
        log_conflict(self.tx, self.dataset, context, conflict)
    }
}

impl SyncStore for SqliteStore {
    fn sync_answer(
        &self,
        dataset: &str,
        request: &SyncRequest,
        resolver: &Resolver,
    ) -> Result<Answer, StoreError> {
        let atomic_round = request.round.filter(|_| resolver.atomic_rounds());
        if let Some(round) = atomic_round.filter(|r| !r.final_batch) {
            return self.stage(dataset, request, &round.id.to_string());
        }
        let mut conn = self.pool.get()?;
        let behavior = if request.changes.is_empty() && atomic_round.is_none() {
            TransactionBehavior::Deferred
        } else {
            TransactionBehavior::Immediate
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        if let Some(answer) = replayed(&tx, dataset, request)? {
            tracing::info!(batch = ?request.batch_id, "repeated the answer to a retried batch");
            return Ok(answer);
        }
        let last_seq = meta(&tx, "last_seq")?;
        let horizon = meta(&tx, "purge_horizon")?;
        check_watermark(request.since, last_seq, horizon)?;
        let staged;
        let changes: &[Change] = match &atomic_round {
            Some(round) => {
                staged = round_changes(&tx, dataset, request, &round.id.to_string())?;
                &staged
            }
            None => &request.changes,
        };
        let mut round_tx = SqliteRound { tx: &tx, dataset };
        let (acks, conflicts, unwritten, next) =
            match apply_changes(&mut round_tx, request, changes, resolver, last_seq)? {
                Applied::Done {
                    acks,
                    conflicts,
                    unwritten,
                    next,
                } => (acks, conflicts, unwritten, next),
                Applied::RolledBack {
                    change,
                    current,
                    kind,
                    reason,
                } => {
                    drop(tx);
                    return self.roll_back(dataset, request, &change, current, kind, reason);
                }
            };
        if next != last_seq {
            set_meta(&tx, "last_seq", next)?;
        }
        let wrote = !changes.is_empty();
        let scan = PullScan {
            since: request.since,
            upto: last_seq,
            newest: next,
            limit: request.pull_limit,
        };
        let page = pull_page(&tx, dataset, scan, &unwritten)?;
        let response = applied_response(acks, conflicts, page, next);
        remember(&tx, dataset, request, &response, wrote)?;
        tx.commit()?;
        Ok(response)
    }

    fn conflict_log(
        &self,
        dataset: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ConflictLogEntry>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at_ms, client_id, server_client_id, tbl, row_id, kind, resolution,
                    client_row, server_row, base_row, outcome, conflicting_fields
             FROM conflict_log WHERE dataset = ?3 AND seq < ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let before = before.map_or(i64::MAX, to_i64);
        let mut rows = stmt.query(params![before, limit, dataset])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let text = |i: usize| r.get::<_, Option<String>>(i);
            let id_text: String = r.get(5)?;
            let client_text: String = r.get(2)?;
            out.push(ConflictLogEntry {
                seq: to_u64(r.get(0)?),
                at_ms: r.get(1)?,
                client_id: uuid::Uuid::parse_str(&client_text)
                    .map_err(|e| StoreError::Corrupt(format!("client id: {e}")))?,
                server_client_id: text(3)?,
                table: r.get(4)?,
                id: RowId::parse_str(&id_text)
                    .map_err(|e| StoreError::Corrupt(format!("row id: {e}")))?,
                kind: word_column("kind", r.get(6)?)?,
                resolution: word_column("resolution", r.get(7)?)?,
                client_row: json_column("client row", text(8)?)?,
                server_row: json_column("server row", text(9)?)?,
                base_row: json_column("base row", text(10)?)?,
                outcome: json_column("outcome", text(11)?)?,
                conflicting_fields: json_column("fields", text(12)?)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let newest_purged: Option<i64> = tx.query_row(
            "SELECT MAX(version) FROM rows WHERE deleted = 1 AND updated_at_ms < ?1",
            [older_than_unix_ms],
            |r| r.get(0),
        )?;
        let purged = tx.execute(
            "DELETE FROM rows WHERE deleted = 1 AND updated_at_ms < ?1",
            [older_than_unix_ms],
        )?;
        tx.execute(
            "DELETE FROM staged_changes WHERE created_at_ms < ?1",
            [now_ms().saturating_sub(STAGED_ROUND_LIFETIME_MS)],
        )?;
        tx.execute(
            "DELETE FROM applied_batches WHERE at_ms < ?1",
            [now_ms().saturating_sub(APPLIED_BATCH_LIFETIME_MS)],
        )?;
        let mut horizon = meta(&tx, "purge_horizon")?;
        if let Some(v) = newest_purged.map(to_u64).filter(|v| *v > horizon) {
            horizon = v;
            set_meta(&tx, "purge_horizon", horizon)?;
        }
        tx.commit()?;
        Ok(PurgeReport {
            purged: purged as u64,
            horizon,
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::{Change, ChangeOp, PROTOCOL_VERSION};
    use serde_json::json;

    use super::*;

    const DS: &str = "alice";

    fn insert(name: &str) -> Change {
        Change {
            table: "person".into(),
            id: RowId::now_v7(),
            op: ChangeOp::Insert,
            base_version: None,
            fields: json!({"name": name}).as_object().cloned(),
            base_fields: None,
            edited_at_ms: None,
        }
    }

    fn request(since: u64, changes: Vec<Change>, pull_limit: u32) -> SyncRequest {
        SyncRequest {
            protocol: PROTOCOL_VERSION,
            client_id: uuid::Uuid::now_v7(),
            since,
            changes,
            pull_limit,
            round: None,
            batch_id: None,
        }
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn pulls_page_by_version_and_skip_the_requests_own_rows() {
        let (_dir, store) = open();
        let policies = Resolver::new(&crate::config::ServerConfig::default());
        let others: Vec<Change> = (0..5).map(|i| insert(&format!("p{i}"))).collect();
        let first = store.sync(DS, &request(0, others, 0), &policies).unwrap();
        assert_eq!(first.acks.len(), 5);
        assert_eq!((first.watermark, first.has_more), (0, true));

        let own = insert("mine");
        let own_id = own.id;
        let answer = store
            .sync(DS, &request(0, vec![own], 2), &policies)
            .unwrap();
        assert_eq!(answer.acks[0].version, 6);
        assert_eq!(answer.changes.len(), 2);
        assert_eq!((answer.watermark, answer.has_more), (2, true));
        let mut since = answer.watermark;
        let mut seen = answer.changes.len();
        loop {
            let page = store
                .sync(DS, &request(since, vec![], 2), &policies)
                .unwrap();
            assert!(page.changes.iter().all(|c| c.row.version > since));
            seen += page.changes.len();
            since = page.watermark;
            if !page.has_more {
                break;
            }
        }
        assert_eq!(
            seen, 6,
            "a later pull also returns the row written by the earlier request"
        );
        assert_eq!(since, 6);
        let fresh = store.sync(DS, &request(0, vec![], 100), &policies).unwrap();
        assert!(fresh.changes.iter().any(|c| c.id == own_id));
    }

    #[test]
    fn a_writing_request_pulls_everything_except_what_it_answers() {
        let (_dir, store) = open();
        let policies = Resolver::new(&crate::config::ServerConfig::default());
        let others: Vec<Change> = (0..5).map(|i| insert(&format!("p{i}"))).collect();
        let ids: Vec<RowId> = others.iter().map(|c| c.id).collect();
        store
            .sync(DS, &request(0, others.clone(), 0), &policies)
            .unwrap();
        // One new row, a clean update of p0 (version 1), and p1 sent again unchanged.
        let mine = insert("mine");
        let update = Change {
            op: ChangeOp::Update,
            base_version: Some(1),
            ..insert("p0 renamed")
        };
        let update = Change {
            id: ids[0],
            ..update
        };
        let changes = vec![mine.clone(), update, others[1].clone()];
        let answer = store
            .sync(DS, &request(0, changes, 100), &policies)
            .unwrap();
        let acked: Vec<(RowId, u64)> = answer.acks.iter().map(|a| (a.id, a.version)).collect();
        assert_eq!(acked, vec![(mine.id, 6), (ids[0], 7), (ids[1], 2)]);
        assert!(answer.conflicts.is_empty());
        let pulled: Vec<(RowId, u64)> = answer
            .changes
            .iter()
            .map(|c| (c.id, c.row.version))
            .collect();
        assert_eq!(pulled, vec![(ids[2], 3), (ids[3], 4), (ids[4], 5)]);
        assert_eq!(
            (answer.watermark, answer.has_more, answer.newest),
            (7, false, 7)
        );
        // Nothing was written for p1: the change log still ends at 7.
        let after = store.sync(DS, &request(7, vec![], 100), &policies).unwrap();
        assert_eq!((after.changes.len(), after.newest), (0, 7));
    }

    #[test]
    fn purge_raises_the_horizon_and_old_watermarks_must_reset() {
        let (_dir, store) = open();
        let policies = Resolver::new(&crate::config::ServerConfig::default());
        let row = insert("gone");
        let id = row.id;
        store
            .sync(DS, &request(0, vec![row], 0), &policies)
            .unwrap();
        let delete = Change {
            table: "person".into(),
            id,
            op: ChangeOp::Delete,
            base_version: Some(1),
            fields: None,
            base_fields: None,
            edited_at_ms: None,
        };
        store
            .sync(DS, &request(1, vec![delete], 0), &policies)
            .unwrap();
        let report = store.purge_tombstones(i64::MAX).unwrap();
        assert_eq!(
            report,
            PurgeReport {
                purged: 1,
                horizon: 2
            }
        );
        assert!(matches!(
            store.sync(DS, &request(1, vec![], 10), &policies),
            Err(StoreError::ResetRequired {
                since: 1,
                horizon: 2,
                ..
            })
        ));
        assert!(store.sync(DS, &request(2, vec![], 10), &policies).is_ok());
        assert!(store.sync(DS, &request(0, vec![], 10), &policies).is_ok());
        assert!(matches!(
            store.sync(DS, &request(99, vec![], 10), &policies),
            Err(StoreError::ResetRequired { .. })
        ));
    }

    #[test]
    fn retried_batches_are_answered_from_memory_and_no_op_rounds_keep_nothing() {
        let (dir, store) = open();
        let resolver = Resolver::new(&crate::config::ServerConfig::default());
        let mut push = request(0, vec![insert("once")], 10);
        push.batch_id = Some(uuid::Uuid::now_v7());
        let first = store.sync(DS, &push, &resolver).unwrap();
        let again = store.sync(DS, &push, &resolver).unwrap();
        assert_eq!(first, again, "the retry gets the first answer");
        let all = store.sync(DS, &request(0, vec![], 10), &resolver).unwrap();
        assert_eq!(all.changes.len(), 1, "applied once");

        let mut idle = request(first.watermark, vec![], 10);
        idle.batch_id = Some(uuid::Uuid::now_v7());
        idle.round = Some(roster_protocol::RoundInfo {
            id: uuid::Uuid::now_v7(),
            final_batch: true,
        });
        store.sync(DS, &idle, &resolver).unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM applied_batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1, "only the writing batch's answer is kept");
    }

    #[test]
    fn reopening_keeps_data_and_skips_done_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .sync(
                DS,
                &request(0, vec![insert("kept")], 0),
                &Resolver::new(&crate::config::ServerConfig::default()),
            )
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let all = store
            .sync(
                DS,
                &request(0, vec![], 10),
                &Resolver::new(&crate::config::ServerConfig::default()),
            )
            .unwrap();
        assert_eq!(all.changes.len(), 1);
        store.ping().unwrap();
    }

    #[test]
    fn data_sets_never_meet_even_with_the_same_ids() {
        let (_dir, store) = open();
        let resolver = Resolver::new(&crate::config::ServerConfig::default());
        let row = insert("alice's");
        let mut push = request(0, vec![row.clone()], 10);
        push.batch_id = Some(uuid::Uuid::now_v7());
        let first = store.sync("alice", &push, &resolver).unwrap();
        assert_eq!(first.acks.len(), 1);

        // The same client id, batch id and row id in another data set: no replay of
        // alice's answer, no conflict with her row, nothing of hers pulled.
        let mut other = push.clone();
        other.changes[0].fields = json!({"name": "bob's"}).as_object().cloned();
        let answer = store.sync("bob", &other, &resolver).unwrap();
        assert_eq!(answer.acks.len(), 1);
        assert!(answer.conflicts.is_empty());
        assert!(answer.changes.is_empty());
        let pulled = store
            .sync("bob", &request(0, vec![], 100), &resolver)
            .unwrap();
        assert_eq!(pulled.changes.len(), 1);
        assert_eq!(pulled.changes[0].row.fields, other.changes[0].fields);

        // An update over alice's id in bob's data set conflicts only with bob's row.
        let mut update = row.clone();
        update.op = ChangeOp::Insert;
        let clash = store
            .sync("bob", &request(0, vec![update], 0), &resolver)
            .unwrap();
        assert_eq!(clash.conflicts.len(), 1);
        assert!(store.conflict_log("alice", 100, None).unwrap().is_empty());
        assert_eq!(store.conflict_log("bob", 100, None).unwrap().len(), 1);
        let alice = store
            .sync("alice", &request(0, vec![], 100), &resolver)
            .unwrap();
        assert_eq!(alice.changes.len(), 1);
        assert_eq!(alice.changes[0].row.fields, row.fields);
        assert!(
            store
                .sync("carol", &request(0, vec![], 100), &resolver)
                .unwrap()
                .changes
                .is_empty()
        );
    }

    #[test]
    fn rows_stored_before_data_sets_move_to_the_default_data_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 3;
                 INSERT INTO rows (tbl, id, version, deleted, data, updated_at_ms, updated_by)
                 VALUES ('person', '0190b2c4-5d2e-7000-8000-000000000001', 1, 0,
                         '{\"name\":\"old\"}', 0, 'c');
                 UPDATE meta SET value = 1 WHERE key = 'last_seq';",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let resolver = Resolver::new(&crate::config::ServerConfig::default());
        let old = store
            .sync(
                crate::accounts::DEFAULT_DATASET,
                &request(0, vec![], 10),
                &resolver,
            )
            .unwrap();
        assert_eq!(old.changes.len(), 1);
        assert!(
            store
                .sync("alice", &request(0, vec![], 10), &resolver)
                .unwrap()
                .changes
                .is_empty()
        );
    }
}
