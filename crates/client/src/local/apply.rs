//! Applying the server's answer to one request (acks, conflicts, pulled changes and the
//! new watermark) in one transaction, and the full re-pull a reset asks for.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use roster_protocol::{
    Ack, ChangeOp, Conflict, Fields, PulledChange, PulledResponse, Rebase, Resolution, RowId,
    SchemaError, TableSchema,
};
use rusqlite::{CachedStatement, OptionalExtension, Transaction, params};

use super::conflicts::DeviceConflictHandler;
use super::rows::{forget_row, json_text, next_rev, parse_fields, row_state, set_base};
use super::{LocalStore, get_meta, now_ms, set_meta, sql};
use crate::ClientError;
use crate::round::{ApplyCounts, SentChange};

/// Refuses a row from the server that the local schema does not accept (unknown column,
/// wrong type, missing required value): the answer is not applied at all.
///
/// invariant: a row written locally from an answer matches the local schema; a bad one
/// fails the whole answer's transaction, so nothing of it is stored.
fn check_server_row(schema: &TableSchema, id: RowId, fields: &Fields) -> Result<(), ClientError> {
    schema
        .validate_fields(fields)
        .map_err(|error| unfit_server_row(schema, id, &error))
}

/// The error of a server row that does not fit the table's schema.
fn unfit_server_row(schema: &TableSchema, id: RowId, error: &SchemaError) -> ClientError {
    ClientError::Protocol(format!(
        "the server sent a {} row that does not fit the schema (row {id}): {error}",
        schema.name
    ))
}

/// How long an acknowledged delete is remembered (`_roster_acked_deletes`): a server
/// restored from a backup up to this old gets this device's deletes again.
pub(crate) const ACKED_DELETE_KEEP_DAYS: i64 = 30;

/// Remembers that the server stored this device's delete of the row as the tombstone
/// `version`, so a re-base onto a restore point before it pushes the delete again.
fn remember_acked_delete(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: u64,
) -> Result<(), ClientError> {
    tx.prepare_cached(
        "INSERT INTO _roster_acked_deletes (tbl, id, version, acked_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tbl, id) DO UPDATE SET version = excluded.version,
           acked_at_ms = excluded.acked_at_ms",
    )?
    .execute(params![
        table,
        id.to_string(),
        sql::db_version(version),
        now_ms()
    ])?;
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

/// Records an ack of the change `sent`: the acked version (and the values sent) become
/// the row's base. The row is clean only if its edit number is still the one it had when
/// sent; otherwise the newer edit stays pending on the new base (a pending insert becomes
/// an update). An acked delete of an unchanged row forgets the row and is remembered
/// (see [`remember_acked_delete`]).
///
/// invariant: a local edit is never wrongly marked clean by a sync: only a row whose
/// `local_rev` is still the one sent becomes clean.
fn acknowledge(tx: &Transaction<'_>, ack: &Ack, sent: &SentChange) -> Result<(), ClientError> {
    let id = ack.id.to_string();
    if sent.change.op == ChangeOp::Delete {
        let forgotten = tx
            .prepare_cached(
                "DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2 AND local_rev = ?3",
            )?
            .execute(params![ack.table, id, sent.local_rev])?;
        if forgotten > 0 {
            return remember_acked_delete(tx, &ack.table, ack.id, ack.version);
        }
    }
    let clean = tx
        .prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2 AND local_rev = ?3")?
        .execute(params![ack.table, id, sent.local_rev])?;
    if clean > 0 {
        sql::set_version(tx, &ack.table, ack.id, ack.version)
    } else {
        set_base(
            tx,
            &ack.table,
            ack.id,
            ack.version,
            sent.change.fields.as_ref(),
            false,
        )
    }
}

/// Writes into the acknowledged row the values the server kept for columns the change
/// did not carry (it was collected before this device knew them), so the row matches
/// the server's without pulling it again. Columns this store does not declare are
/// ignored; values that do not fit its schema fail the answer.
fn take_kept_values(
    tx: &Transaction<'_>,
    schema: &roster_protocol::Schema,
    ack: &Ack,
    kept: &Fields,
) -> Result<(), ClientError> {
    let table = schema
        .table(&ack.table)
        .map_err(|_| ClientError::SchemaMismatch(ack.table.clone()))?;
    let mut known = Fields::new();
    for column in &table.columns {
        if let Some(value) = kept.get(&column.name) {
            known.insert(column.name.clone(), value.clone());
        }
    }
    // A row deleted here since it was sent has nothing to take them into.
    let Some(mut row) = sql::read_row(tx, table, ack.id)? else {
        return Ok(());
    };
    row.extend(known.clone());
    check_server_row(table, ack.id, &row)?;
    sql::write_columns(tx, table, ack.id, &known)
}

impl LocalStore {
    /// [`LocalStore::apply_answer`] in the middle of a round.
    #[cfg(test)]
    pub(crate) fn apply_response(
        &self,
        sent: &[SentChange],
        response: &PulledResponse,
        handler: Option<&dyn DeviceConflictHandler>,
    ) -> Result<ApplyCounts, ClientError> {
        self.apply_answer(sent, response, handler, false)
    }

    /// Applies a server answer to the changes `sent` in one transaction: acknowledged
    /// rows become clean (unless edited since they were sent), conflicts are logged and
    /// their outcome adopted (deferred ones are handed to `handler`, or kept open for a
    /// person), pulled rows are written unless they have a pending local change (the
    /// server flags those as conflicts when they are pushed), and the watermark advances.
    /// When `round_done`, the same transaction records that a sync round completed now
    /// (one commit instead of two).
    pub(crate) fn apply_answer(
        &self,
        sent: &[SentChange],
        response: &PulledResponse,
        handler: Option<&dyn DeviceConflictHandler>,
        round_done: bool,
    ) -> Result<ApplyCounts, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let counts = self.apply_answer_in(&tx, sent, response, handler, round_done)?;
        tx.commit()?;
        Ok(counts)
    }

    /// [`LocalStore::apply_answer`] inside `tx`, which the caller commits (the AMA
    /// driver writes its version strings in the same transaction, `local/ama.rs`).
    pub(crate) fn apply_answer_in(
        &self,
        tx: &Transaction<'_>,
        sent: &[SentChange],
        response: &PulledResponse,
        handler: Option<&dyn DeviceConflictHandler>,
        round_done: bool,
    ) -> Result<ApplyCounts, ClientError> {
        let sent: HashMap<(&str, RowId), &SentChange> = sent
            .iter()
            .map(|s| ((s.change.table.as_str(), s.change.id), s))
            .collect();
        let mut counts = ApplyCounts::default();
        for ack in &response.acks {
            let Some(change) = sent.get(&(ack.table.as_str(), ack.id)) else {
                return Err(ClientError::Protocol(format!(
                    "ack for unsent row {}",
                    ack.id
                )));
            };
            acknowledge(tx, ack, change)?;
            if let Some(kept) = &ack.kept {
                take_kept_values(tx, &self.schema(), ack, kept)?;
            }
        }
        for conflict in &response.conflicts {
            if let Some(fields) = conflict
                .outcome
                .as_ref()
                .filter(|o| !o.deleted)
                .and_then(|o| o.fields.as_ref())
            {
                check_server_row(self.schema().table(&conflict.table)?, conflict.id, fields)?;
            }
            log_conflict(tx, conflict)?;
            let Some(change) = sent.get(&(conflict.table.as_str(), conflict.id)) else {
                return Err(ClientError::Protocol(format!(
                    "conflict for unsent row {}",
                    conflict.id
                )));
            };
            match conflict.resolution {
                Resolution::AutoMerged => counts.auto_merged += 1,
                _ => {
                    counts.conflicts_detected += 1;
                    counts.conflicts_resolved += 1;
                }
            }
            if conflict.resolution == Resolution::Deferred {
                counts.downloaded += 1;
                // A delete carries no base on the wire; the row's last known values are
                // kept locally, and the person needs them to see what changed there.
                let delete_base = match change.change.op {
                    roster_protocol::ChangeOp::Delete => parse_fields(
                        tx.query_row(
                            "SELECT base_data FROM _roster_rows WHERE tbl = ?1 AND id = ?2",
                            params![conflict.table, conflict.id.to_string()],
                            |r| r.get::<_, Option<String>>(0),
                        )
                        .optional()?
                        .flatten(),
                    )?,
                    _ => None,
                };
                let base = change.change.base_fields.as_ref().or(delete_base.as_ref());
                let open = self.store_open_conflict(tx, conflict, base)?;
                match handler.and_then(|h| h.decide(&open)) {
                    Some(choice) => {
                        self.apply_choice(tx, &open.table, open.id, &choice)?;
                        counts.conflicts_decided_here += 1;
                    }
                    None => counts.conflicts_deferred += 1,
                }
            } else {
                self.adopt_outcome(tx, conflict, change, &mut counts)?;
            }
        }
        counts.downloaded += self.apply_pulled(tx, &response.changes)?;
        // Partial sync: what this answer says about a row replaces an earlier eviction
        // that waited for its edit; then this answer's evictions.
        let answered = (response.acks.iter().map(|a| (a.table.as_str(), a.id)))
            .chain(response.conflicts.iter().map(|c| (c.table.as_str(), c.id)))
            .chain(response.changes.iter().map(|c| (c.table.as_str(), c.id)));
        super::slice::clear_marks(tx, answered)?;
        counts.evicted += super::slice::evict(tx, &response.evicted)?;
        counts.evicted += super::slice::forget_marked_clean(tx)?;
        // invariant: an interrupted sync resumes: the watermark is stored in the
        // transaction that applies its page.
        set_meta(tx, "watermark", &response.watermark.to_string())?;
        if response.epoch != 0 {
            set_meta(tx, "server_epoch", &response.epoch.to_string())?;
        }
        if round_done {
            set_meta(tx, "last_sync_ms", &now_ms().to_string())?;
            tx.prepare_cached("DELETE FROM _roster_acked_deletes WHERE acked_at_ms < ?1")?
                .execute([now_ms() - ACKED_DELETE_KEEP_DAYS * 24 * 3600 * 1000])?;
        }
        Ok(counts)
    }

    /// Writes pulled server rows (or removes tombstoned ones), except rows with a pending
    /// local change: that change meets the server's check when it is pushed, so nothing
    /// is overwritten silently. Returns how many rows changed. Each table's statements
    /// are prepared once per call; a live row is one `INSERT OR REPLACE` carrying its
    /// version (store format 8), after a lookup in the outbox unless that is empty.
    pub(super) fn apply_pulled(
        &self,
        tx: &Transaction<'_>,
        changes: &[PulledChange],
    ) -> Result<u64, ClientError> {
        let mut downloaded = 0;
        // With an empty outbox (a first sync, a device that only reads) no pulled row can
        // have a pending change: one read instead of a lookup per row.
        let outbox_empty: bool = tx
            .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM _roster_rows)")?
            .query_row([], |r| r.get(0))?;
        let mut pending =
            tx.prepare_cached("SELECT 1 FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?;
        let schemas = self.schema();
        let mut writers: HashMap<&str, (&TableSchema, CachedStatement<'_>)> = HashMap::new();
        for change in changes {
            let schema = schemas
                .table(&change.table)
                .map_err(|_| ClientError::SchemaMismatch(change.table.clone()))?;
            let fields = match (change.deleted, &change.fields) {
                (false, Some(fields)) => fields,
                _ => {
                    let pending = row_state(tx, &change.table, change.id)?.and_then(|(op, _)| op);
                    if pending.is_none() {
                        forget_row(tx, &change.table, change.id)?;
                        downloaded += 1;
                    }
                    continue;
                }
            };
            // The row's values straight from the page's text, in column order, checked
            // as `check_server_row` checks a map.
            let values = schema
                .decode_row(fields.get())
                .map_err(|error| unfit_server_row(schema, change.id, &error))?;
            let id = change.id.to_string();
            if !outbox_empty && pending.exists(params![change.table, id])? {
                continue; // a pending local change: keep it
            }
            let (schema, stmt) = match writers.entry(change.table.as_str()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    entry.insert((schema, tx.prepare_cached(&sql::pulled_write_sql(schema))?))
                }
            };
            let version = sql::db_version(change.version);
            sql::execute_pulled_write(stmt, schema, &id, &values, version)?;
            downloaded += 1;
        }
        Ok(downloaded)
    }

    /// Makes the local row equal to a conflict's outcome, unless the row was edited again
    /// after the change was sent. That newer edit then stays pending: on the outcome's
    /// version when the outcome is exactly the row that was sent (the newer edit builds
    /// on it), otherwise on its old base, so that it meets the server's check again.
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
        let sent_fields = sent.change.fields.as_ref();
        if !unchanged {
            if let Some(outcome) = live.filter(|o| o.fields.as_ref() == sent_fields) {
                set_base(
                    tx,
                    &conflict.table,
                    conflict.id,
                    outcome.version,
                    outcome.fields.as_ref(),
                    false,
                )?;
            }
            return Ok(());
        }
        let schemas = self.schema();
        let schema = schemas.table(&conflict.table)?;
        match live {
            Some(outcome) => {
                let fields = outcome.fields.clone().unwrap_or_default();
                if Some(&fields) != sent_fields {
                    counts.downloaded += 1;
                }
                sql::write_row(tx, schema, conflict.id, &fields)?;
                set_base(
                    tx,
                    &conflict.table,
                    conflict.id,
                    outcome.version,
                    Some(&fields),
                    true,
                )?;
            }
            None => {
                if sent.change.op != ChangeOp::Delete {
                    counts.downloaded += 1;
                }
                forget_row(tx, &conflict.table, conflict.id)?;
                // This device's delete stands (the policy chose it): remember it like an ack.
                if let (ChangeOp::Delete, Some(tombstone)) = (sent.change.op, &conflict.outcome) {
                    remember_acked_delete(tx, &conflict.table, conflict.id, tombstone.version)?;
                }
            }
        }
        Ok(())
    }

    /// Prepares a full re-pull after the server said this client's watermark can no
    /// longer be served: clean rows are dropped (the pull brings back every live one) and
    /// the watermark returns to 0. Pending rows and their base versions are kept.
    pub(crate) fn reset_for_full_pull(&self) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for table in &self.schema().tables {
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE id NOT IN (SELECT id FROM _roster_rows WHERE tbl = ?1)",
                    sql::quote(&table.name)
                ),
                [&table.name],
            )?;
        }
        set_meta(&tx, "watermark", "0")?;
        tx.commit()?;
        Ok(())
    }

    /// The server epoch of the last answer applied (`None` before the first, or from a
    /// server without epochs).
    pub(crate) fn server_epoch(&self) -> Result<Option<u64>, ClientError> {
        let conn = self.lock();
        get_meta(&conn, "server_epoch")?
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|e| ClientError::Corrupt(format!("server epoch: {e}")))
            })
            .transpose()
    }

    /// Re-bases the store on a server restored from a backup (see [`Rebase`]), in one
    /// transaction, and returns the edit number the rows to push again carry:
    ///
    /// * a row whose base version is after the restore point (`restored_at`) came from
    ///   the lost history: its number may mean another row now, and the server may not
    ///   hold it. Unless it is a pending delete, it becomes a pending insert of its
    ///   current values (its base forgotten); the server applies such an insert over
    ///   a copy from before the restore, and meets a copy written since as a conflict;
    /// * a delete of this device acknowledged after the restore point (its tombstone's
    ///   version is newer, `_roster_acked_deletes`) becomes a pending delete again, on
    ///   that version, unless the row is back on this device; the server applies such a
    ///   delete over a copy from before the restore (`store/round.rs`
    ///   `repushed_after_restore`), so the row stays deleted;
    /// * rows based at or before the restore point, and pending inserts, stay as they
    ///   are: the history up to that point is the same;
    /// * the watermark returns to 0 (the round pulls everything again, pending rows
    ///   untouched) and the new epoch is stored.
    pub(crate) fn rebase_after_restore(&self, rebase: Rebase) -> Result<i64, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let rev = next_rev(&tx)?;
        let restored_at = i64::try_from(rebase.restored_at).unwrap_or(i64::MAX);
        let mut moved = tx.execute(
            "UPDATE _roster_rows SET pending = 'insert', base_version = NULL, base_data = NULL,
               local_rev = ?2
             WHERE base_version > ?1 AND pending <> 'delete'",
            params![restored_at, rev],
        )?;
        let mut deletes = 0;
        for table in &self.schema().tables {
            let name = sql::quote(&table.name);
            let version = sql::VERSION_COLUMN;
            // Clean rows from after the restore point.
            moved += tx.execute(
                &format!(
                    "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
                     SELECT ?3, id, NULL, NULL, 'insert', ?2 FROM {name} u
                     WHERE u.{version} > ?1 AND NOT EXISTS
                       (SELECT 1 FROM _roster_rows r WHERE r.tbl = ?3 AND r.id = u.id)"
                ),
                params![restored_at, rev, table.name],
            )?;
            deletes += tx.execute(
                &format!(
                    "INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
                     SELECT d.tbl, d.id, d.version, NULL, 'delete', ?2 FROM _roster_acked_deletes d
                     WHERE d.tbl = ?3 AND d.version > ?1
                       AND NOT EXISTS (SELECT 1 FROM _roster_rows r WHERE r.tbl = d.tbl AND r.id = d.id)
                       AND NOT EXISTS (SELECT 1 FROM {name} u WHERE u.id = d.id)"
                ),
                params![restored_at, rev, table.name],
            )?;
        }
        // Each comes back here when its delete is acknowledged again.
        tx.execute(
            "DELETE FROM _roster_acked_deletes WHERE version > ?1",
            [restored_at],
        )?;
        set_meta(&tx, "watermark", "0")?;
        set_meta(&tx, "server_epoch", &rebase.epoch.to_string())?;
        super::slice::end_backfills(&tx)?;
        tx.commit()?;
        tracing::warn!(
            rows = moved,
            deletes,
            restored_at = rebase.restored_at,
            epoch = rebase.epoch,
            "re-based on a restored server: rows and deletes from after its backup are pushed again"
        );
        Ok(rev)
    }

    /// Records that a sync round completed now.
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn mark_synced(&self) -> Result<(), ClientError> {
        let conn = self.lock();
        set_meta(&conn, "last_sync_ms", &now_ms().to_string())
    }
}

#[cfg(test)]
mod tests {
    use roster_protocol::{ConflictKind, ServerChange, ServerRow};
    use serde_json::{Value, json};

    use super::*;
    use crate::local::collect::PendingBatch;
    use crate::local::test_fixtures::{fields, store};

    fn answer(
        acks: Vec<Ack>,
        conflicts: Vec<Conflict>,
        changes: Vec<ServerChange>,
    ) -> PulledResponse {
        PulledResponse {
            evicted: Vec::new(),
            acks,
            conflicts,
            changes: changes
                .into_iter()
                .map(PulledChange::try_from)
                .collect::<Result<_, _>>()
                .unwrap(),
            watermark: 9,
            has_more: false,
            newest: 9,
            staged: false,
            schema_version: 0,
            rollback: None,
            epoch: 0,
            rebase: None,
        }
    }

    fn batch_of(store: &LocalStore) -> PendingBatch {
        store
            .pending_batch(0, store.edit_counter().unwrap(), 100, usize::MAX)
            .unwrap()
    }

    #[test]
    fn an_edit_made_while_its_change_is_in_flight_stays_pending_on_the_new_base() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Jane"})))
            .unwrap()
            .id;
        let in_flight = batch_of(&store);
        store
            .update("person", id, fields(json!({"age": 5})))
            .unwrap();
        let ack = Ack {
            table: "person".into(),
            id,
            version: 7,
            kept: None,
        };
        store
            .apply_response(&in_flight.sent, &answer(vec![ack], vec![], vec![]), None)
            .unwrap();

        let record = store.get("person", id).unwrap();
        assert_eq!(record.pending, Some(ChangeOp::Update));
        assert_eq!(record.base_version, Some(7));
        assert_eq!(record.fields["age"], json!(5));
        let next = batch_of(&store);
        assert_eq!(next.sent.len(), 1);
        assert_eq!(next.sent[0].change.op, ChangeOp::Update);
        assert_eq!(next.sent[0].change.base_version, Some(7));
        assert_eq!(store.watermark().unwrap(), 9);
    }

    #[test]
    fn one_answer_cleans_the_unchanged_rows_of_a_batch_and_keeps_the_edited_ones_pending() {
        let (_dir, store) = store();
        let names = ["A", "B", "C", "D"];
        let ids: Vec<RowId> = names
            .iter()
            .map(|name| {
                store
                    .insert("person", fields(json!({"name": name})))
                    .unwrap()
                    .id
            })
            .collect();
        let in_flight = batch_of(&store);
        assert_eq!(in_flight.sent.len(), 4);
        store
            .update("person", ids[1], fields(json!({"age": 5})))
            .unwrap();
        let acks = ids
            .iter()
            .enumerate()
            .map(|(index, id)| Ack {
                table: "person".into(),
                id: *id,
                version: 10 + index as u64,
                kept: None,
            })
            .collect();
        store
            .apply_response(&in_flight.sent, &answer(acks, vec![], vec![]), None)
            .unwrap();

        for (index, id) in ids.iter().enumerate() {
            let record = store.get("person", *id).unwrap();
            assert_eq!(record.base_version, Some(10 + index as u64));
            let expected = (index == 1).then_some(ChangeOp::Update);
            assert_eq!(record.pending, expected, "row {}", names[index]);
        }
        let next = batch_of(&store);
        assert_eq!(
            next.sent.len(),
            1,
            "only the row edited in flight is sent again"
        );
        assert_eq!(next.sent[0].change.id, ids[1]);
        assert_eq!(next.sent[0].change.base_version, Some(11));
        assert_eq!(store.status().unwrap().pending, 1);
    }

    #[test]
    fn a_row_deleted_while_its_insert_is_in_flight_is_deleted_on_the_server_next() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Jane"})))
            .unwrap()
            .id;
        let in_flight = batch_of(&store);
        store.delete("person", id).unwrap();
        let ack = Ack {
            table: "person".into(),
            id,
            version: 3,
            kept: None,
        };
        store
            .apply_response(&in_flight.sent, &answer(vec![ack], vec![], vec![]), None)
            .unwrap();
        let next = batch_of(&store);
        assert_eq!(next.sent.len(), 1, "the delete must reach the server");
        assert_eq!(next.sent[0].change.op, ChangeOp::Delete);
        assert_eq!(next.sent[0].change.base_version, Some(3));
    }

    #[test]
    fn a_lost_conflict_replaces_the_row_unless_it_was_edited_again() {
        let (_dir, store) = store();
        let kept = store
            .insert("person", fields(json!({"name": "Kept"})))
            .unwrap()
            .id;
        let lost = store
            .insert("person", fields(json!({"name": "Lost"})))
            .unwrap()
            .id;
        let in_flight = batch_of(&store);
        store
            .update("person", kept, fields(json!({"age": 1})))
            .unwrap();
        let server_row = |name: &str| ServerRow {
            version: 4,
            deleted: false,
            fields: Some(fields(json!({"name": name}))),
        };
        let conflict = |id: RowId, name: &str| Conflict {
            table: "person".into(),
            id,
            kind: ConflictKind::ClientInsertedExisting,
            client_row: None,
            server_row: Some(server_row(name)),
            resolution: Resolution::ServerWins,
            outcome: Some(server_row(name)),
            conflicting_fields: vec!["name".into()],
        };
        let counts = store
            .apply_response(
                &in_flight.sent,
                &answer(
                    vec![],
                    vec![conflict(kept, "Server K"), conflict(lost, "Server L")],
                    vec![],
                ),
                None,
            )
            .unwrap();
        assert_eq!(counts.conflicts_detected, 2);
        assert_eq!(counts.downloaded, 1);
        let lost = store.get("person", lost).unwrap();
        assert_eq!(
            (lost.fields["name"].clone(), lost.pending),
            (json!("Server L"), None)
        );
        let kept = store.get("person", kept).unwrap();
        assert_eq!(
            kept.fields["name"],
            json!("Kept"),
            "the newer local edit survives"
        );
        assert_eq!(kept.pending, Some(ChangeOp::Insert));
        assert_eq!(store.conflict_history(10).unwrap().len(), 2);
    }

    #[test]
    fn a_clean_row_keeps_no_copy_of_its_values_and_its_first_edit_pushes_them_as_base() {
        let (dir, store) = store();
        let id = RowId::now_v7();
        let pulled = ServerChange {
            table: "person".into(),
            id,
            row: ServerRow {
                version: 3,
                deleted: false,
                fields: Some(fields(json!({"name": "Jane", "age": 5}))),
            },
        };
        store
            .apply_response(&[], &answer(vec![], vec![], vec![pulled]), None)
            .unwrap();
        let base_data = |store: &LocalStore| -> Option<String> {
            store
                .lock()
                .query_row(
                    "SELECT base_data FROM _roster_rows WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .unwrap()
                .flatten()
        };
        assert_eq!(base_data(&store), None);
        let before = store.get("person", id).unwrap().fields;
        store
            .update("person", id, fields(json!({"age": 6})))
            .unwrap();
        store
            .update("person", id, fields(json!({"age": 7})))
            .unwrap();
        let batch = batch_of(&store);
        assert_eq!(batch.sent[0].change.op, ChangeOp::Update);
        assert_eq!(batch.sent[0].change.base_version, Some(3));
        assert_eq!(
            batch.sent[0].change.base_fields.as_ref(),
            Some(&before),
            "the values before the first edit, not after it"
        );
        let ack = Ack {
            table: "person".into(),
            id,
            version: 8,
            kept: None,
        };
        store
            .apply_response(&batch.sent, &answer(vec![ack], vec![], vec![]), None)
            .unwrap();
        let record = store.get("person", id).unwrap();
        assert_eq!((record.pending, record.base_version), (None, Some(8)));
        assert_eq!(base_data(&store), None);

        // A store written before format 3 kept a copy for clean rows, in a `_roster_rows`
        // entry of every row (before format 8): opening it drops the copy and the entry,
        // and keeps the version.
        store
            .lock()
            .execute_batch(&format!(
                "ALTER TABLE person DROP COLUMN _roster_version;
                 INSERT INTO _roster_rows (tbl, id, base_version, base_data, pending, local_rev)
                 VALUES ('person', '{id}', 8, '{{}}', NULL, 2);
                 PRAGMA user_version = 2"
            ))
            .unwrap();
        drop(store);
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(base_data(&store), None);
        let record = store.get("person", id).unwrap();
        assert_eq!((record.pending, record.base_version), (None, Some(8)));
        assert_eq!(record.fields["age"], json!(7));
    }

    #[test]
    fn a_rebase_turns_rows_from_after_the_restore_point_into_inserts_and_keeps_older_ones() {
        let (_dir, store) = store();
        let pulled = |version: u64| ServerChange {
            table: "person".into(),
            id: RowId::now_v7(),
            row: ServerRow {
                version,
                deleted: false,
                fields: Some(fields(json!({"name": format!("v{version}")}))),
            },
        };
        let rows = [
            pulled(3),
            pulled(6),
            pulled(7),
            pulled(8),
            pulled(2),
            pulled(5),
        ];
        let ids: Vec<RowId> = rows.iter().map(|r| r.id).collect();
        store
            .apply_response(&[], &answer(vec![], vec![], rows.to_vec()), None)
            .unwrap();
        // Two deletes acknowledged: one before the restore point, one after it.
        store.delete("person", ids[4]).unwrap();
        store.delete("person", ids[5]).unwrap();
        let deletes = batch_of(&store);
        let ack = |id: RowId, version: u64| Ack {
            table: "person".into(),
            id,
            version,
            kept: None,
        };
        store
            .apply_response(
                &deletes.sent,
                &answer(vec![ack(ids[4], 4), ack(ids[5], 9)], vec![], vec![]),
                None,
            )
            .unwrap();
        assert!(batch_of(&store).sent.is_empty());
        store
            .update("person", ids[2], fields(json!({"name": "edited"})))
            .unwrap();
        store.delete("person", ids[3]).unwrap();

        let rev = store
            .rebase_after_restore(Rebase {
                epoch: 42,
                restored_at: 4,
            })
            .unwrap();
        assert_eq!(store.watermark().unwrap(), 0);
        assert_eq!(store.server_epoch().unwrap(), Some(42));
        assert_eq!(rev, store.edit_counter().unwrap());
        let sent: HashMap<RowId, (ChangeOp, Option<u64>, Option<Value>)> = batch_of(&store)
            .sent
            .into_iter()
            .map(|s| {
                let c = s.change;
                let name = c.fields.and_then(|f| f.get("name").cloned());
                (c.id, (c.op, c.base_version, name))
            })
            .collect();
        assert!(
            !sent.contains_key(&ids[0]),
            "based before the restore: clean"
        );
        assert_eq!(sent[&ids[1]], (ChangeOp::Insert, None, Some(json!("v6"))));
        assert_eq!(
            sent[&ids[2]],
            (ChangeOp::Insert, None, Some(json!("edited"))),
            "a pending edit of a lost row is pushed whole"
        );
        assert_eq!(sent[&ids[3]].0, ChangeOp::Delete, "a pending delete stays");
        assert_eq!(
            sent[&ids[5]],
            (ChangeOp::Delete, Some(9), None),
            "a delete acknowledged after the restore point is pushed again"
        );
        assert!(
            !sent.contains_key(&ids[4]),
            "a delete the backup holds is not"
        );
        assert_eq!(sent.len(), 4);
    }

    #[test]
    fn pulled_changes_do_not_overwrite_pending_edits() {
        let (_dir, store) = store();
        let id = store
            .insert("person", fields(json!({"name": "Mine"})))
            .unwrap()
            .id;
        let pulled = ServerChange {
            table: "person".into(),
            id,
            row: ServerRow {
                version: 2,
                deleted: false,
                fields: Some(fields(json!({"name": "Theirs"}))),
            },
        };
        let counts = store
            .apply_response(&[], &answer(vec![], vec![], vec![pulled]), None)
            .unwrap();
        assert_eq!(counts.downloaded, 0);
        assert_eq!(
            store.get("person", id).unwrap().fields["name"],
            json!("Mine")
        );
    }

    #[test]
    fn a_change_for_an_unknown_table_is_refused_and_the_watermark_stays() {
        let (_dir, store) = store();
        let pulled = ServerChange {
            table: "pets".into(),
            id: RowId::now_v7(),
            row: ServerRow {
                version: 1,
                deleted: true,
                fields: None,
            },
        };
        let result = store.apply_response(&[], &answer(vec![], vec![], vec![pulled]), None);
        assert!(matches!(result, Err(ClientError::SchemaMismatch(t)) if t == "pets"));
        assert_eq!(store.watermark().unwrap(), 0);
    }
}
