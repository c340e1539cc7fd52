//! Following the server's schema: when an answer carries a newer schema version, the
//! store takes the server's schema in one local transaction (new tables, new columns with
//! their defaults, the stored schema and its version), so a crash leaves the old store
//! whole and the next round migrates again. Nothing else is touched: pending edits, open
//! conflicts and the conflict history stay as they are.
//!
//! No row is downloaded again. A new column's value in every row the device holds is the
//! column's default (SQLite's `ADD COLUMN ... DEFAULT` rewrites no row), and that is the
//! server's value too for every row last written before the column existed, which is
//! every row at or below this device's watermark: the watermark came from an answer of
//! the older schema. Rows given a value since have newer versions and arrive in the
//! ordinary pull, so the cost of a migration is proportional to the rows that hold a
//! non-default value. (Rows an administrator's `migrate` rewrote get new versions too.)
//! A dropped column stays in the SQL table, unread.

use std::sync::Arc;

use roster_protocol::VersionedSchema;
use roster_protocol::evolve::{self, SchemaChange};

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
        let changes = evolve::diff(&self.schema(), &target.schema);
        tracing::info!(
            from = held,
            to = target.version,
            "migrating the store to the server's schema"
        );
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
    use roster_protocol::{ColumnDef, ColumnType, Schema, TableSchema};
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
        let target = VersionedSchema { version: 2, schema };
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
}
