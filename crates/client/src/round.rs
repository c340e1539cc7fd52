//! The decisions of one sync round, as a state machine without I/O.
//!
//! [`RoundState`] decides what a round does next and learns, through [`Event`]s, what
//! happened; it never touches the network or the disk. The engine
//! ([`crate::SyncClient::sync_with_progress`]) drives it: it carries out each [`Step`]
//! (collect a batch from the local store, send a request, apply an answer, reset the
//! store) and hands the outcome back. The benchmark's phase split drives the same machine
//! one step at a time. docs/ROUND.md walks through a round step by step.
//!
//! The machine keeps the pipelining of the round: a [`Step::Send`] carries, besides the
//! request, the previous answer to apply and the next batch to collect while the request
//! is at the server. Why that is safe is in docs/ROUND.md ("Why the pipelining is
//! safe"); the rules it relies on are the `invariant:` lines below.

use roster_protocol::{
    Change, ErrorCode, PROTOCOL_VERSION, PulledResponse, Rebase, RoundInfo, SliceRequest,
    SyncRequest,
};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Most requests a round makes after its last batch of changes was answered (pull pages
/// only): 20,000 pages of the default 2,000 rows is 40 million rows. A server that keeps
/// answering `has_more` beyond that is treated as broken.
pub const MAX_PULL_REQUESTS: u32 = 20_000;

/// A change as sent, with the edit number the row had when it was read.
#[derive(Debug, Clone)]
pub struct SentChange {
    /// The change on the wire.
    pub change: Change,
    /// The row's `local_rev` when the change was collected.
    pub local_rev: i64,
}

/// Which pending changes to collect next: edit numbers in `(after, up_to]`, oldest first,
/// at most `max_changes` of them and about `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectSpec {
    /// The round's cursor: the edit number of the last change already sent.
    pub after: i64,
    /// The edit counter when the round started.
    pub up_to: i64,
    /// Most changes in the batch.
    pub max_changes: usize,
    /// About how many bytes of changes the batch holds at most.
    pub max_bytes: usize,
}

/// The next batch of pending changes, collected from the local store.
#[derive(Debug, Default)]
pub struct Batch {
    /// The changes with their edit numbers.
    pub sent: Vec<SentChange>,
    /// The round's cursor after this batch.
    pub cursor: i64,
    /// No pending change of the round is left after this batch.
    pub last: bool,
}

/// An answer to apply, with the changes it answers.
#[derive(Debug)]
pub struct Received {
    /// Every change the answer answers (those of staged batches included).
    pub sent: Vec<SentChange>,
    /// The server's answer.
    pub response: PulledResponse,
}

/// What applying one answer did locally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Rows whose local values changed because of the server (pulls, conflicts whose
    /// outcome differs from what was sent, and remote rows of deferred conflicts).
    pub downloaded: u64,
    /// Conflicts reported (automatic merges of different fields are not conflicts).
    pub conflicts_detected: u64,
    /// Conflicts the server resolved; a deferred one counts, since the server resolved
    /// it by keeping its row and handing the choice over.
    pub conflicts_resolved: u64,
    /// Deferred conflicts now waiting for a person.
    pub conflicts_deferred: u64,
    /// Deferred conflicts this client's handler chose for at once.
    pub conflicts_decided_here: u64,
    /// Concurrent updates of different fields the server merged on its own.
    pub auto_merged: u64,
    /// Rows dropped because they left the device's subscriptions (partial sync).
    pub evicted: u64,
}

/// Progress of a running round, reported after each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Requests completed so far.
    pub requests: u32,
    /// Changes pushed so far.
    pub uploaded: u64,
    /// Rows changed locally by the server so far.
    pub downloaded: u64,
    /// Watermark reached.
    pub watermark: u64,
    /// Watermark when the round started.
    pub start_watermark: u64,
    /// Newest change-log position the server reported: the pull is done when the
    /// watermark gets there.
    pub pull_target: u64,
}

/// What a completed round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// Changes pushed (acknowledged or resolved as conflicts).
    pub uploaded: u64,
    /// Rows whose local values changed because of the server (pulled, or a conflict the
    /// server won).
    pub downloaded: u64,
    /// Conflicts the server reported.
    pub conflicts_detected: u64,
    /// Conflicts the server resolved; a deferred conflict counts, since the server
    /// resolved it by keeping its row and handing the choice to this client.
    pub conflicts_resolved: u64,
    /// Deferred conflicts now waiting for a person.
    pub conflicts_deferred: u64,
    /// Deferred conflicts this client's handler chose for during the round; the choice
    /// is pushed by the next round.
    pub conflicts_decided_here: u64,
    /// Concurrent updates of different fields that the server merged on its own.
    pub auto_merged: u64,
    /// Rows dropped because they left this device's subscriptions (partial sync).
    #[serde(default)]
    pub evicted: u64,
    /// HTTP requests made.
    pub requests: u32,
    /// Wall time of the round, in milliseconds.
    pub duration_ms: u64,
    /// Watermark at the end of the round.
    pub watermark: u64,
    /// Whether the server required a full re-pull during this round.
    pub reinitialised: bool,
}

impl SyncReport {
    /// Adds what one applied answer did.
    pub(crate) fn add(&mut self, counts: ApplyCounts) {
        self.downloaded += counts.downloaded;
        self.conflicts_detected += counts.conflicts_detected;
        self.conflicts_resolved += counts.conflicts_resolved;
        self.conflicts_deferred += counts.conflicts_deferred;
        self.conflicts_decided_here += counts.conflicts_decided_here;
        self.auto_merged += counts.auto_merged;
        self.evicted += counts.evicted;
    }
}

/// What a round starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundParams {
    /// This installation's id, sent with every request.
    pub client_id: uuid::Uuid,
    /// The edit counter when the round started: later edits wait for the next round.
    pub up_to_rev: i64,
    /// The stored watermark when the round started.
    pub start_watermark: u64,
    /// Most changes per request.
    pub push_batch: usize,
    /// About how many bytes of changes one request carries at most.
    pub push_max_bytes: usize,
    /// Most server changes pulled per request.
    pub pull_limit: u32,
    /// The server epoch of the last answer applied (`None` before the first).
    pub epoch: Option<u64>,
}

/// What the driver does next.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one step per request, moved once; boxing would only add an allocation"
)]
pub enum Step {
    /// Collect the next batch (nothing else is in flight), then report
    /// [`Event::Collected`].
    Collect(CollectSpec),
    /// Send `request` (unless `sent`). While it is at the server, apply `apply` (an
    /// earlier answer, not the round's last) and then collect `collect_ahead`; a failure
    /// to collect ahead is not final (give `None`: the batch is collected again in turn).
    /// Then report [`Event::Answered`] with the request given back.
    Send {
        /// The request.
        request: SyncRequest,
        /// `request` is the pull sent on the head of the previous answer (`follow`):
        /// wait for its answer instead of sending it again.
        sent: bool,
        /// The pull to send as soon as the head of this request's answer says more
        /// changes wait after a watermark ([`roster_protocol::MORE_AFTER_HEADER`]),
        /// with `since` set to it, and to report as `followed`. Offered only where that
        /// pull is the next request unless the answer fails the round; sending it is
        /// optional, and dropping it unanswered loses nothing (it is a read).
        follow: Option<SyncRequest>,
        /// The previous answer, to apply in its own transaction with its watermark.
        apply: Option<Received>,
        /// The batch after this request's, to collect ahead.
        collect_ahead: Option<CollectSpec>,
    },
    /// The server cannot serve the watermark: drop clean rows, set the watermark to 0,
    /// then report [`Event::ResetDone`].
    Reset,
    /// The server was restored from a backup: re-base the store on it (rows from after
    /// the restore point become inserts to push again, the watermark returns to 0, the
    /// new epoch is stored), then report [`Event::Rebased`].
    Rebase(Rebase),
    /// Apply the round's last answer, recording that the round completed, then report
    /// [`Event::LastApplied`].
    ApplyLast(Received),
    /// The round is complete (the driver fills in `duration_ms`).
    Done(SyncReport),
    /// The round stops with this error; what was applied stays applied.
    Fail(ClientError),
}

/// What happened to the last [`Step`].
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one event per request, moved once; boxing would only add an allocation"
)]
pub enum Event {
    /// The batch a [`Step::Collect`] asked for.
    Collected(Result<Batch, ClientError>),
    /// A [`Step::Send`] is over.
    Answered {
        /// The request, given back (its changes are kept as the answered batch).
        request: SyncRequest,
        /// The server's answer, after the transport's retries.
        answer: Result<PulledResponse, ClientError>,
        /// What applying the step's `apply` did (`None` when there was none).
        applied: Result<Option<ApplyCounts>, ClientError>,
        /// The batch collected ahead, if one was asked for and collecting succeeded.
        ahead: Option<Batch>,
        /// The step's `follow`, as sent on the answer's head (`None` when it was not).
        followed: Option<SyncRequest>,
    },
    /// A [`Step::Reset`] is over.
    ResetDone(Result<(), ClientError>),
    /// A [`Step::Rebase`] is over: the edit counter after it (the rows to push again
    /// carry edit numbers up to it).
    Rebased(Result<i64, ClientError>),
    /// A [`Step::ApplyLast`] is over.
    LastApplied(Result<ApplyCounts, ClientError>),
}

/// The request at the server: where the cursor goes once it is answered, and the edit
/// numbers of its changes (the changes themselves travel in the request).
#[derive(Debug)]
struct InFlight {
    cursor: i64,
    final_batch: bool,
    revs: Vec<i64>,
}

/// Where a round stands; see the module documentation.
#[derive(Debug)]
pub struct RoundState {
    params: RoundParams,
    /// The device's subscriptions, named in every request (`None`: the whole data set).
    slice: Option<SliceRequest>,
    /// The round id every batch carries, so a server that can roll rounds back applies
    /// them together with the final batch.
    id: uuid::Uuid,
    /// Edit number of the last change answered.
    cursor: i64,
    /// The final batch is still to be answered.
    open: bool,
    /// Changes answered as staged, applied with the next applied answer.
    staged: Vec<SentChange>,
    /// The `since` of the next request: the watermark of the last answer received.
    since: u64,
    /// Shrunk for the rest of the round when the server finds a batch too large.
    push_batch: usize,
    push_max_bytes: usize,
    /// The next batch, collected while the previous request was at the server.
    ahead: Option<Batch>,
    /// An answer not applied yet: applied while the next request is at the server.
    unapplied: Option<Received>,
    /// Watermark of the answer handed out to apply.
    applying: Option<u64>,
    in_flight: Option<InFlight>,
    report: SyncReport,
    pull_target: u64,
    pull_requests: u32,
    progress: Option<SyncProgress>,
}

/// A driver called the machine out of turn.
fn out_of_turn(what: &str) -> Step {
    Step::Fail(ClientError::Task(format!(
        "sync round driven out of turn: {what}"
    )))
}

impl RoundState {
    /// A round about to start; [`RoundState::start`] gives its first step.
    pub fn new(params: RoundParams) -> Self {
        Self {
            params,
            slice: None,
            id: uuid::Uuid::now_v7(),
            cursor: 0,
            open: true,
            staged: Vec::new(),
            since: params.start_watermark,
            push_batch: params.push_batch.max(1),
            push_max_bytes: params.push_max_bytes.max(1),
            ahead: None,
            unapplied: None,
            applying: None,
            in_flight: None,
            report: SyncReport {
                watermark: params.start_watermark,
                ..SyncReport::default()
            },
            pull_target: params.start_watermark,
            pull_requests: 0,
            progress: None,
        }
    }

    /// The same round for a partial-sync device: every request names `slice`.
    pub fn with_slice(mut self, slice: Option<SliceRequest>) -> Self {
        self.slice = slice;
        self
    }

    /// The first step.
    pub fn start(&mut self) -> Step {
        self.next_request(None)
    }

    /// The progress to report after the last event, once.
    pub fn take_progress(&mut self) -> Option<SyncProgress> {
        self.progress.take()
    }

    /// Learns what happened to the last step and returns the next one.
    pub fn on(&mut self, event: Event) -> Step {
        match event {
            Event::Collected(Ok(batch)) => self.send(batch, None),
            Event::Collected(Err(error)) => Step::Fail(error),
            Event::Answered {
                request,
                answer,
                applied,
                ahead,
                followed,
            } => self.answered(request, answer, applied, ahead, followed),
            Event::ResetDone(Ok(())) => self.start_over(),
            Event::ResetDone(Err(error)) | Event::Rebased(Err(error)) => Step::Fail(error),
            Event::Rebased(Ok(up_to_rev)) => {
                // The rows to push again were given new edit numbers: this round pushes
                // them too.
                self.params.up_to_rev = up_to_rev.max(self.params.up_to_rev);
                self.start_over()
            }
            Event::LastApplied(Ok(counts)) => {
                let Some(watermark) = self.applying.take() else {
                    return out_of_turn("an answer applied that was not handed out");
                };
                self.report.add(counts);
                self.report.watermark = watermark;
                self.set_progress();
                Step::Done(self.report)
            }
            Event::LastApplied(Err(error)) => Step::Fail(error),
        }
    }

    /// A fresh round (new id, cursor 0) from watermark 0; the batch size stays as small
    /// as the server asked for.
    fn start_over(&mut self) -> Step {
        self.id = uuid::Uuid::now_v7();
        self.cursor = 0;
        self.open = true;
        self.staged.clear();
        self.since = 0;
        self.ahead = None;
        self.unapplied = None;
        self.next_request(None)
    }

    fn collect_spec(&self, after: i64) -> CollectSpec {
        CollectSpec {
            after,
            up_to: self.params.up_to_rev,
            max_changes: self.push_batch,
            max_bytes: self.push_max_bytes,
        }
    }

    /// The next request: a pull once the final batch was answered (the pull `sent_ahead`
    /// if it is that one), else the batch collected ahead, else a step to collect it.
    fn next_request(&mut self, sent_ahead: Option<SyncRequest>) -> Step {
        let batch = match (self.open, self.ahead.take()) {
            (false, _) => Batch {
                cursor: self.cursor,
                last: true,
                ..Batch::default()
            },
            (true, Some(batch)) => batch,
            (true, None) => return Step::Collect(self.collect_spec(self.cursor)),
        };
        self.send(batch, sent_ahead)
    }

    /// A request of this round from `since` with `changes`; `round` for a batch of the
    /// round's changes, `None` for a pull after the final batch.
    fn request(&self, since: u64, changes: Vec<Change>, round: Option<RoundInfo>) -> SyncRequest {
        SyncRequest {
            slice: self.slice.clone(),
            protocol: PROTOCOL_VERSION,
            client_id: self.params.client_id,
            since,
            changes,
            pull_limit: self.params.pull_limit,
            round,
            batch_id: Some(uuid::Uuid::now_v7()),
            epoch: self.params.epoch,
        }
    }

    /// Hands out the request of `batch`, or `sent_ahead` when it is that request.
    fn send(&mut self, batch: Batch, sent_ahead: Option<SyncRequest>) -> Step {
        if self.in_flight.is_some() {
            return out_of_turn("a second request while one is at the server");
        }
        if !self.open {
            // invariant: a round ends. Pushes are bounded by the pending changes (the
            // cursor only moves forward, a too-large batch only shrinks); pulls by this
            // count, and each page must advance the watermark (see `answered`).
            self.pull_requests += 1;
            if self.pull_requests > MAX_PULL_REQUESTS {
                return Step::Fail(ClientError::Protocol(format!(
                    "the server still has more changes after {MAX_PULL_REQUESTS} pull requests \
                     in one round; stopping"
                )));
            }
        }
        let final_batch = self.open && batch.last;
        // The changes move into the request (and back out once it is answered).
        let (changes, revs): (Vec<_>, Vec<_>) = batch
            .sent
            .into_iter()
            .map(|s| (s.change, s.local_rev))
            .unzip();
        let sent_ahead = sent_ahead.filter(|pull| !self.open && pull.since == self.since);
        let sent = sent_ahead.is_some();
        let request = match sent_ahead {
            Some(pull) => pull,
            None => {
                let round = self.open.then_some(RoundInfo {
                    id: self.id,
                    final_batch,
                });
                self.request(self.since, changes, round)
            }
        };
        // invariant: a pull is sent ahead (on the head of this request's answer) only
        // when nothing is left to push after this request, so the next request is that
        // pull unless the answer ends the round; it is taken (`sent_ahead`, above) only
        // as the pull this would make: after the final batch, from the last answer's
        // watermark.
        let follow = (!self.open || final_batch).then(|| self.request(0, Vec::new(), None));
        // invariant: the batch collected ahead holds only rows with edit numbers after
        // this batch's; applying the previous answer touches only earlier batches' rows
        // and rows without a pending change, so it is the batch collecting later would
        // find.
        let collect_ahead = (self.open && !final_batch).then(|| self.collect_spec(batch.cursor));
        // invariant: answers are applied one at a time, in request order, each with its
        // own watermark; this request's `since` is the watermark of the answer applied
        // meanwhile, read from the answer.
        let apply = self.unapplied.take();
        self.applying = apply.as_ref().map(|r| r.response.watermark);
        self.in_flight = Some(InFlight {
            cursor: batch.cursor,
            final_batch,
            revs,
        });
        Step::Send {
            request,
            sent,
            follow,
            apply,
            collect_ahead,
        }
    }

    fn answered(
        &mut self,
        mut request: SyncRequest,
        answer: Result<PulledResponse, ClientError>,
        applied: Result<Option<ApplyCounts>, ClientError>,
        ahead: Option<Batch>,
        followed: Option<SyncRequest>,
    ) -> Step {
        let Some(in_flight) = self.in_flight.take() else {
            return out_of_turn("an answer without a request");
        };
        // A failed apply ends the round after the request in flight is answered, and
        // that answer is dropped too: the rows of both batches stay pending.
        match applied {
            Ok(Some(counts)) => {
                self.report.add(counts);
                if let Some(watermark) = self.applying.take() {
                    self.report.watermark = watermark;
                }
            }
            Ok(None) => {}
            Err(error) => return Step::Fail(error),
        }
        self.ahead = ahead;
        let response = match answer {
            Err(ClientError::Server {
                code: ErrorCode::ResetRequired,
                ..
            }) if !self.report.reinitialised => {
                tracing::warn!("server cannot serve our watermark; re-pulling everything");
                self.report.reinitialised = true;
                return Step::Reset;
            }
            Err(ClientError::Server {
                code: ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge,
                ..
            }) if in_flight.revs.len() > 1 => {
                // invariant: a batch larger than the server accepts is split, not failed
                // forever; the cursor stays, so the same rows are collected again.
                self.push_batch = in_flight.revs.len() / 2;
                self.push_max_bytes = (self.push_max_bytes / 2).max(1);
                tracing::warn!(
                    push_batch = self.push_batch,
                    "the server refused a batch as too large; halving it"
                );
                self.ahead = None;
                return self.next_request(None);
            }
            Err(error) => return Step::Fail(error),
            Ok(response) => response,
        };
        if let Some(rebase) = response.rebase {
            if self.params.epoch == Some(rebase.epoch) {
                return Step::Fail(ClientError::Protocol(format!(
                    "the server asked to re-base on epoch {} again",
                    rebase.epoch
                )));
            }
            tracing::warn!(
                epoch = rebase.epoch,
                restored_at = rebase.restored_at,
                "the server was restored from a backup; re-basing"
            );
            self.params.epoch = Some(rebase.epoch);
            self.report.reinitialised = true;
            return Step::Rebase(rebase);
        }
        if let Some(rollback) = response.rollback {
            return Step::Fail(ClientError::RolledBack {
                table: rollback.table,
                id: rollback.id,
                kind: rollback.kind,
                reason: rollback.reason,
            });
        }
        if response.staged && (!self.open || in_flight.final_batch) {
            return Step::Fail(ClientError::Protocol(
                "the server staged a request that ends the round's changes".into(),
            ));
        }
        if !response.staged && response.has_more && response.watermark <= self.since {
            // invariant: every page that announces more changes advances the watermark.
            return Step::Fail(ClientError::Protocol(format!(
                "the server announced more changes but did not advance the watermark \
                 (since {}, answered {})",
                self.since, response.watermark
            )));
        }
        self.report.requests += 1;
        self.report.uploaded += in_flight.revs.len() as u64;
        self.cursor = in_flight.cursor;
        self.staged.extend(
            std::mem::take(&mut request.changes)
                .into_iter()
                .zip(in_flight.revs)
                .map(|(change, local_rev)| SentChange { change, local_rev }),
        );
        if in_flight.final_batch {
            self.open = false;
        }
        self.pull_target = response.newest;
        if !response.staged {
            self.since = response.watermark;
            let done = !self.open && !response.has_more;
            let received = Received {
                sent: std::mem::take(&mut self.staged),
                response,
            };
            if done {
                self.applying = Some(received.response.watermark);
                return Step::ApplyLast(received);
            }
            self.unapplied = Some(received);
        }
        self.set_progress();
        if !self.open && self.unapplied.is_none() {
            return Step::Done(self.report);
        }
        self.next_request(followed)
    }

    fn set_progress(&mut self) {
        self.progress = Some(SyncProgress {
            requests: self.report.requests,
            uploaded: self.report.uploaded,
            downloaded: self.report.downloaded,
            watermark: self.since,
            start_watermark: self.params.start_watermark,
            pull_target: self.pull_target,
        });
    }
}

#[cfg(test)]
mod tests {
    //! One case is one line: the events fed in, in a small notation, and the steps that
    //! come out, rendered as text. Events:
    //! * `c3` / `c3.`: the batch asked for holds 3 changes (`.`: and it is the round's last);
    //! * `ok5` / `ok5+`: the answer moves the watermark to 5 (`+`: the server has more),
    //!   then `>2` / `>2.` for the batch collected ahead; `stg` staged; `e413`, `e410`,
    //!   `e500` the server's errors; `rb` a rollback; `xa` applying the previous answer
    //!   failed;
    //! * `reset`, `last`: the reset or the last apply went well.
    use roster_protocol::{ChangeOp, ConflictKind, RollbackReport, RowId};

    use super::*;

    const PARAMS: RoundParams = RoundParams {
        client_id: uuid::Uuid::nil(),
        up_to_rev: 100,
        start_watermark: 0,
        push_batch: 4,
        push_max_bytes: 1 << 20,
        pull_limit: 10,
        epoch: None,
    };

    fn batch(after: i64, n: usize, last: bool) -> Batch {
        let sent: Vec<SentChange> = (1..=n as i64)
            .map(|i| SentChange {
                change: Change {
                    table: "person".into(),
                    id: RowId::now_v7(),
                    op: ChangeOp::Insert,
                    base_version: None,
                    fields: None,
                    base_fields: None,
                    edited_at_ms: None,
                },
                local_rev: after + i,
            })
            .collect();
        Batch {
            cursor: after + n as i64,
            sent,
            last,
        }
    }

    fn answer(watermark: u64, has_more: bool, staged: bool) -> PulledResponse {
        PulledResponse {
            evicted: Vec::new(),
            acks: Vec::new(),
            conflicts: Vec::new(),
            changes: Vec::new(),
            watermark,
            has_more,
            newest: watermark + u64::from(has_more),
            staged,
            schema_version: 0,
            rollback: None,
            epoch: 0,
            rebase: None,
        }
    }

    fn server_error(status: u16, code: ErrorCode) -> ClientError {
        ClientError::Server {
            status,
            code,
            message: String::new(),
        }
    }

    /// `c3` / `c3.` as (changes, last).
    fn parse_batch(token: &str) -> (usize, bool) {
        let last = token.ends_with('.');
        let n = token.trim_start_matches('c').trim_end_matches('.');
        (n.parse().unwrap(), last)
    }

    fn render(step: &Step) -> String {
        match step {
            Step::Collect(spec) => format!("collect@{}/{}", spec.after, spec.max_changes),
            Step::Send {
                request,
                sent,
                follow,
                apply,
                collect_ahead,
            } => {
                let mut text = format!("send{}@{}", request.changes.len(), request.since);
                if *sent {
                    text.push_str(" sent");
                }
                match request.round {
                    None => text.push_str(" pull"),
                    Some(RoundInfo {
                        final_batch: true, ..
                    }) => text.push_str(" final"),
                    Some(_) => {}
                }
                if let Some(received) = apply {
                    text.push_str(&format!(" apply{}", received.response.watermark));
                }
                if let Some(spec) = collect_ahead {
                    text.push_str(&format!(" ahead@{}", spec.after));
                }
                if follow.is_some() {
                    text.push_str(" follow");
                }
                text
            }
            Step::Reset => "reset".into(),
            Step::Rebase(rebase) => format!("rebase@{}", rebase.restored_at),
            Step::ApplyLast(received) => format!(
                "last{}/{}",
                received.response.watermark,
                received.sent.len()
            ),
            Step::Done(report) => format!(
                "done req={} up={} wm={}{}",
                report.requests,
                report.uploaded,
                report.watermark,
                if report.reinitialised { " reinit" } else { "" }
            ),
            Step::Fail(ClientError::Protocol(_)) => "fail protocol".into(),
            Step::Fail(ClientError::RolledBack { .. }) => "fail rolled-back".into(),
            Step::Fail(ClientError::Server { status, .. }) => format!("fail {status}"),
            Step::Fail(ClientError::Database(_)) => "fail database".into(),
            Step::Fail(other) => format!("fail {other}"),
        }
    }

    /// Feeds `events` to a fresh round and renders every step, the first included.
    fn run(params: RoundParams, events: &str) -> String {
        let mut round = RoundState::new(params);
        let mut step = round.start();
        let mut out = vec![render(&step)];
        for token in events.split_whitespace() {
            let event = match (token, step) {
                (t, Step::Collect(spec)) if t.starts_with('c') => {
                    let (n, last) = parse_batch(t);
                    Event::Collected(Ok(batch(spec.after, n, last)))
                }
                (
                    t,
                    Step::Send {
                        request,
                        follow,
                        apply,
                        collect_ahead,
                        ..
                    },
                ) => {
                    // `f` / `f7`: the follow-up pull went out on the answer's head, at
                    // the answer's watermark / at 7.
                    let (t, followed_at) = match t.split_once('f') {
                        Some((t, "")) => (t, Some(None)),
                        Some((t, at)) => (t, Some(Some(at.parse::<u64>().unwrap()))),
                        None => (t, None),
                    };
                    let (t, ahead) = match t.split_once('>') {
                        Some((t, ahead)) => (t, Some(parse_batch(ahead))),
                        None => (t, None),
                    };
                    let ahead = match (ahead, collect_ahead) {
                        (Some((n, last)), Some(spec)) => Some(batch(spec.after, n, last)),
                        (None, _) => None,
                        (Some(_), None) => panic!("{token}: no batch was asked for ahead"),
                    };
                    let applied = match (t, apply) {
                        ("xa", _) => Err(ClientError::Database(rusqlite::Error::InvalidQuery)),
                        (_, Some(_)) => Ok(Some(ApplyCounts {
                            downloaded: 1,
                            ..ApplyCounts::default()
                        })),
                        (_, None) => Ok(None),
                    };
                    let answer = match t {
                        "stg" => Ok(answer(request.since, false, true)),
                        "e413" => Err(server_error(413, ErrorCode::PayloadTooLarge)),
                        "e410" => Err(server_error(410, ErrorCode::ResetRequired)),
                        "e500" => Err(server_error(500, ErrorCode::Internal)),
                        "xa" => Ok(answer(request.since, false, false)),
                        "rbs" => Ok(PulledResponse {
                            rebase: Some(Rebase {
                                epoch: 9,
                                restored_at: 4,
                            }),
                            ..answer(request.since, false, false)
                        }),
                        "rb" => Ok(PulledResponse {
                            evicted: Vec::new(),
                            rollback: Some(RollbackReport {
                                table: "person".into(),
                                id: RowId::nil(),
                                kind: ConflictKind::BothUpdated,
                                reason: "no".into(),
                            }),
                            ..answer(request.since, false, false)
                        }),
                        ok => {
                            let more = ok.ends_with('+');
                            let wm = ok.trim_start_matches("ok").trim_end_matches('+');
                            Ok(answer(wm.parse().unwrap(), more, false))
                        }
                    };
                    let followed = followed_at.map(|at| {
                        let pull = follow.unwrap_or_else(|| panic!("{token}: no pull to follow"));
                        let watermark = answer.as_ref().map_or(0, |a| a.watermark);
                        SyncRequest {
                            since: at.unwrap_or(watermark),
                            ..pull
                        }
                    });
                    Event::Answered {
                        request,
                        answer,
                        applied,
                        ahead,
                        followed,
                    }
                }
                ("reset", Step::Reset) => Event::ResetDone(Ok(())),
                ("rebased", Step::Rebase(_)) => Event::Rebased(Ok(200)),
                ("last", Step::ApplyLast(_)) => Event::LastApplied(Ok(ApplyCounts::default())),
                (t, other) => panic!("event {t} does not fit step {}", render(&other)),
            };
            step = round.on(event);
            out.push(render(&step));
        }
        out.join(" | ")
    }

    #[test]
    fn rounds_take_the_steps_the_table_says() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "nothing to push: one pull, applied as the round's last answer",
                "c0. ok0 last",
                "collect@0/4 | send0@0 final follow | last0/0 | done req=1 up=0 wm=0",
            ),
            (
                "one batch: sent as the final one, its answer applied last",
                "c2. ok5 last",
                "collect@0/4 | send2@0 final follow | last5/2 | done req=1 up=2 wm=5",
            ),
            (
                "pipelined push: the next batch is collected and the previous answer applied \
                 while a request is at the server",
                "c4 ok1>4 ok2>1. ok3 last",
                "collect@0/4 | send4@0 ahead@4 | send4@1 apply1 ahead@8 | send1@2 final apply2 follow \
                 | last3/1 | done req=3 up=9 wm=3",
            ),
            (
                "a failed collect-ahead is not final: collected again in turn",
                "c4 ok1 c1. ok2 last",
                "collect@0/4 | send4@0 ahead@4 | collect@4/4 | send1@1 final apply1 follow | last2/1 \
                 | done req=2 up=5 wm=2",
            ),
            (
                "pull pages after the final batch, each applied while the next is asked for",
                "c0. ok10+ ok20+ ok25 last",
                "collect@0/4 | send0@0 final follow | send0@10 pull apply10 follow | send0@20 pull apply20 follow \
                 | last25/0 | done req=3 up=0 wm=25",
            ),
            (
                "pull pages sent ahead on each answer's head: the round waits for the pull \
                 already at the server instead of sending it again",
                "c0. ok10+f ok20+f ok25 last",
                "collect@0/4 | send0@0 final follow | send0@10 sent pull apply10 follow \
                 | send0@20 sent pull apply20 follow | last25/0 | done req=3 up=0 wm=25",
            ),
            (
                "a pull sent ahead from another watermark than the body's is dropped, and \
                 the page is asked for again",
                "c0. ok10+f7 ok20 last",
                "collect@0/4 | send0@0 final follow | send0@10 pull apply10 follow | last20/0 \
                 | done req=2 up=0 wm=20",
            ),
            (
                "a pull sent ahead is dropped when the answer fails the round",
                "c1. e500f",
                "collect@0/4 | send1@0 final follow | fail 500",
            ),
            (
                "a pull sent ahead is dropped when the answer asks for a rebase",
                "c2. rbsf rebased c3. ok7 last",
                "collect@0/4 | send2@0 final follow | rebase@4 | collect@0/4 \
                 | send3@0 final follow | last7/3 | done req=1 up=3 wm=7 reinit",
            ),
            (
                "a 413 halves the batch and collects the same rows again",
                "c4 e413 c2 ok1>2. ok2 last",
                "collect@0/4 | send4@0 ahead@4 | collect@0/2 | send2@0 ahead@2 \
                 | send2@1 final apply1 follow | last2/2 | done req=2 up=4 wm=2",
            ),
            (
                "a 413 on a single change is final",
                "c1. e413",
                "collect@0/4 | send1@0 final follow | fail 413",
            ),
            (
                "a 410 resets once and starts the round over from watermark 0",
                "c2. e410 reset c2. ok7 last",
                "collect@0/4 | send2@0 final follow | reset | collect@0/4 | send2@0 final follow | last7/2 \
                 | done req=1 up=2 wm=7 reinit",
            ),
            (
                "a restored server's rebase answer re-bases once and starts the round over, \
                 pushing the rows to send again",
                "c2. rbs rebased c3. ok7 last",
                "collect@0/4 | send2@0 final follow | rebase@4 | collect@0/4 | send3@0 final follow \
                 | last7/3 | done req=1 up=3 wm=7 reinit",
            ),
            (
                "a second rebase onto the same epoch is an error",
                "c2. rbs rebased c2. rbs",
                "collect@0/4 | send2@0 final follow | rebase@4 | collect@0/4 | send2@0 final follow \
                 | fail protocol",
            ),
            (
                "a second 410 in one round is an error",
                "c2. e410 reset c2. e410",
                "collect@0/4 | send2@0 final follow | reset | collect@0/4 | send2@0 final follow | fail 410",
            ),
            (
                "staged batches are applied with the final batch's answer",
                "c4 stg>1. ok9 last",
                "collect@0/4 | send4@0 ahead@4 | send1@0 final follow | last9/5 | done req=2 up=5 wm=9",
            ),
            (
                "a rollback ends the round",
                "c4 stg>1. rb",
                "collect@0/4 | send4@0 ahead@4 | send1@0 final follow | fail rolled-back",
            ),
            (
                "a failed apply ends the round once the request in flight is answered",
                "c4 ok1>1. xa",
                "collect@0/4 | send4@0 ahead@4 | send1@1 final apply1 follow | fail database",
            ),
            (
                "a transport error after the retries ends the round",
                "c1. e500",
                "collect@0/4 | send1@0 final follow | fail 500",
            ),
            (
                "more changes announced without a new watermark is a protocol error",
                "c0. ok0+",
                "collect@0/4 | send0@0 final follow | fail protocol",
            ),
            (
                "a pull page that moves the watermark back is a protocol error",
                "c0. ok10+ ok4+",
                "collect@0/4 | send0@0 final follow | send0@10 pull apply10 follow | fail protocol",
            ),
            (
                "a staged answer to the final batch is a protocol error",
                "c1. stg",
                "collect@0/4 | send1@0 final follow | fail protocol",
            ),
        ];
        for (what, events, steps) in cases {
            let steps = steps.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(run(PARAMS, events), steps, "{what}");
        }
    }

    #[test]
    fn a_round_stops_after_the_most_pull_requests_it_allows() {
        let mut round = RoundState::new(PARAMS);
        let Step::Collect(spec) = round.start() else {
            panic!("a round starts by collecting")
        };
        let mut step = round.on(Event::Collected(Ok(batch(spec.after, 0, true))));
        let mut watermark = 0;
        let mut requests = 0u32;
        while let Step::Send { request, .. } = step {
            requests += 1;
            watermark += 1;
            step = round.on(Event::Answered {
                request,
                answer: Ok(answer(watermark, true, false)),
                applied: Ok(None),
                ahead: None,
                followed: None,
            });
        }
        assert!(
            matches!(&step, Step::Fail(ClientError::Protocol(m)) if m.contains("pull requests")),
            "{}",
            render(&step)
        );
        assert_eq!(requests, MAX_PULL_REQUESTS + 1);
    }

    #[test]
    fn progress_is_reported_after_each_answer_and_after_the_last_apply() {
        let mut round = RoundState::new(PARAMS);
        assert!(round.take_progress().is_none());
        let Step::Collect(spec) = round.start() else {
            panic!("a round starts by collecting")
        };
        let Step::Send { request, .. } = round.on(Event::Collected(Ok(batch(spec.after, 0, true))))
        else {
            panic!("then sends")
        };
        let step = round.on(Event::Answered {
            request,
            answer: Ok(answer(10, true, false)),
            applied: Ok(None),
            ahead: None,
            followed: None,
        });
        let progress = round.take_progress().unwrap();
        assert_eq!(
            (progress.requests, progress.watermark, progress.pull_target),
            (1, 10, 11)
        );
        assert!(round.take_progress().is_none(), "reported once");
        let Step::Send { request, apply, .. } = step else {
            panic!("a second page")
        };
        assert!(apply.is_some());
        let Step::ApplyLast(_) = round.on(Event::Answered {
            request,
            answer: Ok(answer(11, false, false)),
            applied: Ok(Some(ApplyCounts {
                downloaded: 3,
                ..ApplyCounts::default()
            })),
            ahead: None,
            followed: None,
        }) else {
            panic!("the last answer is applied last")
        };
        assert!(round.take_progress().is_none(), "not before the last apply");
        let Step::Done(report) = round.on(Event::LastApplied(Ok(ApplyCounts {
            downloaded: 2,
            ..ApplyCounts::default()
        }))) else {
            panic!("done")
        };
        assert_eq!((report.downloaded, report.watermark), (5, 11));
        assert_eq!(round.take_progress().unwrap().downloaded, 5);
    }
}
