//! The storage trait every server backend implements.
//!
//! A backend's one job is to apply a validated [`SyncRequest`] atomically: every change is
//! checked against the stored row with a compare-and-set on its version inside one
//! transaction, conflicts are planned by [`crate::classify::plan`], and the pull page is
//! read in the same transaction. Either the whole request commits or nothing does.

pub mod sqlite;

use std::collections::HashMap;

use roster_protocol::{ConflictPolicy, SyncRequest, SyncResponse};

/// Conflict policy per table; tables not listed are server-wins.
#[derive(Debug, Clone, Default)]
pub struct Policies(HashMap<String, ConflictPolicy>);

impl Policies {
    /// Builds the map from `(table, policy)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, ConflictPolicy)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// The policy of `table`.
    pub fn get(&self, table: &str) -> ConflictPolicy {
        self.0.get(table).copied().unwrap_or_default()
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
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

/// A server storage backend. Methods block; the HTTP layer calls them on a blocking
/// thread.
pub trait SyncStore: Send + Sync + 'static {
    /// Applies a request already checked by [`crate::validate::validate_request`] in one
    /// transaction: clean changes are acknowledged with their new version, conflicting
    /// ones are resolved by `policies`, logged, and reported, and server changes after
    /// `request.since` (minus the rows this request touched) are returned as one page.
    fn sync(&self, request: &SyncRequest, policies: &Policies) -> Result<SyncResponse, StoreError>;

    /// Removes tombstones last written before `older_than_unix_ms` and raises the purge
    /// horizon so clients that may have missed them re-initialise.
    fn purge_tombstones(&self, older_than_unix_ms: i64) -> Result<PurgeReport, StoreError>;

    /// Checks the store answers a trivial query.
    fn ping(&self) -> Result<(), StoreError>;
}
