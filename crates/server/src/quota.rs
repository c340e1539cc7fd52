//! Per-user request quotas: each authenticated user may send at most
//! `user_requests_per_minute` requests a minute to `/v1/*` (a burst of that many, refilled
//! evenly), so one user, or one runaway device, cannot take the service from the others.
//! Past it the request is refused with 429 `too_many_requests` and `Retry-After`, before
//! any handler runs. A generic cell rate algorithm from the `governor` crate, keyed by
//! user name: its memory grows with the users that sent requests recently, which
//! [`UserQuota::check`] prunes once the table passes [`PRUNE_ABOVE`] entries. Per
//! instance, like the brute-force limit: N instances allow N times the quota.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Entries of the keyed table after which users idle long enough to be full again are
/// dropped.
const PRUNE_ABOVE: usize = 10_000;

/// The per-user limiter of one server instance.
#[derive(Debug)]
pub struct UserQuota {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl UserQuota {
    /// A quota of `per_minute` requests a minute per user; 0 turns it off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a request of `user`: `Err(wait)` when the user has used up its quota and
    /// must wait that long before the next request is accepted.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > PRUNE_ABOVE {
            limiter.retain_recent();
        }
        limiter
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_past_its_quota_waits_while_others_go_on() {
        let quota = UserQuota::new(3);
        for _ in 0..3 {
            assert_eq!(quota.check("alice"), Ok(()));
        }
        let wait = quota.check("alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(quota.check("bob"), Ok(()));
    }

    #[test]
    fn a_quota_of_zero_is_off() {
        let quota = UserQuota::new(0);
        for _ in 0..1000 {
            assert_eq!(quota.check("alice"), Ok(()));
        }
    }
}
