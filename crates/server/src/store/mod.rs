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
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod flow;
pub mod postgres;
pub(crate) mod round;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use roster_protocol::{ConflictLogEntry, SyncRequest, SyncResponse};

pub use self::answer::{Answer, PulledChange};
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

    /// The newest version of `dataset` (what a device's watermark reaches once it
    /// pulled everything; on SQLite the file's one counter).
    fn newest_version(&self, dataset: &str) -> Result<u64, StoreError>;

    /// The hub this store announces committed versions into (see [`crate::feed`]).
    fn changes(&self) -> Arc<ChangeHub>;

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
