//! The brute-force limit on bearer tokens: failed authentications are counted per client
//! address, slowed past one threshold and refused with 429 and `Retry-After` past a
//! second one, until the counting window ends.
//!
//! * **Key**: the peer's IP address; an IPv6 address counts by its /64 prefix, the
//!   block one host usually holds. Behind a reverse proxy every client has the proxy's
//!   address: limit there instead.
//! * **Valid clients keep working.** A blocked address is refused without checking the
//!   token, so guessing learns nothing, except for tokens that authenticated
//!   successfully (from any address) within the window: those are checked as usual. A
//!   success never resets an address's failure count, so a guesser holding one valid
//!   token cannot use it to keep guessing. A valid token never used before, sent from a
//!   blocked address, waits like a guess.
//! * **Bounded memory**: at most `auth_limiter_max_entries` addresses and as many
//!   recently valid tokens (32-byte hashes) are kept; when full, expired entries go
//!   first, then the oldest.
//! * **Per instance**: each server process counts on its own, so with N instances behind
//!   a balancer a guesser gets up to N times the budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use std::time::Instant;

use crate::config::ServerConfig;

/// What to do with a request before its token is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the token.
    Check,
    /// Refuse with 429; the address may try again after this long.
    Refuse(Duration),
}

/// The limiter's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failures within a window answered at once.
    pub failures_before_delay: u32,
    /// Failures within a window after which the address is refused.
    pub failures_before_block: u32,
    /// How long each failure past `failures_before_delay` waits before its 401.
    pub delay: Duration,
    /// How long failures are counted (from the first one).
    pub window: Duration,
    /// Most addresses, and most recently valid tokens, kept.
    pub max_entries: usize,
}

impl AuthLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            failures_before_delay: config.auth_failures_before_delay,
            failures_before_block: config.auth_failures_before_block,
            delay: Duration::from_millis(config.auth_failure_delay_ms),
            window: Duration::from_secs(config.auth_failure_window_secs),
            max_entries: config.auth_limiter_max_entries,
        }
    }
}

/// Failures of one address in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

#[derive(Debug, Default)]
struct Tables {
    failures: HashMap<IpAddr, Failures>,
    /// SHA-256 of token secrets that authenticated, and when they last did.
    valid: HashMap<[u8; 32], Instant>,
}

/// Counts failed authentications per address; see the module docs.
#[derive(Debug)]
pub struct AuthLimiter {
    limits: AuthLimits,
    tables: Mutex<Tables>,
}

impl AuthLimiter {
    /// An empty limiter.
    pub fn new(limits: AuthLimits) -> Self {
        Self {
            limits,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request from `peer` presenting `secret` may have its token checked.
    pub fn admit(&self, peer: IpAddr, secret: &str) -> Admission {
        self.admit_at(Instant::now(), peer, secret)
    }

    fn admit_at(&self, now: Instant, peer: IpAddr, secret: &str) -> Admission {
        let key = key_of(peer);
        let mut tables = self.tables();
        let Some(failures) = tables.failures.get(&key).copied() else {
            return Admission::Check;
        };
        let ends = failures.since + self.limits.window;
        if now >= ends {
            tables.failures.remove(&key);
            return Admission::Check;
        }
        if failures.count < self.limits.failures_before_block {
            return Admission::Check;
        }
        let recently_valid = tables
            .valid
            .get(&digest(secret))
            .is_some_and(|at| now < *at + self.limits.window);
        if recently_valid {
            Admission::Check
        } else {
            Admission::Refuse(ends - now)
        }
    }

    /// Records a failed authentication from `peer`; returns how long to wait before
    /// answering it.
    pub fn failed(&self, peer: IpAddr) -> Duration {
        self.failed_at(Instant::now(), peer)
    }

    fn failed_at(&self, now: Instant, peer: IpAddr) -> Duration {
        let key = key_of(peer);
        let window = self.limits.window;
        let mut tables = self.tables();
        if !tables.failures.contains_key(&key) {
            make_room(
                &mut tables.failures,
                self.limits.max_entries,
                |f| now >= f.since + window,
                |f| f.since,
            );
        }
        let entry = tables.failures.entry(key).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now >= entry.since + window {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count > self.limits.failures_before_delay {
            self.limits.delay
        } else {
            Duration::ZERO
        }
    }

    /// Records that `secret` authenticated (from any address).
    pub fn succeeded(&self, secret: &str) {
        self.succeeded_at(Instant::now(), secret);
    }

    fn succeeded_at(&self, now: Instant, secret: &str) {
        let hash = digest(secret);
        let window = self.limits.window;
        let mut tables = self.tables();
        if !tables.valid.contains_key(&hash) {
            make_room(
                &mut tables.valid,
                self.limits.max_entries,
                |at| now >= *at + window,
                |at| *at,
            );
        }
        tables.valid.insert(hash, now);
    }

    /// Addresses and tokens held (for the memory bound's tests).
    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let tables = self.tables();
        (tables.failures.len(), tables.valid.len())
    }
}

/// Makes room for one more entry in `map` of at most `max` entries: drops the expired
/// ones, then the oldest.
fn make_room<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    expired: impl Fn(&V) -> bool,
    started: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, value| !expired(value));
    while map.len() >= max.max(1) {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, value)| started(value))
            .map(|(key, _)| *key)
        else {
            return;
        };
        map.remove(&oldest);
    }
}

/// The counting key of an address: IPv4 as is, IPv6 by its /64 prefix.
fn key_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_entries: usize) -> AuthLimiter {
        AuthLimiter::new(AuthLimits {
            failures_before_delay: 2,
            failures_before_block: 4,
            delay: Duration::from_millis(300),
            window: Duration::from_secs(60),
            max_entries,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn failures_are_slowed_then_refused_until_the_window_ends() {
        let limiter = limiter(100);
        let t0 = Instant::now();
        let guesser = ip("10.0.0.1");
        let delays: Vec<Duration> = (0..4).map(|_| limiter.failed_at(t0, guesser)).collect();
        assert_eq!(delays[..2], [Duration::ZERO; 2]);
        assert_eq!(delays[2..], [Duration::from_millis(300); 2]);
        assert_eq!(
            limiter.admit_at(t0, guesser, "rst_guess"),
            Admission::Refuse(secs(60))
        );
        assert_eq!(
            limiter.admit_at(t0, ip("10.0.0.2"), "rst_guess"),
            Admission::Check
        );
        assert_eq!(
            limiter.admit_at(t0 + secs(45), guesser, "rst_other"),
            Admission::Refuse(secs(15))
        );
        assert_eq!(
            limiter.admit_at(t0 + secs(60), guesser, "rst_guess"),
            Admission::Check
        );
        assert_eq!(
            limiter.failed_at(t0 + secs(60), guesser),
            Duration::ZERO,
            "a new window"
        );
    }

    #[test]
    fn a_recently_valid_token_is_checked_from_a_blocked_address_and_resets_nothing() {
        let limiter = limiter(100);
        let t0 = Instant::now();
        let shared = ip("192.0.2.7");
        limiter.succeeded_at(t0, "rst_good");
        for _ in 0..4 {
            limiter.failed_at(t0, shared);
        }
        assert_eq!(limiter.admit_at(t0, shared, "rst_good"), Admission::Check);
        assert!(matches!(
            limiter.admit_at(t0, shared, "rst_bad"),
            Admission::Refuse(_)
        ));
        limiter.succeeded_at(t0, "rst_good");
        assert!(
            matches!(
                limiter.admit_at(t0, shared, "rst_bad"),
                Admission::Refuse(_)
            ),
            "a success must not lift the block"
        );
        // A token valid long ago waits like a guess.
        let later = t0 + secs(61);
        for _ in 0..4 {
            limiter.failed_at(later, shared);
        }
        assert!(matches!(
            limiter.admit_at(later, shared, "rst_good"),
            Admission::Refuse(_)
        ));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let limiter = limiter(100);
        let t0 = Instant::now();
        for host in 1..=4 {
            limiter.failed_at(t0, ip(&format!("2001:db8:1:2::{host}")));
        }
        assert!(matches!(
            limiter.admit_at(t0, ip("2001:db8:1:2::ffff"), "rst_x"),
            Admission::Refuse(_)
        ));
        assert_eq!(
            limiter.admit_at(t0, ip("2001:db8:1:3::1"), "rst_x"),
            Admission::Check
        );
    }

    #[test]
    fn memory_is_bounded_by_max_entries() {
        let limiter = limiter(50);
        let t0 = Instant::now();
        for n in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(n));
            limiter.failed_at(now, IpAddr::from(n.to_be_bytes()));
            limiter.succeeded_at(now, &format!("rst_{n}"));
        }
        let (addresses, tokens) = limiter.entries();
        assert!(addresses <= 50 && tokens <= 50, "{addresses} {tokens}");
        // The newest address is still counted.
        let newest = IpAddr::from(999u32.to_be_bytes());
        let now = t0 + secs(1);
        for _ in 0..3 {
            limiter.failed_at(now, newest);
        }
        assert!(matches!(
            limiter.admit_at(now, newest, "rst_x"),
            Admission::Refuse(_)
        ));
    }
}
