//! SQLite: the `rows` table (every table's rows as JSON, keyed by data set) and the
//! `meta` counters (`last_seq`, `purge_horizon`, global to the file).

use rusqlite::{OptionalExtension, Transaction, params};

use roster_protocol::{RowId, ServerRow};

use super::SqliteTx;
use crate::slices::{Filter, SubscriptionDef};
use crate::store::StoreError;
use crate::store::items::{Dialect, ItemQuery, ItemRow, SqlValue};
use crate::store::round::{
    FetchedRow, MovedRow, PageBuilder, PullScan, RowMove, RowWrite, RowsTx, StoredRow,
    decode_fields, encode, moves_index_name, slice_index_name, to_i64, to_u64,
};

/// A value of the `meta` table.
pub(super) fn meta(tx: &Transaction<'_>, key: &str) -> Result<u64, StoreError> {
    let value: i64 = tx
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?;
    Ok(to_u64(value))
}

/// Sets a value of the `meta` table.
pub(super) fn set_meta(tx: &Transaction<'_>, key: &str, value: u64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?
        .execute(params![key, to_i64(value)])?;
    Ok(())
}

/// A page of a data set's rows after `?1` up to `?4`, in version order, at most `?2`.
///
/// invariant: it reads the table itself in order, with no second lookup per row: `rows`
/// is keyed by `(dataset, version)` (migrations.rs, "Rows stored in version order").
pub(super) const PULL_ROWS: &str = "SELECT tbl, id, version, deleted, data FROM rows
     WHERE dataset = ?3 AND version > ?1 AND version <= ?4 ORDER BY version LIMIT ?2";

impl RowsTx for SqliteTx<'_, '_> {
    fn load_row(&mut self, table: &str, id: RowId) -> Result<Option<StoredRow>, StoreError> {
        let row = self
            .tx
            .prepare_cached(
                "SELECT version, deleted, data, edited_at_ms, updated_by FROM rows
                 WHERE dataset = ?3 AND tbl = ?1 AND id = ?2",
            )?
            .query_row(params![table, id.to_string(), self.dataset], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .optional()?;
        row.map(|(version, deleted, data, edited_at_ms, updated_by)| {
            Ok(StoredRow {
                row: ServerRow {
                    version: to_u64(version),
                    deleted,
                    fields: decode_fields(data)?,
                },
                edited_at_ms,
                updated_by,
            })
        })
        .transpose()
    }

    fn insert_row(&mut self, w: &RowWrite<'_>) -> Result<bool, StoreError> {
        let sql = "INSERT INTO rows (tbl, id, version, deleted, data, updated_at_ms, updated_by,
                   edited_at_ms, dataset, created_at_ms)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6)
                   ON CONFLICT DO NOTHING";
        store_row(self.tx, sql, self.dataset, w, None)
    }

    fn update_row(&mut self, w: &RowWrite<'_>, expected: u64) -> Result<bool, StoreError> {
        let sql = "UPDATE rows SET version = ?3, deleted = ?4, data = ?5, updated_at_ms = ?6,
                   updated_by = ?7, edited_at_ms = ?8
                   WHERE dataset = ?9 AND tbl = ?1 AND id = ?2 AND version = ?10";
        store_row(self.tx, sql, self.dataset, w, Some(expected))
    }

    /// `meta.last_seq` and `meta.purge_horizon`: one counter for the whole file, read
    /// under SQLite's write lock in a writing transaction.
    fn counter(&mut self) -> Result<(u64, u64), StoreError> {
        Ok((meta(self.tx, "last_seq")?, meta(self.tx, "purge_horizon")?))
    }

    fn bump_counter(&mut self, newest: u64) -> Result<(), StoreError> {
        set_meta(self.tx, "last_seq", newest)
    }

    fn schema_version(&mut self) -> Result<u64, StoreError> {
        let version: i64 = self
            .tx
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM schema_versions")?
            .query_row([], |r| r.get(0))?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    fn last_write_ms(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT updated_at_ms FROM rows WHERE dataset = ?1 ORDER BY version DESC LIMIT 1",
            )?
            .query_row([self.dataset], |r| r.get(0))
            .optional()?)
    }

    /// Kept until the commit: [`super::SqliteStore`] publishes it once that succeeded.
    fn announce(&mut self, newest: u64) -> Result<(), StoreError> {
        self.announced = Some(newest);
        Ok(())
    }

    fn pull_rows(&mut self, scan: PullScan, page: &mut PageBuilder<'_>) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(PULL_ROWS)?;
        let mut rows = stmt.query(params![
            to_i64(scan.since),
            i64::from(scan.limit),
            self.dataset,
            to_i64(scan.upto)
        ])?;
        while let Some(r) = rows.next()? {
            let id_text: String = r.get(1)?;
            if !page.push(r.get(0)?, &id_text, to_u64(r.get(2)?), r.get(3)?, r.get(4)?)? {
                break;
            }
        }
        Ok(())
    }

    fn pull_slice(
        &mut self,
        scan: PullScan,
        filter: &Filter,
    ) -> Result<Vec<FetchedRow>, StoreError> {
        self.fetch_slice(scan, filter)
    }

    fn record_move(&mut self, moved: &RowMove<'_>) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO slice_moves (dataset, tbl, id, version, data, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                self.dataset,
                moved.table,
                moved.id.to_string(),
                to_i64(moved.version),
                encode(moved.left)?,
                moved.at_ms
            ])?;
        Ok(())
    }

    /// `INDEXED BY` the filter's index on the moves log, like [`Self::fetch_slice`].
    fn pull_moves(&mut self, scan: PullScan, filter: &Filter) -> Result<Vec<MovedRow>, StoreError> {
        let (moves, values) = indexed_query(
            "slice_moves",
            &moves_index_name(&filter.table, &filter_columns(filter)),
            "tbl, id, version",
            self.dataset,
            scan,
            filter,
        );
        let sql = format!(
            "SELECT m.tbl, m.id, m.version, r.deleted, r.data FROM ({moves}) m
             LEFT JOIN rows r ON r.dataset = ?1 AND r.tbl = m.tbl AND r.id = m.id
             ORDER BY m.version"
        );
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            Ok(MovedRow {
                table: r.get(0)?,
                id: r.get(1)?,
                version: to_u64(r.get(2)?),
                deleted: r.get::<_, Option<bool>>(3)?.unwrap_or(true),
                data: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn moves_from(&mut self) -> Result<u64, StoreError> {
        meta(self.tx, "moves_from")
    }
}

/// The expression a slice's index and queries read a column with (the same text in
/// both, so SQLite matches them). Column names are checked names (`[a-z][a-z0-9_]*`).
fn column_expr(column: &str) -> String {
    format!("json_extract(data, '$.{column}')")
}

/// A filter value as SQLite's `json_extract` returns it: text, integer, or 0/1.
fn sql_value(value: &serde_json::Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        serde_json::Value::String(text) => V::Text(text.clone()),
        serde_json::Value::Bool(b) => V::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => V::Real(n.as_f64().unwrap_or(0.0)),
        },
        _ => V::Null,
    }
}

impl SqliteTx<'_, '_> {
    /// See [`RowsTx::pull_slice`]: `INDEXED BY` the filter's index, so the plan can
    /// never fall back to scanning the data set in version order.
    pub(super) fn fetch_slice(
        &mut self,
        scan: PullScan,
        filter: &Filter,
    ) -> Result<Vec<FetchedRow>, StoreError> {
        let (sql, values) = slice_query(self.dataset, scan, filter);
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            Ok(FetchedRow {
                table: r.get(0)?,
                id: r.get(1)?,
                version: to_u64(r.get(2)?),
                data: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The columns a filter reads, in index order.
fn filter_columns(filter: &Filter) -> Vec<&str> {
    filter.columns.iter().map(|c| c.column.as_str()).collect()
}

/// The SQL of [`SqliteTx::fetch_slice`] and its values.
pub(super) fn slice_query(
    dataset: &str,
    scan: PullScan,
    filter: &Filter,
) -> (String, Vec<rusqlite::types::Value>) {
    indexed_query(
        "rows",
        &slice_index_name(&filter.table, &filter_columns(filter)),
        "tbl, id, version, data",
        dataset,
        scan,
        filter,
    )
}

/// `SELECT columns FROM source INDEXED BY index` for the entries of `scan` whose
/// `data` matches `filter`, in version order, at most `scan.limit`; the data set is
/// `?1`. `source` is `rows` or `slice_moves`, which index `data` alike.
fn indexed_query(
    source: &str,
    index: &str,
    columns: &str,
    dataset: &str,
    scan: PullScan,
    filter: &Filter,
) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut sql = format!(
        "SELECT {columns} FROM {source} INDEXED BY {index}
         WHERE dataset = ?1 AND tbl = ?2 AND version > ?3 AND version <= ?4"
    );
    let mut values = vec![
        V::Text(dataset.to_owned()),
        V::Text(filter.table.clone()),
        V::Integer(to_i64(scan.since)),
        V::Integer(to_i64(scan.upto)),
    ];
    for column in &filter.columns {
        let first = values.len() + 1;
        let marks: Vec<String> = (first..first + column.values.len())
            .map(|n| format!("?{n}"))
            .collect();
        sql.push_str(&format!(
            " AND {} IN ({})",
            column_expr(&column.column),
            marks.join(", ")
        ));
        values.extend(column.values.iter().map(sql_value));
    }
    sql.push_str(&format!(" ORDER BY version LIMIT {}", scan.limit));
    (sql, values)
}

/// Creates each declaration's indexes: `(dataset, tbl, <its columns>, version)` on
/// `rows` and on the moves log.
pub(super) fn ensure_slice_indexes(
    store: &super::SqliteStore,
    defs: &[SubscriptionDef],
) -> Result<(), StoreError> {
    let conn = store.pool.get()?;
    for def in defs {
        let columns = def.columns();
        let exprs: Vec<String> = columns.iter().map(|c| column_expr(c)).collect();
        let name = slice_index_name(&def.table, &columns);
        let moves = moves_index_name(&def.table, &columns);
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON rows (dataset, tbl, {exprs}, version);
             CREATE INDEX IF NOT EXISTS {moves} ON slice_moves (dataset, tbl, {exprs}, version);",
            exprs = exprs.join(", ")
        ))?;
        tracing::info!(index = %name, subscription = %def.name, "slice index ready");
    }
    Ok(())
}

/// Runs `sql`, an insert or a compare-and-set update of one row, with the row's values
/// as `?1`..`?9` (table, id, version, deleted, data, updated at, by, edited at, data set)
/// and, for an update, the expected version as `?10`. Returns whether a row was written.
fn store_row(
    tx: &Transaction<'_>,
    sql: &str,
    dataset: &str,
    w: &RowWrite<'_>,
    expected: Option<u64>,
) -> Result<bool, StoreError> {
    let (id, version, deleted, data) =
        (w.id.to_string(), to_i64(w.version), w.deleted(), w.data()?);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![
        &w.table,
        &id,
        &version,
        &deleted,
        &data,
        &w.at_ms,
        &w.client,
        &w.edited_at_ms,
        &dataset,
    ];
    let expected = expected.map(to_i64);
    if let Some(expected) = &expected {
        values.push(expected);
    }
    Ok(tx.prepare_cached(sql)?.execute(values.as_slice())? == 1)
}

/// Removes tombstones and moves last written before `older_than_unix_ms`; returns how
/// many tombstones and the newest version removed.
pub(super) fn purge_tombstones(
    tx: &Transaction<'_>,
    older_than_unix_ms: i64,
) -> Result<(u64, Option<u64>), StoreError> {
    let newest_purged: Option<i64> = tx.query_row(
        "SELECT MAX(version) FROM rows WHERE deleted = 1 AND updated_at_ms < ?1",
        [older_than_unix_ms],
        |r| r.get(0),
    )?;
    let purged = tx.execute(
        "DELETE FROM rows WHERE deleted = 1 AND updated_at_ms < ?1",
        [older_than_unix_ms],
    )?;
    // The moves log goes with them: a watermark below the horizon is refused anyway.
    let newest_move: Option<i64> = tx.query_row(
        "SELECT MAX(version) FROM slice_moves WHERE at_ms < ?1",
        [older_than_unix_ms],
        |r| r.get(0),
    )?;
    tx.execute(
        "DELETE FROM slice_moves WHERE at_ms < ?1",
        [older_than_unix_ms],
    )?;
    let newest = newest_purged.max(newest_move);
    Ok((purged as u64, newest.map(to_u64)))
}

/// Removes every row of `dataset` (a deleted user's data set).
pub(super) fn delete_dataset(tx: &Transaction<'_>, dataset: &str) -> Result<u64, StoreError> {
    tx.execute("DELETE FROM slice_moves WHERE dataset = ?1", [dataset])?;
    Ok(tx.execute("DELETE FROM rows WHERE dataset = ?1", [dataset])? as u64)
}

/// The rows `query` selects (see [`ItemQuery::render`]).
pub(super) fn items(
    conn: &rusqlite::Connection,
    dataset: &str,
    query: &ItemQuery,
) -> Result<Vec<ItemRow>, StoreError> {
    use rusqlite::types::Value;
    let rendered = query.render(Dialect::Sqlite);
    let mut values = vec![
        Value::Text(dataset.to_owned()),
        Value::Text(query.table.clone()),
    ];
    values.extend(rendered.params.into_iter().map(|value| match value {
        SqlValue::Text(text) => Value::Text(text),
        SqlValue::Integer(n) => Value::Integer(n),
        SqlValue::Real(x) => Value::Real(x),
        SqlValue::Bool(b) => Value::Integer(i64::from(b)),
    }));
    // A client's pages share one query shape: its text is the cache's key.
    let mut stmt = conn.prepare_cached(&rendered.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        Ok(ItemRow {
            id: r.get(0)?,
            version: to_u64(r.get(1)?),
            deleted: r.get(2)?,
            data: r.get(3)?,
            created_at_ms: r.get(4)?,
            updated_at_ms: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
