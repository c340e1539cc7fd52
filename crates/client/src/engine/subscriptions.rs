//! Partial sync from the engine: subscribing and unsubscribing (checked by the server
//! before anything changes locally) and the first fetch of a subscription added to a
//! device that already synced (a backfill, beside the main watermark).

use roster_protocol::{PROTOCOL_VERSION, SliceRequest, Subscription, SyncRequest};

use super::{SyncClient, blocking};
use crate::ClientError;

impl SyncClient {
    /// The subscriptions this device syncs; `None` while it holds the whole data set.
    pub fn subscriptions(&self) -> Result<Option<Vec<Subscription>>, ClientError> {
        self.store.subscriptions()
    }

    /// Adds `subscription` (a filter the server declares, with this device's
    /// parameters). The server checks it first: a bad one is
    /// [`ClientError::Server`] 400 `bad_subscription` and changes nothing. The next
    /// round fetches only its newly matching rows, or, on a device that held the whole
    /// data set, exactly its slice (the rows outside it are dropped). Returns whether the
    /// device's list changed.
    pub async fn subscribe(&self, subscription: Subscription) -> Result<bool, ClientError> {
        let mut list = self.subscriptions()?.unwrap_or_default();
        if list.contains(&subscription) {
            return Ok(false);
        }
        list.push(subscription);
        self.check_subscriptions(&list).await?;
        self.replace_subscriptions(Some(list)).await?;
        Ok(true)
    }

    /// Removes `subscription`; the next round fetches the remaining slice again, which
    /// drops the rows only it matched (unpushed edits stay and are pushed). Returns
    /// whether the device held it.
    pub async fn unsubscribe(&self, subscription: &Subscription) -> Result<bool, ClientError> {
        let Some(mut list) = self.subscriptions()? else {
            return Ok(false);
        };
        let before = list.len();
        list.retain(|s| s != subscription);
        if list.len() == before {
            return Ok(false);
        }
        self.replace_subscriptions(Some(list)).await?;
        Ok(true)
    }

    /// Drops every subscription: the device syncs the whole data set again from the
    /// next round on.
    pub async fn sync_everything(&self) -> Result<(), ClientError> {
        self.replace_subscriptions(None).await
    }

    /// Stores the new list between rounds (a round running now finishes first), so no
    /// round applies pages of the old slice over the new one's starting point.
    async fn replace_subscriptions(
        &self,
        list: Option<Vec<Subscription>>,
    ) -> Result<(), ClientError> {
        let _round_lock = self.round.lock().await;
        let store = self.store.clone();
        blocking(move || store.set_subscriptions(list)).await?;
        Ok(())
    }

    /// Asks the server whether it accepts `list` for this device (its parameters fit
    /// the columns, `user` is not set): a request that pulls nothing.
    async fn check_subscriptions(&self, list: &[Subscription]) -> Result<(), ClientError> {
        let request = SyncRequest {
            protocol: PROTOCOL_VERSION,
            client_id: self.store.client_id(),
            since: 0,
            changes: Vec::new(),
            pull_limit: 0,
            round: None,
            batch_id: None,
            slice: Some(SliceRequest {
                subscriptions: list.to_vec(),
                backfill: false,
            }),
            // Pulls and applies nothing: no epoch check needed.
            epoch: None,
        };
        self.send(&request).await.map(|_| ())
    }

    /// Runs the first fetch of every subscription added since the last round, page by
    /// page, each page applied with where the fetch stands (an interrupted one resumes).
    /// Returns the rows written and the requests made.
    pub(super) async fn run_backfills(&self) -> Result<(u64, u32), ClientError> {
        let store = self.store.clone();
        let pending = blocking(move || store.pending_backfills()).await?;
        let (mut downloaded, mut requests) = (0, 0);
        for (subscription, mut since) in pending {
            loop {
                let request = SyncRequest {
                    protocol: PROTOCOL_VERSION,
                    client_id: self.store.client_id(),
                    since,
                    changes: Vec::new(),
                    pull_limit: self.options.pull_limit,
                    round: None,
                    batch_id: None,
                    slice: Some(SliceRequest {
                        subscriptions: vec![subscription.clone()],
                        backfill: true,
                    }),
                    // A server restored since this device's last answer applies
                    // nothing of it and says so: the backfill stops at once.
                    epoch: self.store.server_epoch()?,
                };
                let answer = self.send(&request).await?;
                requests += 1;
                if let Some(rebase) = answer.rebase {
                    // The round that follows meets the same answer and re-bases: its
                    // pull from 0 fetches every subscription, so the re-base ends the
                    // pending first fetches too.
                    tracing::warn!(%subscription, epoch = rebase.epoch,
                        "the server was restored during a subscription's first fetch: \
                         the round re-bases");
                    return Ok((downloaded, requests));
                }
                if answer.has_more && answer.watermark <= since {
                    return Err(ClientError::Protocol(format!(
                        "the first fetch of {subscription} made no progress (since {since})"
                    )));
                }
                let (store, sub) = (self.store.clone(), subscription.clone());
                let done = !answer.has_more;
                let (watermark, newest) = (answer.watermark, answer.newest);
                downloaded += blocking(move || {
                    store.apply_backfill(&sub, &answer.changes, watermark, done, newest)
                })
                .await?;
                if done {
                    break;
                }
                since = watermark;
            }
        }
        Ok((downloaded, requests))
    }
}
