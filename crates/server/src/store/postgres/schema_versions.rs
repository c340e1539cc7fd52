//! SQL of the `schema_versions` table: every schema the servers have served, by version.
//! Instances starting together race to insert the next version; the primary key lets
//! one win, and the others read it again (see [`crate::schema_version`]).

use std::collections::HashMap;

use postgres::{Client, GenericClient};
use roster_protocol::Fields;

use crate::store::round::{encode, now_ms, to_i64, to_u64};
use crate::store::{MIGRATION_WRITER, MigrationReport, Rewrite, StoreError};

/// Every stored version and its schema (JSON text), oldest first.
pub(super) fn history(conn: &mut impl GenericClient) -> Result<Vec<(u64, String)>, StoreError> {
    Ok(conn
        .query(
            "SELECT version, schema FROM schema_versions ORDER BY version",
            &[],
        )?
        .into_iter()
        .map(|r| (to_u64(r.get(0)), r.get(1)))
        .collect())
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

/// An administrator's migration in one transaction: every data set's counter is locked
/// first (so no writer of any instance runs meanwhile), then `schema` is stored as
/// `version`, the rows of `dropped_tables` removed, and every live row of `tables`
/// passed through `rewrite`; a changed row gets its data set's next version, so devices
/// pull it; a cosmetic change is written in place.
pub(super) fn migrate_rows(
    conn: &mut Client,
    version: u64,
    schema: &str,
    tables: &[String],
    dropped_tables: &[String],
    rewrite: &mut dyn FnMut(&str, &mut Fields) -> Result<Rewrite, String>,
) -> Result<MigrationReport, StoreError> {
    let mut tx = conn.transaction()?;
    let mut counters: HashMap<String, u64> = tx
        .query(
            "SELECT dataset, last_seq FROM dataset_counters ORDER BY dataset FOR UPDATE",
            &[],
        )?
        .into_iter()
        .map(|r| (r.get(0), to_u64(r.get(1))))
        .collect();
    if !record(&mut tx, version, schema)? {
        return Err(StoreError::Invalid(format!(
            "schema version {version} was stored meanwhile; run the migration again"
        )));
    }
    let mut report = MigrationReport::default();
    for table in dropped_tables {
        report.removed += tx.execute("DELETE FROM rows WHERE tbl = $1", &[table])?;
    }
    let at = now_ms();
    for table in tables {
        let rows: Vec<(String, String, String)> = tx
            .query(
                "SELECT dataset, id, data FROM rows WHERE tbl = $1 AND NOT deleted",
                &[table],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
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
                        "UPDATE rows SET data = $4 WHERE dataset = $1 AND tbl = $2 AND id = $3",
                        &[&dataset, table, &id, &data],
                    )?;
                }
                Rewrite::Changed => {
                    let next = counters.entry(dataset.clone()).or_insert(0);
                    *next += 1;
                    tx.execute(
                        "UPDATE rows SET data = $4, version = $5, updated_at_ms = $6,
                           updated_by = $7 WHERE dataset = $1 AND tbl = $2 AND id = $3",
                        &[
                            &dataset,
                            table,
                            &id,
                            &data,
                            &to_i64(*next),
                            &at,
                            &MIGRATION_WRITER,
                        ],
                    )?;
                    report.rewritten += 1;
                }
            }
        }
    }
    for (dataset, last_seq) in &counters {
        tx.execute(
            "UPDATE dataset_counters SET last_seq = $2 WHERE dataset = $1",
            &[dataset, &to_i64(*last_seq)],
        )?;
    }
    tx.commit()?;
    Ok(report)
}
