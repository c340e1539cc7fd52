//! Fixtures for the local store's unit tests.

use roster_protocol::{Fields, Schema};
use serde_json::Value;

use super::LocalStore;

/// A new store with the shipped person schema in a temp dir (kept alive by the guard).
pub(super) fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        LocalStore::create(dir.path(), "http://127.0.0.1:9", &Schema::default_person()).unwrap();
    (dir, store)
}

/// A JSON object literal as [`Fields`].
pub(crate) fn fields(value: Value) -> Fields {
    value.as_object().cloned().unwrap()
}
