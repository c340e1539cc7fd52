//! The storage trait every server backend implements.
//!
//! A backend's one job is to apply a validated [`SyncRequest`] atomically: every change is
//! checked against the stored row with a compare-and-set on its version inside one
//! transaction, conflicts are planned by [`Resolver::plan`], and the pull page is read in
//! the same transaction. Either the whole request commits or nothing does. When the
//! resolver can roll rounds back, the batches of a round are staged and the whole round
//! is applied in one transaction with its final batch.
//!
//! Layout: [`flow`] is the request flow (replay, watermark, staging, applying, rollback,
//! counter, pull page, remember, commit), written once over the small [`flow::FlowTx`]
//! operations; [`round`] the backend-neutral rules it uses (planning and writing each
//! change, cutting pull pages); [`sqlite`] and [`postgres`] hold only SQL, one module per
//! table.

pub mod answer;
pub mod db_lock;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod flow;
pub mod items;
pub mod postgres;
pub(crate) mod round;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use roster_protocol::{ConflictLogEntry, Fields, SyncRequest, SyncResponse};

pub use self::answer::Answer;
pub use self::items::{ItemQuery, ItemRow};
use crate::accounts::AccountStore;
use crate::feed::ChangeHub;
use crate::resolve::Resolver;

/// The two halves of one database: the rows ([`SyncStore`]) and the accounts
/// ([`AccountStore`]), sharing one connection pool. Both name the same database, so
/// every server instance opened on it sees the same rows, users and tokens.
#[derive(Clone)]
pub struct Backend {
    /// Rows, conflicts and rounds.
    pub sync: Arc<dyn SyncStore>,
    /// Users, tokens, data sets and grants.
    pub accounts: Arc<dyn AccountStore>,
}

/// Opens the backend `db` names: PostgreSQL for a `postgres://` (or `postgresql://`)
/// URL, else the SQLite file at that path (the embedded default). Runs pending
/// migrations of rows and accounts. Call it on a blocking thread: the PostgreSQL driver
/// blocks.
pub fn open(db: &Path) -> Result<Backend, StoreError> {
    match db.to_str().filter(|text| postgres::is_postgres_url(text)) {
        Some(url) => {
            let store = Arc::new(postgres::PostgresStore::open(url)?);
            Ok(Backend {
                sync: store.clone(),
                accounts: store,
            })
        }
        None => {
            let store = Arc::new(sqlite::SqliteStore::open(db)?);
            Ok(Backend {
                sync: store.clone(),
                accounts: store,
            })
        }
    }
}

/// `db` fit for logs: a PostgreSQL URL's password is masked.
pub fn describe(db: &Path) -> String {
    let text = db.display().to_string();
    if !postgres::is_postgres_url(&text) {
        return text;
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return text;
    };
    match rest.split_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => text,
        },
        None => text,
    }
}

/// What a tombstone purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Tombstones removed.
    pub purged: u64,
    /// Watermarks below this must re-initialise (0 when nothing was ever purged).
    pub horizon: u64,
}

/// How much of a store's connection pool is in use (for the metrics endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections handed out now.
    pub in_use: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
}

impl PoolUse {
    /// The use of an r2d2 pool of at most `max` connections in `state`.
    pub(crate) fn of(state: r2d2::State, max: u32) -> Self {
        Self {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            max,
        }
    }
}

/// A new epoch number: random, not 0, below 2^53 (exact in every JSON reader).
pub(crate) fn new_epoch_number() -> Result<u64, StoreError> {
    let random = getrandom::u64()
        .map_err(|e| StoreError::Unavailable(format!("no randomness for the epoch: {e}")))?;
    Ok((random & ((1 << 53) - 1)).max(1))
}

/// `Ok` once `done` migrations of the `known` ones of this program have run, else
/// [`StoreError::Unavailable`] (another process is still migrating the database).
pub(crate) fn check_migrated(done: i64, known: usize) -> Result<(), StoreError> {
    if usize::try_from(done).is_ok_and(|done| done >= known) {
        return Ok(());
    }
    Err(StoreError::Unavailable(format!(
        "{done} of {known} migrations have run"
    )))
}

/// Who a row rewritten by an administrator's schema migration was last written by (in
/// `rows.updated_by`, where a client id stands otherwise).
pub const MIGRATION_WRITER: &str = "schema-migration";

/// What an administrator's schema migration did to one row's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing.
    Unchanged,
    /// Only how the values are stored (a null value moved or removed): written in place,
    /// devices need not pull it again.
    Cosmetic,
    /// A value devices must learn: written with a new version, so they pull it.
    Changed,
}

/// What an administrator's schema migration did to the stored rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Rows written with a new version.
    pub rewritten: u64,
    /// Rows removed with a dropped table.
    pub removed: u64,
}

/// Why a store operation failed. Any error means the request's transaction rolled back.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The client's watermark predates purged tombstones (or is ahead of this server's
    /// log): it must pull everything again.
    #[error(
        "watermark {since} cannot be served (purge horizon {horizon}, newest change {newest}); re-initialise and pull from 0"
    )]
    ResetRequired {
        /// The client's watermark.
        since: u64,
        /// Oldest watermark that can still be served incrementally.
        horizon: u64,
        /// Newest change-log position.
        newest: u64,
    },
    /// A compare-and-set on a row's version found another version: a concurrent writer
    /// got there first. The transaction was rolled back; the request may be retried.
    #[error("row {table}/{id} changed concurrently; retry the request")]
    ConcurrentWrite {
        /// Table of the row.
        table: String,
        /// Id of the row.
        id: String,
    },
    /// The request was checked against an older schema than the store now serves
    /// (another instance or an administrator's `migrate` stored a newer one): nothing
    /// was changed; the server takes the new schema and the request may be retried.
    #[error(
        "the schema changed (version {stored}, this server checked version {serving}); retry the request"
    )]
    SchemaChanged {
        /// The version the request was checked against.
        serving: u64,
        /// The newest stored version.
        stored: u64,
    },
    /// The database is busy or unreachable; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The request is inconsistent with what the server holds for its round (for example
    /// a row changed in two batches of one round).
    #[error("{0}")]
    Invalid(String),
    /// The server owner's conflict handler returned a row that does not fit the table.
    #[error("the conflict handler returned an invalid row: {0}")]
    Handler(String),
    /// The database's disk is full (SQLITE_FULL, PostgreSQL's 53100). Nothing was
    /// written; the request may be retried once space is freed.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

/// A failed migration: a driver error maps as that driver's errors do, and a database
/// written by a newer Roster is reported as not readable by this one.
impl<E> From<roster_migrate::MigrateError<E>> for StoreError
where
    E: std::error::Error + 'static,
    StoreError: From<E>,
{
    fn from(e: roster_migrate::MigrateError<E>) -> Self {
        match e {
            roster_migrate::MigrateError::Database(e) => StoreError::from(e),
            newer @ roster_migrate::MigrateError::Newer { .. } => {
                StoreError::Corrupt(newer.to_string())
            }
        }
    }
}

/// A server storage backend. Methods block; the HTTP layer calls them on a blocking
/// thread.
///
/// **Data sets.** Every row, conflict log entry, staged batch and remembered answer
/// belongs to one data set, named by the `dataset` argument (already authorised by the
/// HTTP layer). A backend must never read, write, replay or report anything of another
/// data set for a call: two data sets may hold the same `(table, id)` and the same
/// client or batch ids without meeting. Versions may be drawn from one global counter.
pub trait SyncStore: Send + Sync + 'static {
    /// Applies a request already checked by [`roster_protocol::validate::validate_request`] to the
    /// data set `dataset` in one transaction: clean changes are acknowledged with their new version, conflicting
    /// ones are resolved by `resolver`, logged, and reported, and server changes after
    /// `request.since` (minus the rows this request wrote or answered) are returned as one page.
    /// A round rolled back by the handler is answered with `rollback` set and nothing
    /// applied. Pulled rows keep the JSON text they are stored as (see [`Answer`]).
    fn sync_answer(
        &self,
        dataset: &str,
        request: &SyncRequest,
        resolver: &Resolver,
    ) -> Result<Answer, StoreError> {
        self.sync_answer_in(dataset, request, resolver, None)
    }

    /// [`SyncStore::sync_answer`] for a partial-sync device: the pull holds only the rows
    /// of `slice` (`None`: the whole data set) and evicts the others it meets (see
    /// [`crate::slices`]).
    fn sync_answer_in(
        &self,
        dataset: &str,
        request: &SyncRequest,
        resolver: &Resolver,
        slice: Option<&crate::slices::Slice>,
    ) -> Result<Answer, StoreError>;

    /// Creates (if missing) the index each subscription declaration reads, so a slice's
    /// first fetch costs the slice, not the data set. Run at start.
    fn ensure_slice_indexes(
        &self,
        defs: &[crate::slices::SubscriptionDef],
    ) -> Result<(), StoreError>;

    /// [`SyncStore::sync_answer`] with every pulled row decoded.
    fn sync(
        &self,
        dataset: &str,
        request: &SyncRequest,
        resolver: &Resolver,
    ) -> Result<SyncResponse, StoreError> {
        answer::decode(self.sync_answer(dataset, request, resolver)?)
    }

    /// The rows of `dataset` that `query` selects, in its order (the table protocol's
    /// list query, [`crate::tables`]). One statement: one consistent snapshot.
    fn items(&self, dataset: &str, query: &ItemQuery) -> Result<Vec<ItemRow>, StoreError>;

    /// One row of `dataset` (a tombstone too), if stored.
    fn item(
        &self,
        dataset: &str,
        table: &str,
        id: roster_protocol::RowId,
    ) -> Result<Option<ItemRow>, StoreError> {
        let query = ItemQuery {
            table: table.to_owned(),
            filter: Some(items::Predicate::Compare {
                column: items::ItemColumn::Id,
                op: items::Comparison::Eq,
                value: Some(items::SqlValue::Text(id.to_string())),
            }),
            order: Vec::new(),
            skip: 0,
            top: 1,
            include_deleted: true,
        };
        Ok(self.items(dataset, &query)?.into_iter().next())
    }

    /// Up to `limit` conflict log entries of `dataset` with `seq < before` (all when
    /// `None`), newest first.
    fn conflict_log(
        &self,
        dataset: &str,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ConflictLogEntry>, StoreError>;

    /// Removes tombstones last written before `older_than_unix_ms` and raises the purge
    /// horizon so clients that may have missed them re-initialise. Also drops answers
    /// kept for retries and staged batches of rounds, once they are a day old.
    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError>;

    /// Checks the store answers a trivial query.
    fn ping(&self) -> Result<(), StoreError>;

    /// Checks the store can serve: the database answers and every migration this
    /// program knows has run (another process may be migrating it). The `/ready` check.
    fn ready(&self) -> Result<(), StoreError>;

    /// Starts a new epoch: a new random epoch number, and the current newest version of
    /// every data set recorded as its restore point. Run once after the database was
    /// restored from a backup (`roster-server restore`, or `new-epoch` after
    /// `pg_restore`): devices that synced with the lost history re-base at their next
    /// round. Returns the new epoch.
    fn begin_new_epoch(&self) -> Result<u64, StoreError>;

    /// Writes a consistent copy of the database to `to` (a new file), also while the
    /// service runs. SQLite only (`VACUUM INTO`); PostgreSQL is backed up with
    /// `pg_dump`.
    fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "cannot write {}: back this database up with its own tools (pg_dump)",
            to.display()
        )))
    }

    /// How much of the connection pool is in use, where there is one.
    fn pool_use(&self) -> Option<PoolUse> {
        None
    }

    /// The newest version of `dataset` (what a device's watermark reaches once it
    /// pulled everything; on SQLite the file's one counter).
    fn newest_version(&self, dataset: &str) -> Result<u64, StoreError>;

    /// The hub this store announces committed versions into (see [`crate::feed`]).
    fn changes(&self) -> Arc<ChangeHub>;

    /// Every stored schema version, oldest first, each with its schema as JSON text
    /// (none before the first start that versions its schema). See
    /// [`crate::schema_version`].
    fn schema_history(&self) -> Result<Vec<(u64, String)>, StoreError>;

    /// Stores `schema` (JSON text) as `version` unless that version is already stored
    /// (another instance got there first); returns whether it did.
    fn record_schema(&self, version: u64, schema: &str) -> Result<bool, StoreError>;

    /// An administrator's schema migration, in one transaction: stores `schema` (JSON
    /// text) as `version` (failing if another process stored it first), removes every
    /// row of `dropped_tables`, and passes every live row of `tables`, in every data set,
    /// through `rewrite`. A [`Rewrite::Changed`] row is written with a new version, so
    /// devices pull it; an error from `rewrite` (naming why the row cannot be migrated)
    /// rolls everything back.
    fn migrate_rows(
        &self,
        version: u64,
        schema: &str,
        tables: &[String],
        dropped_tables: &[String],
        rewrite: &mut dyn FnMut(&str, &mut Fields) -> Result<Rewrite, String>,
    ) -> Result<MigrationReport, StoreError>;

    /// Starts hearing versions committed by other processes on the same database
    /// (PostgreSQL `LISTEN`), for as long as the store lives. Nothing to do where one
    /// process owns the database (SQLite).
    fn start_change_listener(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_masks_a_postgres_password_only() {
        let d = |s: &str| describe(Path::new(s));
        assert_eq!(
            d("postgres://roster:secret@db:5432/roster"),
            "postgres://roster:***@db:5432/roster"
        );
        assert_eq!(
            d("postgres://roster@db/roster"),
            "postgres://roster@db/roster"
        );
        assert_eq!(d("/var/lib/roster/roster.db"), "/var/lib/roster/roster.db");
    }
}
