//! The administrator's path for schema changes the server refuses at start:
//! `roster-server --config NEW --db DB migrate [--rename T.OLD=NEW]... [--drop T.C]...`.
//!
//! Every incompatible change between the stored schema and the config's must be named:
//! a dropped (or renamed) column or table by `--drop` or `--rename`. A changed type, a
//! narrower limit, a new format check, a column made required or a new required column
//! without a default are allowed when every stored row passes the new rule; the first
//! row that does not is named and nothing changes. A changed default is written into the
//! rows that relied on the old one, so no value changes under a device.
//!
//! [`Plan::rewrite`] is what happens to one row; the store applies it to every stored row
//! of the affected tables with the new schema version in one transaction
//! ([`crate::store::SyncStore::migrate_rows`]). A row whose values change is written with
//! a new version, so devices pull exactly those rows (a renamed column's non-null values,
//! a dropped column's rows needing no pull at all: they are only cleaned in place).

use roster_protocol::evolve::{self, ChangeKind};
use roster_protocol::{ColumnRename, Fields, Schema, VersionedSchema};
use serde_json::Value;

use crate::store::{MigrationReport, Rewrite, StoreError, SyncStore};

/// A column renamed by `--rename TABLE.OLD=NEW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// The table.
    pub table: String,
    /// The stored column's name.
    pub from: String,
    /// The config's name for it.
    pub to: String,
}

impl std::str::FromStr for Rename {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("expected TABLE.OLD=NEW, got {text:?}");
        let (column, to) = text.split_once('=').ok_or_else(bad)?;
        let (table, from) = column.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            table: table.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }
}

/// Why a migration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A change is neither compatible nor named by a flag.
    #[error(
        "not migrated: these changes need a flag:\n{}\nname dropped columns with --drop TABLE.COLUMN (or tables with --drop TABLE) and renamed ones with --rename TABLE.OLD=NEW",
        .0.join("\n")
    )]
    Unnamed(Vec<String>),
    /// A flag names a column or table that the change does not have.
    #[error("not migrated: {0}")]
    BadFlag(String),
    /// The database holds no schema yet: start the server once first.
    #[error(
        "not migrated: this database serves no schema yet; start the server with the config instead"
    )]
    NothingStored,
    /// A stored row does not fit the new schema, or the store failed.
    #[error("not migrated, nothing changed: {0}")]
    Store(#[from] StoreError),
}

/// What a migration will do.
#[derive(Debug, Clone)]
pub struct Plan {
    target: Schema,
    renames: Vec<Rename>,
    dropped_columns: Vec<(String, String)>,
    dropped_tables: Vec<String>,
    /// `(table, column, old default)` of columns whose default changed.
    old_defaults: Vec<(String, String, Value)>,
    /// Tables whose rows are read and rewritten.
    tables: Vec<String>,
}

/// Checks that every incompatible change from `stored` to `target` is named by
/// `renames` or `drops` (`TABLE` or `TABLE.COLUMN`) and that every flag matches a change.
pub fn plan(
    stored: &Schema,
    target: &Schema,
    renames: &[Rename],
    drops: &[String],
) -> Result<Plan, MigrationError> {
    let changes = evolve::diff(stored, target);
    let mut unnamed = Vec::new();
    let mut plan = Plan {
        target: target.clone(),
        renames: renames.to_vec(),
        dropped_columns: Vec::new(),
        dropped_tables: Vec::new(),
        old_defaults: Vec::new(),
        tables: Vec::new(),
    };
    for rename in renames {
        let old = stored
            .table(&rename.table)
            .ok()
            .and_then(|t| t.column(&rename.from));
        let new = target
            .table(&rename.table)
            .ok()
            .and_then(|t| t.column(&rename.to));
        let dropped = changes.iter().any(|c| {
            c.table == rename.table
                && c.column.as_deref() == Some(rename.from.as_str())
                && c.kind == ChangeKind::ColumnDropped
        });
        match (old, new) {
            (Some(old), Some(new)) if dropped && old.ty == new.ty => {}
            _ => {
                return Err(MigrationError::BadFlag(format!(
                    "--rename {}.{}={}: the stored table must have {} and the config {} instead, of the same type",
                    rename.table, rename.from, rename.to, rename.from, rename.to
                )));
            }
        }
    }
    for drop in drops {
        let (table, column) = match drop.split_once('.') {
            Some((table, column)) => (table, Some(column)),
            None => (drop.as_str(), None),
        };
        let kind = if column.is_some() {
            ChangeKind::ColumnDropped
        } else {
            ChangeKind::TableDropped
        };
        if !changes
            .iter()
            .any(|c| c.table == table && c.column.as_deref() == column && c.kind == kind)
        {
            return Err(MigrationError::BadFlag(format!(
                "--drop {drop}: the config still declares it, or the database never had it"
            )));
        }
        match column {
            Some(column) => plan
                .dropped_columns
                .push((table.to_owned(), column.to_owned())),
            None => plan.dropped_tables.push(table.to_owned()),
        }
    }
    for change in &changes {
        let column = change.column.clone().unwrap_or_default();
        let renamed_from = plan
            .renames
            .iter()
            .any(|r| r.table == change.table && r.from == column);
        let named = match &change.kind {
            ChangeKind::ColumnDropped => {
                renamed_from
                    || plan
                        .dropped_columns
                        .contains(&(change.table.clone(), column.clone()))
            }
            ChangeKind::TableDropped => plan.dropped_tables.contains(&change.table),
            ChangeKind::DefaultChanged => {
                if let Some(old) = stored
                    .table(&change.table)
                    .ok()
                    .and_then(|t| t.column(&column))
                    .and_then(|c| c.default.clone())
                {
                    plan.old_defaults
                        .push((change.table.clone(), column.clone(), old));
                }
                true
            }
            // Compatible, or checked row by row against the new rule (a rename's new
            // name shows as an added column).
            _ => true,
        };
        if !named {
            unnamed.push(format!("  - {change}"));
        }
        if !change.kind.is_compatible()
            && change.kind != ChangeKind::TableDropped
            && !plan.tables.contains(&change.table)
        {
            plan.tables.push(change.table.clone());
        }
    }
    for rename in &plan.renames {
        if !plan.tables.contains(&rename.table) {
            plan.tables.push(rename.table.clone());
        }
    }
    if unnamed.is_empty() {
        Ok(plan)
    } else {
        Err(MigrationError::Unnamed(unnamed))
    }
}

impl Plan {
    /// Rewrites one stored row of `table` for the new schema and checks it fits it.
    pub fn rewrite(&self, table: &str, fields: &mut Fields) -> Result<Rewrite, String> {
        let mut outcome = Rewrite::Unchanged;
        let mut note = |value: &Value| {
            let this = if value.is_null() {
                Rewrite::Cosmetic
            } else {
                Rewrite::Changed
            };
            if outcome != Rewrite::Changed {
                outcome = this;
            }
        };
        for rename in self.renames.iter().filter(|r| r.table == table) {
            if let Some(value) = fields.remove(&rename.from) {
                note(&value);
                fields.insert(rename.to.clone(), value);
            }
        }
        for (_, column) in self.dropped_columns.iter().filter(|(t, _)| t == table) {
            if let Some(value) = fields.remove(column) {
                note(&value);
            }
        }
        for (_, column, old) in self.old_defaults.iter().filter(|(t, ..)| t == table) {
            if !fields.contains_key(column) {
                note(old);
                fields.insert(column.clone(), old.clone());
            }
        }
        let schema = self.target.table(table).map_err(|e| e.to_string())?;
        schema.validate_fields(fields).map_err(|e| e.to_string())?;
        Ok(outcome)
    }
}

/// Runs the migration to `target` on `store`: plans it against the stored schema, then
/// rewrites the rows and stores the next version in one transaction. Returns the new
/// version and what was done.
pub fn run(
    store: &dyn SyncStore,
    target: &Schema,
    renames: &[Rename],
    drops: &[String],
) -> Result<(VersionedSchema, MigrationReport), MigrationError> {
    let stored = crate::schema_version::stored(store)?.ok_or(MigrationError::NothingStored)?;
    let plan = plan(&stored.schema, target, renames, drops)?;
    let version = stored.version + 1;
    let made: Vec<ColumnRename> = renames
        .iter()
        .map(|r| ColumnRename {
            version,
            table: r.table.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
        })
        .collect();
    // Stored with the version: devices that held an older one rename their columns.
    let text = crate::schema_version::stored_text(&VersionedSchema {
        version,
        schema: target.clone(),
        renames: made.clone(),
    })?;
    let report = store.migrate_rows(
        version,
        &text,
        &plan.tables,
        &plan.dropped_tables,
        &mut |table, fields| plan.rewrite(table, fields),
    )?;
    Ok((
        VersionedSchema {
            version,
            schema: target.clone(),
            renames: stored.renames.into_iter().chain(made).collect(),
        },
        report,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn schema(columns: Value) -> Schema {
        serde_json::from_value(json!({"tables": [{"name": "person", "columns": columns}]})).unwrap()
    }

    #[test]
    fn a_rename_moves_values_and_only_non_null_ones_need_a_pull() {
        let stored =
            schema(json!([{"name": "name", "type": "text"}, {"name": "nick", "type": "text"}]));
        let target =
            schema(json!([{"name": "name", "type": "text"}, {"name": "nickname", "type": "text"}]));
        assert!(matches!(
            plan(&stored, &target, &[], &[]),
            Err(MigrationError::Unnamed(_))
        ));
        let rename: Rename = "person.nick=nickname".parse().unwrap();
        let plan = plan(&stored, &target, &[rename], &[]).unwrap();
        let mut row = json!({"name": "A", "nick": "Al"})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(plan.rewrite("person", &mut row), Ok(Rewrite::Changed));
        assert_eq!(row["nickname"], json!("Al"));
        let mut row = json!({"name": "B", "nick": null})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(plan.rewrite("person", &mut row), Ok(Rewrite::Cosmetic));
        let mut row = json!({"name": "C"}).as_object().cloned().unwrap();
        assert_eq!(plan.rewrite("person", &mut row), Ok(Rewrite::Unchanged));
    }

    #[test]
    fn a_narrower_rule_is_checked_on_every_row() {
        let stored = schema(json!([{"name": "name", "type": "text"}]));
        let target = schema(json!([{"name": "name", "type": "text", "max_len": 3}]));
        let plan = plan(&stored, &target, &[], &[]).unwrap();
        let mut short = json!({"name": "Al"}).as_object().cloned().unwrap();
        assert_eq!(plan.rewrite("person", &mut short), Ok(Rewrite::Unchanged));
        let mut long = json!({"name": "Alice"}).as_object().cloned().unwrap();
        assert!(
            plan.rewrite("person", &mut long)
                .unwrap_err()
                .contains("at most 3")
        );
    }

    #[test]
    fn flags_must_match_a_change() {
        let stored = schema(json!([{"name": "name", "type": "text"}]));
        assert!(matches!(
            plan(&stored, &stored, &[], &["person.name".into()]),
            Err(MigrationError::BadFlag(_))
        ));
    }

    #[test]
    fn a_migration_stores_the_next_version_or_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        let stored =
            schema(json!([{"name": "name", "type": "text"}, {"name": "city", "type": "text"}]));
        crate::schema_version::adopt(&store, &stored).unwrap();
        let target = schema(json!([{"name": "name", "type": "text"}]));
        let (served, _) = run(&store, &target, &[], &["person.city".into()]).unwrap();
        assert_eq!(served.version, 2);
        assert_eq!(
            crate::schema_version::adopt(&store, &target)
                .unwrap()
                .version,
            2
        );
    }

    #[test]
    fn a_rename_is_stored_with_its_version_and_served_with_every_later_one() {
        let store = SqliteStore::open_in_memory().unwrap();
        let stored = schema(json!([
            {"name": "name", "type": "text"},
            {"name": "nick", "type": "text"},
            {"name": "city", "type": "text"}
        ]));
        crate::schema_version::adopt(&store, &stored).unwrap();
        let renamed = schema(json!([
            {"name": "name", "type": "text"},
            {"name": "nickname", "type": "text"}
        ]));
        let rename: Rename = "person.nick=nickname".parse().unwrap();
        run(&store, &renamed, &[rename], &["person.city".into()]).unwrap();
        // A later compatible version keeps serving the rename.
        let wider = schema(json!([
            {"name": "name", "type": "text"},
            {"name": "nickname", "type": "text"},
            {"name": "age", "type": "integer"}
        ]));
        assert_eq!(
            crate::schema_version::adopt(&store, &wider)
                .unwrap()
                .version,
            3
        );
        let (served, retired) = crate::schema_version::served(&store).unwrap().unwrap();
        assert_eq!(served.version, 3);
        assert_eq!(
            served.renames,
            vec![ColumnRename {
                version: 2,
                table: "person".into(),
                from: "nick".into(),
                to: "nickname".into(),
            }]
        );
        assert_eq!(retired.renamed["person"]["nick"], "nickname");
        let dropped: Vec<&String> = retired.dropped["person"].iter().collect();
        assert_eq!(dropped, ["city"], "a renamed column is not dropped");
    }
}
