//! SQL of the `schema_versions` table: every schema the servers have served, by version.
//! Instances starting together race to insert the next version; the primary key lets
//! one win, and the others read it again (see [`crate::schema_version`]).

use postgres::GenericClient;

use crate::store::StoreError;
use crate::store::round::{now_ms, to_i64, to_u64};

/// The newest stored version and its schema (JSON text), if any.
pub(super) fn latest(conn: &mut impl GenericClient) -> Result<Option<(u64, String)>, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT version, schema FROM schema_versions ORDER BY version DESC LIMIT 1",
            &[],
        )?
        .map(|r| (to_u64(r.get(0)), r.get(1))))
}

/// Stores `schema` as `version` unless that version exists; returns whether it did.
pub(super) fn record(
    conn: &mut impl GenericClient,
    version: u64,
    schema: &str,
) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO schema_versions (version, schema, created_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (version) DO NOTHING",
        &[&to_i64(version), &schema, &now_ms()],
    )?;
    Ok(inserted == 1)
}
