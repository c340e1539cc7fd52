//! The trash: the values of every person deleted on this device, kept in `_roster_trash`
//! for [`TRASH_KEEP_DAYS`] days so they can be restored.
//!
//! Restoring writes the person back as a local edit, which the next sync pushes like any
//! other, so the server and every other device see the person back:
//! * while the delete is still waiting to be pushed, the row comes back under its own id
//!   (the pending delete becomes an update, or an insert if the server never had the
//!   row); a delete already in flight is acknowledged on a row whose newer edit stays
//!   pending, and that update, based on the tombstone's version, is a clean resurrection
//!   on the server;
//! * once the server has the delete, the person comes back under a new id, as a new
//!   insert: that never depends on the server still holding the tombstone (it purges
//!   tombstones after its retention) and never runs into a conflict with it.

use roster_protocol::{Fields, RowId};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::records::write_new_row;
use super::rows::{json_text, next_rev, parse_fields};
use super::{LocalStore, Record, now_ms, parse_id, sql};
use crate::ClientError;

/// Days a deleted person stays in the trash.
pub const TRASH_KEEP_DAYS: i64 = 30;

/// A deleted person in the trash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrashedRecord {
    /// Table of the row.
    pub table: String,
    /// The row's id when it was deleted.
    pub id: RowId,
    /// Its values when it was deleted.
    pub fields: Fields,
    /// When it was deleted here (Unix ms).
    pub deleted_at_ms: i64,
}

/// Puts the values of the row `id` being deleted into the trash (in the delete's
/// transaction), and drops entries older than [`TRASH_KEEP_DAYS`].
pub(super) fn put_in_trash(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    fields: &Fields,
) -> Result<(), ClientError> {
    let now = now_ms();
    tx.prepare_cached("DELETE FROM _roster_trash WHERE deleted_at_ms < ?1")?
        .execute([now - TRASH_KEEP_DAYS * 24 * 3600 * 1000])?;
    tx.prepare_cached(
        "INSERT INTO _roster_trash (tbl, id, data, deleted_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tbl, id) DO UPDATE SET data = excluded.data,
           deleted_at_ms = excluded.deleted_at_ms",
    )?
    .execute(params![table, id.to_string(), json_text(fields)?, now])?;
    Ok(())
}

impl LocalStore {
    /// The people of `table` in the trash, most recently deleted first (at most `limit`).
    pub fn trash(&self, table: &str, limit: u32) -> Result<Vec<TrashedRecord>, ClientError> {
        self.schema().table(table)?;
        let conn = self.lock();
        // A row brought back since (a conflict choice kept the other side's edit) is
        // not listed: it is not deleted any more.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT t.id, t.data, t.deleted_at_ms FROM _roster_trash t WHERE t.tbl = ?1
               AND NOT EXISTS (SELECT 1 FROM {} u WHERE u.id = t.id)
             ORDER BY t.deleted_at_ms DESC, t.id DESC LIMIT ?2",
            sql::quote(table)
        ))?;
        let rows = stmt.query_map(params![table, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, data, deleted_at_ms) = row?;
            out.push(TrashedRecord {
                table: table.to_owned(),
                id: parse_id(&id)?,
                fields: parse_fields(Some(data))?.unwrap_or_default(),
                deleted_at_ms,
            });
        }
        Ok(out)
    }

    /// Brings the person `id` of `table` back from the trash (see the module doc for
    /// which id it gets) and returns the restored record; it is pending until synced.
    pub fn restore_from_trash(&self, table: &str, id: RowId) -> Result<Record, ClientError> {
        let schemas = self.schema();
        let schema = schemas.table(table)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let data: Option<String> = tx
            .prepare_cached("SELECT data FROM _roster_trash WHERE tbl = ?1 AND id = ?2")?
            .query_row(params![table, id.to_string()], |r| r.get(0))
            .optional()?;
        let Some(fields) = parse_fields(data)? else {
            return Err(ClientError::NotFound {
                table: table.to_owned(),
                id,
            });
        };
        schema.validate_fields(&fields)?;
        let pending_delete = tx
            .prepare_cached(
                "SELECT base_version IS NULL FROM _roster_rows
                 WHERE tbl = ?1 AND id = ?2 AND pending = 'delete'",
            )?
            .query_row(params![table, id.to_string()], |r| r.get::<_, bool>(0))
            .optional()?;
        let restored = match pending_delete {
            _ if sql::row_exists(&tx, table, id)? => {
                return Err(ClientError::BadInput(format!(
                    "{table} {id} is not deleted any more"
                )));
            }
            Some(never_on_server) => {
                let rev = next_rev(&tx)?;
                sql::write_row(&tx, schema, id, &fields)?;
                tx.prepare_cached(
                    "UPDATE _roster_rows SET pending = ?3, local_rev = ?4, edited_at_ms = ?5
                     WHERE tbl = ?1 AND id = ?2",
                )?
                .execute(params![
                    table,
                    id.to_string(),
                    if never_on_server { "insert" } else { "update" },
                    rev,
                    now_ms()
                ])?;
                id
            }
            None => {
                let new_id = RowId::now_v7();
                write_new_row(&tx, schema, new_id, &fields)?;
                new_id
            }
        };
        tx.prepare_cached("DELETE FROM _roster_trash WHERE tbl = ?1 AND id = ?2")?
            .execute(params![table, id.to_string()])?;
        let record = Self::record(&tx, schema, restored)?;
        tx.commit()?;
        Ok(record)
    }

    /// Removes every person of `table` from the trash for good; returns how many.
    pub fn empty_trash(&self, table: &str) -> Result<u64, ClientError> {
        self.schema().table(table)?;
        let conn = self.lock();
        let removed = conn.execute("DELETE FROM _roster_trash WHERE tbl = ?1", [table])?;
        Ok(removed as u64)
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::ChangeOp;
    use serde_json::json;

    use super::*;
    use crate::local::test_fixtures::{fields, store};

    #[test]
    fn a_delete_not_yet_pushed_is_restored_under_its_own_id() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Ann", "city": "Oslo"})))
            .unwrap()
            .id;
        store.delete("person", id).unwrap();
        let trash = store.trash("person", 10).unwrap();
        assert_eq!(trash.len(), 1);
        assert_eq!(trash[0].id, id);
        assert_eq!(trash[0].fields["city"], json!("Oslo"));
        let back = store.restore_from_trash("person", id).unwrap();
        assert_eq!(back.id, id);
        assert_eq!(back.pending, Some(ChangeOp::Insert), "never on the server");
        assert_eq!(back.fields["name"], json!("Ann"));
        assert!(store.trash("person", 10).unwrap().is_empty());
        assert!(matches!(
            store.restore_from_trash("person", id),
            Err(ClientError::NotFound { .. })
        ));
        // A row that is live again (as a conflict choice can make it) is neither listed
        // nor restored twice.
        store.delete("person", id).unwrap();
        let conn = store.lock();
        sql::write_row(
            &conn,
            store.schema().table("person").unwrap(),
            id,
            &fields(json!({"name": "Ann"})),
        )
        .unwrap();
        drop(conn);
        assert!(store.trash("person", 10).unwrap().is_empty());
        assert!(matches!(
            store.restore_from_trash("person", id),
            Err(ClientError::BadInput(_))
        ));
    }

    #[test]
    fn a_delete_the_server_has_is_restored_as_a_new_person() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Bo"})))
            .unwrap()
            .id;
        store.delete("person", id).unwrap();
        // The delete was acknowledged: the store forgot the row.
        store
            .lock()
            .execute("DELETE FROM _roster_rows WHERE id = ?1", [id.to_string()])
            .unwrap();
        let back = store.restore_from_trash("person", id).unwrap();
        assert_ne!(back.id, id);
        assert_eq!(back.pending, Some(ChangeOp::Insert));
        assert_eq!(store.count("person", None).unwrap(), 1);
        assert_eq!(store.empty_trash("person").unwrap(), 0);
    }

    #[test]
    fn emptying_the_trash_forgets_its_people() {
        let (_dir, store) = store();
        for name in ["A", "B"] {
            let id = store
                .insert("person", fields(json!({"name": name})))
                .unwrap()
                .id;
            store.delete("person", id).unwrap();
        }
        let trash = store.trash("person", 10).unwrap();
        assert_eq!(trash.len(), 2);
        assert_eq!(store.empty_trash("person").unwrap(), 2);
        assert!(store.trash("person", 10).unwrap().is_empty());
        assert!(store.restore_from_trash("person", trash[0].id).is_err());
    }
}
