//! Conflicts the server deferred to this client, and the choices that resolve them.
//!
//! A deferred conflict keeps the local edit in its user table (visible, not pushed) and
//! stores the server's row and the common base beside it. A choice rewrites the local row
//! and rebases it on the server's version, so the next sync pushes it cleanly, unless the
//! server row changed again in between, which makes a new conflict rather than a silent
//! overwrite.

use roster_protocol::{Conflict, ConflictKind, Fields, RowId, ServerRow};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rows::{json_text, next_rev, parse_fields, set_base};
use super::{LocalStore, now_ms, parse_id, sql};
use crate::ClientError;

/// A conflict waiting for a choice: the local row, the server's row and their base, side
/// by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenConflict {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// What collided.
    pub kind: ConflictKind,
    /// This device's row (`None` when it was deleted here).
    pub local: Option<Fields>,
    /// The server's row (`None` when deleted or gone there).
    pub remote: Option<Fields>,
    /// The server's version (`None` when the server has no row at all).
    pub remote_version: Option<u64>,
    /// The row both sides started from (`None` for inserts and unknown bases).
    pub base: Option<Fields>,
    /// Columns where the local and the server's row differ (both rows live).
    pub differing_fields: Vec<String>,
    /// When this device learned of it (Unix ms).
    pub detected_at_ms: i64,
}

/// What a person (or a client handler) chose for an open conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "choice", content = "fields", rename_all = "snake_case")]
pub enum Choice {
    /// Keep this device's row (or its delete) and push it over the server's.
    KeepMine,
    /// Take the server's row (or its delete).
    KeepTheirs,
    /// This complete row, typically picked field by field.
    Merge(Fields),
}

impl Choice {
    /// The choice's name in the conflict history.
    fn history_name(&self) -> &'static str {
        match self {
            Choice::KeepMine => "kept_mine",
            Choice::KeepTheirs => "kept_theirs",
            Choice::Merge(_) => "merged",
        }
    }
}

/// Decides deferred conflicts in code: the programmatic counterpart of the UI. Return
/// `None` to leave a conflict for a person.
pub trait DeviceConflictHandler: Send + Sync {
    /// Chooses for one conflict, or defers it to a person.
    fn decide(&self, conflict: &OpenConflict) -> Option<Choice>;
}

/// Columns where two live rows differ, in schema order.
fn differing(schema: &roster_protocol::TableSchema, a: &Fields, b: &Fields) -> Vec<String> {
    schema
        .columns
        .iter()
        .filter(|c| {
            a.get(&c.name).unwrap_or(&Value::Null) != b.get(&c.name).unwrap_or(&Value::Null)
        })
        .map(|c| c.name.clone())
        .collect()
}

/// `fields` with every column of `schema` it lacks given its default (else null): a
/// side of a conflict recorded before the store followed a newer schema shows the new
/// columns as the server holds them for a row written before they existed.
fn with_every_column(schema: &roster_protocol::TableSchema, mut fields: Fields) -> Fields {
    for column in &schema.columns {
        if !fields.contains_key(&column.name) {
            let value = column.default.clone().unwrap_or(Value::Null);
            fields.insert(column.name.clone(), value);
        }
    }
    fields
}

fn open_conflict(
    tx: &Transaction<'_>,
    store: &LocalStore,
    table: &str,
    id: RowId,
) -> Result<Option<OpenConflict>, ClientError> {
    let stored = tx
        .prepare_cached(
            "SELECT kind, remote, base, detected_at_ms FROM _roster_open_conflicts
             WHERE tbl = ?1 AND id = ?2",
        )?
        .query_row(params![table, id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((kind, remote, base, detected_at_ms)) = stored else {
        return Ok(None);
    };
    let schemas = store.schema();
    let schema = schemas.table(table)?;
    let kind: ConflictKind = serde_json::from_value(Value::String(kind))
        .map_err(|e| ClientError::Corrupt(format!("conflict kind: {e}")))?;
    let remote: Option<ServerRow> = remote
        .map(|t| serde_json::from_str(&t).map_err(|e| ClientError::Corrupt(e.to_string())))
        .transpose()?;
    let local = sql::read_row(tx, schema, id)?;
    let remote_fields = remote
        .as_ref()
        .filter(|r| !r.deleted)
        .and_then(|r| r.fields.clone())
        .map(|fields| with_every_column(schema, fields));
    let differing_fields = match (&local, &remote_fields) {
        (Some(l), Some(r)) => differing(schema, l, r),
        _ => Vec::new(),
    };
    Ok(Some(OpenConflict {
        table: table.to_owned(),
        id,
        kind,
        local,
        remote: remote_fields,
        remote_version: remote.as_ref().map(|r| r.version),
        base: parse_fields(base)?.map(|fields| with_every_column(schema, fields)),
        differing_fields,
        detected_at_ms,
    }))
}

impl LocalStore {
    /// Records a deferred conflict (replacing an older one for the same row) and returns
    /// it as a person would see it.
    pub(crate) fn store_open_conflict(
        &self,
        tx: &Transaction<'_>,
        conflict: &Conflict,
        base: Option<&Fields>,
    ) -> Result<OpenConflict, ClientError> {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO _roster_open_conflicts
             (tbl, id, kind, remote, base, conflicting_fields, detected_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            conflict.table,
            conflict.id.to_string(),
            conflict.kind.as_str(),
            conflict.outcome.as_ref().map(json_text).transpose()?,
            base.map(json_text).transpose()?,
            json_text(&conflict.conflicting_fields)?,
            now_ms(),
        ])?;
        open_conflict(tx, self, &conflict.table, conflict.id)?
            .ok_or_else(|| ClientError::Corrupt(format!("conflict on {} vanished", conflict.id)))
    }

    /// Every conflict waiting for a choice, oldest first.
    pub fn open_conflicts(&self) -> Result<Vec<OpenConflict>, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let keys: Vec<(String, String)> = tx
            .prepare("SELECT tbl, id FROM _roster_open_conflicts ORDER BY detected_at_ms, id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for (table, id) in keys {
            if let Some(conflict) = open_conflict(&tx, self, &table, parse_id(&id)?)? {
                out.push(conflict);
            }
        }
        Ok(out)
    }

    /// Resolves an open conflict locally; the next sync pushes the result.
    pub fn resolve_conflict(
        &self,
        table: &str,
        id: RowId,
        choice: Choice,
    ) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        self.apply_choice(&tx, table, id, &choice)?;
        // A row that left this device's slice while it waited goes once the choice
        // leaves nothing to push (the server's side kept).
        super::slice::forget_marked_clean(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Carries out `choice` on the open conflict of row `id` inside `tx`.
    pub(crate) fn apply_choice(
        &self,
        tx: &Transaction<'_>,
        table: &str,
        id: RowId,
        choice: &Choice,
    ) -> Result<(), ClientError> {
        let schemas = self.schema();
        let schema = schemas.table(table)?;
        let conflict = open_conflict(tx, self, table, id)?
            .ok_or_else(|| ClientError::BadInput(format!("no open conflict on {table} {id}")))?;
        let remote_version = conflict.remote_version;
        let rebase = |fields: Option<&Fields>, clean: bool| -> Result<(), ClientError> {
            match remote_version {
                Some(version) => set_base(tx, table, id, version, fields, clean),
                None => {
                    // The server has no row at all: pushing means inserting it again.
                    tx.execute(
                        "UPDATE _roster_rows SET base_version = NULL, base_data = NULL,
                         pending = CASE pending WHEN 'delete' THEN 'delete' ELSE 'insert' END
                         WHERE tbl = ?1 AND id = ?2",
                        params![table, id.to_string()],
                    )?;
                    Ok(())
                }
            }
        };
        let outcome = match choice {
            Choice::KeepTheirs => {
                match &conflict.remote {
                    Some(remote) => {
                        sql::write_row(tx, schema, id, remote)?;
                        rebase(Some(remote), true)?;
                    }
                    None => {
                        sql::delete_row(tx, table, id)?;
                        tx.execute(
                            "DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2",
                            params![table, id.to_string()],
                        )?;
                    }
                }
                conflict.remote.clone()
            }
            Choice::KeepMine | Choice::Merge(_) => {
                let row = match choice {
                    Choice::Merge(fields) => {
                        schema.validate_fields(fields)?;
                        sql::write_row(tx, schema, id, fields)?;
                        Some(fields.clone())
                    }
                    _ => conflict.local.clone(),
                };
                if row.is_none() && conflict.remote.is_none() {
                    // Deleted here and gone there: nothing left to push.
                    tx.execute(
                        "DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2",
                        params![table, id.to_string()],
                    )?;
                } else {
                    let op = if row.is_some() { "update" } else { "delete" };
                    tx.execute(
                        "UPDATE _roster_rows SET pending = ?3, local_rev = ?4, edited_at_ms = ?5
                         WHERE tbl = ?1 AND id = ?2",
                        params![table, id.to_string(), op, next_rev(tx)?, now_ms()],
                    )?;
                    rebase(conflict.remote.as_ref(), false)?;
                }
                row
            }
        };
        tx.execute(
            "DELETE FROM _roster_open_conflicts WHERE tbl = ?1 AND id = ?2",
            params![table, id.to_string()],
        )?;
        tx.prepare_cached(
            "INSERT INTO _roster_conflicts (at_ms, tbl, row_id, kind, resolution, client_row,
             server_row, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            now_ms(),
            table,
            id.to_string(),
            conflict.kind.as_str(),
            choice.history_name(),
            conflict.local.as_ref().map(json_text).transpose()?,
            conflict.remote.as_ref().map(json_text).transpose()?,
            outcome.as_ref().map(json_text).transpose()?,
        ])?;
        Ok(())
    }
}
