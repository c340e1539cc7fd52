//! PostgreSQL: announcing committed versions to every instance. A writing transaction
//! runs `pg_notify` on [`CHANNEL`] with `<version> <data set>` ([`announce`]);
//! PostgreSQL delivers it only if that transaction commits, in commit order. Each
//! instance holds one connection of its own (outside the pool) that `LISTEN`s on the
//! channel from a plain thread ([`spawn`]) and publishes what it hears into the
//! instance's [`ChangeHub`]. When that connection fails it is opened again with backoff,
//! and the versions of every watched data set are read afresh, so a notification lost
//! meanwhile is made up for.
//!
//! Why LISTEN/NOTIFY: the instances already share this database and nothing else; it
//! needs no broker to deploy or watch, and its delivery is tied to the commit (no
//! version is announced that a pull cannot see yet). Its costs are one connection per
//! instance and a notification per writing request, both small next to the write.

use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::{Client, NoTls, Transaction};

use crate::feed::ChangeHub;
use crate::store::StoreError;
use crate::store::round::to_u64;

/// The notification channel.
pub(crate) const CHANNEL: &str = "roster_changes";

/// How long the listening thread waits for a notification before it checks whether the
/// store is still alive.
const POLL: Duration = Duration::from_secs(1);

/// Longest pause between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// Queues the announcement of `version` of `dataset`, sent if `tx` commits.
pub(super) fn announce(
    tx: &mut Transaction<'_>,
    statements: &mut super::Statements,
    dataset: &str,
    version: u64,
) -> Result<(), StoreError> {
    let notify = statements.get(tx, "SELECT pg_notify($1, $2)", &[Type::TEXT, Type::TEXT])?;
    tx.execute(&notify, &[&CHANNEL, &format!("{version} {dataset}")])?;
    Ok(())
}

/// `(version, data set)` of a notification's payload.
fn parse(payload: &str) -> Option<(u64, &str)> {
    let (version, dataset) = payload.split_once(' ')?;
    Some((version.parse().ok()?, dataset))
}

/// Starts the listening thread; it ends within [`POLL`] of the hub being dropped.
pub(super) fn spawn(config: postgres::Config, hub: &Arc<ChangeHub>) -> Result<(), StoreError> {
    let hub = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("roster-pg-listen".into())
        .spawn(move || listen_until_dropped(&config, &hub))
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable(format!("cannot start the LISTEN thread: {e}")))
}

fn listen_until_dropped(config: &postgres::Config, hub: &Weak<ChangeHub>) {
    let mut delay = Duration::from_millis(100);
    while hub.strong_count() > 0 {
        match listen_once(config, hub) {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "change notifications lost; reconnecting");
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// Listens on one connection until the hub is dropped (`Ok`) or the connection fails.
fn listen_once(config: &postgres::Config, hub: &Weak<ChangeHub>) -> Result<(), postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    if let Some(hub) = hub.upgrade() {
        catch_up(&mut client, &hub)?;
    }
    tracing::debug!("listening for change notifications");
    let mut notifications = client.notifications();
    loop {
        // A fresh iterator per wait: the driver's `TimeoutIter` does not re-arm its timer
        // after a timeout, so a kept one returns at once from then on and the thread spun
        // a whole core (issue 20: 3-4x the SQLite server's CPU for the same push).
        let next = notifications.timeout_iter(POLL).next()?;
        let Some(hub) = hub.upgrade() else {
            return Ok(());
        };
        if let Some(notification) = next {
            match parse(notification.payload()) {
                Some((version, dataset)) => hub.publish(dataset, version),
                None => tracing::warn!(payload = notification.payload(), "odd notification"),
            }
        }
    }
}

/// Publishes the current version of every watched data set: whatever was committed
/// while no connection listened is announced now.
fn catch_up(client: &mut Client, hub: &ChangeHub) -> Result<(), postgres::Error> {
    let watched = hub.watched();
    if watched.is_empty() {
        return Ok(());
    }
    for row in client.query(
        "SELECT dataset, last_seq FROM dataset_counters WHERE dataset = ANY($1)",
        &[&watched],
    )? {
        let dataset: String = row.get(0);
        hub.publish(&dataset, to_u64(row.get(1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_version_then_data_set() {
        assert_eq!(parse("42 alice"), Some((42, "alice")));
        assert_eq!(parse("42 team a"), Some((42, "team a")));
        assert_eq!(parse("x alice"), None);
        assert_eq!(parse("42"), None);
    }
}
