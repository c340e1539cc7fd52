//! PostgreSQL: the `conflict_log` table.

use postgres::GenericClient;

use roster_protocol::{Conflict, ConflictLogEntry};

use super::PgTx;
use crate::store::StoreError;
use crate::store::round::{
    ConflictLogTx, LogContext, encode, json_column, parse_row_id, to_i64, to_u64, word_column,
};

impl ConflictLogTx for PgTx<'_, '_> {
    fn log_conflict(
        &mut self,
        context: &LogContext<'_>,
        conflict: &Conflict,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO conflict_log (dataset, at_ms, client_id, tbl, row_id, kind,
         resolution, client_row, server_row, outcome, server_client_id, base_row,
         conflicting_fields)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &self.dataset,
                &context.at_ms,
                &context.client,
                &conflict.table,
                &conflict.id.to_string(),
                &conflict.kind.as_str(),
                &conflict.resolution.as_str(),
                &conflict.client_row.as_ref().map(encode).transpose()?,
                &conflict.server_row.as_ref().map(encode).transpose()?,
                &conflict.outcome.as_ref().map(encode).transpose()?,
                &context.server_client,
                &context.base_row.map(encode).transpose()?,
                &encode(&conflict.conflicting_fields)?,
            ],
        )?;
        Ok(())
    }
}

/// Up to `limit` entries of `dataset` with `seq < before`, newest first.
pub(super) fn entries(
    client: &mut impl GenericClient,
    dataset: &str,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<ConflictLogEntry>, StoreError> {
    let rows = client.query(
        "SELECT seq, at_ms, client_id, server_client_id, tbl, row_id, kind, resolution,
                client_row, server_row, base_row, outcome, conflicting_fields
         FROM conflict_log WHERE dataset = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        &[
            &dataset,
            &before.map_or(i64::MAX, to_i64),
            &i64::from(limit),
        ],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let client_text: String = r.get(2);
        let id_text: String = r.get(5);
        out.push(ConflictLogEntry {
            seq: to_u64(r.get(0)),
            at_ms: r.get(1),
            client_id: uuid::Uuid::parse_str(&client_text)
                .map_err(|e| StoreError::Corrupt(format!("client id: {e}")))?,
            server_client_id: r.get(3),
            table: r.get(4),
            id: parse_row_id(&id_text)?,
            kind: word_column("kind", r.get(6))?,
            resolution: word_column("resolution", r.get(7))?,
            client_row: json_column("client row", r.get(8))?,
            server_row: json_column("server row", r.get(9))?,
            base_row: json_column("base row", r.get(10))?,
            outcome: json_column("outcome", r.get(11))?,
            conflicting_fields: json_column("fields", r.get(12))?.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Removes the conflict log of `dataset` (a deleted user's data set).
pub(super) fn delete_dataset(
    client: &mut impl GenericClient,
    dataset: &str,
) -> Result<(), StoreError> {
    client.execute("DELETE FROM conflict_log WHERE dataset = $1", &[&dataset])?;
    Ok(())
}
