//! Collecting the next batch of a round: the pending changes with edit numbers after the
//! round's cursor, oldest first, as they go on the wire.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use roster_protocol::{Change, ChangeOp, Fields, TableSchema};
use rusqlite::{CachedStatement, OptionalExtension, params};
use serde_json::Value;

use super::rows::parse_fields;
use super::{LocalStore, get_meta, parse_id, parse_op, sql};
use crate::ClientError;
use crate::round::{Batch, CollectSpec, SentChange};

/// One batch of pending changes ready to send.
#[derive(Debug, Default)]
pub(crate) struct PendingBatch {
    /// The changes, oldest edit first.
    pub(crate) sent: Vec<SentChange>,
    /// Local-only rows (inserted then deleted before any sync) dropped instead of sent.
    pub(crate) dropped_local_only: usize,
}

impl PendingBatch {
    /// Whether there is nothing to send and nothing was dropped.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.dropped_local_only == 0
    }
}

/// A `_roster_rows` entry with a pending change, as read for a batch.
struct PendingRow {
    table: String,
    id: String,
    op: String,
    base_version: Option<i64>,
    base_data: Option<String>,
    local_rev: i64,
    edited_at_ms: Option<i64>,
}

/// Rough encoded size of a change, used to bound request bodies without encoding twice.
fn estimated_size(change: &Change) -> usize {
    let fields = |f: &Option<Fields>| {
        f.as_ref().map_or(0, |f| {
            f.iter()
                .map(|(k, v)| {
                    k.len()
                        + 8
                        + match v {
                            Value::String(s) => s.len() + s.len() / 8,
                            _ => 24,
                        }
                })
                .sum()
        })
    };
    160 + change.table.len() + fields(&change.fields) + fields(&change.base_fields)
}

/// Leaves out of an update the columns its edit did not know: those its base values lack
/// (the store followed a newer schema since the edit began) and that still hold their
/// default. The server then keeps what it holds for them, where sending the default
/// would overwrite a value another device gave them.
fn leave_out_unknown_at_edit(schema: &TableSchema, fields: &mut Fields, base: &Fields) {
    for column in &schema.columns {
        if base.contains_key(&column.name) {
            continue;
        }
        let default = column.default.as_ref().unwrap_or(&Value::Null);
        if fields
            .get(&column.name)
            .is_none_or(|value| value == default)
        {
            fields.remove(&column.name);
        }
    }
}

impl LocalStore {
    /// The current edit number: a sync round pushes only edits up to the number it saw
    /// when it started, so it always ends even while the user keeps editing.
    pub(crate) fn edit_counter(&self) -> Result<i64, ClientError> {
        let conn = self.lock();
        Ok(get_meta(&conn, "edit_counter")?
            .map(|v| v.parse::<i64>())
            .transpose()
            .map_err(|e| ClientError::Corrupt(format!("edit counter: {e}")))?
            .unwrap_or(0))
    }

    /// invariant: a deferred conflict's edit is not pushed before a choice: rows in
    /// `_roster_open_conflicts` are skipped.
    ///
    /// Collects up to `max_changes` pending changes (and about `max_bytes`) with edit
    /// numbers in `(after_rev, up_to_rev]`, oldest first, skipping rows that wait for a
    /// conflict choice. Rows inserted and deleted before ever reaching the server are
    /// dropped here rather than sent.
    pub(crate) fn pending_batch(
        &self,
        after_rev: i64,
        up_to_rev: i64,
        max_changes: usize,
        max_bytes: usize,
    ) -> Result<PendingBatch, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut batch = PendingBatch::default();
        let mut bytes = 0usize;
        {
            // Each table's read statement, prepared once per batch.
            let mut readers: HashMap<String, CachedStatement<'_>> = HashMap::new();
            let schemas = self.schema();
            let mut stmt = tx.prepare_cached(
                "SELECT tbl, id, pending, base_version, base_data, local_rev, edited_at_ms
                 FROM _roster_rows r
                 WHERE pending IS NOT NULL AND local_rev > ?3 AND local_rev <= ?1
                   AND NOT EXISTS (SELECT 1 FROM _roster_open_conflicts o
                                   WHERE o.tbl = r.tbl AND o.id = r.id)
                 ORDER BY local_rev LIMIT ?2",
            )?;
            let limit = i64::try_from(max_changes).unwrap_or(i64::MAX);
            let rows: Vec<PendingRow> = stmt
                .query_map(params![up_to_rev, limit, after_rev], |r| {
                    Ok(PendingRow {
                        table: r.get(0)?,
                        id: r.get(1)?,
                        op: r.get(2)?,
                        base_version: r.get(3)?,
                        base_data: r.get(4)?,
                        local_rev: r.get(5)?,
                        edited_at_ms: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            for PendingRow {
                table,
                id,
                op,
                base_version,
                base_data,
                local_rev,
                edited_at_ms,
            } in rows
            {
                let id = parse_id(&id)?;
                let op = parse_op(&op)?;
                let base_version = base_version.map(|v| u64::try_from(v).unwrap_or(0));
                if op == ChangeOp::Delete && base_version.is_none() {
                    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
                        .execute(params![table, id.to_string()])?;
                    batch.dropped_local_only += 1;
                    continue;
                }
                let schema = schemas.table(&table)?;
                let fields = match op {
                    ChangeOp::Delete => None,
                    _ => {
                        let reader = match readers.entry(table.clone()) {
                            Entry::Occupied(entry) => entry.into_mut(),
                            Entry::Vacant(entry) => {
                                entry.insert(tx.prepare_cached(&sql::read_sql(schema))?)
                            }
                        };
                        Some(sql::execute_read(reader, schema, id)?.ok_or_else(|| {
                            ClientError::Corrupt(format!("pending {table} row {id} has no values"))
                        })?)
                    }
                };
                // What the server needs is decided by the base: without one the row is
                // new to it; with one a non-delete is an update (also after a person
                // chose to keep a row the server had inserted or deleted).
                let op = match (op, base_version) {
                    (ChangeOp::Delete, _) => ChangeOp::Delete,
                    (_, None) => ChangeOp::Insert,
                    (_, Some(_)) => ChangeOp::Update,
                };
                let base_fields = if op == ChangeOp::Update {
                    parse_fields(base_data)?
                } else {
                    None
                };
                let mut fields = fields;
                if let (Some(fields), Some(base)) = (&mut fields, &base_fields) {
                    leave_out_unknown_at_edit(schema, fields, base);
                }
                let change = Change {
                    table,
                    id,
                    op,
                    base_version,
                    fields,
                    base_fields,
                    edited_at_ms,
                };
                bytes += estimated_size(&change);
                batch.sent.push(SentChange { change, local_rev });
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        tx.commit()?;
        Ok(batch)
    }

    /// The batch `spec` names, and whether it is the round's last. Rows created and
    /// deleted offline are dropped on the way (a batch of only those is skipped).
    pub(crate) fn collect_batch(&self, spec: &CollectSpec) -> Result<Batch, ClientError> {
        loop {
            let batch =
                self.pending_batch(spec.after, spec.up_to, spec.max_changes, spec.max_bytes)?;
            if batch.sent.is_empty() && batch.dropped_local_only > 0 {
                continue;
            }
            let cursor = batch.sent.last().map_or(spec.after, |last| last.local_rev);
            let last = !self.has_pending_between(cursor, spec.up_to)?;
            return Ok(Batch {
                sent: batch.sent,
                cursor,
                last,
            });
        }
    }

    /// Whether any row not waiting for a conflict choice has a pending change with an
    /// edit number in `(after_rev, up_to_rev]`.
    fn has_pending_between(&self, after_rev: i64, up_to_rev: i64) -> Result<bool, ClientError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT 1 FROM _roster_rows r WHERE pending IS NOT NULL
                   AND local_rev > ?2 AND local_rev <= ?1
                   AND NOT EXISTS (SELECT 1 FROM _roster_open_conflicts o
                                   WHERE o.tbl = r.tbl AND o.id = r.id)
                 LIMIT 1",
                params![up_to_rev, after_rev],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::local::test_fixtures::{fields, store};

    fn batch_of(store: &LocalStore) -> PendingBatch {
        store
            .pending_batch(0, store.edit_counter().unwrap(), 100, usize::MAX)
            .unwrap()
    }

    #[test]
    fn a_row_created_and_deleted_offline_is_never_sent() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Tmp"})))
            .unwrap()
            .id;
        store.delete("person", id).unwrap();
        assert_eq!(store.status().unwrap().pending, 0);
        let batch = batch_of(&store);
        assert!(batch.sent.is_empty());
        assert_eq!(batch.dropped_local_only, 1);
        assert!(batch_of(&store).is_empty());
    }

    #[test]
    fn a_batch_stops_at_the_round_start_and_knows_whether_it_is_the_last() {
        let (_dir, store) = store();
        for name in ["A", "B", "C"] {
            store
                .insert("person", fields(json!({"name": name})))
                .unwrap();
        }
        let up_to = store.edit_counter().unwrap();
        store
            .insert("person", fields(json!({"name": "Later"})))
            .unwrap();
        let spec = |after| CollectSpec {
            after,
            up_to,
            max_changes: 2,
            max_bytes: usize::MAX,
        };
        let first = store.collect_batch(&spec(0)).unwrap();
        assert_eq!((first.sent.len(), first.last), (2, false));
        let second = store.collect_batch(&spec(first.cursor)).unwrap();
        assert_eq!(
            (second.sent.len(), second.last),
            (1, true),
            "the edit made after the round started waits"
        );
        assert_eq!(second.cursor, up_to);
    }
}
