//! The pieces of a sync round, for the benchmark's phase split only (feature
//! `bench-internals`; not part of the stable API): the round's state machine and the
//! local steps it asks for, so a benchmark can drive the same round as
//! [`crate::SyncClient::sync`] one step at a time and time each step alone.

pub use crate::round::{
    ApplyCounts, Batch, CollectSpec, Event, Received, RoundParams, RoundState, SentChange, Step,
};
use crate::{ClientError, LocalStore};

/// The store's edit counter: a round pushes edits numbered up to it.
pub fn edit_counter(store: &LocalStore) -> Result<i64, ClientError> {
    store.edit_counter()
}

/// Carries out [`Step::Collect`] (and a step's `collect_ahead`).
pub fn collect_batch(store: &LocalStore, spec: &CollectSpec) -> Result<Batch, ClientError> {
    store.collect_batch(spec)
}

/// Carries out a step's `apply` (`round_done: false`) or [`Step::ApplyLast`] (`true`),
/// without a conflict handler.
pub fn apply_answer(
    store: &LocalStore,
    received: &Received,
    round_done: bool,
) -> Result<ApplyCounts, ClientError> {
    store.apply_answer(&received.sent, &received.response, None, round_done)
}

/// Carries out [`Step::Reset`].
pub fn reset_for_full_pull(store: &LocalStore) -> Result<(), ClientError> {
    store.reset_for_full_pull()
}

/// Records that a sync round completed now, as the last answer of a round does (the
/// queries benchmark measures the store as it is after a first sync).
pub fn mark_synced(store: &LocalStore) -> Result<(), ClientError> {
    store.mark_synced()
}
