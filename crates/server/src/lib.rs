//! The Roster sync service.
//!
//! * [`accounts`]: users, hashed bearer tokens, data sets and grants.
//! * [`config`]: the server's settings and table declarations (TOML file plus flags).
//! * [`auth_limit`]: the brute-force limit on failed authentications, per address.
//! * [`quota`]: the per-user request quota (429 with `Retry-After`).
//! * [`classify`]: which conflict kind a change runs into.
//! * [`resolve`]: how it is resolved: automatic three-way merge, the owner's
//!   [`resolve::ServerConflictHandler`], then the table's policy and field rules.
//! * [`slices`]: partial sync: the config's subscription filters, a device's
//!   subscriptions checked and bound to them (`:user` by the server), and the slice a
//!   pull is answered with.
//! * [`store`]: the storage trait, the request flow written once over it
//!   (`store::flow`), and its two backends, [`store::sqlite`] (the embedded default)
//!   and [`store::postgres`].
//! * [`feed`]: the change feed (`GET /v1/changes`, Server-Sent Events of new versions)
//!   and the hub the store announces committed versions into.
//! * [`schema_version`]: the versioned schema the server serves, adopted at start (a
//!   compatible change is a new version, an incompatible one refuses the start).
//! * [`schema_migration`]: the administrator's `migrate` command for the changes the
//!   start refuses (renames, drops, narrower rules), rewriting stored rows.
//! * [`http`]: the axum router: request decoding, validation and error bodies.
//! * [`tables`]: the Azure Mobile Apps table protocol (`/tables/*`, ZUMO-API-VERSION
//!   2.0.0) over the same rows, tokens and request flow.
//! * [`app`]: the one way to start the service (store, state, router, listener and the
//!   background purge), used by the binary, [`embed`] and the tests.
//! * [`listener`]: the network edge: connection cap, header and idle timeouts.
//! * [`tls`]: HTTPS with rustls, the certificate reloaded on SIGHUP or a file change.
//! * [`embed`]: running the service inside another program, with a conflict handler.
//! * [`telemetry`]: the metrics each part records and the Prometheus endpoint.

#![warn(missing_docs)]

pub mod accounts;
pub mod app;
pub mod auth_limit;
pub mod classify;
pub mod config;
pub mod embed;
pub mod feed;
pub mod http;
pub mod listener;
pub mod quota;
pub mod resolve;
pub mod schema_migration;
pub mod schema_version;
pub mod slices;
pub mod store;
pub mod tables;
pub mod telemetry;
pub mod tls;

pub use config::ServerConfig;
pub use store::{StoreError, SyncStore};
