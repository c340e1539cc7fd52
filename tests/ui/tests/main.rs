//! The WebDriver UI tests, one module per screen or flow, built as one test binary: each
//! test starts Xvfb, tauri-driver, the real app binary and real servers (see `src/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod data;
mod first_run;
mod live;
mod schema;
mod security;
mod slices;
mod status;
mod surface;
mod workflows;
