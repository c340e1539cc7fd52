//! SQL of the `schema_versions` table: every schema the server has served, by version.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;
use crate::store::round::{now_ms, to_i64, to_u64};

/// The newest stored version and its schema (JSON text), if any.
pub(super) fn latest(conn: &Connection) -> Result<Option<(u64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version, schema FROM schema_versions ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
        )
        .optional()?)
}

/// Stores `schema` as `version` unless that version exists; returns whether it did.
pub(super) fn record(conn: &Connection, version: u64, schema: &str) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO schema_versions (version, schema, created_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (version) DO NOTHING",
        params![to_i64(version), schema, now_ms()],
    )?;
    Ok(inserted == 1)
}
