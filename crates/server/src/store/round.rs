//! The backend-neutral half of a sync request: planning every change with
//! [`Resolver::plan`], numbering the writes, building acks, conflicts and answers, and
//! cutting pull pages. A backend supplies the storage operations ([`RowsTx`],
//! [`ConflictLogTx`]) inside its own transaction; the rules of what gets written live here once for every backend.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use roster_protocol::{
    Ack, Change, ChangeOp, Conflict, ConflictKind, Eviction, Fields, PulledChange, Resolution,
    RollbackReport, RowId, ServerRow, SyncRequest, TableSchema,
};

use super::StoreError;
use super::answer::{self, Answer};
use crate::resolve::{Abort, Resolver, Write};
use crate::slices::Filter;

/// A pull page stops early once its rows' values add up to this many bytes, so a
/// response stays bounded in size as well as in row count.
pub const PULL_PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// How long the answer to a batch is kept for retries of it.
pub(crate) const APPLIED_BATCH_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Staged batches of a round not finished within this time are dropped by the purge.
pub(crate) const STAGED_ROUND_LIFETIME_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn decode_fields(data: Option<String>) -> Result<Option<Fields>, StoreError> {
    data.map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Decodes an optional JSON column of the conflict log.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    what: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("conflict log {what}: {e}")))
    })
    .transpose()
}

/// Decodes a snake_case enum name stored as plain text.
pub(crate) fn word_column<T: serde::de::DeserializeOwned>(
    what: &str,
    word: String,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(word))
        .map_err(|e| StoreError::Corrupt(format!("conflict log {what}: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_row_id(text: &str) -> Result<RowId, StoreError> {
    RowId::parse_str(text).map_err(|e| StoreError::Corrupt(format!("row id {text:?}: {e}")))
}

/// A stored row with who wrote it last and when its values were edited.
pub(crate) struct StoredRow {
    pub row: ServerRow,
    pub edited_at_ms: Option<i64>,
    pub updated_by: String,
}

/// One write, attributed to a client, made as a compare-and-set against the version
/// the write was planned on.
pub(crate) struct RowWrite<'a> {
    pub table: &'a str,
    pub id: RowId,
    /// The version the row must still have; `None`: the id must be unused.
    pub expected: Option<u64>,
    /// The row's new version.
    pub version: u64,
    /// The row's new values; `None` writes a tombstone.
    pub fields: Option<&'a Fields>,
    pub client: &'a str,
    pub at_ms: i64,
    pub edited_at_ms: i64,
}

impl RowWrite<'_> {
    /// Whether this write leaves a tombstone.
    pub fn deleted(&self) -> bool {
        self.fields.is_none()
    }

    /// The new values as stored (JSON text), `None` for a tombstone.
    pub fn data(&self) -> Result<Option<String>, StoreError> {
        self.fields.map(encode).transpose()
    }
}

/// The facts of one conflict beyond the wire [`Conflict`], for the log.
pub(crate) struct LogContext<'a> {
    pub client: &'a str,
    pub at_ms: i64,
    pub server_client: Option<&'a str>,
    pub base_row: Option<&'a Fields>,
}

/// The `rows` table and its counter, inside a request's transaction on one data set
/// (each backend implements it in its `rows` module).
pub(crate) trait RowsTx {
    /// The stored row, if any.
    fn load_row(&mut self, table: &str, id: RowId) -> Result<Option<StoredRow>, StoreError>;
    /// Stores `w` as a new row if its id is unused (no row, no tombstone); returns
    /// whether it did. Never overwrites.
    fn insert_row(&mut self, w: &RowWrite<'_>) -> Result<bool, StoreError>;
    /// Writes `w` over the row if it still has version `expected`; returns whether it did.
    fn update_row(&mut self, w: &RowWrite<'_>, expected: u64) -> Result<bool, StoreError>;
    /// Whether new rows are stored together ([`RowsTx::insert_rows`]: PostgreSQL, where a
    /// statement is a round trip) rather than each with [`RowsTx::insert_row`] (SQLite,
    /// in the process).
    fn inserts_together(&self) -> bool {
        false
    }
    /// Which of `keys` (table, id) no stored row uses (live or tombstone). The data set
    /// is locked, so the answer holds until commit. A backend that stores new rows
    /// together reads them at once.
    fn unused_ids<'k>(
        &mut self,
        keys: &[(&'k str, RowId)],
    ) -> Result<HashSet<(&'k str, RowId)>, StoreError> {
        let mut unused = HashSet::with_capacity(keys.len());
        for &(table, id) in keys {
            if self.load_row(table, id)?.is_none() {
                unused.insert((table, id));
            }
        }
        Ok(unused)
    }
    /// Stores `writes`, new rows, at once, and returns true. When their ids were
    /// `guessed` unused rather than read with [`RowsTx::unused_ids`], a stored row in the
    /// way of one of them stores none of them and returns false; otherwise it is a
    /// [`StoreError::ConcurrentWrite`] (the data set's lock rules it out), which rolls
    /// the request back.
    fn insert_rows(&mut self, writes: &[RowWrite<'_>], guessed: bool) -> Result<bool, StoreError> {
        let _ = guessed; // only a backend that stores rows together is asked to guess
        for w in writes {
            if !self.insert_row(w)? {
                return Err(StoreError::ConcurrentWrite {
                    table: w.table.to_owned(),
                    id: w.id.to_string(),
                });
            }
        }
        Ok(true)
    }
    /// `(newest version, purge horizon)`. In a writing transaction the data set is
    /// already locked, so no other writer can move them until commit.
    fn counter(&mut self) -> Result<(u64, u64), StoreError>;
    /// The newest stored schema version (`schema_versions`; 0 when none), read after
    /// the lock, so an administrator's migration (which locks every data set) is seen.
    fn schema_version(&mut self) -> Result<u64, StoreError>;
    /// Sets the newest version after this request's writes.
    fn bump_counter(&mut self, newest: u64) -> Result<(), StoreError>;
    /// `updated_at_ms` of the data set's newest row (highest version), if any: the write
    /// time a new write must not go below (see [`write_time`]).
    fn last_write_ms(&mut self) -> Result<Option<i64>, StoreError>;
    /// Announces `newest` to the data set's change streams once, and only if, this
    /// transaction commits (PostgreSQL: `NOTIFY` in the transaction, so every instance
    /// hears it; SQLite: published in the process after the commit).
    fn announce(&mut self, newest: u64) -> Result<(), StoreError>;
    /// Feeds the rows of `scan` in version order to `page` until it is full.
    fn pull_rows(&mut self, scan: PullScan, page: &mut PageBuilder<'_>) -> Result<(), StoreError>;
    /// The live rows of `scan` matching `filter`, in version order, at most `scan.limit`,
    /// read through the filter's index (`rows_slice_*`, see [`slice_index_name`]): the
    /// cost follows the slice, not the data set.
    fn pull_slice(
        &mut self,
        scan: PullScan,
        filter: &Filter,
    ) -> Result<Vec<FetchedRow>, StoreError>;
    /// Appends `moved` to the moves log (`slice_moves`): a write that changed a row's
    /// subscription columns or deleted it, with the values it left.
    fn record_move(&mut self, moved: &RowMove<'_>) -> Result<(), StoreError>;
    /// The moves of `scan` whose left values match `filter`, in version order, at most
    /// `scan.limit`, read through the filter's index on the moves log
    /// (`moves_slice_*`, see [`moves_index_name`]), each with the row as it is now.
    fn pull_moves(&mut self, scan: PullScan, filter: &Filter) -> Result<Vec<MovedRow>, StoreError>;
    /// The oldest watermark the moves log answers for: moves were recorded from this
    /// version on (the log came with an upgrade; 0 on a database made with it).
    fn moves_from(&mut self) -> Result<u64, StoreError>;
}

/// One entry of the moves log: the write numbered `version` changed a subscription
/// column of the row, or deleted it; `left` are the values it had in those columns.
pub(crate) struct RowMove<'a> {
    pub table: &'a str,
    pub id: RowId,
    pub version: u64,
    pub left: &'a Fields,
    pub at_ms: i64,
}

/// A move read by [`RowsTx::pull_moves`], with the row as it is now.
pub(crate) struct MovedRow {
    pub table: String,
    pub id: String,
    /// The version of the write that moved the row.
    pub version: u64,
    /// Whether the row is deleted now (or purged).
    pub deleted: bool,
    /// Its values now (`None` when deleted).
    pub data: Option<String>,
}

/// The name of the index on the moves log a subscription's filter reads (the columns'
/// left values, then the version), one per table and column list like
/// [`slice_index_name`].
pub(crate) fn moves_index_name(table: &str, columns: &[&str]) -> String {
    format!("moves_slice_{table}__{}", columns.join("__"))
}

/// The values of `columns` a write leaves, when it changes one of them or deletes the
/// row (`new` is `None`): what the moves log records. `None` when nothing moved (no
/// subscription filters the table, the row was not live, or the columns kept their
/// values).
pub(crate) fn left_values(
    columns: &[String],
    old: Option<&ServerRow>,
    new: Option<&Fields>,
) -> Option<Fields> {
    if columns.is_empty() {
        return None;
    }
    let old = old.filter(|r| !r.deleted)?.fields.as_ref()?;
    let null = serde_json::Value::Null;
    let moved = new.is_none_or(|new| {
        columns
            .iter()
            .any(|c| old.get(c).unwrap_or(&null) != new.get(c).unwrap_or(&null))
    });
    moved.then(|| {
        columns
            .iter()
            .filter_map(|c| Some((c.clone(), old.get(c)?.clone())))
            .collect()
    })
}

/// A live row read by [`RowsTx::pull_slice`].
pub(crate) struct FetchedRow {
    pub table: String,
    pub id: String,
    pub version: u64,
    pub data: Option<String>,
}

/// The name of the index a subscription's filter reads on both backends: one per table
/// and column list, so declarations filtering the same columns share it.
pub(crate) fn slice_index_name(table: &str, columns: &[&str]) -> String {
    format!("rows_slice_{table}__{}", columns.join("__"))
}

/// The `conflict_log` table, inside a request's transaction on one data set (each
/// backend implements it in its `conflict_log` module).
pub(crate) trait ConflictLogTx {
    /// Appends a conflict to the log.
    fn log_conflict(
        &mut self,
        context: &LogContext<'_>,
        conflict: &Conflict,
    ) -> Result<(), StoreError>;
}

/// Writes `w` if the row still has version `w.expected` (absent for `None`); otherwise
/// [`StoreError::ConcurrentWrite`].
fn write_row(tx: &mut (impl RowsTx + ?Sized), w: &RowWrite<'_>) -> Result<(), StoreError> {
    let written = match w.expected {
        None => tx.insert_row(w)?,
        Some(expected) => tx.update_row(w, expected)?,
    };
    if written {
        Ok(())
    } else {
        Err(StoreError::ConcurrentWrite {
            table: w.table.to_owned(),
            id: w.id.to_string(),
        })
    }
}

/// Records a move (see [`RowsTx::record_move`]).
fn record_row_move(
    tx: &mut (impl RowsTx + ?Sized),
    table: &str,
    id: RowId,
    version: u64,
    left: &Fields,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.record_move(&RowMove {
        table,
        id,
        version,
        left,
        at_ms,
    })
}

/// What applying a request's changes came to.
pub(crate) enum Applied {
    /// Every change was applied (or deliberately left alone).
    Done {
        acks: Vec<Ack>,
        conflicts: Vec<Conflict>,
        /// Rows the request answered without writing them: their stored version may
        /// lie inside the pull scan, and the answer already tells the client about them.
        /// (Every row it wrote has a version above the scan: see [`PullScan`].)
        unwritten: HashSet<(String, RowId)>,
        /// The newest version after the writes (`last_seq` when nothing was written).
        next: u64,
    },
    /// The handler rolled the round back at `change`: the caller must drop the
    /// transaction and record the rollback.
    RolledBack {
        change: Box<Change>,
        current: Option<StoredRow>,
        kind: ConflictKind,
        reason: String,
    },
}

/// `change` with every declared column its values (and base values) lack filled in from
/// `known`, the stored row's values, else the column's default (see
/// [`TableSchema::fill_missing`]): a device that was never told about a column sends
/// rows without it, and must not null it. Borrowed as is when nothing is missing.
///
/// Also returns the values given to columns the change's values lacked, for its ack.
fn completed<'c>(
    change: &'c Change,
    schema: Option<&TableSchema>,
    known: Option<&Fields>,
) -> (Cow<'c, Change>, Option<Fields>) {
    let Some(schema) = schema else {
        return (Cow::Borrowed(change), None);
    };
    let lacks = |fields: &Option<Fields>| fields.as_ref().is_some_and(|f| schema.lacks_a_column(f));
    if !lacks(&change.fields) && !lacks(&change.base_fields) {
        return (Cow::Borrowed(change), None);
    }
    let mut filled = change.clone();
    for fields in [&mut filled.fields, &mut filled.base_fields]
        .into_iter()
        .flatten()
    {
        schema.fill_missing(fields, known);
    }
    let kept = match (&change.fields, &filled.fields) {
        (Some(sent), Some(full)) => {
            let kept: Fields = full
                .iter()
                .filter(|(name, _)| !sent.contains_key(*name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            (!kept.is_empty()).then_some(kept)
        }
        _ => None,
    };
    (Cow::Owned(filled), kept)
}

/// Plans and writes every change in order, numbering writes from `last_seq + 1`.
///
/// An insert is tried before anything is read: an insert of an unused id always applies
/// cleanly ([`crate::classify::classify`] finds no conflict, so the plan would be to
/// store the client's values), and one statement tells whether the id was free. Only
/// when it was not is the stored row read and the change planned like any other.
/// An insert of a row the server holds at a version from before its restore point
/// (`restored_at`, 0 when never restored) is the device's newer state of that row: a
/// device re-based after a restore pushes the rows it holds from the lost history as
/// inserts (ids are client-made UUIDs, so no other device inserts that id). It is
/// applied as an update of the stored version (a tombstone comes back to life). Likewise
/// a delete based on a version after the restore point (the device deleted the row, or
/// replays its acknowledged delete, in the lost history) is applied as a delete of the
/// stored version. A row written after the restore is not older: the insert or delete
/// meets it as a conflict.
fn repushed_after_restore(
    change: &Change,
    current: Option<&ServerRow>,
    restored_at: u64,
) -> Option<Change> {
    let stored = current.filter(|row| row.version <= restored_at)?;
    let op = match change.op {
        ChangeOp::Insert => ChangeOp::Update,
        ChangeOp::Delete if change.base_version.is_some_and(|base| base > restored_at) => {
            ChangeOp::Delete
        }
        _ => return None,
    };
    Some(Change {
        op,
        base_version: Some(stored.version),
        base_fields: None,
        ..change.clone()
    })
}

/// A new row held back to be stored with others in one statement
/// ([`RowsTx::insert_rows`]).
struct NewRow<'c> {
    table: &'c str,
    id: RowId,
    version: u64,
    fields: Cow<'c, Fields>,
    edited_at_ms: i64,
}

/// Stores the held-back new rows, and empties the list. False: the ids were `guessed`
/// and one is in use, so nothing was stored.
fn store_new_rows(
    tx: &mut (impl RowsTx + ?Sized),
    rows: &mut Vec<NewRow<'_>>,
    client: &str,
    at_ms: i64,
    guessed: bool,
) -> Result<bool, StoreError> {
    if rows.is_empty() {
        return Ok(true);
    }
    let writes: Vec<RowWrite<'_>> = rows
        .iter()
        .map(|row| RowWrite {
            table: row.table,
            id: row.id,
            expected: None,
            version: row.version,
            fields: Some(row.fields.as_ref()),
            client,
            at_ms,
            edited_at_ms: row.edited_at_ms,
        })
        .collect();
    let stored = tx.insert_rows(&writes, guessed)?;
    rows.clear();
    Ok(stored)
}

/// How the new rows of a request that stores them together learn that their ids are
/// unused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdCheck {
    /// Not read: every insert is tried as a new row. A push of new rows is the common
    /// case (ids are made on the device), and the read cost a third of the statement
    /// that stores them. Only for a request of inserts of distinct ids, so the rows
    /// held back are the request's only write; if one meets a stored row, none is
    /// stored and the request is applied again with `Read`.
    Guess,
    /// Read first, at once ([`RowsTx::unused_ids`]).
    Read,
}

pub(crate) fn apply_changes(
    tx: &mut (impl RowsTx + ConflictLogTx + ?Sized),
    request: &SyncRequest,
    changes: &[Change],
    resolver: &Resolver,
    last_seq: u64,
    restored_at: u64,
) -> Result<Applied, StoreError> {
    apply_in_order(
        tx,
        request,
        changes,
        resolver,
        (last_seq, restored_at),
        IdCheck::Guess,
    )
}

fn apply_in_order(
    tx: &mut (impl RowsTx + ConflictLogTx + ?Sized),
    request: &SyncRequest,
    changes: &[Change],
    resolver: &Resolver,
    (last_seq, restored_at): (u64, u64),
    check: IdCheck,
) -> Result<Applied, StoreError> {
    let client = request.client_id.to_string();
    let at_ms = write_time(now_ms(), tx.last_write_ms()?);
    let mut next = last_seq;
    let mut acks = Vec::with_capacity(changes.len());
    let mut conflicts = Vec::new();
    let mut unwritten = HashSet::new();
    let inserts: Vec<(&str, RowId)> = changes
        .iter()
        .filter(|c| c.op == ChangeOp::Insert && c.fields.is_some())
        .map(|c| (c.table.as_str(), c.id))
        .collect();
    // Where the backend stores new rows together: the ids known (or guessed) unused,
    // each taken once, so a second insert of an id in the request is planned like any
    // change.
    let (mut unused, guessed) = match tx.inserts_together() && !inserts.is_empty() {
        false => (None, false),
        true => {
            // A guess only for a request of inserts of distinct ids (see `IdCheck`).
            let guess = (check == IdCheck::Guess && inserts.len() == changes.len())
                .then(|| inserts.iter().copied().collect::<HashSet<_>>())
                .filter(|ids| ids.len() == changes.len());
            match guess {
                Some(ids) => (Some(ids), true),
                None => (Some(tx.unused_ids(&inserts)?), false),
            }
        }
    };
    let mut new_rows = Vec::new();
    for sent in changes {
        let schema = resolver.table_schema(&sent.table);
        let (change, kept) = completed(sent, schema, None);
        let write = |expected, version, fields| RowWrite {
            table: &sent.table,
            id: sent.id,
            expected,
            version,
            fields,
            client: &client,
            at_ms,
            edited_at_ms: sent.edited_at_ms.unwrap_or(at_ms),
        };
        if let (ChangeOp::Insert, Some(fields)) = (change.op, &change.fields) {
            let stored = match unused.as_mut() {
                Some(unused) => {
                    let free = unused.remove(&(sent.table.as_str(), sent.id));
                    if free {
                        // The values as sent are borrowed; filled in, they are copied.
                        let fields = match (&change, &sent.fields) {
                            (Cow::Borrowed(_), Some(sent_fields)) => Cow::Borrowed(sent_fields),
                            _ => Cow::Owned(fields.clone()),
                        };
                        new_rows.push(NewRow {
                            table: &sent.table,
                            id: sent.id,
                            version: next + 1,
                            fields,
                            edited_at_ms: sent.edited_at_ms.unwrap_or(at_ms),
                        });
                    }
                    free
                }
                None => tx.insert_row(&write(None, next + 1, Some(fields)))?,
            };
            if stored {
                next += 1;
                acks.push(Ack {
                    table: change.table.clone(),
                    id: change.id,
                    version: next,
                    kept,
                });
                continue;
            }
        }
        // The new rows held back are stored before anything else is read or written,
        // so the writes happen in the request's order.
        // invariant: a guess holds back every change, so this runs only with ids read.
        store_new_rows(tx, &mut new_rows, &client, at_ms, false)?;
        let current = tx.load_row(&change.table, change.id)?;
        let current_row = current.as_ref().map(|c| &c.row);
        // Columns the device does not know keep their stored values.
        let (filled, kept) = completed(sent, schema, current_row.and_then(|r| r.fields.as_ref()));
        let repushed = repushed_after_restore(filled.as_ref(), current_row, restored_at);
        let change = repushed.as_ref().unwrap_or(filled.as_ref());
        let edited_at = current.as_ref().and_then(|c| c.edited_at_ms);
        let decision = match resolver.plan(change, current_row, edited_at, request.client_id) {
            Ok(decision) => decision,
            Err(Abort::Rollback { kind, reason }) => {
                return Ok(Applied::RolledBack {
                    change: Box::new(change.clone()),
                    current,
                    kind,
                    reason,
                });
            }
            Err(Abort::InvalidMergeRow(message)) => return Err(StoreError::Handler(message)),
        };
        let expected = current_row.map(|r| r.version);
        let slice_columns = resolver.slice_columns(&change.table);
        let outcome = match decision.write {
            Write::Upsert(fields) => {
                next += 1;
                write_row(tx, &write(expected, next, Some(&fields)))?;
                if let Some(left) = left_values(slice_columns, current_row, Some(&fields)) {
                    record_row_move(tx, &change.table, change.id, next, &left, at_ms)?;
                }
                Some(ServerRow {
                    version: next,
                    deleted: false,
                    fields: Some(fields),
                })
            }
            Write::Tombstone => {
                next += 1;
                write_row(tx, &write(expected, next, None))?;
                if let Some(left) = left_values(slice_columns, current_row, None) {
                    record_row_move(tx, &change.table, change.id, next, &left, at_ms)?;
                }
                Some(ServerRow {
                    version: next,
                    deleted: true,
                    fields: None,
                })
            }
            Write::Nothing => {
                unwritten.insert((change.table.clone(), change.id));
                current_row.cloned()
            }
        };
        match decision.conflict {
            None => acks.push(Ack {
                table: change.table.clone(),
                id: change.id,
                version: outcome.as_ref().map_or(0, |r| r.version),
                kept,
            }),
            Some(planned) => {
                let conflict = Conflict {
                    table: change.table.clone(),
                    id: change.id,
                    kind: planned.kind,
                    client_row: change.fields.clone(),
                    server_row: current_row.cloned(),
                    resolution: planned.resolution,
                    outcome,
                    conflicting_fields: planned.conflicting_fields,
                };
                let context = LogContext {
                    client: &client,
                    at_ms,
                    server_client: current.as_ref().map(|c| c.updated_by.as_str()),
                    base_row: change.base_fields.as_ref(),
                };
                tx.log_conflict(&context, &conflict)?;
                tracing::info!(table = %conflict.table, id = %conflict.id,
                    kind = %conflict.kind, resolution = conflict.resolution.as_str(),
                    client = %client, "conflict resolved");
                conflicts.push(conflict);
            }
        }
    }
    if !store_new_rows(tx, &mut new_rows, &client, at_ms, guessed)? {
        // A guessed id was in use and nothing was written: read the ids this time.
        let counters = (last_seq, restored_at);
        return apply_in_order(tx, request, changes, resolver, counters, IdCheck::Read);
    }
    Ok(Applied::Done {
        acks,
        conflicts,
        unwritten,
        next,
    })
}

/// The write time (`updated_at_ms`) of a request's writes: the clock, but never below the
/// data set's newest write. Writers of a data set hold its lock until they commit, so
/// with this rule `updated_at_ms` never goes backwards in commit order, whatever the
/// clocks of several instances say: a reader asking for rows with `updatedAt >= T`
/// (the table protocol's incremental pull) cannot miss a row committed after it read.
pub(crate) fn write_time(clock_ms: i64, last_write_ms: Option<i64>) -> i64 {
    last_write_ms.map_or(clock_ms, |last| clock_ms.max(last))
}

/// Refuses a watermark below the purge horizon or above the newest change.
pub(crate) fn check_watermark(since: u64, newest: u64, horizon: u64) -> Result<(), StoreError> {
    if since > newest || (since > 0 && since < horizon) {
        Err(StoreError::ResetRequired {
            since,
            horizon,
            newest,
        })
    } else {
        Ok(())
    }
}

/// Fails when a round changes one row twice (its staged batches plus the final one).
pub(crate) fn check_round_unique(changes: &[Change], round_id: &str) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(changes.len());
    for change in changes {
        if !seen.insert((change.table.as_str(), change.id)) {
            return Err(StoreError::Invalid(format!(
                "row {}/{} is changed twice in round {round_id}",
                change.table, change.id
            )));
        }
    }
    Ok(())
}

/// Whether a retry of `request` could apply something twice: it carries changes, or it
/// ends a round whose staged changes it applies.
pub(crate) fn is_idempotent_write(request: &SyncRequest) -> bool {
    request.batch_id.is_some() && (!request.changes.is_empty() || request.round.is_some())
}

/// The answer to a staged (non-final) batch of an atomic round.
pub(crate) fn staged_response(request: &SyncRequest, newest: u64) -> Answer {
    Answer {
        evicted: Vec::new(),
        acks: Vec::new(),
        conflicts: Vec::new(),
        changes: Vec::new(),
        watermark: request.since,
        has_more: newest > request.since,
        newest,
        staged: true,
        schema_version: 0,
        rollback: None,
        epoch: 0,
        rebase: None,
    }
}

/// The logged conflict and the answer of a round rolled back at `change`.
pub(crate) fn rollback_outcome(
    request: &SyncRequest,
    change: &Change,
    current: Option<&StoredRow>,
    kind: ConflictKind,
    reason: String,
    newest: u64,
) -> (Conflict, Answer) {
    let conflict = Conflict {
        table: change.table.clone(),
        id: change.id,
        kind,
        client_row: change.fields.clone(),
        server_row: current.map(|c| c.row.clone()),
        resolution: Resolution::Rollback,
        outcome: current.map(|c| c.row.clone()),
        conflicting_fields: Vec::new(),
    };
    let response = Answer {
        evicted: Vec::new(),
        acks: Vec::new(),
        conflicts: Vec::new(),
        changes: Vec::new(),
        watermark: request.since,
        has_more: newest > request.since,
        newest,
        staged: false,
        schema_version: 0,
        rollback: Some(RollbackReport {
            table: change.table.clone(),
            id: change.id,
            kind,
            reason,
        }),
        epoch: 0,
        rebase: None,
    };
    (conflict, response)
}

/// Which changes a pull page reads: versions in `(since, upto]`, at most `limit` of
/// them, in a data set whose newest version is `newest`.
///
/// For a request that wrote, `upto` is the newest version *before* its writes: every
/// version in `(upto, newest]` was written by this request under the write lock and is
/// answered as an ack or a conflict, so reading those rows back would only send the
/// client its own changes again. For a read, `upto == newest`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PullScan {
    pub since: u64,
    pub upto: u64,
    pub newest: u64,
    pub limit: u32,
}

impl PullScan {
    /// The scan of a request that only reads.
    pub(crate) fn read(since: u64, limit: u32, newest: u64) -> Self {
        Self {
            since,
            upto: newest,
            newest,
            limit,
        }
    }
}

/// Collects one pull page from rows read in version order within a [`PullScan`],
/// skipping rows the request answered without writing and stopping at about
/// [`PULL_PAGE_MAX_BYTES`].
pub(crate) struct PageBuilder<'a> {
    scan: PullScan,
    skip: &'a HashSet<(String, RowId)>,
    /// A fetch through the slice's indexes read everything only up to this version.
    cut: Option<u64>,
    changes: Vec<PulledChange>,
    evicted: Vec<Eviction>,
    scanned: u32,
    bytes: usize,
    last: u64,
    full: bool,
}

impl<'a> PageBuilder<'a> {
    pub(crate) fn new(scan: PullScan, skip: &'a HashSet<(String, RowId)>) -> Self {
        Self {
            scan,
            skip,
            cut: None,
            changes: Vec::new(),
            evicted: Vec::new(),
            scanned: 0,
            bytes: 0,
            last: scan.since,
            full: false,
        }
    }

    /// The same builder for rows fetched through a slice's indexes, which read every
    /// matching row only up to `cut` (a later page goes on from there).
    pub(crate) fn with_cut(mut self, cut: u64) -> Self {
        self.cut = (cut < self.scan.upto).then_some(cut);
        self
    }

    /// Adds the next row; returns `false` once the page is full (stop reading).
    pub(crate) fn push(
        &mut self,
        table: String,
        id_text: &str,
        version: u64,
        deleted: bool,
        data: Option<String>,
    ) -> Result<bool, StoreError> {
        if self.bytes >= PULL_PAGE_MAX_BYTES {
            self.full = true;
            return Ok(false);
        }
        self.scanned += 1;
        let id = parse_row_id(id_text)?;
        self.last = version;
        let key = (table, id);
        if !self.skip.is_empty() && self.skip.contains(&key) {
            return Ok(true);
        }
        let (table, id) = key;
        self.bytes += data.as_ref().map_or(0, String::len) + table.len() + 64;
        self.changes
            .push(answer::stored(table, id, version, deleted, data)?);
        Ok(true)
    }

    /// Adds an eviction of a row that left the device's slice at `version` (a move);
    /// returns `false` once the page is full (stop reading).
    pub(crate) fn evict(
        &mut self,
        table: String,
        id_text: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        if self.bytes >= PULL_PAGE_MAX_BYTES {
            self.full = true;
            return Ok(false);
        }
        self.scanned += 1;
        let id = parse_row_id(id_text)?;
        self.last = version;
        let key = (table, id);
        if !self.skip.is_empty() && self.skip.contains(&key) {
            return Ok(true);
        }
        let (table, id) = key;
        self.bytes += table.len() + 64;
        self.evicted.push(Eviction { table, id, version });
        Ok(true)
    }

    /// How many rows and moves the page has taken so far (at most the scan's limit).
    pub(crate) fn scanned(&self) -> u32 {
        self.scanned
    }

    /// The page, the new watermark and whether more changes wait.
    pub(crate) fn finish(self) -> Page {
        let newest = self.scan.newest;
        let (watermark, has_more) = if self.full {
            (self.last, true)
        } else if self.scanned < self.scan.limit {
            match self.cut {
                // The slice's fetch stopped at `cut`: the next page goes on from there.
                Some(cut) => (cut, true),
                // The scan ran out: nothing else in (since, upto], and what lies above
                // `upto` is this request's own writes.
                None => (newest, false),
            }
        } else {
            (self.last, self.last < newest)
        };
        Page {
            changes: self.changes,
            watermark,
            has_more,
            evicted: self.evicted,
        }
    }

    /// An empty page for `limit == 0`, when no rows need reading.
    pub(crate) fn nothing(scan: PullScan) -> Page {
        Page {
            changes: Vec::new(),
            watermark: scan.since,
            has_more: scan.newest > scan.since,
            evicted: Vec::new(),
        }
    }
}

/// One pull page: the rows, the rows evicted from the device's slice, the new watermark
/// and whether more changes wait.
pub(crate) struct Page {
    pub changes: Vec<PulledChange>,
    pub watermark: u64,
    pub has_more: bool,
    pub evicted: Vec<Eviction>,
}

/// The answer to an applied request.
pub(crate) fn applied_response(
    acks: Vec<Ack>,
    conflicts: Vec<Conflict>,
    page: Page,
    next: u64,
) -> Answer {
    let Page {
        changes,
        watermark,
        has_more,
        evicted,
    } = page;
    Answer {
        evicted,
        acks,
        conflicts,
        changes,
        watermark,
        has_more,
        newest: next,
        staged: false,
        schema_version: 0,
        rollback: None,
        epoch: 0,
        rebase: None,
    }
}
