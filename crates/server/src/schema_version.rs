//! The versioned schema the server serves.
//!
//! The store keeps every schema the server has served in `schema_versions`, by version.
//! At start [`adopt`] compares the config's schema with the newest stored one
//! ([`roster_protocol::evolve::diff`]): the same schema keeps its version; compatible
//! changes (new tables, new optional columns or required ones with a default, wider
//! limits, another column order) are stored as the next version; an incompatible change
//! refuses the start, naming table, column and why, until an administrator runs
//! `roster-server migrate` (see `crate::migrate`). Conflict policies and field rules are
//! not part of the served schema: changing them needs no new version.
//!
//! Several instances on one PostgreSQL database: the version is the table's primary key,
//! so two instances adopting a new schema together both try to insert the same next
//! version, one wins, and the other reads again and finds the schema it wanted (or one it
//! must not serve: an instance whose config lacks a column another instance added is
//! refused like a dropped column, so old and new configs never serve side by side).

use roster_protocol::evolve::{self, SchemaChange};
use roster_protocol::validate::RetiredColumns;
use roster_protocol::{ColumnRename, Schema, VersionedSchema};

use crate::store::{StoreError, SyncStore};

/// How often [`adopt`] reads again after another instance stored a version first.
const ADOPT_ATTEMPTS: usize = 8;

/// Why the config's schema cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SchemaVersionError {
    /// The config changes the stored schema in ways stored rows or devices cannot follow.
    #[error(
        "the config's tables differ from the schema this database serves (version {version}) in ways that need a migration:\n{}\nrun `roster-server --config FILE --db DB migrate` with --rename TABLE.OLD=NEW / --drop TABLE.COLUMN for them, or undo them in the config",
        list(changes)
    )]
    Incompatible {
        /// The stored version.
        version: u64,
        /// Every incompatible change.
        changes: Vec<SchemaChange>,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Other instances kept storing new versions while this one tried to adopt one.
    #[error("the schema version kept changing while this server started; start it again")]
    Contended,
}

fn list(changes: &[SchemaChange]) -> String {
    changes
        .iter()
        .map(|c| format!("  - {c}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every stored schema, oldest first, decoded, each with the renames its version made
/// (stored with it by `migrate`).
fn history(store: &dyn SyncStore) -> Result<Vec<VersionedSchema>, StoreError> {
    store
        .schema_history()?
        .into_iter()
        .map(|(version, text)| {
            serde_json::from_str::<VersionedSchema>(&text)
                .map(|stored| VersionedSchema { version, ..stored })
                .map_err(|e| StoreError::Corrupt(format!("stored schema {version}: {e}")))
        })
        .collect()
}

/// The newest stored schema, decoded, with every rename of its history.
pub fn stored(store: &dyn SyncStore) -> Result<Option<VersionedSchema>, StoreError> {
    Ok(served(store)?.map(|(schema, _)| schema))
}

/// The newest stored schema with every rename of its history, and the columns older
/// versions declared that it does not ([`retired_in`]).
pub fn served(
    store: &dyn SyncStore,
) -> Result<Option<(VersionedSchema, RetiredColumns)>, StoreError> {
    let mut history = history(store)?;
    let renames: Vec<ColumnRename> = history
        .iter_mut()
        .flat_map(|version| std::mem::take(&mut version.renames))
        .collect();
    let Some(mut newest) = history.pop() else {
        return Ok(None);
    };
    newest.renames = renames;
    history.push(newest.clone());
    let retired = retired_in(&history, &newest);
    Ok(Some((newest, retired)))
}

/// The columns an older stored version of `current`'s tables declared and `current`
/// does not: what a device that has not followed a drop or a rename yet still sends.
/// The server moves a renamed column's values to its current name and removes a dropped
/// one's from requests instead of refusing them
/// ([`roster_protocol::validate::decode_request_retiring`]).
fn retired_in(history: &[VersionedSchema], current: &VersionedSchema) -> RetiredColumns {
    let renamed = evolve::renamed_after(&current.renames, 0, &current.schema);
    let mut retired = RetiredColumns::default();
    for old in history {
        for table in &old.schema.tables {
            let Ok(now) = current.schema.table(&table.name) else {
                continue;
            };
            for column in &table.columns {
                let moved = renamed
                    .get(&table.name)
                    .is_some_and(|t| t.contains_key(&column.name));
                if now.column(&column.name).is_none() && !moved {
                    retired
                        .dropped
                        .entry(table.name.clone())
                        .or_default()
                        .insert(column.name.clone());
                }
            }
        }
    }
    retired.renamed = renamed;
    retired
}

/// Stores `schema` as the version after `previous`; `false` when another instance
/// stored that version first.
pub(crate) fn record_next(
    store: &dyn SyncStore,
    previous: u64,
    schema: &Schema,
) -> Result<bool, StoreError> {
    let text = stored_text(&VersionedSchema::new(previous + 1, schema.clone()))?;
    store.record_schema(previous + 1, &text)
}

/// The text a version is stored as: its schema and the renames it made.
pub(crate) fn stored_text(schema: &VersionedSchema) -> Result<String, StoreError> {
    serde_json::to_string(schema).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The version the server serves `wanted` under: the stored one when it is the same, the
/// next one when `wanted` changes it compatibly (stored first), else
/// [`SchemaVersionError::Incompatible`].
pub fn adopt(
    store: &dyn SyncStore,
    wanted: &Schema,
) -> Result<VersionedSchema, SchemaVersionError> {
    for _ in 0..ADOPT_ATTEMPTS {
        let (previous, changes) = match stored(store)? {
            None => (0, Vec::new()),
            Some(current) if current.schema == *wanted => return Ok(current),
            Some(current) => {
                let changes = evolve::diff(&current.schema, wanted);
                let refused: Vec<SchemaChange> = evolve::incompatible(&changes)
                    .into_iter()
                    .cloned()
                    .collect();
                if !refused.is_empty() {
                    return Err(SchemaVersionError::Incompatible {
                        version: current.version,
                        changes: refused,
                    });
                }
                (current.version, changes)
            }
        };
        if record_next(store, previous, wanted)? {
            for change in &changes {
                tracing::info!(%change, version = previous + 1, "schema changed");
            }
            // The renames of the history stay served.
            let renames = stored(store)?.map(|s| s.renames).unwrap_or_default();
            return Ok(VersionedSchema {
                version: previous + 1,
                schema: wanted.clone(),
                renames,
            });
        }
    }
    Err(SchemaVersionError::Contended)
}

#[cfg(test)]
mod tests {
    use roster_protocol::ColumnDef;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn with_column(schema: &Schema, name: &str) -> Schema {
        let mut schema = schema.clone();
        let mut column: ColumnDef = serde_json::from_value(serde_json::json!({
            "name": name, "type": "text"
        }))
        .unwrap();
        column.name = name.to_owned();
        schema.tables[0].columns.push(column);
        schema
    }

    #[test]
    fn versions_go_up_only_when_the_schema_changes_compatibly() {
        let store = SqliteStore::open_in_memory().unwrap();
        let base = Schema::default_person();
        assert_eq!(adopt(&store, &base).unwrap().version, 1);
        assert_eq!(adopt(&store, &base).unwrap().version, 1, "same schema");
        let wider = with_column(&base, "nickname");
        assert_eq!(adopt(&store, &wider).unwrap().version, 2);
        assert_eq!(adopt(&store, &wider).unwrap().version, 2);
        let refused = adopt(&store, &base).unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("person.nickname: column dropped or renamed"),
            "{message}"
        );
        assert_eq!(
            stored(&store).unwrap().unwrap().version,
            2,
            "nothing stored"
        );
    }
}
