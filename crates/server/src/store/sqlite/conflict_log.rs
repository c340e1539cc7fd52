//! SQLite: the `conflict_log` table.

use rusqlite::{Connection, params};

use roster_protocol::{Conflict, ConflictLogEntry, RowId};

use super::SqliteTx;
use crate::store::StoreError;
use crate::store::round::{
    ConflictLogTx, LogContext, encode, json_column, to_i64, to_u64, word_column,
};

impl ConflictLogTx for SqliteTx<'_, '_> {
    fn log_conflict(
        &mut self,
        context: &LogContext<'_>,
        conflict: &Conflict,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO conflict_log (at_ms, client_id, tbl, row_id, kind, resolution,
         client_row, server_row, outcome, server_client_id, base_row, conflicting_fields,
         dataset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                context.at_ms,
                context.client,
                conflict.table,
                conflict.id.to_string(),
                conflict.kind.as_str(),
                conflict.resolution.as_str(),
                conflict.client_row.as_ref().map(encode).transpose()?,
                conflict.server_row.as_ref().map(encode).transpose()?,
                conflict.outcome.as_ref().map(encode).transpose()?,
                context.server_client,
                context.base_row.map(encode).transpose()?,
                encode(&conflict.conflicting_fields)?,
                self.dataset,
            ])?;
        Ok(())
    }
}

/// Up to `limit` entries of `dataset` with `seq < before`, newest first.
pub(super) fn entries(
    conn: &Connection,
    dataset: &str,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<ConflictLogEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, client_id, server_client_id, tbl, row_id, kind, resolution,
                client_row, server_row, base_row, outcome, conflicting_fields
         FROM conflict_log WHERE dataset = ?3 AND seq < ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let before = before.map_or(i64::MAX, to_i64);
    let mut rows = stmt.query(params![before, limit, dataset])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let text = |i: usize| r.get::<_, Option<String>>(i);
        let id_text: String = r.get(5)?;
        let client_text: String = r.get(2)?;
        out.push(ConflictLogEntry {
            seq: to_u64(r.get(0)?),
            at_ms: r.get(1)?,
            client_id: uuid::Uuid::parse_str(&client_text)
                .map_err(|e| StoreError::Corrupt(format!("client id: {e}")))?,
            server_client_id: text(3)?,
            table: r.get(4)?,
            id: RowId::parse_str(&id_text)
                .map_err(|e| StoreError::Corrupt(format!("row id: {e}")))?,
            kind: word_column("kind", r.get(6)?)?,
            resolution: word_column("resolution", r.get(7)?)?,
            client_row: json_column("client row", text(8)?)?,
            server_row: json_column("server row", text(9)?)?,
            base_row: json_column("base row", text(10)?)?,
            outcome: json_column("outcome", text(11)?)?,
            conflicting_fields: json_column("fields", text(12)?)?.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Removes the conflict log of `dataset` (a deleted user's data set).
pub(super) fn delete_dataset(conn: &Connection, dataset: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM conflict_log WHERE dataset = ?1", [dataset])?;
    Ok(())
}
