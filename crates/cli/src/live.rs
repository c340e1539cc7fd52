//! `roster sync --watch`: a round at start, then one each time the server's change
//! feed announces a version this device has not pulled, until Ctrl-C. While the feed
//! cannot be held it is reopened with backoff (the engine's [`roster_client::LiveFeed`]);
//! a refused token or data set ends the command with its error.

use roster_client::{ClientError, LiveEvent, SyncClient};

use crate::output::Output;

/// Runs rounds as the change feed says until Ctrl-C (success) or a failure no retry
/// can fix (refused token, bad answer).
pub async fn sync_until_interrupted(client: &SyncClient, out: &Output) -> anyhow::Result<()> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut feed = client.live();
    round(client, out).await?;
    loop {
        let event = tokio::select! {
            event = feed.next() => event,
            _ = &mut interrupted => return Ok(()),
        };
        let due = match event {
            LiveEvent::Connected { version, behind } => {
                tracing::info!(version, "live: following the server's changes");
                if !out.json {
                    eprintln!("Live: following the server's changes (version {version}).");
                }
                behind
            }
            LiveEvent::Changed { version } => {
                tracing::debug!(version, "the server has a newer version");
                true
            }
            LiveEvent::Lost { error, retry_in } => {
                if !error.is_transient() {
                    return Err(error.into());
                }
                tracing::warn!(%error, ?retry_in, "change feed lost; reconnecting");
                if !out.json {
                    eprintln!(
                        "Not live: {error}; trying again in {:.1} s.",
                        retry_in.as_secs_f64()
                    );
                }
                false
            }
        };
        if due {
            tokio::select! {
                result = round(client, out) => result?,
                _ = &mut interrupted => return Ok(()),
            }
        }
    }
}

/// One round, its report printed; a failure a later round may overcome (server
/// unreachable, 5xx) is reported and the command goes on.
async fn round(client: &SyncClient, out: &Output) -> anyhow::Result<()> {
    match client.sync().await {
        Ok(report) => out.synced(&report),
        Err(error) if is_passing(&error) => {
            tracing::warn!(%error, "sync round failed; the next notification retries");
            if !out.json {
                eprintln!("Sync failed: {error}");
            }
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether a failed round leaves `--watch` running.
fn is_passing(error: &ClientError) -> bool {
    error.is_transient() || matches!(error, ClientError::DeadlineExceeded { .. })
}
