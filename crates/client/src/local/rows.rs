//! Helpers on one row's sync metadata and on the JSON stored beside it, shared by the
//! local writes (`records`), conflict choices (`conflicts`) and applying answers
//! (`apply`). They depend on nothing else in `local`, so those three modules do not
//! depend on each other in a circle.
//!
//! Where a row's sync metadata lives (store format 8):
//! * a row with a pending change (or waiting for a conflict choice) has an entry in
//!   `_roster_rows`, the outbox: its base version and base values, the pending op, its
//!   edit number and edit time;
//! * a clean row has no entry: its base version is the `_roster_version` column of its
//!   user table row ([`sql::VERSION_COLUMN`]), written with the row by a pull or when an
//!   ack leaves it clean. A pulled row is so one insert, like a plain insert of the row.
//!
//! invariant: a row's base version is its `_roster_rows` entry's while it has one, else
//! its user row's `_roster_version`; [`row_meta`] is the one reader of that rule, and a
//! local write may leave `_roster_version` stale (`INSERT OR REPLACE` clears it) only
//! while the outbox entry holds the base.
//!
//! invariant: every `_roster_rows` entry has a pending op; a row that becomes clean
//! loses its entry ([`set_clean`]).

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

/// The row's pending op and edit number: `Some((None, 0))` for a clean row the store
/// holds, `None` for a row it does not hold at all.
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
    match state {
        Some((op, rev)) => Ok(Some((op.as_deref().map(parse_op).transpose()?, rev))),
        None if sql::row_exists(tx, table, id)? => Ok(Some((None, 0))),
        None => Ok(None),
    }
}

/// A row's pending op (`None` when clean) and base version (`None` before the server
/// acknowledged it).
pub(crate) type RowMeta = (Option<ChangeOp>, Option<u64>);

/// The row's pending op and base version (see the module's rule), `None` when the store
/// does not hold the row.
pub(crate) fn row_meta(
    conn: &Connection,
    table: &str,
    id: RowId,
) -> Result<Option<RowMeta>, ClientError> {
    let entry = conn
        .prepare_cached(
            "SELECT pending, base_version FROM _roster_rows WHERE tbl = ?1 AND id = ?2",
        )?
        .query_row(params![table, id.to_string()], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    let version = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    match entry {
        Some((op, base)) => Ok(Some((
            op.as_deref().map(parse_op).transpose()?,
            version(base),
        ))),
        None => Ok(sql::read_version(conn, table, id)?.map(|base| (None, version(base)))),
    }
}

/// Records that the server holds `fields` at `version` as the row's base. When `clean`,
/// the row has no pending change any more (see [`set_clean`]; its values are its base);
/// otherwise the base values are stored in its outbox entry, and a pending insert
/// becomes an update (the server now has the row) while other pending ops stay.
pub(crate) fn set_base(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: u64,
    fields: Option<&Fields>,
    clean: bool,
) -> Result<(), ClientError> {
    if clean {
        return set_clean(tx, table, id, version);
    }
    let data = fields.map(json_text).transpose()?;
    tx.prepare_cached(
        "UPDATE _roster_rows SET base_version = ?3, base_data = ?4,
           pending = CASE pending WHEN 'insert' THEN 'update' ELSE pending END
         WHERE tbl = ?1 AND id = ?2",
    )?
    .execute(params![
        table,
        id.to_string(),
        sql::db_version(version),
        data
    ])?;
    Ok(())
}

/// The row is clean at the server's `version`: its outbox entry goes, and its user row
/// (if it has one) records the version.
pub(crate) fn set_clean(
    tx: &Transaction<'_>,
    table: &str,
    id: RowId,
    version: u64,
) -> Result<(), ClientError> {
    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
        .execute(params![table, id.to_string()])?;
    sql::set_version(tx, table, id, version)
}

pub(crate) fn forget_row(tx: &Transaction<'_>, table: &str, id: RowId) -> Result<(), ClientError> {
    sql::delete_row(tx, table, id)?;
    tx.prepare_cached("DELETE FROM _roster_rows WHERE tbl = ?1 AND id = ?2")?
        .execute(params![table, id.to_string()])?;
    Ok(())
}
