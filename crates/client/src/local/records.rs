//! Local create / read / update / delete. Each write is one transaction that changes the
//! user row and marks it pending with a fresh edit number, so it works offline and is
//! pushed by the next sync.

use roster_protocol::{ColumnDef, ColumnType, Fields, RowId, TableSchema};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::rows::{json_text, next_rev, row_meta};
use super::sql::{self, quote};
use super::trash::put_in_trash;
use super::{LocalStore, Record, get_meta, now_ms};
use crate::ClientError;

/// Most rows one [`LocalStore::list`] call returns.
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// Which rows [`LocalStore::list`] returns, and in which order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Case-insensitive substring matched against every text column.
    pub search: Option<String>,
    /// Column to sort by (`id` or a declared column); `None` sorts by id, which for v7
    /// ids is creation order.
    pub sort: Option<String>,
    /// Sort descending.
    pub descending: bool,
    /// Page size (1 to [`MAX_LIST_LIMIT`]).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            search: None,
            sort: None,
            descending: false,
            limit: 100,
            offset: 0,
        }
    }
}

/// Writes a new row and marks it as a pending insert with a fresh edit number.
pub(super) fn write_new_row(
    tx: &Transaction<'_>,
    table: &TableSchema,
    id: RowId,
    fields: &Fields,
) -> Result<(), ClientError> {
    let rev = next_rev(tx)?;
    sql::write_row(tx, table, id, fields)?;
    tx.prepare_cached(
        "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev,
         edited_at_ms) VALUES (?1, ?2, NULL, NULL, 'insert', ?3, ?4)",
    )?
    .execute(params![table.name, id.to_string(), rev, now_ms()])?;
    Ok(())
}

/// Marks a local edit (`op`: "update" or "delete") of a live row as pending with edit
/// number `rev`. A clean row gets its outbox entry here, with its base: the version its
/// user row held and the values before this edit (`base`); a row already pending keeps
/// its base and its op, unless this is a delete. A clean row without a version never
/// reached a server: its change stays an insert.
fn mark_edited(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    (base_version, base_values): (Option<i64>, &str),
    op: &str,
    rev: i64,
) -> Result<(), ClientError> {
    tx.prepare_cached(
        "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev,
           edited_at_ms)
         VALUES (?1, ?2, ?3, CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END,
           CASE WHEN ?5 = 'delete' THEN 'delete' WHEN ?3 IS NULL THEN 'insert' ELSE ?5 END,
           ?6, ?7)
         ON CONFLICT (tbl, id) DO UPDATE SET
           pending = CASE WHEN ?5 = 'delete' THEN 'delete' ELSE pending END,
           local_rev = excluded.local_rev, edited_at_ms = excluded.edited_at_ms",
    )?
    .execute(params![
        table,
        id.to_string(),
        base_version,
        base_values,
        op,
        rev,
        now_ms()
    ])?;
    Ok(())
}

/// Escapes `%`, `_` and `\` so user text matches literally in `LIKE ... ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The WHERE clause matching `search` in `table`'s text columns (parameter ?1).
fn search_clause(table: &TableSchema) -> String {
    let texts: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.ty == ColumnType::Text)
        .map(|c| format!("{} LIKE ?1 ESCAPE '\\'", quote(&c.name)))
        .collect();
    if texts.is_empty() {
        "0".to_owned()
    } else {
        texts.join(" OR ")
    }
}

/// The quoted name of the index behind lists of `table` sorted by `column` (`:` cannot
/// occur in validated names, so two pairs never share a name).
pub(super) fn sort_index_name(table: &str, column: &str) -> String {
    quote(&format!("_roster_sort:{table}:{column}"))
}

/// Makes sure lists of `table` sorted by `column` read an index in order instead of
/// sorting every row: `(column COLLATE NOCASE, id)` for text, `(column, id)` otherwise,
/// matching the `ORDER BY` of [`LocalStore::list`]. The index is only built once a first
/// sync has completed: built during one, it would slow down every pulled row (SQLite
/// builds it from a sort afterwards far faster); until then lists sort as before.
fn ensure_sort_index(
    conn: &Connection,
    table: &str,
    column: &ColumnDef,
) -> Result<(), ClientError> {
    let name = sort_index_name(table, &column.name);
    let exists = conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1")?
        .query_row([&name[1..name.len() - 1]], |_| Ok(()))
        .optional()?
        .is_some();
    if exists || get_meta(conn, "last_sync_ms")?.is_none() {
        return Ok(());
    }
    let collate = if column.ty == ColumnType::Text {
        " COLLATE NOCASE"
    } else {
        ""
    };
    tracing::info!(table, column = %column.name, "building the index for sorted lists");
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {name} ON {} ({}{collate}, id)",
        quote(table),
        quote(&column.name)
    ))?;
    Ok(())
}

impl LocalStore {
    fn table_schema(&self, table: &str) -> Result<TableSchema, ClientError> {
        Ok(self.schema().table(table)?.clone())
    }

    pub(super) fn record(
        conn: &Connection,
        table: &TableSchema,
        id: RowId,
    ) -> Result<Record, ClientError> {
        let fields = sql::read_row(conn, table, id)?.ok_or_else(|| ClientError::NotFound {
            table: table.name.clone(),
            id,
        })?;
        let (pending, base_version) = row_meta(conn, &table.name, id)?.unwrap_or_default();
        Ok(Record {
            id,
            fields,
            pending,
            base_version,
        })
    }

    /// Creates a row with a new v7 id after validating it; it is pending until synced.
    pub fn insert(&self, table: &str, fields: Fields) -> Result<Record, ClientError> {
        self.insert_with_id(table, RowId::now_v7(), fields)
    }

    /// Creates a row with a caller-chosen id (for imports of records that already have
    /// one). The id must not be nil nor already known to this store.
    pub fn insert_with_id(
        &self,
        table: &str,
        id: RowId,
        fields: Fields,
    ) -> Result<Record, ClientError> {
        let schema = &self.table_schema(table)?;
        schema.validate_fields(&fields)?;
        if id.is_nil() {
            return Err(ClientError::BadInput(
                "the nil UUID is not a valid row id".into(),
            ));
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let known = tx
            .prepare_cached("SELECT 1 FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
            .query_row(params![table, id.to_string()], |_| Ok(()))
            .optional()?
            .is_some();
        if known || sql::row_exists(&tx, table, id)? {
            return Err(ClientError::BadInput(format!(
                "{table} id {id} is already used in this store"
            )));
        }
        write_new_row(&tx, schema, id, &fields)?;
        let record = Self::record(&tx, schema, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Creates many rows with new v7 ids in one transaction (an import); all or none.
    pub fn insert_many(&self, table: &str, rows: Vec<Fields>) -> Result<Vec<RowId>, ClientError> {
        let schema = &self.table_schema(table)?;
        for fields in &rows {
            schema.validate_fields(fields)?;
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(rows.len());
        for fields in rows {
            let id = RowId::now_v7();
            write_new_row(&tx, schema, id, &fields)?;
            ids.push(id);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Applies `patch` (column → new value, `null` clears) to a live row, validates the
    /// result, and marks the row pending.
    pub fn update(&self, table: &str, id: RowId, patch: Fields) -> Result<Record, ClientError> {
        let schema = &self.table_schema(table)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut fields = sql::read_row(&tx, schema, id)?.ok_or_else(|| ClientError::NotFound {
            table: table.to_owned(),
            id,
        })?;
        let before = json_text(&fields)?;
        let base_version = sql::read_version(&tx, table, id)?.flatten();
        for (key, value) in patch {
            if schema.column(&key).is_none() {
                return Err(roster_protocol::SchemaError::UnknownColumn {
                    table: table.to_owned(),
                    column: key,
                }
                .into());
            }
            fields.insert(key, value);
        }
        schema.validate_fields(&fields)?;
        let rev = next_rev(&tx)?;
        sql::write_row(&tx, schema, id, &fields)?;
        mark_edited(&tx, table, id, (base_version, &before), "update", rev)?;
        let record = Self::record(&tx, schema, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Deletes a live row locally and marks the delete pending; its values go to the
    /// trash ([`LocalStore::trash`]). A row the server never acknowledged is dropped at
    /// the next push instead of being sent.
    pub fn delete(&self, table: &str, id: RowId) -> Result<(), ClientError> {
        let schema = &self.table_schema(table)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let Some(before) = sql::read_row(&tx, schema, id)? else {
            return Err(ClientError::NotFound {
                table: table.to_owned(),
                id,
            });
        };
        let rev = next_rev(&tx)?;
        let base_version = sql::read_version(&tx, table, id)?.flatten();
        sql::delete_row(&tx, table, id)?;
        let values = json_text(&before)?;
        mark_edited(&tx, table, id, (base_version, &values), "delete", rev)?;
        put_in_trash(&tx, table, id, &before)?;
        tx.commit()?;
        Ok(())
    }

    /// The live row `id` of `table`.
    pub fn get(&self, table: &str, id: RowId) -> Result<Record, ClientError> {
        let schema = &self.table_schema(table)?;
        let conn = self.lock();
        Self::record(&conn, schema, id)
    }

    /// One page of live rows matching `query`.
    pub fn list(&self, table: &str, query: &ListQuery) -> Result<Vec<Record>, ClientError> {
        let schema = &self.table_schema(table)?;
        if query.limit == 0 || query.limit > MAX_LIST_LIMIT {
            return Err(ClientError::BadInput(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}"
            )));
        }
        let sort_column = match query.sort.as_deref() {
            None | Some("id") => None,
            Some(name) => schema.column(name),
        };
        let order = match query.sort.as_deref() {
            None | Some("id") => "id".to_owned(),
            Some(name) => match schema.column(name) {
                Some(c) if c.ty == ColumnType::Text => format!("{} COLLATE NOCASE", quote(name)),
                Some(_) => quote(name),
                None => {
                    return Err(ClientError::BadInput(format!(
                        "cannot sort {table} by unknown column {name:?}"
                    )));
                }
            },
        };
        let direction = if query.descending { "DESC" } else { "ASC" };
        let filter = match query.search.as_deref().filter(|s| !s.is_empty()) {
            Some(_) => search_clause(schema),
            None => "?1 IS NULL".to_owned(),
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE {filter} ORDER BY {order} {direction}, id {direction}
             LIMIT ?2 OFFSET ?3",
            sql::select_list(schema),
            quote(table),
        );
        let pattern = query
            .search
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(like_pattern);
        let conn = self.lock();
        if let Some(column) = sort_column {
            ensure_sort_index(&conn, table, column)?;
        }
        let mut stmt = conn.prepare_cached(&sql)?;
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![pattern, query.limit, offset])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let (id, fields) = sql::decode_row(schema, row)?;
            let (pending, base_version) = row_meta(&conn, table, id)?.unwrap_or_default();
            out.push(Record {
                id,
                fields,
                pending,
                base_version,
            });
        }
        Ok(out)
    }

    /// Number of live rows of `table` matching `search` (all rows when `None`).
    pub fn count(&self, table: &str, search: Option<&str>) -> Result<u64, ClientError> {
        let schema = &self.table_schema(table)?;
        let search = search.filter(|s| !s.is_empty());
        let filter = match search {
            Some(_) => search_clause(schema),
            None => "?1 IS NULL".to_owned(),
        };
        let conn = self.lock();
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM {} WHERE {filter}", quote(table)),
            params![search.map(like_pattern)],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::ChangeOp;
    use serde_json::json;

    use super::*;
    use crate::local::test_fixtures::{fields, store};

    /// The steps of SQLite's plan for the page `list` reads sorted by `column`.
    fn sorted_page_plan(store: &LocalStore, column: &str, descending: bool) -> String {
        let direction = if descending { "DESC" } else { "ASC" };
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT {} FROM person WHERE ?1 IS NULL
             ORDER BY {} COLLATE NOCASE {direction}, id {direction} LIMIT 50 OFFSET 0",
            sql::select_list(store.schema().table("person").unwrap()),
            quote(column),
        );
        let conn = store.lock();
        let mut stmt = conn.prepare(&sql).unwrap();
        let steps: Vec<String> = stmt
            .query_map([Option::<String>::None], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("; ")
    }

    #[test]
    fn sorted_lists_read_an_index_built_after_the_first_sync() {
        let (_dir, store) = store();
        for name in ["carol", "Alice", "bob", "alice"] {
            store
                .insert("person", fields(json!({"name": name})))
                .unwrap();
        }
        let sorted = |descending: bool| -> Vec<String> {
            let query = ListQuery {
                sort: Some("name".into()),
                descending,
                ..ListQuery::default()
            };
            store
                .list("person", &query)
                .unwrap()
                .into_iter()
                .map(|r| r.fields["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let before = sorted(false);
        assert!(
            sorted_page_plan(&store, "name", false).contains("TEMP B-TREE"),
            "no index before a first sync"
        );
        store.mark_synced().unwrap();
        assert_eq!(sorted(false), before, "the index changes no result");
        assert_eq!(before[..2].join(" ").to_lowercase(), "alice alice");
        assert_eq!(before[2..], ["bob", "carol"]);
        for descending in [false, true] {
            let plan = sorted_page_plan(&store, "name", descending);
            assert!(plan.contains("_roster_sort:person:name"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        let mut reversed = sorted(true);
        reversed.reverse();
        assert_eq!(reversed, before);
    }

    #[test]
    fn search_matches_wildcards_and_quotes_literally() {
        let (_dir, store) = store();
        for name in [
            "100% sure",
            "Robert'); DROP TABLE person;--",
            "a_b",
            "plain",
        ] {
            store
                .insert("person", fields(json!({"name": name})))
                .unwrap();
        }
        let names = |search: &str| -> Vec<String> {
            let query = ListQuery {
                search: Some(search.into()),
                ..ListQuery::default()
            };
            store
                .list("person", &query)
                .unwrap()
                .into_iter()
                .map(|r| r.fields["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names("%"), vec!["100% sure"]);
        assert_eq!(names("_"), vec!["a_b"]);
        assert_eq!(names("drop table"), vec!["Robert'); DROP TABLE person;--"]);
        assert_eq!(store.count("person", Some("%")).unwrap(), 1);
        assert_eq!(store.count("person", None).unwrap(), 4);
    }

    #[test]
    fn sort_and_page() {
        let (_dir, store) = store();
        for (name, age) in [("b", 30), ("A", 20), ("c", 10)] {
            store
                .insert("person", fields(json!({"name": name, "age": age})))
                .unwrap();
        }
        let page = |sort: &str, descending: bool, offset: u64| -> Vec<String> {
            let query = ListQuery {
                sort: Some(sort.into()),
                descending,
                limit: 2,
                offset,
                ..ListQuery::default()
            };
            store
                .list("person", &query)
                .unwrap()
                .into_iter()
                .map(|r| r.fields["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            page("name", false, 0),
            vec!["A", "b"],
            "text sorts ignore case"
        );
        assert_eq!(page("name", false, 2), vec!["c"]);
        assert_eq!(page("age", true, 0), vec!["b", "A"]);
        let unknown = ListQuery {
            sort: Some("shoe".into()),
            ..ListQuery::default()
        };
        assert!(matches!(
            store.list("person", &unknown),
            Err(ClientError::BadInput(_))
        ));
    }

    #[test]
    fn invalid_writes_change_nothing() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Jane"})))
            .unwrap()
            .id;
        assert!(store.insert("person", fields(json!({"age": 3}))).is_err());
        assert!(
            store
                .update("person", id, fields(json!({"age": "x"})))
                .is_err()
        );
        assert!(
            store
                .update("person", id, fields(json!({"shoe": 1})))
                .is_err()
        );
        assert!(
            store
                .update("person", id, fields(json!({"name": null})))
                .is_err()
        );
        assert!(
            store
                .insert("pets", fields(json!({"name": "Rex"})))
                .is_err()
        );
        assert!(matches!(
            store.delete("person", RowId::now_v7()),
            Err(ClientError::NotFound { .. })
        ));
        assert!(
            store
                .insert_with_id("person", id, fields(json!({"name": "Dup"})))
                .is_err()
        );
        assert!(
            store
                .insert_with_id("person", RowId::nil(), fields(json!({"name": "N"})))
                .is_err()
        );
        assert_eq!(store.count("person", None).unwrap(), 1);
        assert_eq!(
            store.get("person", id).unwrap().fields["name"],
            json!("Jane")
        );
        assert_eq!(store.status().unwrap().pending, 1);
    }

    #[test]
    fn data_survives_reopening() {
        let (dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Jane", "age": 25})))
            .unwrap()
            .id;
        drop(store);
        let reopened = LocalStore::open(dir.path()).unwrap();
        let record = reopened.get("person", id).unwrap();
        assert_eq!(record.fields["age"], json!(25));
        assert_eq!(record.pending, Some(ChangeOp::Insert));
        assert!(matches!(
            LocalStore::create(
                dir.path(),
                "http://x",
                &roster_protocol::Schema::default_person()
            ),
            Err(ClientError::AlreadyInitialised(_))
        ));
    }
}
