//! The end-to-end suite, one module per subject, built as one test binary: real server
//! processes, real clients with their own SQLite files, real HTTP on 127.0.0.1, and with
//! `ROSTER_TEST_BACKEND=postgres` every server on a real PostgreSQL database (see
//! `tests/support`). One binary instead of one per subject, because each binary linked
//! the whole dependency tree again; nextest still runs every test in its own process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ama_backend;
mod ama_js;
mod auth;
mod backup;
mod bad_answers;
mod bad_input;
mod brute_force;
mod cli;
mod client_crash;
mod conflicts;
mod convergence;
mod datasets;
mod encryption;
mod faults;
mod instances;
mod limits;
mod live;
mod operations;
mod pg_restart;
mod resolution;
mod schema;
mod slices;
mod soak;
mod startup;
mod storage_full;
mod store_format;
mod sync;
mod tables;
mod tls;
mod transport;
mod trash;
