//! When an app runs sync rounds in the background: the policy, without timers or I/O.
//!
//! A round runs
//! * at start, then every interval after the last completed round;
//! * [`DEBOUNCE`] after the last local edit (edits in quick succession share one round),
//!   [`LIVE_DEBOUNCE`] while the change feed is open, unless the server is unreachable;
//! * as soon as the server answers again after being unreachable: while offline, the
//!   `/health` endpoint is polled with exponential backoff and jitter (1 s doubling to
//!   10 s) instead of running rounds;
//! * after a round that failed for another reason, with exponential backoff and jitter
//!   (2 s doubling to 5 min);
//! * at once when the change feed says the server has a version this device has not
//!   pulled ([`Schedule::notified`]). The interval rounds go on meanwhile: they are the
//!   fallback whenever the feed cannot be held, which reconnects after
//!   [`ReconnectBackoff`] (0.5 s doubling to 30 s, with jitter).
//!
//! [`Schedule`] only answers "when, and what" from the times it is given; the app's task
//! (src-tauri/src/background.rs) sleeps until [`Schedule::wake_at`], carries out the due
//! action and reports back. Every method takes the current time, so the policy is a pure
//! function of the times and outcomes it was told about (and of the jitter).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

use crate::{ClientError, SyncReport};

/// Quiet time after the last local edit before a round starts.
pub const DEBOUNCE: Duration = Duration::from_millis(1500);

/// The same quiet time while the change feed is open ([`Schedule::set_live`]): other
/// devices show an edit as soon as it reaches the server, so it is pushed sooner (still
/// one round for a burst of keystrokes' saves).
pub const LIVE_DEBOUNCE: Duration = Duration::from_millis(500);

/// What is due when the schedule wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Time for a round.
    Round,
    /// Offline: time to ask the server whether it is back.
    HealthCheck,
}

/// How a round ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    /// The round completed.
    Synced,
    /// The round completed, and this device's rule decided conflicts whose outcome is
    /// still to be pushed: the next round follows at once.
    SyncedWithChoicesToPush,
    /// The server could not be reached.
    Unreachable,
    /// The round failed for another reason.
    Failed,
}

impl RoundOutcome {
    /// The outcome of a round that ended with `result`.
    pub fn of(result: Result<&SyncReport, &ClientError>) -> Self {
        match result {
            Ok(report) if report.conflicts_decided_here > 0 => {
                RoundOutcome::SyncedWithChoicesToPush
            }
            Ok(_) => RoundOutcome::Synced,
            Err(ClientError::Unreachable { .. }) => RoundOutcome::Unreachable,
            Err(_) => RoundOutcome::Failed,
        }
    }
}

/// Backoff for rounds the server refused: 2 s doubling to 5 min, with jitter.
fn error_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Backoff for health polls while offline: 1 s doubling to 10 s, with jitter, so the
/// queue drains within seconds of the server coming back.
fn offline_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Backoff between attempts to open the change feed: 0.5 s doubling to 30 s, with
/// jitter, back to the start once a stream was opened.
#[derive(Debug)]
pub struct ReconnectBackoff {
    delays: ExponentialBackoff,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self {
            delays: reconnect_backoff(),
        }
    }
}

fn reconnect_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

impl ReconnectBackoff {
    /// The wait before the next attempt, after a failed one.
    pub fn failed(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::from_secs(30))
    }

    /// A stream was opened: the next failure waits the shortest delay again.
    pub fn connected(&mut self) {
        self.delays = reconnect_backoff();
    }
}

/// The background sync policy; see the module documentation.
#[derive(Debug)]
pub struct Schedule {
    next: Instant,
    due: Due,
    debounce: Option<Instant>,
    last_round: Instant,
    last_outcome: Option<RoundOutcome>,
    error_backoff: ExponentialBackoff,
    offline_backoff: ExponentialBackoff,
    live: bool,
}

impl Schedule {
    /// A schedule started at `now`: the first round is due at once.
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            due: Due::Round,
            debounce: None,
            last_round: now,
            last_outcome: None,
            error_backoff: error_backoff(),
            offline_backoff: offline_backoff(),
            live: false,
        }
    }

    /// The change feed was opened (`true`) or lost: edits are pushed after
    /// [`LIVE_DEBOUNCE`] while it is open, [`DEBOUNCE`] otherwise.
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// When to wake next, and what is due then: the debounced round if it comes before
    /// the scheduled one.
    pub fn wake_at(&self) -> (Instant, Due) {
        match self.debounce {
            Some(at) if at < self.next && self.due == Due::Round => (at, Due::Round),
            _ => (self.next, self.due),
        }
    }

    /// Whether the last round found the server unreachable.
    pub fn is_offline(&self) -> bool {
        self.last_outcome == Some(RoundOutcome::Unreachable)
    }

    /// Whether no round has failed since the last successful one.
    fn is_idle(&self) -> bool {
        matches!(
            self.last_outcome,
            None | Some(RoundOutcome::Synced | RoundOutcome::SyncedWithChoicesToPush)
        )
    }

    /// A local edit happened at `now`: a round follows [`DEBOUNCE`] after the last edit,
    /// unless the server is unreachable (then the health polls bring the next round).
    pub fn edited(&mut self, now: Instant) {
        if !self.is_offline() {
            let quiet = if self.live { LIVE_DEBOUNCE } else { DEBOUNCE };
            self.debounce = Some(now + quiet);
        }
    }

    /// The change feed says the server has a version this device has not pulled: a
    /// round is due now, also while a failure backoff or the offline health polls run
    /// (the server just answered; a round still in progress is followed by this one).
    pub fn notified(&mut self, now: Instant) {
        self.next = now;
        self.due = Due::Round;
    }

    /// The interval may have changed: while idle, the next round comes `interval` after
    /// the last one (a backoff in progress stays).
    pub fn refreshed(&mut self, interval: Duration) {
        if self.is_idle() {
            self.next = self.last_round + interval;
            self.due = Due::Round;
        }
    }

    /// A health poll at `now` found the server still unreachable: poll again after the
    /// next offline backoff.
    pub fn still_offline(&mut self, now: Instant) {
        self.next = now + self.offline_backoff.next().unwrap_or(DEBOUNCE);
        self.due = Due::HealthCheck;
    }

    /// A round ended at `now` with `outcome`; `interval` is the current sync interval.
    pub fn round_done(&mut self, now: Instant, outcome: RoundOutcome, interval: Duration) {
        self.debounce = None;
        self.last_round = now;
        self.last_outcome = Some(outcome);
        let (delay, due) = match outcome {
            RoundOutcome::Synced | RoundOutcome::SyncedWithChoicesToPush => {
                self.error_backoff = error_backoff();
                self.offline_backoff = offline_backoff();
                let delay = if outcome == RoundOutcome::SyncedWithChoicesToPush {
                    Duration::ZERO
                } else {
                    interval
                };
                (delay, Due::Round)
            }
            RoundOutcome::Unreachable => (
                self.offline_backoff.next().unwrap_or(DEBOUNCE),
                Due::HealthCheck,
            ),
            RoundOutcome::Failed => (self.error_backoff.next().unwrap_or(interval), Due::Round),
        };
        self.next = now + delay;
        self.due = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The delay until the next wake-up, and what is due.
    fn wait(schedule: &Schedule, now: Instant) -> (Duration, Due) {
        let (at, due) = schedule.wake_at();
        (at.saturating_duration_since(now), due)
    }

    #[test]
    fn the_first_round_is_due_at_start_then_every_interval() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        assert_eq!(schedule.wake_at(), (t0, Due::Round));
        let t1 = t0 + secs(2.0);
        schedule.round_done(t1, RoundOutcome::Synced, INTERVAL);
        assert_eq!(schedule.wake_at(), (t1 + INTERVAL, Due::Round));
    }

    #[test]
    fn edits_in_quick_succession_share_one_round_after_the_last() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::Synced, INTERVAL);
        for ms in [0, 500, 1000, 1400] {
            schedule.edited(t0 + Duration::from_millis(ms));
        }
        assert_eq!(
            schedule.wake_at(),
            (t0 + Duration::from_millis(1400) + DEBOUNCE, Due::Round)
        );
        let ran = t0 + secs(3.0);
        schedule.round_done(ran, RoundOutcome::Synced, INTERVAL);
        assert_eq!(
            schedule.wake_at(),
            (ran + INTERVAL, Due::Round),
            "the round clears the debounce"
        );
    }

    #[test]
    fn an_edit_never_delays_a_round_due_sooner() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::Synced, Duration::from_secs(1));
        schedule.edited(t0 + secs(0.5));
        assert_eq!(schedule.wake_at(), (t0 + secs(1.0), Due::Round));
    }

    #[test]
    fn while_offline_health_polls_back_off_with_jitter_up_to_ten_seconds_and_edits_wait() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::Unreachable, INTERVAL);
        assert!(schedule.is_offline());
        let mut now = t0;
        // Jitter adds less than the base delay: delays lie in [base, 2 * base).
        for base in [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0] {
            let (delay, due) = wait(&schedule, now);
            assert_eq!(due, Due::HealthCheck);
            assert!(
                delay >= secs(base) && delay < secs(2.0 * base),
                "{delay:?} for base {base} s"
            );
            schedule.edited(now);
            assert_eq!(
                schedule.wake_at().1,
                Due::HealthCheck,
                "an edit does not start a round while offline"
            );
            now += delay;
            schedule.still_offline(now);
        }
    }

    #[test]
    fn a_refused_round_backs_off_from_two_seconds_to_five_minutes_and_success_resets_it() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        let mut now = t0;
        for base in [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0] {
            schedule.round_done(now, RoundOutcome::Failed, INTERVAL);
            let (delay, due) = wait(&schedule, now);
            assert_eq!(due, Due::Round);
            assert!(
                delay >= secs(base) && delay < secs(2.0 * base),
                "{delay:?} for base {base} s"
            );
            now += delay;
        }
        schedule.round_done(now, RoundOutcome::Synced, INTERVAL);
        schedule.round_done(now, RoundOutcome::Failed, INTERVAL);
        let (delay, _) = wait(&schedule, now);
        assert!(delay >= secs(2.0) && delay < secs(4.0), "{delay:?}");
    }

    #[test]
    fn a_new_interval_applies_from_the_last_round_only_while_idle() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::Synced, INTERVAL);
        schedule.refreshed(Duration::from_secs(5));
        assert_eq!(schedule.wake_at(), (t0 + secs(5.0), Due::Round));
        schedule.round_done(t0, RoundOutcome::Failed, INTERVAL);
        let before = schedule.wake_at();
        schedule.refreshed(Duration::from_secs(60));
        assert_eq!(schedule.wake_at(), before, "a backoff in progress stays");
    }

    #[test]
    fn a_round_whose_rule_decided_conflicts_is_followed_by_another_at_once() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::SyncedWithChoicesToPush, INTERVAL);
        assert_eq!(schedule.wake_at(), (t0, Due::Round));
        schedule.round_done(t0 + secs(1.0), RoundOutcome::Synced, INTERVAL);
        assert_eq!(schedule.wake_at(), (t0 + secs(1.0) + INTERVAL, Due::Round));
    }

    #[test]
    fn the_outcome_of_a_round_is_read_from_its_report_or_error() {
        let unreachable = ClientError::Unreachable {
            url: "http://127.0.0.1:9".into(),
            reason: "refused".into(),
        };
        let synced = SyncReport::default();
        let decided_here = SyncReport {
            conflicts_decided_here: 1,
            ..SyncReport::default()
        };
        let cases: [(Result<&SyncReport, &ClientError>, RoundOutcome); 4] = [
            (Ok(&synced), RoundOutcome::Synced),
            (Ok(&decided_here), RoundOutcome::SyncedWithChoicesToPush),
            (Err(&unreachable), RoundOutcome::Unreachable),
            (
                Err(&ClientError::Protocol("bad".into())),
                RoundOutcome::Failed,
            ),
        ];
        for (result, outcome) in cases {
            assert_eq!(RoundOutcome::of(result), outcome);
        }
    }

    #[test]
    fn a_notification_makes_a_round_due_at_once_even_during_a_backoff() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start);
        schedule.round_done(start, RoundOutcome::Failed, INTERVAL);
        assert!(wait(&schedule, start).0 >= secs(1.0));
        let later = start + secs(0.5);
        schedule.notified(later);
        assert_eq!(wait(&schedule, later), (Duration::ZERO, Due::Round));
        schedule.round_done(later, RoundOutcome::Unreachable, INTERVAL);
        assert_eq!(wait(&schedule, later).1, Due::HealthCheck);
        schedule.notified(later);
        assert_eq!(wait(&schedule, later), (Duration::ZERO, Due::Round));
        schedule.round_done(later, RoundOutcome::Synced, INTERVAL);
        assert_eq!(wait(&schedule, later), (INTERVAL, Due::Round));
    }

    #[test]
    fn reconnects_back_off_to_thirty_seconds_and_start_over_once_connected() {
        let mut backoff = ReconnectBackoff::default();
        let first = backoff.failed();
        assert!(first >= secs(0.5) && first <= secs(1.0), "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = backoff.failed();
        }
        assert!(last >= secs(30.0) && last <= secs(60.0), "{last:?}");
        backoff.connected();
        assert!(backoff.failed() <= secs(1.0));
    }

    #[test]
    fn while_live_an_edit_is_pushed_sooner_and_the_interval_still_polls() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        schedule.round_done(t0, RoundOutcome::Synced, INTERVAL);
        schedule.set_live(true);
        let t1 = t0 + secs(1.0);
        schedule.edited(t1);
        assert_eq!(wait(&schedule, t1), (LIVE_DEBOUNCE, Due::Round));
        let t2 = t1 + LIVE_DEBOUNCE;
        schedule.round_done(t2, RoundOutcome::Synced, INTERVAL);
        // No notification: the interval round comes all the same.
        assert_eq!(schedule.wake_at(), (t2 + INTERVAL, Due::Round));
        schedule.set_live(false);
        schedule.edited(t2);
        assert_eq!(wait(&schedule, t2), (DEBOUNCE, Due::Round));
    }
}
