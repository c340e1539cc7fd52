//! PostgreSQL: the batch tables, `applied_batches` (the replay cache: what a retried
//! batch is answered with) and `staged_changes` (non-final batches of atomic rounds).

use postgres::Transaction;
use postgres::types::Type;

use super::PgTx;
use crate::store::StoreError;
use crate::store::flow::{BatchesTx, REPLAY_CACHE_MAX_BYTES, REPLAY_CACHE_MAX_ENTRIES};
use crate::store::round::{APPLIED_BATCH_LIFETIME_MS, STAGED_ROUND_LIFETIME_MS, now_ms, to_i64};

impl BatchesTx for PgTx<'_, '_> {
    fn replayed(&mut self, client: &str, batch: &str) -> Result<Option<String>, StoreError> {
        let lookup = self.statements.get(
            self.tx,
            "SELECT response FROM applied_batches
             WHERE dataset = $1 AND client_id = $2 AND batch_id = $3",
            &[Type::TEXT, Type::TEXT, Type::TEXT],
        )?;
        Ok(self
            .tx
            .query_opt(&lookup, &[&self.dataset, &client, &batch])?
            .map(|r| r.get(0)))
    }

    /// Remembers the answer, then evicts the data set's oldest answers beyond the
    /// cache's bounds (one statement over at most the bound's number of entries).
    fn remember(&mut self, client: &str, batch: &str, answer: &str) -> Result<(), StoreError> {
        let insert = self.statements.get(
            self.tx,
            "INSERT INTO applied_batches (dataset, client_id, batch_id, at_ms, response, bytes)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (dataset, client_id, batch_id)
             DO UPDATE SET at_ms = EXCLUDED.at_ms, response = EXCLUDED.response,
                           bytes = EXCLUDED.bytes",
            &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
            ],
        )?;
        let bytes = i64::try_from(answer.len()).unwrap_or(i64::MAX);
        self.tx.execute(
            &insert,
            &[&self.dataset, &client, &batch, &now_ms(), &answer, &bytes],
        )?;
        // The window covers the data set's cached answers, at most the cache's bound
        // plus this one: a plan that does not depend on the values.
        let trim = self.statements.get(
            self.tx,
            "DELETE FROM applied_batches WHERE dataset = $1 AND (client_id, batch_id) IN (
                 SELECT client_id, batch_id FROM (
                     SELECT client_id, batch_id,
                            ROW_NUMBER() OVER newest_first AS n,
                            SUM(bytes) OVER newest_first AS total
                     FROM applied_batches WHERE dataset = $1
                     WINDOW newest_first AS (ORDER BY at_ms DESC, batch_id DESC
                                             ROWS UNBOUNDED PRECEDING)) AS ranked
                 WHERE n > $2::BIGINT OR (n > 1 AND total > $3::BIGINT))",
            &[Type::TEXT, Type::INT8, Type::INT8],
        )?;
        self.tx.execute(
            &trim,
            &[
                &self.dataset,
                &i64::from(REPLAY_CACHE_MAX_ENTRIES),
                &to_i64(REPLAY_CACHE_MAX_BYTES),
            ],
        )?;
        Ok(())
    }

    fn staged(&mut self, round: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .tx
            .query(
                "SELECT change FROM staged_changes WHERE dataset = $1 AND round_id = $2
                 ORDER BY ord",
                &[&self.dataset, &round],
            )?
            .into_iter()
            .map(|row| row.get(0))
            .collect())
    }

    fn stage(&mut self, round: &str, client: &str, changes: &[String]) -> Result<(), StoreError> {
        let first: i64 = self
            .tx
            .query_one(
                "SELECT COALESCE(MAX(ord), 0)::BIGINT FROM staged_changes
                 WHERE dataset = $1 AND round_id = $2",
                &[&self.dataset, &round],
            )?
            .get(0);
        let at_ms = now_ms();
        for (offset, change) in (1..).zip(changes) {
            self.tx.execute(
                "INSERT INTO staged_changes
                 (dataset, round_id, ord, client_id, created_at_ms, change)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &self.dataset,
                    &round,
                    &(first + offset),
                    &client,
                    &at_ms,
                    &change.as_str(),
                ],
            )?;
        }
        Ok(())
    }

    fn drop_staged(&mut self, round: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "DELETE FROM staged_changes WHERE dataset = $1 AND round_id = $2",
            &[&self.dataset, &round],
        )?;
        Ok(())
    }
}

/// Drops staged rounds and remembered answers past their lifetimes.
pub(super) fn purge_expired(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM staged_changes WHERE created_at_ms < $1",
        &[&now_ms().saturating_sub(STAGED_ROUND_LIFETIME_MS)],
    )?;
    tx.execute(
        "DELETE FROM applied_batches WHERE at_ms < $1",
        &[&now_ms().saturating_sub(APPLIED_BATCH_LIFETIME_MS)],
    )?;
    Ok(())
}

/// Removes the staged and remembered batches of `dataset` (a deleted user's data set).
pub(super) fn delete_dataset(tx: &mut Transaction<'_>, dataset: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM staged_changes WHERE dataset = $1", &[&dataset])?;
    tx.execute(
        "DELETE FROM applied_batches WHERE dataset = $1",
        &[&dataset],
    )?;
    Ok(())
}
