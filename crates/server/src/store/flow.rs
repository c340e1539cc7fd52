//! The request flow, written once for every backend.
//!
//! A backend implements [`FlowStore`] (open a transaction on one data set, commit or
//! drop it) and, on its transaction type, the small SQL operations of a request, one
//! trait per table: [`RowsTx`] (rows, counter, pull scan), [`ConflictLogTx`] and
//! [`BatchesTx`] (replay cache, staged changes); together they are [`FlowTx`]. [`sync_answer`] runs a request
//! through them in the one order that is right for both backends:
//!
//! 1. begin and lock ([`Mode::Write`]: SQLite `BEGIN IMMEDIATE`, PostgreSQL
//!    `SELECT ... FOR UPDATE` on the data set's counter row, taken before anything is
//!    read), then read the counter;
//! 2. the replay check, **under that lock**: two deliveries of one batch are serialised
//!    by it, so the second always finds the first one's remembered answer (and on
//!    PostgreSQL, where deliveries may reach two instances, a unique-key race between
//!    them is impossible for the same reason);
//! 3. the watermark check (410 `reset_required`);
//! 4. the staged changes of an atomic round (a non-final batch is only staged);
//! 5. [`apply_changes`]; a handler's rollback drops the transaction and records the
//!    rollback in a new one;
//! 6. the counter bump, the pull page, remember, commit;
//! 7. once committed, what the answer did is counted ([`crate::telemetry`]).
//!
//! A request that writes nothing (no changes, no atomic round) runs in [`Mode::Read`]:
//! one snapshot, no lock, no replay check (nothing to repeat).
//!
//! **Replay cache.** Only what a replay needs is remembered ([`Remembered`]): the acks,
//! the conflicts, the rollback report and the versions that bound the pull scan. A
//! replay rebuilds the pull page from the rows as they are now (every row of the scan
//! range that changed since moved above it and is pulled next time), so a remembered
//! answer costs a few hundred bytes per change, not a whole page. Per data set the cache
//! keeps at most [`REPLAY_CACHE_MAX_ENTRIES`] answers and [`REPLAY_CACHE_MAX_BYTES`],
//! the oldest evicted first, and every answer for [`APPLIED_BATCH_LIFETIME_MS`].
//!
//! [`APPLIED_BATCH_LIFETIME_MS`]: super::round::APPLIED_BATCH_LIFETIME_MS

use std::collections::{HashMap, HashSet};

use roster_protocol::{
    Ack, Change, ChangeOp, Conflict, ConflictKind, Eviction, Rebase, RollbackReport, RowId,
    SyncRequest,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::round::{
    Applied, ConflictLogTx, FetchedRow, LogContext, MovedRow, Page, PageBuilder, PullScan, RowsTx,
    StoredRow, applied_response, apply_changes, check_round_unique, check_watermark, decode_fields,
    encode, is_idempotent_write, now_ms, rollback_outcome, staged_response,
};
use super::{Answer, StoreError};
use crate::resolve::Resolver;
use crate::slices::Slice;
use crate::telemetry::{self, RoundOutcome};

/// At most this many remembered answers are kept per data set; the oldest go first.
pub const REPLAY_CACHE_MAX_ENTRIES: u32 = 256;

/// At most about this many bytes of remembered answers are kept per data set; the
/// oldest go first (the newest is always kept).
pub const REPLAY_CACHE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// How a transaction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Writers of the data set are serialised from the start: SQLite `BEGIN IMMEDIATE`,
    /// PostgreSQL `READ COMMITTED` after locking the data set's counter row.
    Write,
    /// One consistent snapshot, no lock (SQLite deferred, PostgreSQL `REPEATABLE READ`
    /// read-only).
    Read,
}

/// What a transaction's body decided.
pub(crate) enum Finish<R> {
    /// Commit, then return the value.
    Commit(R),
    /// Drop the transaction (nothing it did stays), then return the value.
    Discard(R),
}

/// The server's epoch as a request sees it (see [`crate::store::SyncStore::begin_new_epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    /// The epoch: a random number, new after each restore.
    pub(crate) id: u64,
    /// The newest version of the data set when the database was restored (0: never).
    pub(crate) restored_at: u64,
}

/// A backend: opens transactions scoped to one data set.
pub(crate) trait FlowStore {
    /// The server's epoch and the data set's restore point.
    fn epoch(&self, dataset: &str) -> Result<Epoch, StoreError>;

    /// Runs `body` in a new transaction on `dataset` begun in `mode`, then commits or
    /// drops it as the body decided. An error drops it.
    fn transact<R>(
        &self,
        dataset: &str,
        mode: Mode,
        body: impl FnOnce(&mut dyn FlowTx) -> Result<Finish<R>, StoreError>,
    ) -> Result<R, StoreError>;
}

/// The batch tables (`applied_batches`, `staged_changes`), inside a request's
/// transaction on one data set (each backend implements it in its `batches` module).
pub(crate) trait BatchesTx {
    /// The remembered answer text for this client's batch, if any.
    fn replayed(&mut self, client: &str, batch: &str) -> Result<Option<String>, StoreError>;
    /// Remembers `answer` for this client's batch (replacing an older one), then evicts
    /// the data set's oldest answers beyond [`REPLAY_CACHE_MAX_ENTRIES`] and
    /// [`REPLAY_CACHE_MAX_BYTES`].
    fn remember(&mut self, client: &str, batch: &str, answer: &str) -> Result<(), StoreError>;
    /// The staged changes of a round (encoded), in order.
    fn staged(&mut self, round: &str) -> Result<Vec<String>, StoreError>;
    /// Appends changes (encoded) to a round's staged changes.
    fn stage(&mut self, round: &str, client: &str, changes: &[String]) -> Result<(), StoreError>;
    /// Forgets a round's staged changes.
    fn drop_staged(&mut self, round: &str) -> Result<(), StoreError>;
}

/// Everything a request needs, inside one transaction on one data set: a backend's
/// transaction type implements the three table traits, each in its table's module, and
/// gets this one. Every statement is scoped to that data set (except SQLite's counter,
/// which is global).
pub(crate) trait FlowTx: RowsTx + ConflictLogTx + BatchesTx {}

impl<T: RowsTx + ConflictLogTx + BatchesTx> FlowTx for T {}

/// What a replay needs to answer a retried batch again: the pull page is rebuilt.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Remembered {
    acks: Vec<Ack>,
    conflicts: Vec<Conflict>,
    /// The pull scan's upper bound: the newest version before the batch's writes.
    upto: u64,
    /// The newest version after them.
    newest: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    staged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback: Option<RollbackReport>,
}

/// Applies `request` to `dataset`, its pull answered for `slice` (see
/// [`super::SyncStore::sync_answer_in`]). A request from another epoch (the database was
/// restored from a backup since the client's last answer) applies nothing and is
/// answered with [`Rebase`]; every other answer carries the epoch.
pub(crate) fn sync_answer(
    store: &impl FlowStore,
    dataset: &str,
    request: &SyncRequest,
    resolver: &Resolver,
    slice: Option<&Slice>,
) -> Result<Answer, StoreError> {
    let epoch = store.epoch(dataset)?;
    if request.epoch.is_some_and(|e| e != epoch.id) {
        tracing::info!(client = %request.client_id, epoch = epoch.id, restored_at = epoch.restored_at,
            "a device from before the restore: asking it to re-base");
        return Ok(Answer {
            acks: Vec::new(),
            conflicts: Vec::new(),
            changes: Vec::new(),
            watermark: request.since,
            has_more: false,
            newest: 0,
            staged: false,
            rollback: None,
            epoch: epoch.id,
            rebase: Some(Rebase {
                epoch: epoch.id,
                restored_at: epoch.restored_at,
            }),
            // Set by the HTTP layer, which knows the schema it serves.
            schema_version: 0,
            evicted: Vec::new(),
        });
    }
    let mut answer = answer_in_epoch(store, dataset, request, resolver, slice, epoch.restored_at)?;
    answer.epoch = epoch.id;
    Ok(answer)
}

/// [`sync_answer`] for a request of the server's epoch.
fn answer_in_epoch(
    store: &impl FlowStore,
    dataset: &str,
    request: &SyncRequest,
    resolver: &Resolver,
    slice: Option<&Slice>,
    restored_at: u64,
) -> Result<Answer, StoreError> {
    let atomic_round = request.round.filter(|_| resolver.atomic_rounds());
    if let Some(round) = atomic_round.filter(|r| !r.final_batch) {
        return stage(store, dataset, request, &round.id.to_string(), resolver);
    }
    if request.changes.is_empty() && atomic_round.is_none() {
        return read_only(store, dataset, request, slice, resolver);
    }
    let round_id = atomic_round.map(|r| r.id.to_string());
    let outcome = store.transact(dataset, Mode::Write, |tx| {
        let (last_seq, horizon) = tx.counter()?;
        check_schema(tx, resolver)?;
        if let Some(answer) = replay(tx, request, horizon, slice)? {
            tracing::info!(batch = ?request.batch_id, "repeated the answer to a retried batch");
            return Ok(Finish::Commit(Ok((answer, Delivery::Replayed))));
        }
        check_watermark(request.since, last_seq, horizon)?;
        let staged;
        let changes: &[Change] = match &round_id {
            Some(round_id) => {
                staged = round_changes(tx, request, round_id)?;
                &staged
            }
            None => &request.changes,
        };
        let (acks, conflicts, unwritten, next) =
            match apply_changes(tx, request, changes, resolver, last_seq, restored_at)? {
                Applied::Done {
                    acks,
                    conflicts,
                    unwritten,
                    next,
                } => (acks, conflicts, unwritten, next),
                Applied::RolledBack {
                    change,
                    current,
                    kind,
                    reason,
                } => return Ok(Finish::Discard(Err((change, current, kind, reason)))),
            };
        if next != last_seq {
            tx.bump_counter(next)?;
            tx.announce(next)?;
        }
        let scan = PullScan {
            since: request.since,
            upto: last_seq,
            newest: next,
            limit: request.pull_limit,
        };
        let mut page = pull_page(tx, scan, &unwritten, slice)?;
        page.evicted
            .extend(own_evictions(slice, changes, &acks, &conflicts));
        let remembered = Remembered {
            acks,
            conflicts,
            upto: last_seq,
            newest: next,
            staged: false,
            rollback: None,
        };
        remember(tx, request, &remembered, !changes.is_empty())?;
        let Remembered {
            acks, conflicts, ..
        } = remembered;
        Ok(Finish::Commit(Ok((
            applied_response(acks, conflicts, page, next),
            Delivery::First,
        ))))
    })?;
    match outcome {
        Ok((answer, delivery)) => {
            count_committed(request, &answer, delivery);
            Ok(answer)
        }
        Err((change, current, kind, reason)) => {
            let answer = roll_back(store, dataset, request, &change, current, kind, reason)?;
            telemetry::round_finished(RoundOutcome::RolledBack);
            Ok(answer)
        }
    }
}

/// Refuses a request checked against an older schema than the newest stored one (see
/// [`StoreError::SchemaChanged`]): its rows would be written, or pulled, in another
/// shape than the schema version its answer names. Rules of an unversioned schema
/// (version 0, tests) skip the check.
fn check_schema(tx: &mut dyn FlowTx, resolver: &Resolver) -> Result<(), StoreError> {
    let serving = resolver.schema_version();
    if serving == 0 {
        return Ok(());
    }
    let stored = tx.schema_version()?;
    if stored > serving {
        return Err(StoreError::SchemaChanged { serving, stored });
    }
    Ok(())
}

/// Whether an answer was given for the first time or repeated for a retried batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    First,
    Replayed,
}

/// Counts what a committed answer did (see [`crate::telemetry`]): the rows it sends
/// always; its changes, conflicts and the end of its round only the first time (a
/// replay applies nothing).
fn count_committed(request: &SyncRequest, answer: &Answer, delivery: Delivery) {
    if delivery == Delivery::Replayed {
        telemetry::request_applied(0, &[], answer.changes.len());
        return;
    }
    telemetry::request_applied(answer.acks.len(), &answer.conflicts, answer.changes.len());
    if request.round.is_some_and(|round| round.final_batch) {
        telemetry::round_finished(RoundOutcome::Completed);
    }
}

/// A request that writes nothing: one snapshot, no lock.
fn read_only(
    store: &impl FlowStore,
    dataset: &str,
    request: &SyncRequest,
    slice: Option<&Slice>,
    resolver: &Resolver,
) -> Result<Answer, StoreError> {
    let answer = store.transact(dataset, Mode::Read, |tx| {
        let (last_seq, horizon) = tx.counter()?;
        check_schema(tx, resolver)?;
        // A backfill fetches live rows only: purged tombstones cannot be missing from it.
        let horizon = if slice.is_some_and(|s| s.backfill) {
            0
        } else {
            horizon
        };
        check_watermark(request.since, last_seq, horizon)?;
        let scan = PullScan::read(request.since, request.pull_limit, last_seq);
        let page = pull_page(tx, scan, &HashSet::new(), slice)?;
        Ok(Finish::Commit(applied_response(
            Vec::new(),
            Vec::new(),
            page,
            last_seq,
        )))
    })?;
    count_committed(request, &answer, Delivery::First);
    Ok(answer)
}

/// Stores a non-final batch of an atomic round; nothing is applied yet.
fn stage(
    store: &impl FlowStore,
    dataset: &str,
    request: &SyncRequest,
    round_id: &str,
    resolver: &Resolver,
) -> Result<Answer, StoreError> {
    store.transact(dataset, Mode::Write, |tx| {
        let (newest, horizon) = tx.counter()?;
        check_schema(tx, resolver)?;
        if let Some(answer) = replay(tx, request, horizon, None)? {
            return Ok(Finish::Commit(answer));
        }
        let encoded = request
            .changes
            .iter()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()?;
        tx.stage(round_id, &request.client_id.to_string(), &encoded)?;
        let remembered = Remembered {
            acks: Vec::new(),
            conflicts: Vec::new(),
            upto: newest,
            newest,
            staged: true,
            rollback: None,
        };
        remember(tx, request, &remembered, !request.changes.is_empty())?;
        Ok(Finish::Commit(staged_response(request, newest)))
    })
}

/// Undoes a round: the transaction that applied it was dropped; this forgets its
/// staged batches and logs the conflict that caused it, in a transaction of its own.
fn roll_back(
    store: &impl FlowStore,
    dataset: &str,
    request: &SyncRequest,
    change: &Change,
    current: Option<StoredRow>,
    kind: ConflictKind,
    reason: String,
) -> Result<Answer, StoreError> {
    store.transact(dataset, Mode::Write, |tx| {
        let (newest, _) = tx.counter()?;
        if let Some(round) = &request.round {
            tx.drop_staged(&round.id.to_string())?;
        }
        let (conflict, response) = rollback_outcome(
            request,
            change,
            current.as_ref(),
            kind,
            reason.clone(),
            newest,
        );
        let client = request.client_id.to_string();
        let context = LogContext {
            client: &client,
            at_ms: now_ms(),
            server_client: current.as_ref().map(|c| c.updated_by.as_str()),
            base_row: change.base_fields.as_ref(),
        };
        tx.log_conflict(&context, &conflict)?;
        tracing::info!(table = %change.table, id = %change.id, kind = %kind, %reason,
            client = %client, "sync round rolled back by the conflict handler");
        let remembered = Remembered {
            acks: Vec::new(),
            conflicts: Vec::new(),
            upto: newest,
            newest,
            staged: false,
            rollback: response.rollback.clone(),
        };
        remember(tx, request, &remembered, true)?;
        Ok(Finish::Commit(response))
    })
}

/// The changes a final batch applies: the round's staged batches, then its own. The
/// staged ones are forgotten (in this transaction).
fn round_changes(
    tx: &mut dyn FlowTx,
    request: &SyncRequest,
    round_id: &str,
) -> Result<Vec<Change>, StoreError> {
    let mut changes = tx
        .staged(round_id)?
        .iter()
        .map(|text| serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<Vec<Change>, _>>()?;
    changes.extend(request.changes.iter().cloned());
    check_round_unique(&changes, round_id)?;
    tx.drop_staged(round_id)?;
    Ok(changes)
}

/// One pull page of `scan` for `slice` (`None`: the whole data set), skipping `skip`
/// (see [`PageBuilder`]). A full device's page scans the data set's changes after its
/// watermark; a slice's page is read through its subscriptions' indexes
/// ([`fetch_page`]), so its cost follows the slice.
fn pull_page(
    tx: &mut dyn FlowTx,
    scan: PullScan,
    skip: &HashSet<(String, RowId)>,
    slice: Option<&Slice>,
) -> Result<Page, StoreError> {
    if scan.limit == 0 {
        return Ok(PageBuilder::nothing(scan));
    }
    if let Some(slice) = slice {
        return fetch_page(tx, scan, slice, skip);
    }
    let mut page = PageBuilder::new(scan, skip);
    tx.pull_rows(scan, &mut page)?;
    Ok(page.finish())
}

/// What a slice's page is merged from: a live row in the slice, or a move out of it.
enum SliceEntry {
    Row(FetchedRow),
    Moved(MovedRow),
}

impl SliceEntry {
    fn version(&self) -> u64 {
        match self {
            Self::Row(row) => row.version,
            Self::Moved(moved) => moved.version,
        }
    }
}

/// One page of `slice` in `scan`, read through each subscription's indexes:
///
/// * the live rows matching it with a version in the scan ([`RowsTx::pull_slice`]);
/// * unless this is a first fetch (watermark 0, or a backfill: the device holds none of
///   these rows), the moves out of it in the scan ([`RowsTx::pull_moves`]: a write that
///   changed a matching row's subscription columns or deleted it). Each becomes an
///   [`Eviction`], or a tombstone when the row is deleted now, unless the row is in the
///   slice now (then it is one of the rows, here or in a later page).
///
/// Every source reads at most `scan.limit` entries in version order; the page holds the
/// merged entries up to the lowest last version of a source that filled its limit (the
/// `cut`), so nothing below the new watermark is left out. A watermark from before the
/// moves log existed is refused (410): the device fetches its slice again.
fn fetch_page(
    tx: &mut dyn FlowTx,
    scan: PullScan,
    slice: &Slice,
    skip: &HashSet<(String, RowId)>,
) -> Result<Page, StoreError> {
    let first_fetch = slice.backfill || scan.since == 0;
    if !first_fetch {
        let moves_from = tx.moves_from()?;
        if scan.since < moves_from {
            return Err(StoreError::ResetRequired {
                since: scan.since,
                horizon: moves_from,
                newest: scan.newest,
            });
        }
    }
    let limit = usize::try_from(scan.limit).unwrap_or(usize::MAX);
    let mut entries = Vec::new();
    let mut cut = scan.upto;
    for filter in &slice.filters {
        let rows = tx.pull_slice(scan, filter)?;
        if rows.len() >= limit
            && let Some(last) = rows.last()
        {
            cut = cut.min(last.version);
        }
        entries.extend(rows.into_iter().map(SliceEntry::Row));
        if !first_fetch {
            let moves = tx.pull_moves(scan, filter)?;
            if moves.len() >= limit
                && let Some(last) = moves.last()
            {
                cut = cut.min(last.version);
            }
            entries.extend(moves.into_iter().map(SliceEntry::Moved));
        }
    }
    entries.sort_by_key(SliceEntry::version);
    entries.retain(|e| e.version() <= cut);
    let mut page = PageBuilder::new(scan, skip).with_cut(cut);
    // A row matching two subscriptions comes twice, a row moved twice has two moves.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for entry in entries {
        if page.scanned() >= scan.limit {
            break;
        }
        let more = match entry {
            SliceEntry::Row(row) => {
                if !seen.insert((row.table.clone(), row.id.clone())) {
                    continue;
                }
                page.push(row.table, &row.id, row.version, false, row.data)?
            }
            SliceEntry::Moved(moved) => {
                let now = match moved.data.filter(|_| !moved.deleted) {
                    Some(text) => decode_fields(Some(text))?,
                    None => None,
                };
                if now
                    .as_ref()
                    .is_some_and(|fields| slice.matches(&moved.table, fields))
                {
                    continue;
                }
                if !seen.insert((moved.table.clone(), moved.id.clone())) {
                    continue;
                }
                match now {
                    Some(_) => page.evict(moved.table, &moved.id, moved.version)?,
                    None => page.push(moved.table, &moved.id, moved.version, true, None)?,
                }
            }
        };
        if !more {
            break;
        }
    }
    Ok(page.finish())
}

/// The rows this request wrote (or resolved) that end outside `slice`: the device drops
/// them once acknowledged (its own edit moved the row out, or it created one outside).
/// Deletes need none: an acknowledged delete forgets the row anyway.
fn own_evictions(
    slice: Option<&Slice>,
    changes: &[Change],
    acks: &[Ack],
    conflicts: &[Conflict],
) -> Vec<Eviction> {
    let Some(slice) = slice else {
        return Vec::new();
    };
    let sent: HashMap<(&str, RowId), &Change> = changes
        .iter()
        .map(|c| ((c.table.as_str(), c.id), c))
        .collect();
    let acked = acks.iter().filter_map(|ack| {
        let change = sent.get(&(ack.table.as_str(), ack.id))?;
        let fields = change
            .fields
            .as_ref()
            .filter(|_| change.op != ChangeOp::Delete)?;
        (!slice.matches(&ack.table, fields)).then(|| Eviction {
            table: ack.table.clone(),
            id: ack.id,
            version: ack.version,
        })
    });
    let resolved = conflicts.iter().filter_map(|conflict| {
        let outcome = conflict.outcome.as_ref().filter(|o| !o.deleted)?;
        let fields = outcome.fields.as_ref()?;
        (!slice.matches(&conflict.table, fields)).then(|| Eviction {
            table: conflict.table.clone(),
            id: conflict.id,
            version: outcome.version,
        })
    });
    acked.chain(resolved).collect()
}

/// The batch id under which `request`'s answer is remembered, when a retry of it could
/// apply something twice.
fn replay_key(request: &SyncRequest) -> Option<(String, Uuid)> {
    request
        .batch_id
        .filter(|_| is_idempotent_write(request))
        .map(|batch| (request.client_id.to_string(), batch))
}

/// Keeps what a replay of `request` needs when it wrote something (`wrote`); an answer
/// that changed nothing is not kept: repeating such a batch is harmless.
fn remember(
    tx: &mut dyn FlowTx,
    request: &SyncRequest,
    remembered: &Remembered,
    wrote: bool,
) -> Result<(), StoreError> {
    match request.batch_id.filter(|_| wrote) {
        Some(batch) => tx.remember(
            &request.client_id.to_string(),
            &batch.to_string(),
            &encode(remembered)?,
        ),
        None => Ok(()),
    }
}

/// The answer first given to this client's batch with the same id, if any, its pull
/// page rebuilt from the rows as they are now. `horizon` is the purge horizon: a page
/// that may have lost purged tombstones is refused (410) rather than rebuilt.
fn replay(
    tx: &mut dyn FlowTx,
    request: &SyncRequest,
    horizon: u64,
    slice: Option<&Slice>,
) -> Result<Option<Answer>, StoreError> {
    let Some((client, batch)) = replay_key(request) else {
        return Ok(None);
    };
    let Some(text) = tx.replayed(&client, &batch.to_string())? else {
        return Ok(None);
    };
    let remembered: Remembered = match serde_json::from_str(&text) {
        Ok(remembered) => remembered,
        // Kept by a server from before the replay cache was trimmed: the whole answer.
        Err(_) => {
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("remembered answer: {e}")));
        }
    };
    if remembered.staged {
        return Ok(Some(staged_response(request, remembered.newest)));
    }
    if let Some(report) = remembered.rollback {
        return Ok(Some(Answer {
            evicted: Vec::new(),
            acks: Vec::new(),
            conflicts: Vec::new(),
            changes: Vec::new(),
            watermark: request.since,
            has_more: remembered.newest > request.since,
            newest: remembered.newest,
            staged: false,
            schema_version: 0,
            rollback: Some(report),
            epoch: 0,
            rebase: None,
        }));
    }
    check_watermark(request.since, remembered.newest, horizon)?;
    // Rows the batch wrote have versions above `upto`, outside the scan; rows it answered
    // without writing are skipped as in the first answer.
    let skip: HashSet<(String, RowId)> = remembered
        .acks
        .iter()
        .map(|a| (a.table.clone(), a.id))
        .chain(remembered.conflicts.iter().map(|c| (c.table.clone(), c.id)))
        .collect();
    let scan = PullScan {
        since: request.since,
        upto: remembered.upto,
        newest: remembered.newest,
        limit: request.pull_limit,
    };
    let mut page = pull_page(tx, scan, &skip, slice)?;
    page.evicted.extend(own_evictions(
        slice,
        &request.changes,
        &remembered.acks,
        &remembered.conflicts,
    ));
    Ok(Some(applied_response(
        remembered.acks,
        remembered.conflicts,
        page,
        remembered.newest,
    )))
}

/// The request flow over SQLite in memory: no network, no disk.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roster_protocol::{ChangeOp, Resolution, RoundInfo};
    use serde_json::json;

    use super::*;
    use crate::config::ServerConfig;
    use crate::resolve::{ConflictContext, HandlerDecision, ServerConflictHandler};
    use crate::store::SyncStore;
    use crate::store::fixtures::{DS, insert, request, update};
    use crate::store::round::PULL_PAGE_MAX_BYTES;
    use crate::store::sqlite::SqliteStore;

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
    }

    fn plain() -> Resolver {
        Resolver::new(&ServerConfig::default())
    }

    struct Decide(HandlerDecision);

    impl ServerConflictHandler for Decide {
        fn resolve(&self, _: &ConflictContext<'_>) -> Option<HandlerDecision> {
            Some(self.0.clone())
        }
    }

    fn with_handler(decision: HandlerDecision) -> Resolver {
        plain().with_handler(Arc::new(Decide(decision)))
    }

    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store
            .pool
            .get()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_replayed_batch_gets_its_first_answer_and_is_applied_once() {
        let store = store();
        let first_rows: Vec<Change> = (0..3).map(|i| insert(&format!("p{i}"))).collect();
        store
            .sync(DS, &request(0, first_rows, 0), &plain())
            .unwrap();
        let push = request(0, vec![insert("mine")], 100);
        let first = store.sync(DS, &push, &plain()).unwrap();
        assert_eq!(first.acks[0].version, 4);
        assert_eq!(first.changes.len(), 3, "pulls the other rows");
        let again = store.sync(DS, &push, &plain()).unwrap();
        assert_eq!(again, first, "the retry is answered as the first time");
        assert_eq!(
            count(&store, "SELECT value FROM meta WHERE key = 'last_seq'"),
            4
        );
        // Only the acks and the scan bounds are kept, not the pulled rows.
        let kept: String = store
            .pool
            .get()
            .unwrap()
            .query_row("SELECT response FROM applied_batches", [], |r| r.get(0))
            .unwrap();
        assert!(!kept.contains("p0"), "{kept}");
    }

    #[test]
    fn a_replay_rebuilds_the_page_from_the_rows_as_they_are_now() {
        let store = store();
        let row = insert("old");
        store
            .sync(DS, &request(0, vec![row.clone()], 0), &plain())
            .unwrap();
        let push = request(0, vec![insert("mine")], 100);
        let first = store.sync(DS, &push, &plain()).unwrap();
        assert_eq!(first.changes[0].row.version, 1);
        // Someone updates the pulled row: it moves above the scan and is pulled later.
        store
            .sync(DS, &request(2, vec![update(row.id, 1, "new")], 0), &plain())
            .unwrap();
        let again = store.sync(DS, &push, &plain()).unwrap();
        assert_eq!(again.acks, first.acks);
        assert!(again.changes.is_empty());
        assert_eq!((again.watermark, again.has_more), (2, false));
        let next = store.sync(DS, &request(2, vec![], 100), &plain()).unwrap();
        assert_eq!(next.changes.len(), 1);
        assert_eq!(next.changes[0].row.version, 3);
    }

    #[test]
    fn after_a_restore_an_old_epoch_is_told_to_rebase_and_repushed_rows_apply_over_older_copies() {
        let store = store();
        let (kept, rewritten, doomed) = (insert("kept"), insert("rewritten"), insert("doomed"));
        let first = store
            .sync(
                DS,
                &request(0, vec![kept.clone(), rewritten.clone(), doomed.clone()], 0),
                &plain(),
            )
            .unwrap();
        let old_epoch = first.epoch;
        assert_ne!(old_epoch, 0);
        // The restore: a new epoch, restore point 3. Then `rewritten` changes on the
        // restored server (version 4, after the restore point).
        let new_epoch = store.begin_new_epoch().unwrap();
        assert_ne!(new_epoch, old_epoch);
        store
            .sync(
                DS,
                &request(3, vec![update(rewritten.id, 2, "since")], 0),
                &plain(),
            )
            .unwrap();

        let stale = SyncRequest {
            epoch: Some(old_epoch),
            ..request(7, vec![insert("lost")], 100)
        };
        let told = store.sync(DS, &stale, &plain()).unwrap();
        assert_eq!(
            told.rebase,
            Some(Rebase {
                epoch: new_epoch,
                restored_at: 3
            })
        );
        assert!(told.acks.is_empty() && told.changes.is_empty());
        assert_eq!(store.newest_version(DS).unwrap(), 4, "nothing applied");

        // The re-based device pushes its rows from the lost history as inserts, and its
        // delete acknowledged there (version 9) again.
        let mine = |change: &Change, name: &str| Change {
            fields: json!({"name": name}).as_object().cloned(),
            ..change.clone()
        };
        let repush = SyncRequest {
            epoch: Some(new_epoch),
            ..request(
                0,
                vec![
                    mine(&kept, "kept, newer"),
                    mine(&rewritten, "lost edit"),
                    Change {
                        op: ChangeOp::Delete,
                        base_version: Some(9),
                        fields: None,
                        ..doomed.clone()
                    },
                ],
                100,
            )
        };
        let answer = store.sync(DS, &repush, &plain()).unwrap();
        assert_eq!(answer.epoch, new_epoch);
        let acked: Vec<RowId> = answer.acks.iter().map(|a| a.id).collect();
        assert_eq!(
            acked,
            vec![kept.id, doomed.id],
            "the copies from before the restore are updated and deleted"
        );
        assert_eq!(answer.conflicts.len(), 1, "the row written since meets it");
        assert_eq!(
            answer.conflicts[0].kind,
            ConflictKind::ClientInsertedExisting
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rows"),
            3,
            "no row is stored twice"
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rows WHERE deleted = 1"),
            1,
            "the delete stands"
        );
    }

    #[test]
    fn a_watermark_ahead_of_the_log_or_below_the_horizon_must_reset() {
        let store = store();
        let row = insert("gone");
        store
            .sync(DS, &request(0, vec![row.clone()], 0), &plain())
            .unwrap();
        let ahead = store.sync(DS, &request(5, vec![], 10), &plain());
        assert!(matches!(
            ahead,
            Err(StoreError::ResetRequired { since: 5, .. })
        ));
        let delete = Change {
            op: ChangeOp::Delete,
            base_version: Some(1),
            fields: None,
            ..row
        };
        store
            .sync(DS, &request(1, vec![delete], 0), &plain())
            .unwrap();
        store.purge_tombstones(i64::MAX).unwrap();
        let stale = store.sync(DS, &request(1, vec![insert("x")], 10), &plain());
        assert!(matches!(
            stale,
            Err(StoreError::ResetRequired { horizon: 2, .. })
        ));
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rows"),
            0,
            "nothing applied"
        );
    }

    #[test]
    fn staged_batches_apply_with_the_final_one_in_order() {
        let store = store();
        let resolver = with_handler(HandlerDecision::ServerWins);
        let round = Uuid::now_v7();
        let batch = |changes: Vec<Change>, final_batch: bool| SyncRequest {
            slice: None,
            round: Some(RoundInfo {
                id: round,
                final_batch,
            }),
            ..request(0, changes, 100)
        };
        let (a, b, c) = (insert("a"), insert("b"), insert("c"));
        let staged = store
            .sync(DS, &batch(vec![a.clone()], false), &resolver)
            .unwrap();
        assert!(staged.staged && staged.acks.is_empty());
        let staged_request = batch(vec![b.clone()], false);
        store.sync(DS, &staged_request, &resolver).unwrap();
        // A retried staged batch is not staged twice.
        let retried = store.sync(DS, &staged_request, &resolver).unwrap();
        assert!(retried.staged);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM staged_changes"), 2);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rows"),
            0,
            "nothing applied yet"
        );
        let done = store
            .sync(DS, &batch(vec![c.clone()], true), &resolver)
            .unwrap();
        let acked: Vec<(RowId, u64)> = done.acks.iter().map(|a| (a.id, a.version)).collect();
        assert_eq!(acked, vec![(a.id, 1), (b.id, 2), (c.id, 3)]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM staged_changes"), 0);
    }

    #[test]
    fn a_rollback_undoes_the_round_and_logs_its_conflict() {
        let store = store();
        let existing = insert("server");
        store
            .sync(DS, &request(0, vec![existing.clone()], 0), &plain())
            .unwrap();
        let resolver = with_handler(HandlerDecision::Rollback("no".into()));
        let round = Uuid::now_v7();
        let staged = SyncRequest {
            slice: None,
            round: Some(RoundInfo {
                id: round,
                final_batch: false,
            }),
            ..request(1, vec![insert("staged")], 100)
        };
        store.sync(DS, &staged, &resolver).unwrap();
        let last = SyncRequest {
            slice: None,
            round: Some(RoundInfo {
                id: round,
                final_batch: true,
            }),
            ..request(1, vec![insert("new"), update(existing.id, 0, "mine")], 100)
        };
        let answer = store.sync(DS, &last, &resolver).unwrap();
        let report = answer.rollback.clone().expect("rolled back");
        assert_eq!((report.id, report.reason.as_str()), (existing.id, "no"));
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rows"),
            1,
            "nothing applied"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM staged_changes"), 0);
        let log = store.conflict_log(DS, 10, None).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].resolution, Resolution::Rollback);
        // The retry gets the same rollback, and nothing is logged twice.
        assert_eq!(store.sync(DS, &last, &resolver).unwrap(), answer);
        assert_eq!(store.conflict_log(DS, 10, None).unwrap().len(), 1);
    }

    #[test]
    fn conflicts_are_logged_with_their_base_values() {
        let store = store();
        let row = insert("v1");
        store
            .sync(DS, &request(0, vec![row.clone()], 0), &plain())
            .unwrap();
        store
            .sync(DS, &request(1, vec![update(row.id, 1, "v2")], 0), &plain())
            .unwrap();
        // A second client still on version 1.
        let answer = store
            .sync(DS, &request(1, vec![update(row.id, 1, "v3")], 0), &plain())
            .unwrap();
        assert_eq!(answer.conflicts.len(), 1);
        let log = store.conflict_log(DS, 10, None).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].id, row.id);
        assert_eq!(
            log[0].base_row,
            json!({"name": "base"}).as_object().cloned()
        );
        assert_eq!(log[0].server_row.as_ref().map(|r| r.version), Some(2));
    }

    #[test]
    fn a_pull_page_is_cut_by_row_count_and_by_bytes() {
        let store = store();
        let rows: Vec<Change> = (0..5).map(|i| insert(&format!("p{i}"))).collect();
        store.sync(DS, &request(0, rows, 0), &plain()).unwrap();
        let page = store.sync(DS, &request(0, vec![], 2), &plain()).unwrap();
        assert_eq!(
            (page.changes.len(), page.watermark, page.has_more),
            (2, 2, true)
        );
        let rest = store.sync(DS, &request(2, vec![], 10), &plain()).unwrap();
        assert_eq!(
            (rest.changes.len(), rest.watermark, rest.has_more),
            (3, 5, false)
        );

        let big = "x".repeat(PULL_PAGE_MAX_BYTES / 3);
        let bulky: Vec<Change> = (0..4).map(|_| insert(&big)).collect();
        store.sync(DS, &request(5, bulky, 0), &plain()).unwrap();
        let cut = store.sync(DS, &request(5, vec![], 100), &plain()).unwrap();
        assert!(cut.changes.len() < 4, "{} rows", cut.changes.len());
        assert!(cut.has_more);
        assert_eq!(cut.watermark, cut.changes.last().unwrap().row.version);
    }

    #[test]
    fn the_replay_cache_keeps_a_bounded_number_of_answers_per_data_set() {
        let store = store();
        let row = insert("same");
        store
            .sync(DS, &request(0, vec![row.clone()], 0), &plain())
            .unwrap();
        let total = REPLAY_CACHE_MAX_ENTRIES + 20;
        for _ in 0..total {
            // A no-op change (the row already holds it) with a new batch id.
            store
                .sync(DS, &request(0, vec![row.clone()], 100), &plain())
                .unwrap();
        }
        store
            .sync("bob", &request(0, vec![insert("bob's")], 0), &plain())
            .unwrap();
        let kept = |ds: &str| {
            store
                .pool
                .get()
                .unwrap()
                .query_row(
                    "SELECT COUNT(*) FROM applied_batches WHERE dataset = ?1",
                    [ds],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
        };
        assert_eq!(kept(DS), i64::from(REPLAY_CACHE_MAX_ENTRIES));
        assert_eq!(kept("bob"), 1, "another data set's answers are not evicted");
    }

    /// A store and resolver with `by_city` declared, and the slice of Paris.
    fn by_city_paris() -> (SqliteStore, Resolver, Slice) {
        let def = crate::slices::SubscriptionDef {
            name: "by_city".into(),
            table: "person".into(),
            filter: std::collections::BTreeMap::from([("city".into(), ":city".into())]),
        };
        let store = store();
        store
            .ensure_slice_indexes(std::slice::from_ref(&def))
            .unwrap();
        let config = ServerConfig {
            subscriptions: vec![def],
            ..ServerConfig::default()
        };
        let slice = crate::slices::Slices::new(&config.subscriptions, &config.schema())
            .resolve(
                &[roster_protocol::Subscription {
                    name: "by_city".into(),
                    params: std::collections::BTreeMap::from([("city".into(), json!("Paris"))]),
                }],
                false,
                "ann",
            )
            .unwrap();
        (store, Resolver::new(&config), slice)
    }

    #[test]
    fn a_slice_pull_reads_its_rows_and_moves_out_of_it_not_the_data_sets_changes() {
        let (store, resolver, slice) = by_city_paris();
        let write = |change: Change| -> u64 {
            let answer = store
                .sync(DS, &request(0, vec![change], 0), &resolver)
                .unwrap();
            answer.acks[0].version
        };
        let person = |name: &str, city: &str| Change {
            fields: json!({"name": name, "city": city}).as_object().cloned(),
            ..insert(name)
        };
        let edit = |row: &Change, version: u64, city: &str| Change {
            op: ChangeOp::Update,
            base_version: Some(version),
            base_fields: None,
            fields: json!({"name": "edited", "city": city}).as_object().cloned(),
            ..row.clone()
        };
        let (left, deleted, back, lyon) = (
            person("left", "Paris"),
            person("deleted", "Paris"),
            person("back", "Paris"),
            person("lyon", "Lyon"),
        );
        let v_left = write(left.clone());
        let v_deleted = write(deleted.clone());
        let v_back = write(back.clone());
        let mut v_lyon = write(lyon.clone());
        let watermark = store.newest_version(DS).unwrap();

        // After the device's watermark: 40 edits outside the slice, one row edited out,
        // one deleted, one edited out and back in, one new row.
        for _ in 0..40 {
            v_lyon = write(edit(&lyon, v_lyon, "Lyon"));
        }
        let v_out = write(edit(&left, v_left, "Lyon"));
        write(Change {
            op: ChangeOp::Delete,
            base_version: Some(v_deleted),
            fields: None,
            ..deleted.clone()
        });
        let v_away = write(edit(&back, v_back, "Nice"));
        write(edit(&back, v_away, "Paris"));
        let new = person("new", "Paris");
        write(new.clone());
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM slice_moves"),
            4,
            "edits that keep the city record no move"
        );

        // Pages of 2: the slice's 2 rows and 3 moves, never the 40 edits around them.
        let (mut since, mut pages) = (watermark, 0);
        let (mut rows, mut evicted) = (Vec::new(), Vec::new());
        loop {
            let pull = SyncRequest {
                slice: None,
                ..request(since, vec![], 2)
            };
            let answer = crate::store::answer::decode(
                store
                    .sync_answer_in(DS, &pull, &resolver, Some(&slice))
                    .unwrap(),
            )
            .unwrap();
            pages += 1;
            rows.extend(answer.changes.iter().map(|c| (c.id, c.row.deleted)));
            evicted.extend(answer.evicted.iter().map(|e| e.id));
            since = answer.watermark;
            if !answer.has_more {
                break;
            }
        }
        rows.sort();
        let mut expected = vec![(deleted.id, true), (back.id, false), (new.id, false)];
        expected.sort();
        assert_eq!(rows, expected, "the tombstone and the rows in the slice");
        assert_eq!(evicted, vec![left.id], "moved out at version {v_out}");
        assert!(pages <= 3, "{pages} pages for 5 entries");
        assert_eq!(since, store.newest_version(DS).unwrap());

        // The moves log is purged with the tombstones, and the horizon follows it.
        store.purge_tombstones(i64::MAX).unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM slice_moves"), 0);
        let stale =
            store.sync_answer_in(DS, &request(watermark, vec![], 10), &resolver, Some(&slice));
        assert!(
            matches!(stale, Err(StoreError::ResetRequired { .. })),
            "{stale:?}"
        );
    }
}
