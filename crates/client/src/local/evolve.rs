//! Following the server's schema: when an answer carries a newer schema version, the
//! store takes the server's schema in one local transaction (renamed columns, new
//! tables, new columns with their defaults, the stored schema and its version), so a
//! crash leaves the old store whole and the next round migrates again. Pending edits,
//! open conflicts and the conflict history survive it.
//!
//! No row is downloaded again. A new column's value in every row the device holds is the
//! column's default (SQLite's `ADD COLUMN ... DEFAULT` rewrites no row), and that is the
//! server's value too for every row last written before the column existed, which is
//! every row at or below this device's watermark: the watermark came from an answer of
//! the older schema. Rows given a value since have newer versions and arrive in the
//! ordinary pull, so the cost of a migration is proportional to the rows that hold a
//! non-default value. (Rows an administrator's `migrate` rewrote get new versions too.)
//!
//! A column an administrator renamed (the served schema lists the renames made after
//! the version this store holds) is renamed here too: in the SQL table (so the values
//! and the pending edits in it keep their column), and in the JSON kept beside the rows:
//! the base values of pending edits, open conflicts, the conflict history and the trash.
//! A dropped column's SQL column is set aside under a name no schema can declare
//! (`_dropped_<version>_<name>`), unread, so a column declared later under its name
//! starts empty.

use std::sync::Arc;

use roster_protocol::evolve::{self, SchemaChange};
use roster_protocol::{ColumnRename, Schema, VersionedSchema};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};
use serde_json::Value;

use super::{LocalStore, get_meta, parse_u64, set_meta, sql};
use crate::ClientError;

impl LocalStore {
    /// The version of the server schema this store holds (0: never told one).
    pub fn schema_version(&self) -> Result<u64, ClientError> {
        let conn = self.lock();
        get_meta(&conn, "schema_version")?.map_or(Ok(0), |v| parse_u64(&v))
    }

    /// Takes `target` if it is newer than the schema this store holds, in one
    /// transaction; returns the changes (empty when it was not newer). Every pending edit,
    /// open conflict and the conflict history survive it.
    pub fn migrate_schema(
        &self,
        target: &VersionedSchema,
    ) -> Result<Vec<SchemaChange>, ClientError> {
        target.schema.validate()?;
        let schema_json = serde_json::to_string(&target.schema)
            .map_err(|e| ClientError::Corrupt(e.to_string()))?;
        let mut conn = self.lock();
        let held = get_meta(&conn, "schema_version")?.map_or(Ok(0), |v| parse_u64(&v))?;
        if target.version <= held {
            return Ok(Vec::new());
        }
        let renames: Vec<&ColumnRename> =
            target.renames.iter().filter(|r| r.version > held).collect();
        let mut before = self.schema().as_ref().clone();
        for rename in &renames {
            rename_declared(&mut before, rename);
        }
        let changes = evolve::diff(&before, &target.schema);
        tracing::info!(
            from = held,
            to = target.version,
            "migrating the store to the server's schema"
        );
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for rename in &renames {
            rename_column(&tx, rename)?;
            tracing::info!(table = %rename.table, from = %rename.from, to = %rename.to,
                "renamed a column as the server did");
        }
        for change in &changes {
            if let (evolve::ChangeKind::ColumnDropped, Some(column)) =
                (&change.kind, &change.column)
            {
                set_aside(&tx, &change.table, column, target.version)?;
            }
        }
        sql::create_missing(&tx, &target.schema)?;
        set_meta(&tx, "schema", &schema_json)?;
        set_meta(&tx, "schema_version", &target.version.to_string())?;
        pause_for_tests();
        tx.commit()?;
        // Swapped while the connection is still locked: no write sees the store and the
        // schema disagree.
        *self
            .schema
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(target.schema.clone());
        drop(conn);
        for change in &changes {
            tracing::info!(%change, version = target.version, "store follows the server's schema");
        }
        Ok(changes)
    }

    /// Records the version of the schema the store was created with.
    pub(crate) fn set_schema_version(&self, version: u64) -> Result<(), ClientError> {
        let conn = self.lock();
        set_meta(&conn, "schema_version", &version.to_string())
    }
}

/// Renames `rename`'s column in `schema` (for the diff: a rename is no drop and add).
fn rename_declared(schema: &mut Schema, rename: &ColumnRename) {
    let table = schema.tables.iter_mut().find(|t| t.name == rename.table);
    for column in table.into_iter().flat_map(|t| t.columns.iter_mut()) {
        if column.name == rename.from {
            column.name.clone_from(&rename.to);
        }
    }
}

/// The names of the SQL columns of `table` (none when it has no SQL table).
fn sql_columns(tx: &Connection, table: &str) -> Result<Vec<String>, ClientError> {
    Ok(tx
        .prepare(&format!("PRAGMA table_info({})", sql::quote(table)))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?)
}

/// Moves a dropped column's SQL column out of the way, unread (its values are never
/// read again, and a column declared later under its name starts empty), and drops its
/// list index.
fn set_aside(tx: &Connection, table: &str, column: &str, version: u64) -> Result<(), ClientError> {
    if !sql_columns(tx, table)?.iter().any(|c| c == column) {
        return Ok(());
    }
    tx.execute_batch(&format!(
        "DROP INDEX IF EXISTS {}; ALTER TABLE {} RENAME COLUMN {} TO {}",
        super::records::sort_index_name(table, column),
        sql::quote(table),
        sql::quote(column),
        sql::quote(&format!("_dropped_{version}_{column}"))
    ))?;
    Ok(())
}

/// Renames a column in the SQL table (the rows and the pending edits in it) and in the
/// JSON beside it: base values of pending edits, open conflicts, the conflict history,
/// the trash. A store that never had the column (made at a later version) is left as
/// it is.
fn rename_column(tx: &Connection, rename: &ColumnRename) -> Result<(), ClientError> {
    let (table, from, to) = (&rename.table, &rename.from, &rename.to);
    let columns = sql_columns(tx, table)?;
    if !columns.contains(from) {
        return Ok(());
    }
    if columns.contains(to) {
        set_aside(tx, table, to, rename.version)?;
    }
    tx.execute_batch(&format!(
        "DROP INDEX IF EXISTS {}; ALTER TABLE {} RENAME COLUMN {} TO {}",
        super::records::sort_index_name(table, from),
        sql::quote(table),
        sql::quote(from),
        sql::quote(to)
    ))?;
    for (side_table, key, json_columns) in [
        ("_roster_rows", "id", &["base_data"][..]),
        ("_roster_trash", "id", &["data"][..]),
        (
            "_roster_open_conflicts",
            "id",
            &["remote", "base", "conflicting_fields"][..],
        ),
        (
            "_roster_conflicts",
            "seq",
            &["client_row", "server_row", "outcome"][..],
        ),
    ] {
        for column in json_columns {
            rename_in_json_column(tx, side_table, key, column, rename)?;
        }
    }
    Ok(())
}

/// Renames the key `rename.from` to `rename.to` in one JSON column of the rows of
/// `side_table` that belong to `rename.table` (only the rows holding the old name).
fn rename_in_json_column(
    tx: &Connection,
    side_table: &str,
    key: &str,
    column: &str,
    rename: &ColumnRename,
) -> Result<(), ClientError> {
    // A JSON key is written `"name"`: rows without it need no decoding.
    let pattern = format!("%\"{}\"%", rename.from);
    let found: Vec<(SqlValue, String)> = tx
        .prepare(&format!(
            "SELECT {key}, {column} FROM {side_table} WHERE tbl = ?1 AND {column} LIKE ?2"
        ))?
        .query_map(params![rename.table, pattern], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare(&format!(
        "UPDATE {side_table} SET {column} = ?1 WHERE tbl = ?2 AND {key} = ?3"
    ))?;
    for (key_value, text) in found {
        let mut value: Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Corrupt(format!("{side_table}.{column}: {e}")))?;
        if rename_in_json(&mut value, &rename.from, &rename.to) {
            let text =
                serde_json::to_string(&value).map_err(|e| ClientError::Corrupt(e.to_string()))?;
            update.execute(params![text, rename.table, key_value])?;
        }
    }
    Ok(())
}

/// Renames `from` to `to` in a row's values (a map of columns), in a server row's
/// values (`{version, deleted, fields}`), or in a list of column names; returns whether
/// anything changed. A value already under `to` is kept.
fn rename_in_json(value: &mut Value, from: &str, to: &str) -> bool {
    match value {
        Value::Object(map) => {
            let server_row = map.get("version").is_some_and(Value::is_u64)
                && map.get("deleted").is_some_and(Value::is_boolean)
                && map.contains_key("fields");
            if server_row {
                return map
                    .get_mut("fields")
                    .is_some_and(|fields| rename_in_json(fields, from, to));
            }
            match map.remove(from) {
                Some(moved) => {
                    map.entry(to.to_owned()).or_insert(moved);
                    true
                }
                None => false,
            }
        }
        Value::Array(names) => {
            let mut changed = false;
            for name in names.iter_mut().filter(|n| n.as_str() == Some(from)) {
                *name = Value::from(to);
                changed = true;
            }
            changed
        }
        _ => false,
    }
}

/// Holds the migration's transaction open for `ROSTER_TEST_MIGRATION_PAUSE_MS`
/// milliseconds when set (the crash test kills the process in it); nothing otherwise.
fn pause_for_tests() {
    if let Some(ms) = std::env::var("ROSTER_TEST_MIGRATION_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::{ColumnDef, ColumnType, TableSchema};
    use serde_json::json;

    use super::*;

    fn column(name: &str, ty: ColumnType, default: Option<serde_json::Value>) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            required: default.is_some(),
            max_len: None,
            format: None,
            default,
        }
    }

    #[test]
    fn a_migration_adds_tables_and_columns_and_keeps_pending_edits() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path(), "http://127.0.0.1:1", &Schema::default_person())
            .unwrap();
        let fields = json!({"name": "Ann"}).as_object().cloned().unwrap();
        let record = store.insert("person", fields).unwrap();
        let mut schema = Schema::default_person();
        schema.tables[0]
            .columns
            .push(column("nickname", ColumnType::Text, None));
        schema.tables[0]
            .columns
            .push(column("level", ColumnType::Integer, Some(json!(3))));
        schema.tables.push(TableSchema {
            name: "task".into(),
            columns: vec![column("title", ColumnType::Text, None)],
        });
        let target = VersionedSchema::new(2, schema);
        let changes = store.migrate_schema(&target).unwrap();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(store.schema_version().unwrap(), 2);
        let got = store.get("person", record.id).unwrap();
        assert_eq!(got.fields["nickname"], json!(null));
        assert_eq!(got.fields["level"], json!(3), "rows read the default");
        assert!(got.pending.is_some(), "the edit is still pending");
        assert!(store.migrate_schema(&target).unwrap().is_empty(), "once");
        drop(store);
        let reopened = LocalStore::open(dir.path()).unwrap();
        assert_eq!(reopened.schema().as_ref(), &target.schema);
        let task = json!({"title": "t"}).as_object().cloned().unwrap();
        reopened.insert("task", task).unwrap();
    }

    #[test]
    fn a_rename_moves_values_pending_edits_conflicts_and_the_trash_and_a_drop_frees_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut schema = Schema::default_person();
        schema.tables[0]
            .columns
            .push(column("nick", ColumnType::Text, None));
        let store = LocalStore::create(dir.path(), "http://127.0.0.1:1", &schema).unwrap();
        let row = json!({"name": "Ann", "nick": "Annie"});
        let kept = store
            .insert("person", row.as_object().cloned().unwrap())
            .unwrap();
        let binned = store
            .insert("person", row.as_object().cloned().unwrap())
            .unwrap();
        store.delete("person", binned.id).unwrap();
        {
            let conn = store.lock();
            conn.execute(
                "UPDATE _roster_rows SET base_version = 3, pending = 'update', base_data = ?1
                 WHERE id = ?2",
                params![row.to_string(), kept.id.to_string()],
            )
            .unwrap();
            let server_row = json!({"version": 3, "deleted": false, "fields": row});
            conn.execute(
                "INSERT INTO _roster_conflicts (at_ms, tbl, row_id, kind, resolution,
                 client_row, server_row) VALUES (1, 'person', ?1, 'both_updated', 'server_wins', ?2, ?3)",
                params![kept.id.to_string(), row.to_string(), server_row.to_string()],
            )
            .unwrap();
        }
        let mut renamed = Schema::default_person();
        renamed.tables[0]
            .columns
            .push(column("nickname", ColumnType::Text, None));
        let mut target = VersionedSchema::new(2, renamed.clone());
        target.renames.push(ColumnRename {
            version: 2,
            table: "person".into(),
            from: "nick".into(),
            to: "nickname".into(),
        });
        let changes = store.migrate_schema(&target).unwrap();
        assert!(
            changes.is_empty(),
            "a rename is no drop and add: {changes:?}"
        );
        let got = store.get("person", kept.id).unwrap();
        assert_eq!(got.fields["nickname"], json!("Annie"));
        assert!(got.pending.is_some(), "the edit is still pending");
        let conn = store.lock();
        let texts: Vec<String> = conn
            .prepare(
                "SELECT base_data FROM _roster_rows WHERE base_data IS NOT NULL
                 UNION ALL SELECT data FROM _roster_trash
                 UNION ALL SELECT client_row FROM _roster_conflicts
                 UNION ALL SELECT server_row FROM _roster_conflicts",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts.len(), 4, "{texts:?}");
        for text in texts {
            assert!(
                text.contains("\"nickname\":\"Annie\"") && !text.contains("\"nick\""),
                "{text}"
            );
        }
        drop(conn);

        // Dropped, then declared again: the new column starts empty.
        let target = VersionedSchema::new(3, Schema::default_person());
        store.migrate_schema(&target).unwrap();
        let target = VersionedSchema::new(4, renamed);
        store.migrate_schema(&target).unwrap();
        assert_eq!(
            store.get("person", kept.id).unwrap().fields["nickname"],
            json!(null)
        );
    }
}
