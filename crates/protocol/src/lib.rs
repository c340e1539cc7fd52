//! Wire types shared by the Roster sync client and server.
//!
//! Everything that crosses the network is defined here, so the client and the server can
//! never disagree on a field name. The crate has no I/O: it is plain data plus validation.
//!
//! * [`schema`]: which tables exist, their typed columns and how a row is validated;
//!   [`VersionedSchema`] is the schema with the server's version of it.
//! * [`evolve`]: what changed between two schemas, and which changes are compatible.
//! * [`sync`]: one sync round trip: [`SyncRequest`] and [`SyncResponse`].
//! * [`pulled`]: a pull page with each row's values held as JSON text
//!   ([`PulledResponse`]), as the server passes them through and the client applies them.
//! * [`slice`]: partial sync: the subscriptions a request names and the rows an answer
//!   evicts.
//! * [`conflict`]: conflict kinds (named from the client's point of view), policies and
//!   resolutions.
//! * [`error`]: the JSON error body every non-2xx response carries.
//! * [`validate`]: the one gate of every sync request body: decode, then check it
//!   against the schema (the server runs it before touching its store; the fuzz target
//!   runs it alone).

#![warn(missing_docs)]

pub mod conflict;
pub mod error;
pub mod evolve;
pub mod pulled;
pub mod schema;
pub mod slice;
pub mod sync;
#[cfg(feature = "timestamp")]
pub mod timestamp;
pub mod validate;

pub use conflict::{
    Conflict, ConflictKind, ConflictLogEntry, ConflictPolicy, Resolution, RollbackReport,
};
pub use error::{ApiError, ErrorCode};
pub use pulled::{PulledChange, PulledResponse};
pub use schema::{
    ColumnDef, ColumnRename, ColumnType, Fields, Schema, SchemaError, TableSchema, ValueFormat,
    VersionedSchema,
};
pub use slice::{Eviction, SliceRequest, Subscription};
pub use sync::{
    Ack, Change, ChangeOp, ChangeShapeError, Rebase, RoundInfo, ServerChange, ServerRow,
    SyncRequest, SyncResponse,
};

/// Identifier of a row: a client-generated UUID (v7 for new rows), unique across tables.
pub type RowId = uuid::Uuid;

/// Version of the sync protocol this crate speaks. The server rejects other versions with
/// [`ErrorCode::UnsupportedProtocol`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Path of the batch sync endpoint (POST, JSON [`SyncRequest`] → [`SyncResponse`]).
pub const SYNC_PATH: &str = "/v1/sync";
/// Path of the schema endpoint (GET → [`VersionedSchema`]: the [`Schema`]'s fields and
/// its `version`).
pub const SCHEMA_PATH: &str = "/v1/schema";
/// Path of the server's conflict history (GET, `?limit=N&before=SEQ` → newest first
/// list of [`ConflictLogEntry`]).
pub const CONFLICTS_PATH: &str = "/v1/conflicts";
/// Path of the change feed (GET → `text/event-stream`): Server-Sent Events named
/// `version` whose data is the data set's newest version, the current one first, then
/// each newer one (coalesced); `:` comment lines keep an idle stream open. Never row
/// data: a device behind pulls with [`SYNC_PATH`].
pub const CHANGES_PATH: &str = "/v1/changes";
/// Path of the health endpoint (GET → `{"status":"ok", ...}`): the process is alive.
pub const HEALTH_PATH: &str = "/health";
/// Path of the readiness endpoint (GET → `{"status":"ready"}`, else 503 with
/// `Retry-After`): the database answers and its migrations are done.
pub const READY_PATH: &str = "/ready";

/// Header naming the data set a `/v1/*` request works on. Without it the server uses
/// the caller's own data set (the one named after the user).
pub const DATASET_HEADER: &str = "x-roster-dataset";

/// Header of a `/v1/sync` answer that is a plain pull page with more changes waiting:
/// the page's watermark ([`SyncResponse::more_after`]). A device may send its next pull
/// on reading it, before the body, so the server builds the next page while the device
/// decodes this one. A server may leave it out; the body says the same.
pub const MORE_AFTER_HEADER: &str = "x-roster-more-after";

/// Most changes one request may carry; the server rejects larger batches.
pub const MAX_CHANGES_PER_REQUEST: usize = 5_000;
/// Most server changes one response carries; clients may ask for fewer.
pub const MAX_PULL_LIMIT: u32 = 5_000;
