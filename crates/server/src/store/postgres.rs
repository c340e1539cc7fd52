//! The PostgreSQL backend, for several stateless server instances on one database.
//!
//! Same model as the SQLite store, every table keyed by data set: rows live in `rows`
//! keyed by `(dataset, tbl, id)`, and a row's `version` is its position in its data
//! set's change log, drawn from `datasets.last_seq`.
//!
//! **Version ordering.** Every writing transaction first locks its data set's row in
//! `datasets` (`SELECT ... FOR UPDATE`) and holds the lock until it commits, so writers of
//! one data set run one at a time, and versions are handed out in commit order: when a
//! change with version `v` is visible, every change of that data set with a lower
//! version is visible too. A pull reads the counter and the rows from one snapshot
//! (`REPEATABLE READ`), so "changes after S" never skips a change that commits later with
//! a lower number. Writers run at `READ COMMITTED`: once they hold the lock, each
//! statement sees every earlier writer's commit, so the compare-and-set reads are current.

use std::collections::HashSet;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{IsolationLevel, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use roster_protocol::{
    Change, Conflict, ConflictKind, ConflictLogEntry, RowId, ServerRow, SyncRequest,
};

use super::round::{
    APPLIED_BATCH_LIFETIME_MS, Applied, LogContext, PageBuilder, PullScan, RoundTx, RowWrite,
    STAGED_ROUND_LIFETIME_MS, StoredRow, applied_response, apply_changes, check_round_unique,
    check_watermark, decode_fields, encode, is_idempotent_write, json_column, now_ms, parse_row_id,
    rollback_outcome, staged_response, to_i64, to_u64, word_column,
};
use super::{Answer, PulledChange, PurgeReport, StoreError, SyncStore};
use crate::resolve::Resolver;

/// Versioned schema migrations; `roster_migrations` records which versions have run.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        dataset       TEXT   PRIMARY KEY,
        last_seq      BIGINT NOT NULL DEFAULT 0,
        purge_horizon BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE rows (
        dataset       TEXT    NOT NULL,
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       BIGINT  NOT NULL,
        deleted       BOOLEAN NOT NULL DEFAULT FALSE,
        data          TEXT,
        updated_at_ms BIGINT  NOT NULL,
        updated_by    TEXT    NOT NULL,
        edited_at_ms  BIGINT,
        PRIMARY KEY (dataset, tbl, id)
    );
    CREATE UNIQUE INDEX rows_by_version ON rows (dataset, version);
    CREATE INDEX tombstones_by_age ON rows (dataset, updated_at_ms) WHERE deleted;
    CREATE TABLE conflict_log (
        seq                BIGSERIAL PRIMARY KEY,
        dataset            TEXT   NOT NULL,
        at_ms              BIGINT NOT NULL,
        client_id          TEXT   NOT NULL,
        server_client_id   TEXT,
        tbl                TEXT   NOT NULL,
        row_id             TEXT   NOT NULL,
        kind               TEXT   NOT NULL,
        resolution         TEXT   NOT NULL,
        client_row         TEXT,
        server_row         TEXT,
        base_row           TEXT,
        outcome            TEXT,
        conflicting_fields TEXT
    );
    CREATE INDEX conflict_log_by_dataset ON conflict_log (dataset, seq);
    CREATE TABLE staged_changes (
        dataset       TEXT   NOT NULL,
        round_id      TEXT   NOT NULL,
        ord           BIGINT NOT NULL,
        client_id     TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL,
        change        TEXT   NOT NULL,
        PRIMARY KEY (dataset, round_id, ord)
    );
    CREATE INDEX staged_changes_by_age ON staged_changes (created_at_ms);
    CREATE TABLE applied_batches (
        dataset   TEXT   NOT NULL,
        client_id TEXT   NOT NULL,
        batch_id  TEXT   NOT NULL,
        at_ms     BIGINT NOT NULL,
        response  TEXT   NOT NULL,
        PRIMARY KEY (dataset, client_id, batch_id)
    );
    CREATE INDEX applied_batches_by_age ON applied_batches (at_ms);
"#,
    crate::accounts::postgres::MIGRATION,
];

/// Key of the advisory lock that serialises migrations of concurrently starting servers.
const MIGRATION_LOCK: i64 = 0x526f_7374_6572; // "Roster"

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
/// A pooled connection.
pub(crate) type Connection = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// The PostgreSQL store. Cheap to share: it holds a connection pool.
///
/// The synchronous driver runs its own small runtime per connection, so open, use and
/// drop the store on blocking threads, never on an async task (dropping is safe
/// anywhere: the pool is closed on a thread of its own).
pub struct PostgresStore {
    /// Always `Some` until dropped.
    pool: Option<Pool>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            // Closing a connection blocks on the driver's runtime, which panics on a
            // thread that drives async tasks: close them on a plain thread.
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        let retryable = e.is_closed()
            || e.code().is_some_and(|code| {
                [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    // Two deliveries of one batch racing to remember their answer: the
                    // retry finds the first answer.
                    SqlState::UNIQUE_VIOLATION,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
            });
        if e.code() == Some(&SqlState::DISK_FULL) {
            StoreError::StorageFull(e.to_string())
        } else if retryable || e.code().is_none() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

/// Whether `db` names a PostgreSQL database (`postgres://` or `postgresql://` URL).
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) and runs
    /// pending migrations. Several servers may open the same database at once.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        let store = Self { pool: Some(pool) };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS roster_migrations (
                 version       INTEGER PRIMARY KEY,
                 applied_at_ms BIGINT  NOT NULL
             )",
        )?;
        let done: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM roster_migrations",
                &[],
            )?
            .get(0);
        let done = usize::try_from(done).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {done} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO roster_migrations (version, applied_at_ms) VALUES ($1, $2)",
                &[&version as &(dyn ToSql + Sync), &now_ms()],
            )?;
            tracing::info!(migration = version, "applied database migration");
        }
        tx.commit()?;
        Ok(())
    }

    /// A connection from the pool.
    pub(crate) fn conn(&self) -> Result<Connection, StoreError> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        Ok(pool.get()?)
    }
}

/// `(last_seq, purge_horizon)` of a data set, locked for this transaction so that its
/// writers commit one at a time and in version order. Creates the data set if new.
fn lock_dataset(tx: &mut Transaction<'_>, dataset: &str) -> Result<(u64, u64), StoreError> {
    const LOCK: &str = "SELECT last_seq, purge_horizon FROM datasets WHERE dataset = $1 FOR UPDATE";
    let row = match tx.query_opt(LOCK, &[&dataset])? {
        Some(row) => row,
        None => {
            tx.execute(
                "INSERT INTO datasets (dataset) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&dataset],
            )?;
            tx.query_one(LOCK, &[&dataset])?
        }
    };
    Ok((to_u64(row.get(0)), to_u64(row.get(1))))
}

/// `(last_seq, purge_horizon)` of a data set as this transaction's snapshot sees it.
fn read_dataset(tx: &mut Transaction<'_>, dataset: &str) -> Result<(u64, u64), StoreError> {
    Ok(tx
        .query_opt(
            "SELECT last_seq, purge_horizon FROM datasets WHERE dataset = $1",
            &[&dataset],
        )?
        .map_or((0, 0), |row| (to_u64(row.get(0)), to_u64(row.get(1)))))
}

/// A request's transaction on one data set.
struct PgRound<'a, 'conn> {
    tx: &'a mut Transaction<'conn>,
    dataset: &'a str,
}

impl PgRound<'_, '_> {
    /// Runs `sql`, an insert or a compare-and-set update of one row, with the row's
    /// values as `$1`..`$9` (data set, table, id, version, deleted, data, updated at, by,
    /// edited at) and, for an update, the expected version as `$10`. Returns whether a row
    /// was written.
    fn store_row(
        &mut self,
        sql: &str,
        w: &RowWrite<'_>,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let (id, version, deleted, data) =
            (w.id.to_string(), to_i64(w.version), w.deleted(), w.data()?);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![
            &self.dataset,
            &w.table,
            &id,
            &version,
            &deleted,
            &data,
            &w.at_ms,
            &w.client,
            &w.edited_at_ms,
        ];
        let expected = expected.map(to_i64);
        if let Some(expected) = &expected {
            values.push(expected);
        }
        Ok(self.tx.execute(sql, &values)? == 1)
    }
}

impl RoundTx for PgRound<'_, '_> {
    fn load_row(&mut self, table: &str, id: RowId) -> Result<Option<StoredRow>, StoreError> {
        let row = self.tx.query_opt(
            "SELECT version, deleted, data, edited_at_ms, updated_by FROM rows
             WHERE dataset = $1 AND tbl = $2 AND id = $3",
            &[&self.dataset, &table, &id.to_string()],
        )?;
        row.map(|r| {
            Ok(StoredRow {
                row: ServerRow {
                    version: to_u64(r.get(0)),
                    deleted: r.get(1),
                    fields: decode_fields(r.get(2))?,
                },
                edited_at_ms: r.get(3),
                updated_by: r.get(4),
            })
        })
        .transpose()
    }

    fn insert_row(&mut self, w: &RowWrite<'_>) -> Result<bool, StoreError> {
        let sql = "INSERT INTO rows (dataset, tbl, id, version, deleted, data, updated_at_ms,
                   updated_by, edited_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT DO NOTHING";
        self.store_row(sql, w, None)
    }

    fn update_row(&mut self, w: &RowWrite<'_>, expected: u64) -> Result<bool, StoreError> {
        let sql = "UPDATE rows SET version = $4, deleted = $5, data = $6, updated_at_ms = $7,
                   updated_by = $8, edited_at_ms = $9
                   WHERE dataset = $1 AND tbl = $2 AND id = $3 AND version = $10";
        self.store_row(sql, w, Some(expected))
    }

    fn log_conflict(
        &mut self,
        context: &LogContext<'_>,
        conflict: &Conflict,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO conflict_log (dataset, at_ms, client_id, tbl, row_id, kind,
             resolution, client_row, server_row, outcome, server_client_id, base_row,
             conflicting_fields)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &self.dataset,
                &context.at_ms,
                &context.client,
                &conflict.table,
                &conflict.id.to_string(),
                &conflict.kind.as_str(),
                &conflict.resolution.as_str(),
                &conflict.client_row.as_ref().map(encode).transpose()?,
                &conflict.server_row.as_ref().map(encode).transpose()?,
                &conflict.outcome.as_ref().map(encode).transpose()?,
                &context.server_client,
                &context.base_row.map(encode).transpose()?,
                &encode(&conflict.conflicting_fields)?,
            ],
        )?;
        Ok(())
    }
}

/// One pull page of `dataset` (see [`PageBuilder`]).
fn pull_page(
    tx: &mut Transaction<'_>,
    dataset: &str,
    scan: PullScan,
    skip: &HashSet<(String, RowId)>,
) -> Result<(Vec<PulledChange>, u64, bool), StoreError> {
    if scan.limit == 0 {
        return Ok(PageBuilder::nothing(scan));
    }
    let rows = tx.query(
        "SELECT tbl, id, version, deleted, data FROM rows
         WHERE dataset = $1 AND version > $2 AND version <= $3 ORDER BY version LIMIT $4",
        &[
            &dataset,
            &to_i64(scan.since),
            &to_i64(scan.upto),
            &i64::from(scan.limit),
        ],
    )?;
    let mut page = PageBuilder::new(scan, skip);
    for r in rows {
        let id_text: String = r.get(1);
        if !page.push(r.get(0), &id_text, to_u64(r.get(2)), r.get(3), r.get(4))? {
            break;
        }
    }
    Ok(page.finish())
}

/// The answer first given to this client's batch with the same id, if any.
fn replayed(
    tx: &mut Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
) -> Result<Option<Answer>, StoreError> {
    let Some(batch_id) = request.batch_id.filter(|_| is_idempotent_write(request)) else {
        return Ok(None);
    };
    let text: Option<String> = tx
        .query_opt(
            "SELECT response FROM applied_batches
             WHERE dataset = $1 AND client_id = $2 AND batch_id = $3",
            &[
                &dataset,
                &request.client_id.to_string(),
                &batch_id.to_string(),
            ],
        )?
        .map(|r| r.get(0));
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Keeps the answer to a batch that wrote something so that a retry gets it again.
fn remember(
    tx: &mut Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
    response: &Answer,
    wrote: bool,
) -> Result<(), StoreError> {
    if let Some(batch_id) = request.batch_id.filter(|_| wrote) {
        tx.execute(
            "INSERT INTO applied_batches (dataset, client_id, batch_id, at_ms, response)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (dataset, client_id, batch_id)
             DO UPDATE SET at_ms = EXCLUDED.at_ms, response = EXCLUDED.response",
            &[
                &dataset,
                &request.client_id.to_string(),
                &batch_id.to_string(),
                &now_ms(),
                &encode(response)?,
            ],
        )?;
    }
    Ok(())
}

/// The changes a final batch applies: the round's staged batches, then its own.
fn round_changes(
    tx: &mut Transaction<'_>,
    dataset: &str,
    request: &SyncRequest,
    round_id: &str,
) -> Result<Vec<Change>, StoreError> {
    let mut changes: Vec<Change> = Vec::new();
    for row in tx.query(
        "SELECT change FROM staged_changes WHERE dataset = $1 AND round_id = $2 ORDER BY ord",
        &[&dataset, &round_id],
    )? {
        let text: String = row.get(0);
        changes.push(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    changes.extend(request.changes.iter().cloned());
    check_round_unique(&changes, round_id)?;
    tx.execute(
        "DELETE FROM staged_changes WHERE dataset = $1 AND round_id = $2",
        &[&dataset, &round_id],
    )?;
    Ok(changes)
}

impl PostgresStore {
    /// Stores a non-final batch of an atomic round; nothing is applied yet.
    fn stage(
        &self,
        dataset: &str,
        request: &SyncRequest,
        round_id: &str,
    ) -> Result<Answer, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (newest, _) = lock_dataset(&mut tx, dataset)?;
        if let Some(answer) = replayed(&mut tx, dataset, request)? {
            return Ok(answer);
        }
        let first: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(ord), 0)::BIGINT FROM staged_changes
                 WHERE dataset = $1 AND round_id = $2",
                &[&dataset, &round_id],
            )?
            .get(0);
        let client = request.client_id.to_string();
        let at_ms = now_ms();
        for (offset, change) in (1..).zip(&request.changes) {
            tx.execute(
                "INSERT INTO staged_changes
                 (dataset, round_id, ord, client_id, created_at_ms, change)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &dataset,
                    &round_id,
                    &(first + offset),
                    &client,
                    &at_ms,
                    &encode(change)?.as_str(),
                ],
            )?;
        }
        let response = staged_response(request, newest);
        remember(
            &mut tx,
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (newest, _) = lock_dataset(&mut tx, dataset)?;
        if let Some(round) = &request.round {
            tx.execute(
                "DELETE FROM staged_changes WHERE dataset = $1 AND round_id = $2",
                &[&dataset, &round.id.to_string()],
            )?;
        }
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
        PgRound {
            tx: &mut tx,
            dataset,
        }
        .log_conflict(&context, &conflict)?;
        tracing::info!(table = %change.table, id = %change.id, kind = %kind, %reason,
            client = %client, "sync round rolled back by the conflict handler");
        remember(&mut tx, dataset, request, &response, true)?;
        tx.commit()?;
        Ok(response)
    }

    /// A request that writes nothing: one consistent snapshot, no lock.
    fn read_only(&self, dataset: &str, request: &SyncRequest) -> Result<Answer, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        if let Some(answer) = replayed(&mut tx, dataset, request)? {
            return Ok(answer);
        }
        let (last_seq, horizon) = read_dataset(&mut tx, dataset)?;
        check_watermark(request.since, last_seq, horizon)?;
        let scan = PullScan::read(request.since, request.pull_limit, last_seq);
        let page = pull_page(&mut tx, dataset, scan, &HashSet::new())?;
        tx.commit()?;
        Ok(applied_response(Vec::new(), Vec::new(), page, last_seq))
    }
}

impl SyncStore for PostgresStore {
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
        if request.changes.is_empty() && atomic_round.is_none() {
            return self.read_only(dataset, request);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (last_seq, horizon) = lock_dataset(&mut tx, dataset)?;
        if let Some(answer) = replayed(&mut tx, dataset, request)? {
            tracing::info!(batch = ?request.batch_id, "repeated the answer to a retried batch");
            return Ok(answer);
        }
        check_watermark(request.since, last_seq, horizon)?;
        let staged;
        let changes: &[Change] = match &atomic_round {
            Some(round) => {
                staged = round_changes(&mut tx, dataset, request, &round.id.to_string())?;
                &staged
            }
            None => &request.changes,
        };
        let mut round = PgRound {
            tx: &mut tx,
            dataset,
        };
        let (acks, conflicts, unwritten, next) =
            match apply_changes(&mut round, request, changes, resolver, last_seq)? {
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
                    drop(conn);
                    return self.roll_back(dataset, request, &change, current, kind, reason);
                }
            };
        if next != last_seq {
            tx.execute(
                "UPDATE datasets SET last_seq = $2 WHERE dataset = $1",
                &[&dataset, &to_i64(next)],
            )?;
        }
        let wrote = !changes.is_empty();
        let scan = PullScan {
            since: request.since,
            upto: last_seq,
            newest: next,
            limit: request.pull_limit,
        };
        let page = pull_page(&mut tx, dataset, scan, &unwritten)?;
        let response = applied_response(acks, conflicts, page, next);
        remember(&mut tx, dataset, request, &response, wrote)?;
        tx.commit()?;
        Ok(response)
    }

    fn conflict_log(
        &self,
        dataset: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ConflictLogEntry>, StoreError> {
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT seq, at_ms, client_id, server_client_id, tbl, row_id, kind, resolution,
                    client_row, server_row, base_row, outcome, conflicting_fields
             FROM conflict_log WHERE dataset = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            &[
                &dataset,
                &before.map_or(i64::MAX, to_i64),
                &i64::from(limit),
            ],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let client_text: String = r.get(2);
            let id_text: String = r.get(5);
            out.push(ConflictLogEntry {
                seq: to_u64(r.get(0)),
                at_ms: r.get(1),
                client_id: uuid::Uuid::parse_str(&client_text)
                    .map_err(|e| StoreError::Corrupt(format!("client id: {e}")))?,
                server_client_id: r.get(3),
                table: r.get(4),
                id: parse_row_id(&id_text)?,
                kind: word_column("kind", r.get(6))?,
                resolution: word_column("resolution", r.get(7))?,
                client_row: json_column("client row", r.get(8))?,
                server_row: json_column("server row", r.get(9))?,
                base_row: json_column("base row", r.get(10))?,
                outcome: json_column("outcome", r.get(11))?,
                conflicting_fields: json_column("fields", r.get(12))?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError> {
        let mut conn = self.conn()?;
        let datasets: Vec<String> = conn
            .query("SELECT dataset FROM datasets ORDER BY dataset", &[])?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut report = PurgeReport {
            purged: 0,
            horizon: 0,
        };
        for dataset in &datasets {
            let mut tx = conn.transaction()?;
            let (_, mut horizon) = lock_dataset(&mut tx, dataset)?;
            let newest_purged: Option<i64> = tx
                .query_one(
                    "SELECT MAX(version) FROM rows
                     WHERE dataset = $1 AND deleted AND updated_at_ms < $2",
                    &[dataset, &older_than_unix_ms],
                )?
                .get(0);
            let purged = tx.execute(
                "DELETE FROM rows WHERE dataset = $1 AND deleted AND updated_at_ms < $2",
                &[dataset, &older_than_unix_ms],
            )?;
            if let Some(v) = newest_purged.map(to_u64).filter(|v| *v > horizon) {
                horizon = v;
                tx.execute(
                    "UPDATE datasets SET purge_horizon = $2 WHERE dataset = $1",
                    &[dataset, &to_i64(horizon)],
                )?;
            }
            tx.commit()?;
            report.purged += purged;
            report.horizon = report.horizon.max(horizon);
        }
        let mut tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM staged_changes WHERE created_at_ms < $1",
            &[&now_ms().saturating_sub(STAGED_ROUND_LIFETIME_MS)],
        )?;
        tx.execute(
            "DELETE FROM applied_batches WHERE at_ms < $1",
            &[&now_ms().saturating_sub(APPLIED_BATCH_LIFETIME_MS)],
        )?;
        tx.commit()?;
        Ok(report)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.query_one("SELECT 1", &[])?;
        Ok(())
    }
}
