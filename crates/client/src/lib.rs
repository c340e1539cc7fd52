//! The Roster sync engine: a local SQLite store that works offline, plus the sync round
//! that exchanges its pending changes with the sync service.
//!
//! The public surface is small: [`SyncClient`] (open or create a store, sync it),
//! [`LocalStore`] (the records handle it hands out: CRUD, lists, status, conflicts) and
//! the types those show. Inside:
//!
//! * `local`: the on-disk store: user tables built from the schema, per-row sync
//!   metadata (base version, base values, pending op), watermark and conflict history.
//! * `round`: the decisions of a sync round as a state machine without I/O.
//! * `store_key`: [`StoreKey`], the key or passphrase of an encrypted (SQLCipher) store;
//!   `local::encrypt` encrypts a plain store in place.
//! * `transport`: HTTP calls to the service, with typed errors.
//! * `engine`: [`SyncClient`], which carries out a round's steps.
//! * `ama`: syncing with an Azure Mobile Apps backend instead ([`Protocol`]): the pull
//!   and push decisions of its table protocol, without I/O.
//! * `connect`: checking a server before use ([`check_connection`]); moving a never-synced
//!   store to a server ([`SyncClient::point_at_server`]).
//! * `exchange`: import and export of CSV and vCard files ([`LocalStore::import_file`],
//!   [`LocalStore::export_file`]), every row checked like an edit, refusals reported per row.
//! * `watch`: live sync: the server's change feed ([`SyncClient::watch`],
//!   [`SyncClient::live`]) saying when a round is due.
//! * [`schedule`]: when an app runs rounds in the background (interval, debounce, backoff,
//!   health polls), as a pure policy.
//!
//! No UI framework lives here; the CLI and the desktop shell are thin layers on top.

#![warn(missing_docs)]

mod ama;
mod connect;
mod engine;
mod error;
mod exchange;
mod local;
mod round;
pub mod schedule;
mod store_key;
mod transport;
mod watch;

#[cfg(feature = "bench-internals")]
pub mod bench_internals;

pub use ama::{AmaSettings, Protocol};
pub use connect::{
    ConnectionCheck, ConnectionProblem, StoreSummary, check_ama_connection, check_connection,
    check_connection_with,
};
pub use engine::{SyncClient, SyncOptions};
pub use error::ClientError;
pub use exchange::{
    FieldProblem, Format, IMPORT_CHUNK_ROWS, ImportProgress, ImportReport, MAX_IMPORT_BYTES,
    RefusedRow, field_problems, value_message,
};
pub use local::{
    Choice, ConflictRecord, DB_FILE, DeviceConflictHandler, ListQuery, LocalStore, MAX_LIST_LIMIT,
    OpenConflict, Record, Status, TRASH_KEEP_DAYS, TrashedRecord,
};
pub use roster_protocol::Subscription;
pub use round::{MAX_PULL_REQUESTS, SyncProgress, SyncReport};
pub use store_key::{RAW_KEY_LEN, StoreKey};
pub use transport::{
    Closer, ConnectionSecurity, Credentials, TransportOptions, check_cleartext,
    install_tls_provider, normalise_server_url,
};
pub use watch::{ChangeStream, EventParser, LiveEvent, LiveFeed, SseEvent};
