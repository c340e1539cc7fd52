//! Partial sync on the device: the subscriptions it holds (a `subscriptions` entry of
//! `_roster_meta`, absent while it holds the whole data set), each with the watermark of
//! its first fetch while that is still running, the rows an answer evicts, and the
//! first fetch (backfill) of a subscription added to a device that already synced.

use roster_protocol::{Eviction, PulledChange, RowId, SliceRequest, Subscription};
use rusqlite::{Transaction, params};
use serde::{Deserialize, Serialize};

use super::rows::{forget_row, row_state};
use super::{LocalStore, get_meta, set_meta};
use crate::ClientError;

/// One subscription as the device keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HeldSubscription {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// While its first fetch runs: the watermark that fetch reached. `None`: done, its
    /// rows arrive with the device's main pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_since: Option<u64>,
}

const KEY: &str = "subscriptions";

/// The device's subscriptions; `None` while it holds the whole data set.
pub(crate) fn held(
    conn: &rusqlite::Connection,
) -> Result<Option<Vec<HeldSubscription>>, ClientError> {
    get_meta(conn, KEY)?
        .filter(|text| !text.is_empty())
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| ClientError::Corrupt(format!("stored subscriptions: {e}")))
        })
        .transpose()
}

fn store_held(
    conn: &rusqlite::Connection,
    held: Option<&[HeldSubscription]>,
) -> Result<(), ClientError> {
    let text = match held {
        Some(list) => serde_json::to_string(list)
            .map_err(|e| ClientError::Corrupt(format!("subscriptions: {e}")))?,
        None => String::new(),
    };
    set_meta(conn, KEY, &text)
}

/// Drops each evicted row unless it holds an unpushed edit. Such a row is marked
/// instead: its edit is pushed and the server's answer to it decides (an answer about the
/// row clears the mark, see [`clear_marks`]), but if it becomes clean without one (a
/// person keeps the server's side of its conflict) it is dropped then
/// ([`forget_marked_clean`]). Returns how many rows were dropped.
pub(crate) fn evict(tx: &Transaction<'_>, evicted: &[Eviction]) -> Result<u64, ClientError> {
    let mut dropped = 0;
    for eviction in evicted {
        match row_state(tx, &eviction.table, eviction.id)? {
            Some((None, _)) => {
                forget_row(tx, &eviction.table, eviction.id)?;
                dropped += 1;
            }
            Some((Some(_), _)) => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO _roster_evict_later (tbl, id) VALUES (?1, ?2)",
                )?
                .execute(params![eviction.table, eviction.id.to_string()])?;
            }
            // A row this device never held needs nothing.
            None => {}
        }
    }
    Ok(dropped)
}

/// Forgets the marks of rows the server has just answered about (an ack, a conflict or
/// a pulled version): its answer, evictions included, is the newer word on them.
pub(crate) fn clear_marks<'a>(
    tx: &Transaction<'_>,
    rows: impl Iterator<Item = (&'a str, RowId)>,
) -> Result<(), ClientError> {
    // Almost always there is no mark at all: then one read instead of a delete per row
    // of the answer (8 % of a first sync's CPU).
    let marked: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM _roster_evict_later)")?
        .query_row([], |r| r.get(0))?;
    if !marked {
        return Ok(());
    }
    let mut stmt =
        tx.prepare_cached("DELETE FROM _roster_evict_later WHERE tbl = ?1 AND id = ?2")?;
    for (table, id) in rows {
        stmt.execute(params![table, id.to_string()])?;
    }
    Ok(())
}

/// Drops the marked rows that have no pending edit any more; returns how many.
pub(crate) fn forget_marked_clean(tx: &Transaction<'_>) -> Result<u64, ClientError> {
    let marked: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT m.tbl, m.id FROM _roster_evict_later m
             WHERE NOT EXISTS (SELECT 1 FROM _roster_rows r WHERE r.tbl = m.tbl AND r.id = m.id)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut dropped = 0;
    for (table, id_text) in marked {
        let id = RowId::parse_str(&id_text)
            .map_err(|e| ClientError::Corrupt(format!("row id {id_text:?}: {e}")))?;
        if row_state(tx, &table, id)?.is_some() {
            forget_row(tx, &table, id)?;
            dropped += 1;
        }
        tx.prepare_cached("DELETE FROM _roster_evict_later WHERE tbl = ?1 AND id = ?2")?
            .execute(params![table, id_text])?;
    }
    Ok(dropped)
}

/// Ends every pending first fetch: the main pull starts again from 0 (a re-base after a
/// restore), which fetches every subscription's rows through the server's indexes.
pub(crate) fn end_backfills(tx: &Transaction<'_>) -> Result<(), ClientError> {
    let Some(mut list) = held(tx)? else {
        return Ok(());
    };
    for h in &mut list {
        h.backfill_since = None;
    }
    store_held(tx, Some(&list))
}

impl LocalStore {
    /// The subscriptions this device syncs; `None` while it holds the whole data set.
    pub fn subscriptions(&self) -> Result<Option<Vec<Subscription>>, ClientError> {
        let conn = self.lock();
        Ok(held(&conn)?.map(|list| list.into_iter().map(|h| h.subscription).collect()))
    }

    /// What a request of the main round names: every subscription (`None`: the whole
    /// data set).
    pub(crate) fn slice_request(&self) -> Result<Option<SliceRequest>, ClientError> {
        Ok(self.subscriptions()?.map(|subscriptions| SliceRequest {
            subscriptions,
            backfill: false,
        }))
    }

    /// The subscriptions whose first fetch is still to run, with where it stands.
    pub(crate) fn pending_backfills(&self) -> Result<Vec<(Subscription, u64)>, ClientError> {
        let conn = self.lock();
        Ok(held(&conn)?
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| Some((h.subscription, h.backfill_since?)))
            .collect())
    }

    /// Replaces the device's subscriptions with `list` (`None`: the whole data set).
    ///
    /// * Only additions to a device that already syncs a slice: each new one is fetched
    ///   on its own from version 0 (a backfill) before the next round; nothing else is
    ///   downloaded again.
    /// * Anything else (a removal, the first subscription of a device that held
    ///   everything, going back to everything): the clean rows are dropped and the
    ///   watermark returns to 0, so the next round fetches exactly the new slice (its
    ///   cost follows the slice). Unpushed rows stay and are pushed.
    ///
    /// Returns whether the device must fetch its slice again.
    pub(crate) fn set_subscriptions(
        &self,
        list: Option<Vec<Subscription>>,
    ) -> Result<bool, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let old = held(&tx)?;
        let watermark: u64 = get_meta(&tx, "watermark")?
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let only_added = match (&old, &list) {
            (Some(old), Some(new)) => old.iter().all(|h| new.contains(&h.subscription)),
            (None, None) => true,
            _ => false,
        };
        let refetch = !only_added && watermark > 0;
        // Every subscription whose rows the device does not hold yet is fetched on its
        // own through its index (a backfill): a new one, and all of them when the slice
        // is fetched again or for the first time (watermark 0).
        let new_held = list.map(|new| {
            new.into_iter()
                .map(|subscription| {
                    let before = old
                        .iter()
                        .flatten()
                        .find(|h| h.subscription == subscription);
                    let backfill_since = match before {
                        Some(h) if !refetch && watermark > 0 => h.backfill_since,
                        _ => Some(0),
                    };
                    HeldSubscription {
                        subscription,
                        backfill_since,
                    }
                })
                .collect::<Vec<_>>()
        });
        store_held(&tx, new_held.as_deref())?;
        tx.commit()?;
        drop(conn);
        if refetch {
            self.reset_for_full_pull()?;
        }
        Ok(refetch)
    }

    /// Applies one page of a subscription's first fetch in one transaction: its rows
    /// (unless a local edit is pending) and where the fetch stands (done when `done`).
    ///
    /// A device that has pulled nothing yet (watermark 0) starts its main pull at
    /// `newest`, the server's version when its first fetch began: the fetch brings the
    /// slice's live rows, and the main pull every change after that version (so a row
    /// that moves out of the slice while the fetch runs is still evicted), instead of
    /// scanning the data set's whole history.
    pub(crate) fn apply_backfill(
        &self,
        subscription: &Subscription,
        changes: &[PulledChange],
        watermark: u64,
        done: bool,
        newest: u64,
    ) -> Result<u64, ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let downloaded = self.apply_pulled(&tx, changes)?;
        if get_meta(&tx, "watermark")?.as_deref() == Some("0") {
            set_meta(&tx, "watermark", &newest.to_string())?;
        }
        let mut list = held(&tx)?.unwrap_or_default();
        for h in list.iter_mut().filter(|h| &h.subscription == subscription) {
            h.backfill_since = (!done).then_some(watermark);
        }
        store_held(&tx, Some(&list))?;
        tx.commit()?;
        Ok(downloaded)
    }
}
