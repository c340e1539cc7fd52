//! Errors of the client library. Every variant says what went wrong in words a person can
//! act on; none of them is a panic.

use roster_protocol::{ErrorCode, RowId, SchemaError};

/// Why a client operation failed. Local data is never left half-written: each operation
/// is one SQLite transaction.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The data dir has no store yet.
    #[error("no Roster data at {0}: run `init` first")]
    NotInitialised(String),
    /// The data dir already holds a store.
    #[error("a Roster store already exists at {0}")]
    AlreadyInitialised(String),
    /// The store is encrypted and no key was given. Nothing was read or changed.
    #[error(
        "the Roster store at {0} is encrypted: give its passphrase (`--passphrase-file FILE`) \
         or unlock it in the app"
    )]
    StoreLocked(String),
    /// The key or passphrase given does not open the store. Nothing was read or changed.
    #[error(
        "the passphrase or key does not open the Roster store at {0} (wrong passphrase?); \
         nothing was changed"
    )]
    WrongStoreKey(String),
    /// Another process has the store open, so it cannot be encrypted in place now.
    /// Nothing was changed.
    #[error(
        "the Roster store at {0} is in use by another process (the app or another \
         command): close it and try again; nothing was changed"
    )]
    StoreInUse(String),
    /// A value or row failed schema validation.
    #[error("{0}")]
    Invalid(#[from] SchemaError),
    /// A field assignment or query argument is unusable.
    #[error("{0}")]
    BadInput(String),
    /// No live row with this id in this table.
    #[error("no {table} with id {id}")]
    NotFound {
        /// The table.
        table: String,
        /// The id asked for.
        id: RowId,
    },
    /// The server could not be reached (connection refused, timeout, reset).
    #[error("cannot reach the sync server at {url}: {reason}")]
    Unreachable {
        /// Server base URL.
        url: String,
        /// What the network layer said.
        reason: String,
    },
    /// The server's TLS certificate could not be trusted (unknown CA, wrong host name,
    /// expired) or the TLS handshake failed. Never retried, never retried over HTTP.
    #[error("cannot trust the sync server at {url}: {reason}")]
    Tls {
        /// Server base URL.
        url: String,
        /// What was wrong with the certificate or handshake.
        reason: String,
    },
    /// The server URL is cleartext `http://` to a host that is not this machine, and
    /// cleartext was not allowed. Nothing was sent.
    #[error(
        "refusing to sync in cleartext with {url}: use https://, or allow cleartext HTTP \
         explicitly (`roster init --allow-insecure-http`, or the app's settings) on a \
         network you trust"
    )]
    CleartextRefused {
        /// The refused server URL.
        url: String,
    },
    /// The server answered with a redirect; redirects are not followed (the request and
    /// its records would go to another address).
    #[error(
        "the sync server answered with a redirect ({status}) to {location}; redirects are \
         not followed: set the server URL to the right address"
    )]
    Redirected {
        /// HTTP status (3xx).
        status: u16,
        /// The `Location` the server named.
        location: String,
    },
    /// A sync round did not finish within its deadline. What was applied before stays
    /// applied; the pending edits not yet acknowledged stay pending.
    #[error(
        "the sync round did not finish within {seconds:.0} s and was stopped; pending \
         edits are kept for the next sync"
    )]
    DeadlineExceeded {
        /// The deadline, in seconds.
        seconds: f64,
    },
    /// The client was closed ([`crate::SyncClient::closer`]: another one replaced it) while
    /// the request waited on the server, or before it was sent. Local work was finished;
    /// pending edits stay pending.
    #[error("the sync client was closed; pending edits are kept")]
    Closed,
    /// The server answered with an error body.
    #[error("the sync server refused the request ({status}, {code:?}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Machine-readable code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server did not accept this device's token (missing, unknown or revoked;
    /// HTTP 401). Retrying with the same token cannot succeed.
    #[error("the sync server refused this device's credentials: {0}")]
    Unauthorized(String),
    /// The device's token has expired (HTTP 401 `token_expired`): a new token from the
    /// server's administrator is needed. Pending edits stay pending.
    #[error("this device's access token has expired: {0}")]
    TokenExpired(String),
    /// The token's user may not use the data set this device works on (HTTP 403).
    /// Retrying cannot succeed.
    #[error("the sync server refused access to this data set: {0}")]
    Forbidden(String),
    /// The server's conflict handler rolled the whole sync round back: nothing of it was
    /// applied on either side and the local changes are still pending.
    #[error(
        "the server rolled the sync back because of a {kind} conflict on {table} {id}: {reason}"
    )]
    RolledBack {
        /// Table of the row whose conflict caused it.
        table: String,
        /// The row.
        id: RowId,
        /// The conflict's kind.
        kind: roster_protocol::ConflictKind,
        /// The handler's reason.
        reason: String,
    },
    /// The server's answer could not be understood.
    #[error("unexpected answer from the sync server: {0}")]
    Protocol(String),
    /// The server sent data for a table this client does not know.
    #[error("the server's schema has changed (unknown table {0:?}); re-initialise this client")]
    SchemaMismatch(String),
    /// The local database failed.
    #[error("local database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Local data could not be decoded.
    #[error("local data is corrupt: {0}")]
    Corrupt(String),
    /// File-system error on the data dir.
    #[error("cannot use data dir {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl ClientError {
    /// Whether retrying later may succeed (network or server availability problems, or
    /// a server that asked to be called again later with 429).
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
            || matches!(self, ClientError::Server { status, .. } if *status >= 500 || *status == 429)
    }
}
