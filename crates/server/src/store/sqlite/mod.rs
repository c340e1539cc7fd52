//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Rows of every table live in one `rows` table keyed by `(dataset, tbl, id)`, holding
//! the row's values as JSON. A row's `version` is its position in the change log: a
//! strictly increasing number drawn from `meta.last_seq` by each write, so "changes after
//! S" is an index range scan and every version is unique. Writers take SQLite's write
//! lock up front (`BEGIN IMMEDIATE`, [`Mode::Write`]) and every update is a
//! compare-and-set on the version, so the read-then-write gap of a check outside the
//! transaction cannot occur.
//!
//! This module holds only SQL, one module per table: [`rows`] (rows and the `meta`
//! counters), [`conflict_log`], [`batches`] (`applied_batches`, `staged_changes`),
//! [`migrations`]; the accounts tables are in [`crate::accounts::sqlite`]. The request
//! flow is [`crate::store::flow`].

mod batches;
mod conflict_log;
pub(crate) mod migrations;
mod rows;
mod schema_versions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use roster_protocol::{ConflictLogEntry, SyncRequest};
use rusqlite::{Transaction, TransactionBehavior};

use super::flow::{self, Epoch, Finish, FlowStore, FlowTx, Mode};
pub use super::round::PULL_PAGE_MAX_BYTES;
use super::{Answer, ItemQuery, ItemRow, PoolUse, PurgeReport, StoreError, SyncStore};
use crate::feed::ChangeHub;
use crate::resolve::Resolver;

/// How long a connection waits for SQLite's write lock before the request fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The SQLite store. Cheap to share: it holds a connection pool.
pub struct SqliteStore {
    pub(crate) pool: r2d2::Pool<SqliteConnectionManager>,
    /// Where committed versions are announced (one process serves an SQLite file).
    hub: Arc<ChangeHub>,
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

/// How much of the database file each connection reads through a memory map (1 GiB)
/// instead of copying pages into its own 2 MB cache with `pread`: the pages are the
/// kernel's page cache, shared by the pool's connections. Round fifteen, interleaved:
/// a 100k-row `/tables` pull's server CPU fell by 7 %, a 1M-row first sync's by 9 %.
/// The mapped pages count in the server's RSS (they are the page cache's), and a disk
/// error while reading one stops the process (`SIGBUS`) instead of failing the request.
/// Writes still go through the WAL file.
const MMAP_BYTES: u64 = 1 << 30;

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
            conn.execute_batch(&format!(
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA mmap_size = {MMAP_BYTES};"
            ))
        });
        Self::with_manager(manager, 8)
    }

    /// A store in memory, on one connection: for tests that need no disk.
    #[cfg(test)]
    pub(crate) fn open_in_memory() -> Result<Self, StoreError> {
        let manager = SqliteConnectionManager::memory()
            .with_init(|conn| conn.execute_batch("PRAGMA foreign_keys = ON;"));
        Self::with_manager(manager, 1)
    }

    fn with_manager(manager: SqliteConnectionManager, size: u32) -> Result<Self, StoreError> {
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        migrations::migrate(&mut *pool.get()?)?;
        Ok(Self {
            pool,
            hub: Arc::default(),
        })
    }
}

/// A request's SQLite transaction, scoped to one data set: every row it reads or
/// writes, every conflict it logs and every batch it stages or remembers belongs to
/// `dataset`. Its [`FlowTx`] operations are in the table modules ([`rows`],
/// [`conflict_log`], [`batches`]).
struct SqliteTx<'a, 'conn> {
    tx: &'a Transaction<'conn>,
    dataset: &'a str,
    /// The version to announce once the transaction commits.
    announced: Option<u64>,
}

impl FlowStore for SqliteStore {
    fn epoch(&self, _dataset: &str) -> Result<Epoch, StoreError> {
        let conn = self.pool.get()?;
        let read = |key: &str| -> Result<u64, StoreError> {
            let value: i64 =
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
            Ok(u64::try_from(value).unwrap_or(0))
        };
        Ok(Epoch {
            id: read("epoch")?,
            restored_at: read("restored_at")?,
        })
    }

    fn transact<R>(
        &self,
        dataset: &str,
        mode: Mode,
        body: impl FnOnce(&mut dyn FlowTx) -> Result<Finish<R>, StoreError>,
    ) -> Result<R, StoreError> {
        let mut conn = self.pool.get()?;
        let behavior = match mode {
            // The write lock first: the counter, the replay cache and the rows are then
            // read and written by one writer at a time.
            Mode::Write => TransactionBehavior::Immediate,
            Mode::Read => TransactionBehavior::Deferred,
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        let mut flow_tx = SqliteTx {
            tx: &tx,
            dataset,
            announced: None,
        };
        let finish = body(&mut flow_tx)?;
        let announced = flow_tx.announced;
        match finish {
            Finish::Commit(value) => {
                tx.commit()?;
                if let Some(version) = announced {
                    self.hub.publish(dataset, version);
                }
                Ok(value)
            }
            Finish::Discard(value) => Ok(value),
        }
    }
}

impl SyncStore for SqliteStore {
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
        conflict_log::entries(&*self.pool.get()?, dataset, limit, before)
    }

    fn items(&self, dataset: &str, query: &ItemQuery) -> Result<Vec<ItemRow>, StoreError> {
        rows::items(&*self.pool.get()?, dataset, query)
    }

    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (purged, newest_purged) = rows::purge_tombstones(&tx, older_than_unix_ms)?;
        batches::purge_expired(&tx)?;
        let mut horizon = rows::meta(&tx, "purge_horizon")?;
        if let Some(v) = newest_purged.filter(|v| *v > horizon) {
            horizon = v;
            rows::set_meta(&tx, "purge_horizon", horizon)?;
        }
        tx.commit()?;
        Ok(PurgeReport { purged, horizon })
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
        schema_versions::history(&*self.pool.get()?)
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
            &mut *self.pool.get()?,
            version,
            schema,
            tables,
            dropped_tables,
            rewrite,
        )
    }

    fn record_schema(&self, version: u64, schema: &str) -> Result<bool, StoreError> {
        schema_versions::record(&*self.pool.get()?, version, schema)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    fn begin_new_epoch(&self) -> Result<u64, StoreError> {
        let epoch = super::new_epoch_number()?;
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'epoch'",
            [i64::try_from(epoch).unwrap_or(1)],
        )?;
        // One counter for every data set: its value is every data set's restore point.
        tx.execute(
            "UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'last_seq')
             WHERE key = 'restored_at'",
            [],
        )?;
        tx.commit()?;
        Ok(epoch)
    }

    fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{} is not UTF-8", to.display())))?;
        if to.exists() {
            return Err(StoreError::Invalid(format!(
                "{target} exists; a backup is written to a new file"
            )));
        }
        let conn = self.pool.get()?;
        // One read transaction: a consistent copy while writers go on (WAL).
        conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    fn ready(&self) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        super::check_migrated(done, migrations::MIGRATIONS.len())
    }

    fn pool_use(&self) -> Option<PoolUse> {
        Some(PoolUse::of(self.pool.state(), self.pool.max_size()))
    }
}

/// Removes everything stored for `dataset` (rows, conflict log, staged and remembered
/// batches) in the caller's transaction; returns how many rows went. Used when a user is
/// deleted with its data.
pub(crate) fn delete_dataset(tx: &Transaction<'_>, dataset: &str) -> Result<u64, StoreError> {
    let removed = rows::delete_dataset(tx, dataset)?;
    conflict_log::delete_dataset(tx, dataset)?;
    batches::delete_dataset(tx, dataset)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use roster_protocol::{Change, ChangeOp, RowId};
    use serde_json::json;

    use super::*;
    use crate::store::fixtures::{DS, insert, request};

    #[test]
    fn a_slice_fetch_searches_its_index_by_value_and_version() {
        let (_dir, store) = open();
        let def = crate::slices::SubscriptionDef {
            name: "by_city".into(),
            table: "person".into(),
            filter: std::collections::BTreeMap::from([("city".into(), ":city".into())]),
        };
        store
            .ensure_slice_indexes(std::slice::from_ref(&def))
            .unwrap();
        let schema = roster_protocol::Schema::default_person();
        let slice = crate::slices::Slices::new(&[def], &schema)
            .resolve(
                &[roster_protocol::Subscription {
                    name: "by_city".into(),
                    params: std::collections::BTreeMap::from([("city".into(), json!("Lyon"))]),
                }],
                false,
                "ann",
            )
            .unwrap();
        let scan = crate::store::round::PullScan::read(0, 100, 10);
        let (sql, values) = rows::slice_query(DS, scan, &slice.filters[0]);
        let plan = plan_of(&store, &sql, rusqlite::params_from_iter(values));
        assert!(
            plan.contains("<expr>=?") && plan.contains("version>?"),
            "{plan}"
        );
    }

    /// The plan of `sql` with `values`, its steps joined by "; ".
    pub(super) fn plan_of(store: &SqliteStore, sql: &str, values: impl rusqlite::Params) -> String {
        let conn = store.pool.get().unwrap();
        let steps: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(values, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("; ")
    }

    #[test]
    fn rows_stored_by_key_move_to_version_order_and_a_pull_reads_them_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let before = migrations::MIGRATIONS.len() - 1;
        // Key order a < b < c, version order b (1), c (2, deleted), a (3); bob's row 4.
        let (a, b, c, d) = (
            "0190b2c4-5d2e-7000-8000-00000000000a",
            "0190b2c4-5d2e-7000-8000-00000000000b",
            "0190b2c4-5d2e-7000-8000-00000000000c",
            "0190b2c4-5d2e-7000-8000-00000000000d",
        );
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &migrations::MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!(
                "PRAGMA user_version = {before};
                 INSERT INTO rows (dataset, tbl, id, version, deleted, data, updated_at_ms,
                                   updated_by, edited_at_ms, created_at_ms) VALUES
                   ('{DS}', 'person', '{a}', 3, 0, '{{\"name\":\"a\"}}', 30, 'c', 29, 10),
                   ('{DS}', 'person', '{b}', 1, 0, '{{\"name\":\"b\"}}', 10, 'c', NULL, 10),
                   ('{DS}', 'person', '{c}', 2, 1, NULL, 20, 'c', NULL, 10),
                   ('bob', 'person', '{d}', 4, 0, '{{\"name\":\"d\"}}', 40, 'c', NULL, 40);
                 UPDATE meta SET value = 4 WHERE key = 'last_seq';"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let resolver = Resolver::new(&crate::config::ServerConfig::default());
        let page = store.sync(DS, &request(0, vec![], 10), &resolver).unwrap();
        let pulled: Vec<(String, u64, bool)> = page
            .changes
            .iter()
            .map(|ch| (ch.id.to_string(), ch.row.version, ch.row.deleted))
            .collect();
        assert_eq!(
            pulled,
            [
                (b.to_owned(), 1, false),
                (c.to_owned(), 2, true),
                (a.to_owned(), 3, false)
            ]
        );
        let bob = store
            .sync("bob", &request(0, vec![], 10), &resolver)
            .unwrap();
        assert_eq!(bob.changes.len(), 1);
        {
            let conn = store.pool.get().unwrap();
            let kept: (String, i64, Option<i64>, i64) = conn
                .query_row(
                    "SELECT data, updated_at_ms, edited_at_ms, created_at_ms FROM rows
                     WHERE dataset = ?1 AND id = ?2",
                    [DS, a],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            assert_eq!(kept, (r#"{"name":"a"}"#.to_owned(), 30, Some(29), 10));
            let again = conn.execute(
                "INSERT INTO rows (dataset, tbl, id, version, updated_at_ms, updated_by)
                 VALUES (?1, 'person', ?2, 5, 50, 'c')",
                [DS, a],
            );
            let refused = again.expect_err("a row key is still unique").to_string();
            assert!(
                refused.contains("UNIQUE constraint failed: rows.dataset, rows.tbl, rows.id"),
                "{refused}"
            );
        }
        let plan = plan_of(&store, rows::PULL_ROWS, rusqlite::params![0, 10, DS, 4]);
        assert!(plan.contains("USING PRIMARY KEY"), "{plan}");
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn every_pooled_connection_reads_the_file_through_a_memory_map_with_full_fsync() {
        let (_dir, store) = open();
        // Two connections held at once: the pool opens the second one too.
        let (first, second) = (store.pool.get().unwrap(), store.pool.get().unwrap());
        for conn in [&first, &second] {
            let mapped: i64 = conn
                .query_row("PRAGMA mmap_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(u64::try_from(mapped).unwrap(), MMAP_BYTES);
            let synchronous: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(synchronous, 2, "FULL");
        }
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
            for sql in &migrations::MIGRATIONS[..3] {
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
