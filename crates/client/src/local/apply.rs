//! The two halves of a sync round that touch the local store: collecting a batch of
//! pending changes, and applying the server's answer (acks, conflicts, pulled changes and
//! the new watermark) in one transaction.

use std::collections::HashMap;

use roster_protocol::{Change, ChangeOp, Conflict, Fields, Resolution, RowId, ServerRow, SyncResponse};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use super::sql;
use super::{LocalStore, get_meta, now_ms, parse_id, parse_op, set_meta};
use crate::ClientError;

/// A change as sent, with the edit number the row had when it was read.
#[derive(Debug, Clone)]
pub struct SentChange {
    /// The change on the wire.
    pub change: Change,
    /// The row's `local_rev` when the change was collected.
    pub local_rev: i64,
}

/// One batch of pending changes ready to send.
#[derive(Debug, Default)]
pub struct PendingBatch {
    /// The changes, oldest edit first.
    pub sent: Vec<SentChange>,
    /// Local-only rows (inserted then deleted before any sync) dropped instead of sent.
    pub dropped_local_only: usize,
}

impl PendingBatch {
    /// The changes to put in the request.
    pub fn changes(&self) -> Vec<Change> {
        self.sent.iter().map(|s| s.change.clone()).collect()
    }

    /// Whether there is nothing to send and nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.dropped_local_only == 0
    }
}

/// What applying one response did locally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Rows whose local values changed because of the server (pulls and lost conflicts).
    pub downloaded: u64,
    /// Conflicts reported.
    pub conflicts_detected: u64,
    /// Conflicts that came with a resolution.
    pub conflicts_resolved: u64,
}

fn json_text(value: &impl serde::Serialize) -> Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Corrupt(e.to_string()))
}

fn parse_fields(text: Option<String>) -> Result<Option<Fields>, ClientError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| ClientError::Corrupt(e.to_string())))
        .transpose()
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

/// The row's current pending op and edit number.
fn row_state(tx: &Connection, table: &str, id: RowId) -> Result<Option<(Option<ChangeOp>, i64)>, ClientError> {
    let state = tx
        .prepare_cached("SELECT pending, local_rev FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
        .query_row(params![table, id.to_string()], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    state
        .map(|(op, rev)| Ok((op.as_deref().map(parse_op).transpose()?, rev)))
        .transpose()
}

/// Records that the server holds `fields` at `version` as the row's base. When `clean`,
/// the row has no pending change any more; otherwise a pending insert becomes an update
/// (the server now has the row) and other pending ops stay.
fn set_base(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: u64,
    fields: Option<&Fields>,
    clean: bool,
) -> Result<(), ClientError> {
    let data = fields.map(json_text).transpose()?;
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    if clean {
        tx.prepare_cached(
            "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
             VALUES (?1, ?2, ?3, ?4, NULL, 0)
             ON CONFLICT (tbl, id) DO UPDATE SET base_version = excluded.base_version,
               base_data = excluded.base_data, pending = NULL",
        )?
        .execute(params![table, id.to_string(), version, data])?;
    } else {
        tx.prepare_cached(
            "UPDATE _roster_rows SET base_version = ?3, base_data = ?4,
               pending = CASE pending WHEN 'insert' THEN 'update' ELSE pending END
             WHERE tbl = ?1 AND id = ?2",
        )?
        .execute(params![table, id.to_string(), version, data])?;
    }
    Ok(())
}

fn forget_row(tx: &Transaction<'_>, table: &str, id: RowId) -> Result<(), ClientError> {
    sql::delete_row(tx, table, id)?;
    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
        .execute(params![table, id.to_string()])?;
    Ok(())
}

fn log_conflict(tx: &Transaction<'_>, conflict: &Conflict) -> Result<(), ClientError> {
    tx.prepare_cached(
        "INSERT INTO _roster_conflicts (at_ms, tbl, row_id, kind, resolution, client_row,
         server_row, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        now_ms(),
        conflict.table,
        conflict.id.to_string(),
        conflict.kind.as_str(),
        conflict.resolution.as_str(),
        conflict.client_row.as_ref().map(json_text).transpose()?,
        conflict.server_row.as_ref().map(json_text).transpose()?,
        conflict.outcome.as_ref().map(json_text).transpose()?,
    ])?;
    Ok(())
}

impl LocalStore {
    /// The current edit number: a sync round pushes only edits up to the number it saw
    /// when it started, so it always ends even while the user keeps editing.
    pub fn edit_counter(&self) -> Result<i64, ClientError> {
        let conn = self.lock();
        Ok(get_meta(&conn, "edit_counter")?
            .map(|v| v.parse::<i64>())
            .transpose()
            .map_err(|e| ClientError::Corrupt(format!("edit counter: {e}")))?
            .unwrap_or(0))
    }

    /// Collects up to `max_changes` pending changes (and about `max_bytes`) with edit
    /// numbers up to `up_to_rev`, oldest first. Rows inserted and deleted before ever
    /// reaching the server are dropped here rather than sent.
    pub fn pending_batch(
        &self,
        up_to_rev: i64,
        max_changes: usize,
        max_bytes: usize,
    ) -> Result<PendingBatch, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut batch = PendingBatch::default();
        let mut bytes = 0usize;
        {
            let mut stmt = tx.prepare_cached(
                "SELECT tbl, id, pending, base_version, base_data, local_rev FROM _roster_rows
                 WHERE pending IS NOT NULL AND local_rev <= ?1 ORDER BY local_rev LIMIT ?2",
            )?;
            let limit = i64::try_from(max_changes).unwrap_or(i64::MAX);
            let rows: Vec<(String, String, String, Option<i64>, Option<String>, i64)> = stmt
                .query_map(params![up_to_rev, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<Result<_, _>>()?;
            for (table, id, op, base_version, base_data, local_rev) in rows {
                let id = parse_id(&id)?;
                let op = parse_op(&op)?;
                let base_version = base_version.map(|v| u64::try_from(v).unwrap_or(0));
                if op == ChangeOp::Delete && base_version.is_none() {
                    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
                        .execute(params![table, id.to_string()])?;
                    batch.dropped_local_only += 1;
                    continue;
                }
                let schema = self.schema.table(&table)?;
                let fields = match op {
                    ChangeOp::Delete => None,
                    _ => Some(sql::read_row(&tx, schema, id)?.ok_or_else(|| {
                        ClientError::Corrupt(format!("pending {table} row {id} has no values"))
                    })?),
                };
                let change = Change {
                    table,
                    id,
                    op: if base_version.is_none() { ChangeOp::Insert } else { op },
                    base_version,
                    fields,
                    base_fields: if op == ChangeOp::Update {
                        parse_fields(base_data)?
                    } else {
                        None
                    },
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

    /// Applies a server answer to `batch` in one transaction: acknowledged rows become
    /// clean (unless edited since they were sent), conflicts are logged and their outcome
    /// adopted, pulled rows are written unless they have a pending local change (the
    /// server flags those as conflicts when they are pushed), and the watermark advances.
    pub fn apply_response(
        &self,
        batch: &PendingBatch,
        response: &SyncResponse,
    ) -> Result<ApplyCounts, ClientError> {
        let sent: HashMap<(&str, RowId), &SentChange> = batch
            .sent
            .iter()
            .map(|s| ((s.change.table.as_str(), s.change.id), s))
            .collect();
        let mut counts = ApplyCounts::default();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for ack in &response.acks {
            let Some(change) = sent.get(&(ack.table.as_str(), ack.id)) else {
                return Err(ClientError::Protocol(format!("ack for unsent row {}", ack.id)));
            };
            let unchanged = row_state(&tx, &ack.table, ack.id)?
                .is_some_and(|(_, rev)| rev == change.local_rev);
            match change.change.op {
                ChangeOp::Delete if unchanged => {
                    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
                        .execute(params![ack.table, ack.id.to_string()])?;
                }
                _ => set_base(
                    &tx,
                    &ack.table,
                    ack.id,
                    ack.version,
                    change.change.fields.as_ref(),
                    unchanged,
                )?,
            }
        }
        for conflict in &response.conflicts {
            log_conflict(&tx, conflict)?;
            counts.conflicts_detected += 1;
            counts.conflicts_resolved += 1;
            let Some(change) = sent.get(&(conflict.table.as_str(), conflict.id)) else {
                return Err(ClientError::Protocol(format!(
                    "conflict for unsent row {}",
                    conflict.id
                )));
            };
            self.adopt_outcome(&tx, conflict, change, &mut counts)?;
        }
        for change in &response.changes {
            let schema = self
                .schema
                .table(&change.table)
                .map_err(|_| ClientError::SchemaMismatch(change.table.clone()))?;
            let pending = row_state(&tx, &change.table, change.id)?.and_then(|(op, _)| op);
            if pending.is_some() {
                continue;
            }
            counts.downloaded += 1;
            match (&change.row, &change.row.fields) {
                (ServerRow { deleted: false, .. }, Some(fields)) => {
                    sql::write_row(&tx, schema, change.id, fields)?;
                    set_base(&tx, &change.table, change.id, change.row.version, Some(fields), true)?;
                }
                _ => forget_row(&tx, &change.table, change.id)?,
            }
        }
        set_meta(&tx, "watermark", &response.watermark.to_string())?;
        tx.commit()?;
        Ok(counts)
    }

    /// Makes the local row equal to a conflict's outcome, unless the row was edited again
    /// after the change was sent: that newer edit stays pending on its old base and meets
    /// the policy on the next push. A client-wins outcome is the sent row itself, so it
    /// becomes the base either way.
    fn adopt_outcome(
        &self,
        tx: &Transaction<'_>,
        conflict: &Conflict,
        sent: &SentChange,
        counts: &mut ApplyCounts,
    ) -> Result<(), ClientError> {
        let unchanged = row_state(tx, &conflict.table, conflict.id)?
            .is_some_and(|(_, rev)| rev == sent.local_rev);
        let live = conflict.outcome.as_ref().filter(|o| !o.deleted);
        if !unchanged {
            if let (Resolution::ClientWins, Some(outcome)) = (conflict.resolution, live) {
                set_base(tx, &conflict.table, conflict.id, outcome.version, outcome.fields.as_ref(), false)?;
            }
            return Ok(());
        }
        let schema = self.schema.table(&conflict.table)?;
        match live {
            Some(outcome) => {
                let fields = outcome.fields.clone().unwrap_or_default();
                if conflict.resolution != Resolution::ClientWins {
                    counts.downloaded += 1;
                }
                sql::write_row(tx, schema, conflict.id, &fields)?;
                set_base(tx, &conflict.table, conflict.id, outcome.version, Some(&fields), true)?;
            }
            None => {
                if sent.change.op != ChangeOp::Delete {
                    counts.downloaded += 1;
                }
                forget_row(tx, &conflict.table, conflict.id)?;
            }
        }
        Ok(())
    }

    /// Prepares a full re-pull after the server said this client's watermark can no
    /// longer be served: clean rows are dropped (the pull brings back every live one) and
    /// the watermark returns to 0. Pending rows and their base versions are kept.
    pub fn reset_for_full_pull(&self) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for table in &self.schema.tables {
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE id IN
                     (SELECT id FROM _roster_rows WHERE tbl = ?1 AND pending IS NULL)",
                    sql::quote(&table.name)
                ),
                [&table.name],
            )?;
        }
        tx.execute("DELETE FROM _roster_rows WHERE pending IS NULL", [])?;
        set_meta(&tx, "watermark", "0")?;
        tx.commit()?;
        Ok(())
    }

    /// Whether any row has a pending change with an edit number up to `up_to_rev`.
    pub fn has_pending_up_to(&self, up_to_rev: i64) -> Result<bool, ClientError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT 1 FROM _roster_rows WHERE pending IS NOT NULL AND local_rev <= ?1 LIMIT 1",
                [up_to_rev],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records that a sync round completed now.
    pub fn mark_synced(&self) -> Result<(), ClientError> {
        let conn = self.lock();
        set_meta(&conn, "last_sync_ms", &now_ms().to_string())
    }
}
