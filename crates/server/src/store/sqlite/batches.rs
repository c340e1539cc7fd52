//! SQLite: the batch tables, `applied_batches` (the replay cache: what a retried batch
//! is answered with) and `staged_changes` (non-final batches of atomic rounds).

use rusqlite::{OptionalExtension, Transaction, params};

use super::SqliteTx;
use crate::store::StoreError;
use crate::store::flow::{BatchesTx, REPLAY_CACHE_MAX_BYTES, REPLAY_CACHE_MAX_ENTRIES};
use crate::store::round::{APPLIED_BATCH_LIFETIME_MS, STAGED_ROUND_LIFETIME_MS, now_ms, to_i64};

/// Deletes a data set's remembered answers beyond the replay cache's bounds (`?2`
/// entries, `?3` bytes), oldest first.
const EVICT_OLDEST: &str =
    "DELETE FROM applied_batches WHERE dataset = ?1 AND (client_id, batch_id) IN (
         SELECT client_id, batch_id FROM (
             SELECT client_id, batch_id,
                    ROW_NUMBER() OVER newest_first AS n,
                    SUM(bytes) OVER newest_first AS total
             FROM applied_batches WHERE dataset = ?1
             WINDOW newest_first AS (ORDER BY at_ms DESC, batch_id DESC
                                     ROWS UNBOUNDED PRECEDING))
         WHERE n > ?2 OR (n > 1 AND total > ?3))";

impl BatchesTx for SqliteTx<'_, '_> {
    fn replayed(&mut self, client: &str, batch: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT response FROM applied_batches
                 WHERE dataset = ?3 AND client_id = ?1 AND batch_id = ?2",
            )?
            .query_row(params![client, batch, self.dataset], |r| r.get(0))
            .optional()?)
    }

    /// Remembers the answer, then evicts the data set's oldest answers beyond the
    /// cache's bounds (one statement over at most the bound's number of entries).
    ///
    /// invariant: the bound is read from `applied_batches_by_dataset_age` alone, which
    /// covers it, never from the answers themselves.
    fn remember(&mut self, client: &str, batch: &str, answer: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO applied_batches (batch_id, client_id, at_ms, response,
                 dataset, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                batch,
                client,
                now_ms(),
                answer,
                self.dataset,
                i64::try_from(answer.len()).unwrap_or(i64::MAX)
            ])?;
        self.tx.prepare_cached(EVICT_OLDEST)?.execute(params![
            self.dataset,
            REPLAY_CACHE_MAX_ENTRIES,
            to_i64(REPLAY_CACHE_MAX_BYTES)
        ])?;
        Ok(())
    }

    fn staged(&mut self, round: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT change FROM staged_changes WHERE dataset = ?2 AND round_id = ?1 ORDER BY ord",
        )?;
        let rows = stmt.query_map([round, self.dataset], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn stage(&mut self, round: &str, client: &str, changes: &[String]) -> Result<(), StoreError> {
        let first: i64 = self.tx.query_row(
            "SELECT COALESCE(MAX(ord), 0) FROM staged_changes WHERE dataset = ?2 AND round_id = ?1",
            [round, self.dataset],
            |r| r.get(0),
        )?;
        let at_ms = now_ms();
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO staged_changes (round_id, ord, client_id, created_at_ms, change, dataset)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (offset, change) in (1..).zip(changes) {
            insert.execute(params![
                round,
                first + offset,
                client,
                at_ms,
                change,
                self.dataset
            ])?;
        }
        Ok(())
    }

    fn drop_staged(&mut self, round: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("DELETE FROM staged_changes WHERE dataset = ?2 AND round_id = ?1")?
            .execute([round, self.dataset])?;
        Ok(())
    }
}

/// Drops staged rounds and remembered answers past their lifetimes.
pub(super) fn purge_expired(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM staged_changes WHERE created_at_ms < ?1",
        [now_ms().saturating_sub(STAGED_ROUND_LIFETIME_MS)],
    )?;
    tx.execute(
        "DELETE FROM applied_batches WHERE at_ms < ?1",
        [now_ms().saturating_sub(APPLIED_BATCH_LIFETIME_MS)],
    )?;
    Ok(())
}

/// Removes the staged and remembered batches of `dataset` (a deleted user's data set).
pub(super) fn delete_dataset(tx: &Transaction<'_>, dataset: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM staged_changes WHERE dataset = ?1", [dataset])?;
    tx.execute("DELETE FROM applied_batches WHERE dataset = ?1", [dataset])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_caches_bound_is_read_from_its_covering_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let plan =
            super::super::tests::plan_of(&store, EVICT_OLDEST, params!["ds", 256, 1_000_000]);
        assert!(
            plan.contains("COVERING INDEX applied_batches_by_dataset_age"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    }
}
