//! The Roster sync service.
//!
//! * [`config`]: the server's settings and table declarations (TOML file plus flags).
//! * [`classify`]: backend-independent rules: which conflict a change runs into and how
//!   a table's policy resolves it.
//! * [`store`]: the storage trait every backend implements, and [`store::sqlite`], the
//!   embedded default.
//! * [`http`]: the axum router: request decoding, validation and error bodies.

pub mod classify;
pub mod config;
pub mod http;
pub mod store;
pub mod validate;

pub use config::ServerConfig;
pub use store::{StoreError, SyncStore};
