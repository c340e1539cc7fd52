//! PostgreSQL: the `rows` table and the per-data-set counters in `dataset_counters`
//! (`last_seq`, `purge_horizon`, and the row lock that serialises a data set's writers).

use std::collections::HashSet;

use postgres::Transaction;
use postgres::types::{ToSql, Type};

use roster_protocol::{RowId, ServerRow};

use super::{PgTx, Statements};
use crate::slices::{Filter, SubscriptionDef};
use crate::store::StoreError;
use crate::store::items::{Dialect, ItemQuery, ItemRow, SqlValue};
use crate::store::round::{
    FetchedRow, MovedRow, PageBuilder, PullScan, RowMove, RowWrite, RowsTx, StoredRow,
    decode_fields, encode, moves_index_name, slice_index_name, to_i64, to_u64,
};

/// `(last_seq, purge_horizon)` of a data set, locked for this transaction so that its
/// writers commit one at a time and in version order. Creates the data set if new.
pub(super) fn lock_dataset(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dataset: &str,
) -> Result<(u64, u64), StoreError> {
    let lock = statements.get(
        tx,
        "SELECT last_seq, purge_horizon FROM dataset_counters WHERE dataset = $1 FOR UPDATE",
        &[Type::TEXT],
    )?;
    let row = match tx.query_opt(&lock, &[&dataset])? {
        Some(row) => row,
        None => {
            tx.execute_typed(
                "INSERT INTO dataset_counters (dataset) VALUES ($1) ON CONFLICT DO NOTHING",
                &[(&dataset, Type::TEXT)],
            )?;
            tx.query_one(&lock, &[&dataset])?
        }
    };
    Ok((to_u64(row.get(0)), to_u64(row.get(1))))
}

/// `(last_seq, purge_horizon)` of a data set as this transaction's snapshot sees it.
pub(super) fn read_dataset(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dataset: &str,
) -> Result<(u64, u64), StoreError> {
    let read = statements.get(
        tx,
        "SELECT last_seq, purge_horizon FROM dataset_counters WHERE dataset = $1",
        &[Type::TEXT],
    )?;
    Ok(tx
        .query_opt(&read, &[&dataset])?
        .map_or((0, 0), |row| (to_u64(row.get(0)), to_u64(row.get(1)))))
}

impl RowsTx for PgTx<'_, '_> {
    fn load_row(&mut self, table: &str, id: RowId) -> Result<Option<StoredRow>, StoreError> {
        let row = self.tx.query_typed_opt(
            "SELECT version, deleted, data, edited_at_ms, updated_by FROM rows
             WHERE dataset = $1 AND tbl = $2 AND id = $3",
            &[
                (&self.dataset, Type::TEXT),
                (&table, Type::TEXT),
                (&id.to_string(), Type::TEXT),
            ],
        )?;
        row.map(|r| {
            Ok(StoredRow {
                row: ServerRow {
                    version: to_u64(r.get(0)),
                    deleted: r.get(1),
                    fields: decode_fields(r.get(2))?,
                },
                edited_at_ms: r.get(3),
                updated_by: r.get(4),
            })
        })
        .transpose()
    }

    fn insert_row(&mut self, w: &RowWrite<'_>) -> Result<bool, StoreError> {
        let sql = "INSERT INTO rows (dataset, tbl, id, version, deleted, data, updated_at_ms,
                   updated_by, edited_at_ms, created_at_ms)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7)
                   ON CONFLICT DO NOTHING";
        store_row(self.tx, sql, self.dataset, w, None)
    }

    /// One statement per run of the request's inserts: each would otherwise be a
    /// statement (a parse and an execute round trip) of its own.
    fn inserts_together(&self) -> bool {
        true
    }

    /// One query for the ids of the request's inserts.
    ///
    /// invariant: each key is looked up on its own (a `LATERAL` subquery with `LIMIT 1`,
    /// which the planner cannot turn into a hash join over the data set), and with the
    /// statistics kept current by `AnalyzeWhenGrown` each lookup is a primary-key probe.
    /// A join with the list, or `id = ANY(list)`, planned from statistics that lag a bulk
    /// load by up to a minute (autovacuum's analyze), hashed or walked every row of the
    /// data set on each request: a push of 100k rows read 5 million.
    fn unused_ids<'k>(
        &mut self,
        keys: &[(&'k str, RowId)],
    ) -> Result<HashSet<(&'k str, RowId)>, StoreError> {
        let tables: Vec<&str> = keys.iter().map(|(table, _)| *table).collect();
        let ids: Vec<String> = keys.iter().map(|(_, id)| id.to_string()).collect();
        let used: HashSet<(String, String)> = self
            .tx
            .query_typed(
                "SELECT k.tbl, k.id FROM unnest($2::text[], $3::text[]) AS k(tbl, id)
                 CROSS JOIN LATERAL (SELECT 1 FROM rows r
                   WHERE r.dataset = $1 AND r.tbl = k.tbl AND r.id = k.id LIMIT 1) AS hit",
                &[
                    (&self.dataset, Type::TEXT),
                    (&tables, Type::TEXT_ARRAY),
                    (&ids, Type::TEXT_ARRAY),
                ],
            )?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        Ok(keys
            .iter()
            .zip(ids)
            .filter(|((table, _), id)| !used.contains(&((*table).to_owned(), id.clone())))
            .map(|(key, _)| *key)
            .collect())
    }

    /// Every new row in one `INSERT ... SELECT FROM unnest(...)`; with `guessed` ids,
    /// behind a savepoint that a row in the way rolls back to.
    fn insert_rows(&mut self, writes: &[RowWrite<'_>], guessed: bool) -> Result<bool, StoreError> {
        let mut tables = Vec::with_capacity(writes.len());
        let mut ids = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        let mut deleted = Vec::with_capacity(writes.len());
        let mut data = Vec::with_capacity(writes.len());
        let mut at = Vec::with_capacity(writes.len());
        let mut by = Vec::with_capacity(writes.len());
        let mut edited = Vec::with_capacity(writes.len());
        for w in writes {
            tables.push(w.table);
            ids.push(w.id.to_string());
            versions.push(to_i64(w.version));
            deleted.push(w.deleted());
            data.push(w.data()?);
            at.push(w.at_ms);
            by.push(w.client);
            edited.push(w.edited_at_ms);
        }
        // No `ON CONFLICT DO NOTHING`: the clause made every row a speculative insert
        // checked against all three unique indexes (2.2 times the plain insert's time
        // for 1000-row statements). Versions come from the locked data set's counter,
        // so only the primary key can be in the way.
        // invariant: a guessed id in use leaves nothing written (the savepoint undoes the
        // statement, and the request reads its ids); with ids read under the lock, a row
        // in the way (another request's, which the lock rules out) is a
        // `ConcurrentWrite`, which rolls the request back.
        if guessed {
            self.tx.batch_execute("SAVEPOINT new_rows")?;
        }
        let stored = self.tx.execute_typed(
            "INSERT INTO rows (dataset, tbl, id, version, deleted, data, updated_at_ms,
               updated_by, edited_at_ms, created_at_ms)
             SELECT $1, k.tbl, k.id, k.version, k.deleted, k.data, k.at_ms, k.by,
               k.edited_at_ms, k.at_ms
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bool[], $6::text[],
               $7::bigint[], $8::text[], $9::bigint[])
               AS k(tbl, id, version, deleted, data, at_ms, by, edited_at_ms)",
            &[
                (&self.dataset, Type::TEXT),
                (&tables, Type::TEXT_ARRAY),
                (&ids, Type::TEXT_ARRAY),
                (&versions, Type::INT8_ARRAY),
                (&deleted, Type::BOOL_ARRAY),
                (&data, Type::TEXT_ARRAY),
                (&at, Type::INT8_ARRAY),
                (&by, Type::TEXT_ARRAY),
                (&edited, Type::INT8_ARRAY),
            ],
        );
        let in_the_way = || StoreError::ConcurrentWrite {
            table: tables.first().map_or_else(String::new, |t| (*t).to_owned()),
            id: ids.first().cloned().unwrap_or_default(),
        };
        match stored {
            Ok(n) if usize::try_from(n).is_ok_and(|n| n == writes.len()) => Ok(true),
            Ok(_) => Err(in_the_way()),
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                if !guessed {
                    return Err(in_the_way());
                }
                self.tx.batch_execute("ROLLBACK TO SAVEPOINT new_rows")?;
                tracing::debug!(rows = writes.len(), "a guessed new row's id is in use");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn update_row(&mut self, w: &RowWrite<'_>, expected: u64) -> Result<bool, StoreError> {
        let sql = "UPDATE rows SET version = $4, deleted = $5, data = $6, updated_at_ms = $7,
                   updated_by = $8, edited_at_ms = $9
                   WHERE dataset = $1 AND tbl = $2 AND id = $3 AND version = $10";
        store_row(self.tx, sql, self.dataset, w, Some(expected))
    }

    /// The data set's counter as read when the transaction began (locked by a writer).
    fn counter(&mut self) -> Result<(u64, u64), StoreError> {
        Ok(self.counter)
    }

    fn bump_counter(&mut self, newest: u64) -> Result<(), StoreError> {
        let bump = self.statements.get(
            self.tx,
            "UPDATE dataset_counters SET last_seq = $2 WHERE dataset = $1",
            &[Type::TEXT, Type::INT8],
        )?;
        self.tx.execute(&bump, &[&self.dataset, &to_i64(newest)])?;
        self.counter.0 = newest;
        Ok(())
    }

    fn schema_version(&mut self) -> Result<u64, StoreError> {
        let newest = self.statements.get(
            self.tx,
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_versions",
            &[],
        )?;
        let row = self.tx.query_one(&newest, &[])?;
        Ok(to_u64(row.get(0)))
    }

    fn last_write_ms(&mut self) -> Result<Option<i64>, StoreError> {
        // The newest entry of `rows_by_version`, whatever the data set's size.
        let newest = self.statements.get(
            self.tx,
            "SELECT updated_at_ms FROM rows WHERE dataset = $1 ORDER BY version DESC LIMIT 1",
            &[Type::TEXT],
        )?;
        Ok(self
            .tx
            .query_opt(&newest, &[&self.dataset])?
            .map(|r| r.get(0)))
    }

    fn announce(&mut self, newest: u64) -> Result<(), StoreError> {
        super::listen::announce(self.tx, self.statements, self.dataset, newest)
    }

    /// One range scan of the filter's index per value list; values compared as the text
    /// `->>` gives (text as is, integers in decimal, `true`/`false`).
    fn pull_slice(
        &mut self,
        scan: PullScan,
        filter: &Filter,
    ) -> Result<Vec<FetchedRow>, StoreError> {
        let rows = indexed_query(
            self.tx,
            "rows",
            "tbl, id, version, data",
            "{}",
            self.dataset,
            scan,
            filter,
        )?;
        Ok(rows
            .iter()
            .map(|r| FetchedRow {
                table: r.get(0),
                id: r.get(1),
                version: to_u64(r.get(2)),
                data: r.get(3),
            })
            .collect())
    }

    fn record_move(&mut self, moved: &RowMove<'_>) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO slice_moves (dataset, tbl, id, version, data, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &self.dataset,
                &moved.table,
                &moved.id.to_string(),
                &to_i64(moved.version),
                &encode(moved.left)?,
                &moved.at_ms,
            ],
        )?;
        Ok(())
    }

    /// Like [`Self::pull_slice`], on the moves log, each joined with its row.
    fn pull_moves(&mut self, scan: PullScan, filter: &Filter) -> Result<Vec<MovedRow>, StoreError> {
        let rows = indexed_query(
            self.tx,
            "slice_moves",
            "tbl, id, version",
            "SELECT m.tbl, m.id, m.version, r.deleted, r.data FROM ({}) m
             LEFT JOIN rows r ON r.dataset = $1 AND r.tbl = m.tbl AND r.id = m.id
             ORDER BY m.version",
            self.dataset,
            scan,
            filter,
        )?;
        Ok(rows
            .iter()
            .map(|r| MovedRow {
                table: r.get(0),
                id: r.get(1),
                version: to_u64(r.get(2)),
                deleted: r.get::<_, Option<bool>>(3).unwrap_or(true),
                data: r.get(4),
            })
            .collect())
    }

    fn moves_from(&mut self) -> Result<u64, StoreError> {
        Ok(self
            .tx
            .query_typed_opt(
                "SELECT moves_from FROM dataset_counters WHERE dataset = $1",
                &[(&self.dataset, Type::TEXT)],
            )?
            .map_or(0, |row| to_u64(row.get(0))))
    }

    fn pull_rows(&mut self, scan: PullScan, page: &mut PageBuilder<'_>) -> Result<(), StoreError> {
        // invariant: a page is read in the order of `rows_by_version`, from `since`, and
        // the scan stops after `limit` rows. Planned from statistics that lag a bulk load
        // (autovacuum analyzes up to a minute later), the page was a bitmap scan of every
        // row after `since` and a sort: each page of a first sync read the rest of the
        // data set. Only this transaction's planner is told (`SET LOCAL`).
        self.tx
            .batch_execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")?;
        let rows = self.tx.query_typed(
            "SELECT tbl, id, version, deleted, data FROM rows
             WHERE dataset = $1 AND version > $2 AND version <= $3 ORDER BY version LIMIT $4",
            &[
                (&self.dataset, Type::TEXT),
                (&to_i64(scan.since), Type::INT8),
                (&to_i64(scan.upto), Type::INT8),
                (&i64::from(scan.limit), Type::INT8),
            ],
        )?;
        for r in rows {
            let id_text: String = r.get(1);
            if !page.push(r.get(0), &id_text, to_u64(r.get(2)), r.get(3), r.get(4))? {
                break;
            }
        }
        Ok(())
    }
}

/// Runs `SELECT columns FROM source` for the entries of `scan` whose `data` matches
/// `filter`, in version order, at most `scan.limit`, placed into `outer` at `{}` (the data
/// set is `$1`). `source` is `rows` or `slice_moves`, which index `data` alike.
fn indexed_query(
    tx: &mut Transaction<'_>,
    source: &str,
    columns: &str,
    outer: &str,
    dataset: &str,
    scan: PullScan,
    filter: &Filter,
) -> Result<Vec<postgres::Row>, StoreError> {
    let mut sql = format!(
        "SELECT {columns} FROM {source}
         WHERE dataset = $1 AND tbl = $2 AND version > $3 AND version <= $4"
    );
    let (since, upto) = (to_i64(scan.since), to_i64(scan.upto));
    let lists: Vec<Vec<String>> = filter
        .columns
        .iter()
        .map(|c| c.values.iter().map(text_value).collect())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&dataset, &filter.table, &since, &upto];
    for (n, (column, list)) in filter.columns.iter().zip(&lists).enumerate() {
        sql.push_str(&format!(
            " AND {} = ANY(${})",
            column_expr(&column.column),
            n + 5
        ));
        params.push(list);
    }
    sql.push_str(&format!(" ORDER BY version LIMIT {}", scan.limit));
    let sql = outer.replacen("{}", &sql, 1);
    Ok(tx.query(&sql, &params)?)
}

/// The expression a slice's index and queries read a column with (the same text in
/// both, so the planner matches them). Column names are checked names.
fn column_expr(column: &str) -> String {
    format!("((data::jsonb) ->> '{column}')")
}

/// A filter value as `->>` renders it.
fn text_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Creates each declaration's indexes, `(dataset, tbl, <its columns>, version)` on `rows`
/// and on the moves log, under the
/// migrations' advisory lock so instances starting together do not race.
pub(super) fn ensure_slice_indexes(
    store: &super::PostgresStore,
    defs: &[SubscriptionDef],
) -> Result<(), StoreError> {
    if defs.is_empty() {
        return Ok(());
    }
    let mut conn = store.conn()?;
    let mut tx = conn.client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::migrations::MIGRATION_LOCK],
    )?;
    for def in defs {
        let columns = def.columns();
        let exprs: Vec<String> = columns.iter().map(|c| column_expr(c)).collect();
        let name = slice_index_name(&def.table, &columns);
        let moves = moves_index_name(&def.table, &columns);
        tx.batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON rows (dataset, tbl, {exprs}, version);
             CREATE INDEX IF NOT EXISTS {moves} ON slice_moves (dataset, tbl, {exprs}, version);",
            exprs = exprs.join(", ")
        ))?;
        tracing::info!(index = %name, subscription = %def.name, "slice index ready");
    }
    tx.commit()?;
    Ok(())
}

/// Runs `sql`, an insert or a compare-and-set update of one row, with the row's values
/// as `$1`..`$9` (data set, table, id, version, deleted, data, updated at, by, edited at)
/// and, for an update, the expected version as `$10`. Returns whether a row was written.
fn store_row(
    tx: &mut Transaction<'_>,
    sql: &str,
    dataset: &str,
    w: &RowWrite<'_>,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    let (id, version, deleted, data) =
        (w.id.to_string(), to_i64(w.version), w.deleted(), w.data()?);
    let mut values: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&dataset, Type::TEXT),
        (&w.table, Type::TEXT),
        (&id, Type::TEXT),
        (&version, Type::INT8),
        (&deleted, Type::BOOL),
        (&data, Type::TEXT),
        (&w.at_ms, Type::INT8),
        (&w.client, Type::TEXT),
        (&w.edited_at_ms, Type::INT8),
    ];
    let expected = expected.map(to_i64);
    if let Some(expected) = &expected {
        values.push((expected, Type::INT8));
    }
    Ok(tx.execute_typed(sql, &values)? == 1)
}

/// Removes the data set's tombstones and moves last written before `older_than_unix_ms` (its
/// counter row locked) and raises its purge horizon; returns how many and the horizon.
pub(super) fn purge_tombstones(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dataset: &str,
    older_than_unix_ms: i64,
) -> Result<(u64, u64), StoreError> {
    let (_, mut horizon) = lock_dataset(tx, statements, dataset)?;
    let newest_purged: Option<i64> = tx
        .query_one(
            "SELECT MAX(version) FROM rows
             WHERE dataset = $1 AND deleted AND updated_at_ms < $2",
            &[&dataset, &older_than_unix_ms],
        )?
        .get(0);
    let purged = tx.execute(
        "DELETE FROM rows WHERE dataset = $1 AND deleted AND updated_at_ms < $2",
        &[&dataset, &older_than_unix_ms],
    )?;
    // The moves log goes with them: a watermark below the horizon is refused anyway.
    let newest_move: Option<i64> = tx
        .query_one(
            "SELECT MAX(version) FROM slice_moves WHERE dataset = $1 AND at_ms < $2",
            &[&dataset, &older_than_unix_ms],
        )?
        .get(0);
    tx.execute(
        "DELETE FROM slice_moves WHERE dataset = $1 AND at_ms < $2",
        &[&dataset, &older_than_unix_ms],
    )?;
    let newest_purged = newest_purged.max(newest_move);
    if let Some(v) = newest_purged.map(to_u64).filter(|v| *v > horizon) {
        horizon = v;
        tx.execute(
            "UPDATE dataset_counters SET purge_horizon = $2 WHERE dataset = $1",
            &[&dataset, &to_i64(horizon)],
        )?;
    }
    Ok((purged, horizon))
}

/// Removes every row of `dataset` and its counter (a deleted user's data set). Locks the
/// counter first, so no writer of the data set is half-way through.
pub(super) fn delete_dataset(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dataset: &str,
) -> Result<u64, StoreError> {
    lock_dataset(tx, statements, dataset)?;
    tx.execute("DELETE FROM slice_moves WHERE dataset = $1", &[&dataset])?;
    let rows = tx.execute("DELETE FROM rows WHERE dataset = $1", &[&dataset])?;
    tx.execute(
        "DELETE FROM dataset_counters WHERE dataset = $1",
        &[&dataset],
    )?;
    Ok(rows)
}

/// The rows `query` selects (see [`ItemQuery::render`]), in one statement.
pub(super) fn items(
    conn: &mut postgres::Client,
    dataset: &str,
    query: &ItemQuery,
) -> Result<Vec<ItemRow>, StoreError> {
    let rendered = query.render(Dialect::Postgres);
    let mut values: Vec<Box<dyn ToSql + Sync>> =
        vec![Box::new(dataset.to_owned()), Box::new(query.table.clone())];
    for value in rendered.params {
        values.push(match value {
            SqlValue::Text(text) => Box::new(text),
            SqlValue::Integer(n) => Box::new(n),
            SqlValue::Real(x) => Box::new(x),
            SqlValue::Bool(b) => Box::new(b),
        });
    }
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let rows = conn.query(&rendered.sql, &refs)?;
    Ok(rows
        .into_iter()
        .map(|r| ItemRow {
            id: r.get(0),
            version: to_u64(r.get(1)),
            deleted: r.get(2),
            data: r.get(3),
            created_at_ms: r.get(4),
            updated_at_ms: r.get(5),
        })
        .collect())
}
