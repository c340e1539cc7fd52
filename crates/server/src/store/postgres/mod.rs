//! The PostgreSQL backend, for several stateless server instances on one database.
//!
//! Same model as the SQLite store, every table keyed by data set: rows live in `rows`
//! keyed by `(dataset, tbl, id)`, and a row's `version` is its position in its data
//! set's change log, drawn from `dataset_counters.last_seq`.
//!
//! **Version ordering.** Every writing transaction first locks its data set's row in
//! `dataset_counters` (`SELECT ... FOR UPDATE`) and holds the lock until it commits, so writers of
//! one data set run one at a time, and versions are handed out in commit order: when a
//! change with version `v` is visible, every change of that data set with a lower
//! version is visible too. A pull reads the counter and the rows from one snapshot
//! (`REPEATABLE READ`), so "changes after S" never skips a change that commits later with
//! a lower number. Writers run at `READ COMMITTED`: once they hold the lock, each
//! statement sees every earlier writer's commit, so the compare-and-set reads are current.
//!
//! This module holds only SQL, one module per table: [`rows`] (rows and the data sets'
//! counters), [`conflict_log`], [`batches`] (`applied_batches`, `staged_changes`),
//! [`migrations`]; the accounts tables are in [`crate::accounts::postgres`]. The request
//! flow is [`crate::store::flow`].

mod batches;
mod conflict_log;
mod listen;
pub(crate) mod migrations;
mod rows;
mod schema_versions;
mod statements;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Once};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{IsolationLevel, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use roster_protocol::{ConflictLogEntry, SyncRequest};

use super::flow::{self, Epoch, Finish, FlowStore, FlowTx, Mode};
use super::{Answer, ItemQuery, ItemRow, PoolUse, PurgeReport, StoreError, SyncStore};
use crate::feed::ChangeHub;
use crate::resolve::Resolver;

pub(crate) use statements::{Conn, Statements};

type Pool = r2d2::Pool<statements::Manager>;
/// A pooled connection, with its prepared statements ([`statements`]).
pub(crate) type Connection = r2d2::PooledConnection<statements::Manager>;

/// The PostgreSQL store. Cheap to share: it holds a connection pool.
///
/// The synchronous driver runs its own small runtime per connection, so open, use and
/// drop the store on blocking threads, never on an async task (dropping is safe
/// anywhere: the pool is closed on a thread of its own).
pub struct PostgresStore {
    /// Always `Some` until dropped.
    pool: Option<Pool>,
    /// The database, for the `LISTEN` connection.
    config: postgres::Config,
    /// Where versions committed by any instance are announced (see [`listen`]).
    hub: Arc<ChangeHub>,
    /// The `LISTEN` thread is started once.
    listening: Once,
    /// When the planner's statistics are refreshed.
    analyze: Arc<AnalyzeWhenGrown>,
}

/// Refreshes the planner's statistics of `rows` each time this instance's writes have
/// doubled since the last refresh (from 1000): `ANALYZE rows`, on a thread of its own.
///
/// Autovacuum analyzes a table only on its next round (up to a minute) after it grew by
/// a tenth, so during and after a bulk load the planner saw a small table and planned
/// lookups in it as scans of the whole data set. Doubling bounds the work: a load of N
/// rows costs about log2(N / 1000) analyzes, each a sample of at most 30,000 rows.
#[derive(Debug)]
struct AnalyzeWhenGrown {
    written: AtomicU64,
    next_at: AtomicU64,
}

impl Default for AnalyzeWhenGrown {
    fn default() -> Self {
        Self {
            written: AtomicU64::new(0),
            next_at: AtomicU64::new(1000),
        }
    }
}

impl AnalyzeWhenGrown {
    /// Counts a commit's `written` rows, and analyzes when the count crossed the mark.
    fn after_writes(&self, written: u64, pool: Option<&Pool>) {
        if written == 0 {
            return;
        }
        let total = self.written.fetch_add(written, Relaxed) + written;
        let next_at = self.next_at.load(Relaxed);
        let Some(pool) = pool.filter(|_| total >= next_at) else {
            return;
        };
        if self
            .next_at
            .compare_exchange(next_at, total.saturating_mul(2), Relaxed, Relaxed)
            .is_err()
        {
            return; // another commit crossed the same mark and analyzes
        }
        let pool = pool.clone();
        std::thread::spawn(move || {
            let analyzed = pool
                .get()
                .map_err(StoreError::from)
                .and_then(|mut conn| Ok(conn.client.batch_execute("ANALYZE rows")?));
            match analyzed {
                Ok(()) => tracing::debug!(written = total, "analyzed rows"),
                Err(error) => tracing::warn!(%error, "could not analyze rows"),
            }
        });
    }
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
        let manager = statements::Manager(PostgresConnectionManager::new(config.clone(), NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        let store = Self {
            pool: Some(pool),
            config,
            hub: Arc::default(),
            listening: Once::new(),
            analyze: Arc::default(),
        };
        migrations::migrate(&mut store.conn()?.client)?;
        Ok(store)
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

/// A request's transaction on one data set, with the data set's counter as it read it
/// when the transaction began (locked in [`Mode::Write`]). Its [`FlowTx`] operations are
/// in the table modules ([`rows`], [`conflict_log`], [`batches`]).
struct PgTx<'a, 'conn> {
    tx: &'a mut Transaction<'conn>,
    /// The connection's prepared statements.
    statements: &'a mut Statements,
    dataset: &'a str,
    counter: (u64, u64),
}

impl FlowStore for PostgresStore {
    fn epoch(&self, dataset: &str) -> Result<Epoch, StoreError> {
        let mut conn = self.conn()?;
        let Conn { client, statements } = &mut *conn;
        let epoch = statements.get(
            client,
            "SELECT e.epoch, COALESCE(
                 (SELECT restored_at FROM dataset_counters WHERE dataset = $1), 0)
             FROM server_epoch e",
            &[postgres::types::Type::TEXT],
        )?;
        let row = client.query_one(&epoch, &[&dataset])?;
        let (epoch, restored_at): (i64, i64) = (row.get(0), row.get(1));
        Ok(Epoch {
            id: u64::try_from(epoch).unwrap_or(0),
            restored_at: u64::try_from(restored_at).unwrap_or(0),
        })
    }

    fn transact<R>(
        &self,
        dataset: &str,
        mode: Mode,
        body: impl FnOnce(&mut dyn FlowTx) -> Result<Finish<R>, StoreError>,
    ) -> Result<R, StoreError> {
        let mut conn = self.conn()?;
        let Conn { client, statements } = &mut *conn;
        let (mut tx, counter) = match mode {
            // The data set's counter row is locked before anything else is read: writers
            // of one data set (on any instance) then run one at a time, and commit in
            // version order.
            Mode::Write => {
                let mut tx = client.transaction()?;
                let counter = rows::lock_dataset(&mut tx, statements, dataset)?;
                (tx, counter)
            }
            Mode::Read => {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let counter = rows::read_dataset(&mut tx, statements, dataset)?;
                (tx, counter)
            }
        };
        let mut flow_tx = PgTx {
            tx: &mut tx,
            statements,
            dataset,
            counter,
        };
        let finish = body(&mut flow_tx)?;
        // Each write takes the next version: the versions a commit adds are its writes.
        let written = flow_tx.counter.0.saturating_sub(counter.0);
        match finish {
            Finish::Commit(value) => {
                tx.commit()?;
                self.analyze.after_writes(written, self.pool.as_ref());
                Ok(value)
            }
            Finish::Discard(value) => Ok(value),
        }
    }
}

impl SyncStore for PostgresStore {
    fn sync_answer_in(
        &self,
        dataset: &str,
        request: &SyncRequest,
        resolver: &Resolver,
        slice: Option<&crate::slices::Slice>,
    ) -> Result<Answer, StoreError> {
        flow::sync_answer(self, dataset, request, resolver, slice)
    }

    fn ensure_slice_indexes(
        &self,
        defs: &[crate::slices::SubscriptionDef],
    ) -> Result<(), StoreError> {
        rows::ensure_slice_indexes(self, defs)
    }

    fn conflict_log(
        &self,
        dataset: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ConflictLogEntry>, StoreError> {
        conflict_log::entries(&mut self.conn()?.client, dataset, limit, before)
    }

    fn items(&self, dataset: &str, query: &ItemQuery) -> Result<Vec<ItemRow>, StoreError> {
        rows::items(&mut self.conn()?.client, dataset, query)
    }

    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError> {
        let mut conn = self.conn()?;
        let Conn { client, statements } = &mut *conn;
        let datasets: Vec<String> = client
            .query("SELECT dataset FROM dataset_counters ORDER BY dataset", &[])?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut report = PurgeReport {
            purged: 0,
            horizon: 0,
        };
        for dataset in &datasets {
            let mut tx = client.transaction()?;
            let (purged, horizon) =
                rows::purge_tombstones(&mut tx, statements, dataset, older_than_unix_ms)?;
            tx.commit()?;
            report.purged += purged;
            report.horizon = report.horizon.max(horizon);
        }
        let mut tx = client.transaction()?;
        batches::purge_expired(&mut tx)?;
        tx.commit()?;
        Ok(report)
    }

    fn newest_version(&self, dataset: &str) -> Result<u64, StoreError> {
        self.transact(dataset, Mode::Read, |tx| {
            Ok(Finish::Commit(tx.counter()?.0))
        })
    }

    fn changes(&self) -> Arc<ChangeHub> {
        self.hub.clone()
    }

    fn schema_history(&self) -> Result<Vec<(u64, String)>, StoreError> {
        schema_versions::history(&mut self.conn()?.client)
    }

    fn migrate_rows(
        &self,
        version: u64,
        schema: &str,
        tables: &[String],
        dropped_tables: &[String],
        rewrite: &mut dyn FnMut(
            &str,
            &mut roster_protocol::Fields,
        ) -> Result<super::Rewrite, String>,
    ) -> Result<super::MigrationReport, StoreError> {
        schema_versions::migrate_rows(
            &mut self.conn()?.client,
            version,
            schema,
            tables,
            dropped_tables,
            rewrite,
        )
    }

    fn record_schema(&self, version: u64, schema: &str) -> Result<bool, StoreError> {
        schema_versions::record(&mut self.conn()?.client, version, schema)
    }

    fn start_change_listener(&self) -> Result<(), StoreError> {
        let mut started = Ok(());
        self.listening
            .call_once(|| started = listen::spawn(self.config.clone(), &self.hub));
        started
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.client.query_one("SELECT 1", &[])?;
        Ok(())
    }

    fn begin_new_epoch(&self) -> Result<u64, StoreError> {
        let epoch = super::new_epoch_number()?;
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        tx.execute(
            "UPDATE server_epoch SET epoch = $1",
            &[&i64::try_from(epoch).unwrap_or(1)],
        )?;
        tx.execute("UPDATE dataset_counters SET restored_at = last_seq", &[])?;
        tx.commit()?;
        Ok(epoch)
    }

    fn ready(&self) -> Result<(), StoreError> {
        let done: i32 = self
            .conn()?
            .client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM roster_migrations",
                &[],
            )?
            .get(0);
        super::check_migrated(i64::from(done), migrations::MIGRATIONS.len())
    }

    fn pool_use(&self) -> Option<PoolUse> {
        self.pool
            .as_ref()
            .map(|pool| PoolUse::of(pool.state(), pool.max_size()))
    }
}
/// Removes everything stored for `dataset` (rows, counter, conflict log, staged and
/// remembered batches) in the caller's transaction; returns how many rows went. Used
/// when a user is deleted with its data.
pub(crate) fn delete_dataset(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dataset: &str,
) -> Result<u64, StoreError> {
    let removed = rows::delete_dataset(tx, statements, dataset)?;
    conflict_log::delete_dataset(tx, dataset)?;
    batches::delete_dataset(tx, dataset)?;
    Ok(removed)
}
