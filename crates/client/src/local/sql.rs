//! SQL for the user tables: creating them from the schema and moving values between JSON
//! and typed SQLite columns. Table and column names are interpolated only after
//! [`roster_protocol::Schema::validate`] has restricted them to `[a-z][a-z0-9_]*`.

use roster_protocol::{ColumnDef, ColumnType, Fields, RowId, Schema, TableSchema};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, Statement, params};
use serde_json::Value;

use crate::ClientError;

/// The column of every user table holding a clean row's base version, the server
/// version its values are (NULL while the row has a pending change or was never
/// synced: see `rows.rs`). Schema names start with a letter, so it cannot clash.
pub(crate) const VERSION_COLUMN: &str = "_roster_version";

/// `name` in double quotes (safe: validated names contain no quote).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "TEXT",
        ColumnType::Integer | ColumnType::Boolean => "INTEGER",
        ColumnType::Real => "REAL",
    }
}

/// A column's declaration: name, type, and its default as an SQL literal when it has one
/// (so rows stored before the column was added read the default, without rewriting a
/// row: SQLite's `ADD COLUMN ... DEFAULT` is a change of the table's definition only).
fn column_sql(column: &ColumnDef) -> String {
    let literal = match (column.ty, &column.default) {
        (ColumnType::Text, Some(Value::String(s))) => Some(format!("'{}'", s.replace('\'', "''"))),
        (ColumnType::Integer, Some(Value::Number(n))) => n.as_i64().map(|n| n.to_string()),
        (ColumnType::Real, Some(Value::Number(n))) => n.as_f64().map(|f| format!("{f:e}")),
        (ColumnType::Boolean, Some(Value::Bool(b))) => Some(i64::from(*b).to_string()),
        _ => None,
    };
    match literal {
        Some(literal) => format!(
            "{} {} DEFAULT {literal}",
            quote(&column.name),
            sql_type(column.ty)
        ),
        None => format!("{} {}", quote(&column.name), sql_type(column.ty)),
    }
}

/// Creates missing user tables and adds columns the schema declares but a table lacks,
/// in its own transaction.
pub(crate) fn ensure_user_tables(
    conn: &mut Connection,
    schema: &Schema,
) -> Result<(), ClientError> {
    let tx = conn.transaction()?;
    create_missing(&tx, schema)?;
    tx.commit()?;
    Ok(())
}

/// Creates missing user tables and adds missing columns in the caller's transaction.
pub(crate) fn create_missing(tx: &Connection, schema: &Schema) -> Result<(), ClientError> {
    for table in &schema.tables {
        let columns: Vec<String> = table.columns.iter().map(column_sql).collect();
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY NOT NULL, {VERSION_COLUMN} INTEGER, {})",
            quote(&table.name),
            columns.join(", ")
        ))?;
        // invariant: every user table has the version column: created with it, or given
        // it by the conversion of a store older than format 8 (`move_clean_rows_out`).
        let existing = column_names(tx, &table.name)?;
        for column in &table.columns {
            if !existing.contains(&column.name) {
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    quote(&table.name),
                    column_sql(column)
                ))?;
            }
        }
    }
    Ok(())
}

/// The names of `table`'s SQL columns.
pub(crate) fn column_names(tx: &Connection, table: &str) -> Result<Vec<String>, ClientError> {
    Ok(tx
        .prepare(&format!("PRAGMA table_info({})", quote(table)))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?)
}

/// Adds [`VERSION_COLUMN`] to a user table made before store format 8.
pub(crate) fn add_version_column(tx: &Connection, table: &str) -> Result<(), ClientError> {
    tx.execute_batch(&format!(
        "ALTER TABLE {} ADD COLUMN {VERSION_COLUMN} INTEGER",
        quote(table)
    ))?;
    Ok(())
}

/// The base version column of row `id`: `None` when the table does not hold the row,
/// `Some(None)` when it holds it without a version.
pub(crate) fn read_version(
    conn: &Connection,
    table: &str,
    id: RowId,
) -> Result<Option<Option<i64>>, ClientError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMN} FROM {} WHERE id = ?1",
            quote(table)
        ))?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?)
}

/// A server version as SQLite stores it (versions stay far below `i64::MAX`).
pub(crate) fn db_version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// Records `version` as the base version of row `id` of `table`, if present.
pub(crate) fn set_version(
    conn: &Connection,
    table: &str,
    id: RowId,
    version: u64,
) -> Result<(), ClientError> {
    conn.prepare_cached(&format!(
        "UPDATE {} SET {VERSION_COLUMN} = ?2 WHERE id = ?1",
        quote(table)
    ))?
    .execute(params![id.to_string(), db_version(version)])?;
    Ok(())
}

/// A validated JSON value as the SQLite value of its column, borrowing text.
fn to_sql<'a>(column: &ColumnDef, value: Option<&'a Value>) -> ToSqlOutput<'a> {
    let owned = |v: SqlValue| ToSqlOutput::Owned(v);
    match (column.ty, value) {
        (ColumnType::Text, Some(Value::String(s))) => {
            ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
        }
        (ColumnType::Integer, Some(Value::Number(n))) => {
            owned(n.as_i64().map_or(SqlValue::Null, SqlValue::Integer))
        }
        (ColumnType::Real, Some(Value::Number(n))) => {
            owned(n.as_f64().map_or(SqlValue::Null, SqlValue::Real))
        }
        (ColumnType::Boolean, Some(Value::Bool(b))) => owned(SqlValue::Integer(i64::from(*b))),
        _ => owned(SqlValue::Null),
    }
}

/// A SQLite value read from `column` as JSON.
fn from_sql(column: &ColumnDef, value: ValueRef<'_>) -> Result<Value, ClientError> {
    let bad = |what: &str| ClientError::Corrupt(format!("column {} holds {what}", column.name));
    Ok(match (column.ty, value) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Text, ValueRef::Text(t)) => {
            Value::String(String::from_utf8_lossy(t).into_owned())
        }
        (ColumnType::Integer, ValueRef::Integer(i)) => Value::from(i),
        (ColumnType::Real, ValueRef::Real(f)) => Value::from(f),
        (ColumnType::Real, ValueRef::Integer(i)) => Value::from(i as f64),
        (ColumnType::Boolean, ValueRef::Integer(i)) => Value::Bool(i != 0),
        _ => return Err(bad("a value of the wrong type")),
    })
}

/// The statement text that inserts or replaces a whole row of `table`: the id is `?1`,
/// then the declared columns in schema order (bind with [`execute_write`]).
pub(crate) fn write_sql(table: &TableSchema) -> String {
    let names: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let marks: Vec<String> = (0..=table.columns.len())
        .map(|i| format!("?{}", i + 1))
        .collect();
    format!(
        "INSERT OR REPLACE INTO {} (id, {}) VALUES ({})",
        quote(&table.name),
        names.join(", "),
        marks.join(", ")
    )
}

/// [`write_sql`] for a row pulled clean from the server: the server's version is the
/// last parameter (bind with [`execute_pulled_write`]).
pub(crate) fn pulled_write_sql(table: &TableSchema) -> String {
    let names: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let marks: Vec<String> = (0..=table.columns.len() + 1)
        .map(|i| format!("?{}", i + 1))
        .collect();
    format!(
        "INSERT OR REPLACE INTO {} (id, {}, {VERSION_COLUMN}) VALUES ({})",
        quote(&table.name),
        names.join(", "),
        marks.join(", ")
    )
}

/// Runs a statement prepared from [`pulled_write_sql`] for row `id` at the server's
/// `version`, with `values` in the order of the table's columns
/// ([`TableSchema::decode_row`]).
pub(crate) fn execute_pulled_write(
    stmt: &mut Statement<'_>,
    table: &TableSchema,
    id: &str,
    values: &[Value],
    version: i64,
) -> Result<(), ClientError> {
    stmt.raw_bind_parameter(table.columns.len() + 2, version)?;
    bind_and_run(stmt, table, id, values.iter().map(Some))
}

/// Runs a statement prepared from [`write_sql`] for row `id` with `fields` (absent
/// columns take their default, else NULL).
pub(crate) fn execute_write(
    stmt: &mut Statement<'_>,
    table: &TableSchema,
    id: &str,
    fields: &Fields,
) -> Result<(), ClientError> {
    let values = table
        .columns
        .iter()
        .map(|column| fields.get(&column.name).or(column.default.as_ref()));
    bind_and_run(stmt, table, id, values)
}

/// Binds `id` and one value per column of `table`, in order (`None`: NULL), and runs
/// the statement.
fn bind_and_run<'v>(
    stmt: &mut Statement<'_>,
    table: &TableSchema,
    id: &str,
    values: impl Iterator<Item = Option<&'v Value>>,
) -> Result<(), ClientError> {
    stmt.raw_bind_parameter(1, id)?;
    for (index, (column, value)) in table.columns.iter().zip(values).enumerate() {
        stmt.raw_bind_parameter(index + 2, to_sql(column, value))?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Inserts or replaces the row `id` of `table` with `fields` (absent columns take their
/// default, else NULL).
pub(crate) fn write_row(
    conn: &Connection,
    table: &TableSchema,
    id: RowId,
    fields: &Fields,
) -> Result<(), ClientError> {
    let mut stmt = conn.prepare_cached(&write_sql(table))?;
    execute_write(&mut stmt, table, &id.to_string(), fields)
}

/// Sets only the columns `fields` names (declared ones) of the row `id` of `table`, if
/// present.
pub(crate) fn write_columns(
    conn: &Connection,
    table: &TableSchema,
    id: RowId,
    fields: &Fields,
) -> Result<(), ClientError> {
    let columns: Vec<&ColumnDef> = table
        .columns
        .iter()
        .filter(|c| fields.contains_key(&c.name))
        .collect();
    if columns.is_empty() {
        return Ok(());
    }
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", quote(&c.name), i + 2))
        .collect();
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE {} SET {} WHERE id = ?1",
        quote(&table.name),
        sets.join(", ")
    ))?;
    stmt.raw_bind_parameter(1, id.to_string())?;
    for (index, column) in columns.iter().enumerate() {
        stmt.raw_bind_parameter(index + 2, to_sql(column, fields.get(&column.name)))?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Deletes the row `id` of `table`, if present.
pub(crate) fn delete_row(conn: &Connection, table: &str, id: RowId) -> Result<(), ClientError> {
    conn.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", quote(table)))?
        .execute([id.to_string()])?;
    Ok(())
}

/// The `SELECT` list for `table`'s declared columns, id first.
pub(crate) fn select_list(table: &TableSchema) -> String {
    let mut names = vec!["id".to_owned()];
    names.extend(table.columns.iter().map(|c| quote(&c.name)));
    names.join(", ")
}

/// Decodes a row selected with [`select_list`].
pub(crate) fn decode_row(
    table: &TableSchema,
    row: &rusqlite::Row<'_>,
) -> Result<(RowId, Fields), ClientError> {
    let id_text: String = row.get(0)?;
    let id = super::parse_id(&id_text)?;
    let mut fields = Fields::new();
    for (index, column) in table.columns.iter().enumerate() {
        fields.insert(
            column.name.clone(),
            from_sql(column, row.get_ref(index + 1)?)?,
        );
    }
    Ok((id, fields))
}

/// The statement text that reads one row of `table` by id (run with
/// [`execute_read`]).
pub(crate) fn read_sql(table: &TableSchema) -> String {
    format!(
        "SELECT {} FROM {} WHERE id = ?1",
        select_list(table),
        quote(&table.name)
    )
}

/// Runs a statement prepared from [`read_sql`]: the current values of row `id`.
pub(crate) fn execute_read(
    stmt: &mut Statement<'_>,
    table: &TableSchema,
    id: RowId,
) -> Result<Option<Fields>, ClientError> {
    let mut rows = stmt.query([id.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_row(table, row)?.1)),
        None => Ok(None),
    }
}

/// The current values of row `id` of `table`.
pub(crate) fn read_row(
    conn: &Connection,
    table: &TableSchema,
    id: RowId,
) -> Result<Option<Fields>, ClientError> {
    let mut stmt = conn.prepare_cached(&read_sql(table))?;
    execute_read(&mut stmt, table, id)
}

/// Whether `table` holds row `id`.
pub(crate) fn row_exists(conn: &Connection, table: &str, id: RowId) -> Result<bool, ClientError> {
    Ok(conn
        .prepare_cached(&format!("SELECT 1 FROM {} WHERE id = ?1", quote(table)))?
        .query_row([id.to_string()], |_| Ok(()))
        .optional()?
        .is_some())
}
