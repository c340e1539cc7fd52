//! The Roster sync engine: a local SQLite store that works offline, plus the sync round
//! that exchanges its pending changes with the sync service.
//!
//! * [`local`]: the on-disk store: user tables built from the schema, per-row sync
//!   metadata (base version, base values, pending op), watermark and conflict history.
//! * [`transport`]: HTTP calls to the service, with typed errors.
//! * [`connect`]: checking a server before use; moving a never-synced store to a server.
//! * [`engine`]: [`SyncClient`], the public entry point: CRUD and [`SyncClient::sync`].
//!
//! No UI framework lives here; the CLI and the desktop shell are thin layers on top.

pub mod connect;
pub mod engine;
pub mod error;
pub mod local;
pub mod transport;

pub use connect::{ConnectionCheck, ConnectionProblem, StoreSummary, check_connection};
pub use engine::{ConflictHandler, SyncClient, SyncOptions, SyncProgress, SyncReport};
pub use error::ClientError;
pub use local::{Choice, ConflictRecord, ListQuery, OpenConflict, Record, Status};
pub use transport::Credentials;
