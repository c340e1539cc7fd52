//! SQL of the `schema_versions` table: every schema the server has served, by version.

use roster_protocol::Fields;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::round::{encode, now_ms, to_i64, to_u64};
use crate::store::{MIGRATION_WRITER, MigrationReport, Rewrite, StoreError};

/// Every stored version and its schema (JSON text), oldest first.
pub(super) fn history(conn: &Connection) -> Result<Vec<(u64, String)>, StoreError> {
    Ok(conn
        .prepare("SELECT version, schema FROM schema_versions ORDER BY version")?
        .query_map([], |r| Ok((to_u64(r.get(0)?), r.get(1)?)))?
        .collect::<Result<_, _>>()?)
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

/// An administrator's migration in one `BEGIN IMMEDIATE` transaction: stores `schema`
/// as `version`, removes the rows of `dropped_tables`, and passes every live row of
/// `tables` (every data set) through `rewrite`; a changed row gets a new version from the
/// file's counter, so devices pull it; a cosmetic change is written in place.
pub(super) fn migrate_rows(
    conn: &mut Connection,
    version: u64,
    schema: &str,
    tables: &[String],
    dropped_tables: &[String],
    rewrite: &mut dyn FnMut(&str, &mut Fields) -> Result<Rewrite, String>,
) -> Result<MigrationReport, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !record(&tx, version, schema)? {
        return Err(StoreError::Invalid(format!(
            "schema version {version} was stored meanwhile; run the migration again"
        )));
    }
    let mut report = MigrationReport::default();
    for table in dropped_tables {
        report.removed +=
            u64::try_from(tx.execute("DELETE FROM rows WHERE tbl = ?1", [table])?).unwrap_or(0);
    }
    let mut next = super::rows::meta(&tx, "last_seq")?;
    let at = now_ms();
    for table in tables {
        let rows: Vec<(String, String, String)> = tx
            .prepare("SELECT dataset, id, data FROM rows WHERE tbl = ?1 AND deleted = 0")?
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (dataset, id, data) in rows {
            let mut fields: Fields = serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("stored row {table}/{id}: {e}")))?;
            let outcome = rewrite(table, &mut fields).map_err(|reason| {
                StoreError::Invalid(format!("row {table}/{id} (data set {dataset}): {reason}"))
            })?;
            let data = encode(&fields)?;
            match outcome {
                Rewrite::Unchanged => {}
                Rewrite::Cosmetic => {
                    tx.execute(
                        "UPDATE rows SET data = ?4 WHERE dataset = ?1 AND tbl = ?2 AND id = ?3",
                        params![dataset, table, id, data],
                    )?;
                }
                Rewrite::Changed => {
                    next += 1;
                    tx.execute(
                        "UPDATE rows SET data = ?4, version = ?5, updated_at_ms = ?6,
                           updated_by = ?7 WHERE dataset = ?1 AND tbl = ?2 AND id = ?3",
                        params![dataset, table, id, data, to_i64(next), at, MIGRATION_WRITER],
                    )?;
                    report.rewritten += 1;
                }
            }
        }
    }
    super::rows::set_meta(&tx, "last_seq", next)?;
    tx.commit()?;
    Ok(report)
}
