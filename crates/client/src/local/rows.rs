//! Helpers on one row's sync metadata (`_roster_rows`) and on the JSON stored beside it,
//! shared by the local writes (`records`), conflict choices (`conflicts`) and applying
//! answers (`apply`). They depend on nothing else in `local`, so those three modules do
//! not depend on each other in a circle.

use roster_protocol::{ChangeOp, Fields, RowId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{get_meta, parse_op, set_meta, sql};
use crate::ClientError;

pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Corrupt(e.to_string()))
}

pub(crate) fn parse_fields(text: Option<String>) -> Result<Option<Fields>, ClientError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| ClientError::Corrupt(e.to_string())))
        .transpose()
}

/// Takes the next edit number. Edit numbers order pending changes and detect edits made
/// while a sync was in flight.
pub(crate) fn next_rev(tx: &Transaction<'_>) -> Result<i64, ClientError> {
    let current: i64 = get_meta(tx, "edit_counter")?
        .map(|v| v.parse::<i64>())
        .transpose()
        .map_err(|e| ClientError::Corrupt(format!("edit counter: {e}")))?
        .unwrap_or(0);
    let next = current + 1;
    set_meta(tx, "edit_counter", &next.to_string())?;
    Ok(next)
}

/// The row's current pending op and edit number.
pub(crate) fn row_state(
    tx: &Connection,
    table: &str,
    id: RowId,
) -> Result<Option<(Option<ChangeOp>, i64)>, ClientError> {
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
/// the row has no pending change any more (and its base values are its current values,
/// so none are stored); otherwise the base values are stored, a pending insert becomes an
/// update (the server now has the row) and other pending ops stay.
pub(crate) fn set_base(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: u64,
    fields: Option<&Fields>,
    clean: bool,
) -> Result<(), ClientError> {
    let data = match clean {
        true => None,
        false => fields.map(json_text).transpose()?,
    };
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

pub(crate) fn forget_row(tx: &Transaction<'_>, table: &str, id: RowId) -> Result<(), ClientError> {
    sql::delete_row(tx, table, id)?;
    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
        .execute(params![table, id.to_string()])?;
    Ok(())
}
