//! [`SyncClient`]: the local store plus the sync round.
//!
//! A round pushes every change edited before the round started, in bounded batches, and
//! pulls every server change after the watermark, in bounded pages; each request's answer
//! is applied locally in one transaction together with the new watermark, so an
//! interrupted round resumes where it stopped. Only one round runs at a time per client.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_protocol::{ErrorCode, PROTOCOL_VERSION, Schema, SyncRequest};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::local::LocalStore;
use crate::transport::{HttpTransport, normalise_server_url};

/// Batch and timeout settings of a sync round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Most changes pushed per request.
    pub push_batch: usize,
    /// About how many bytes of changes one request carries at most.
    pub push_max_bytes: usize,
    /// Most server changes pulled per request.
    pub pull_limit: u32,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            push_batch: 1_000,
            push_max_bytes: 4 * 1024 * 1024,
            pull_limit: 2_000,
            request_timeout: Duration::from_secs(60),
        }
    }
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
    /// Conflicts resolved (by policy, so far all of the detected ones).
    pub conflicts_resolved: u64,
    /// HTTP requests made.
    pub requests: u32,
    /// Wall time of the round, in milliseconds.
    pub duration_ms: u64,
    /// Watermark at the end of the round.
    pub watermark: u64,
    /// Whether the server required a full re-pull during this round.
    pub reinitialised: bool,
}

/// An offline-first client: local CRUD through [`SyncClient::store`], and sync rounds.
pub struct SyncClient {
    store: Arc<LocalStore>,
    transport: HttpTransport,
    options: SyncOptions,
    round: tokio::sync::Mutex<()>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Task(e.to_string()))?
}

impl SyncClient {
    /// Creates a store in `dir` for the service at `server_url`. The schema is fetched
    /// from the service unless given.
    pub async fn init(
        dir: &Path,
        server_url: &str,
        schema: Option<Schema>,
    ) -> Result<Self, ClientError> {
        let url = normalise_server_url(server_url)?;
        if dir.join(crate::local::DB_FILE).exists() {
            return Err(ClientError::AlreadyInitialised(dir.display().to_string()));
        }
        let schema = match schema {
            Some(schema) => schema,
            None => {
                HttpTransport::new(&url, SyncOptions::default().request_timeout)?
                    .schema()
                    .await?
            }
        };
        LocalStore::create(dir, &url, &schema)?;
        Self::open(dir)
    }

    /// Opens the store in `dir`; works offline.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let store = LocalStore::open(dir)?;
        let options = SyncOptions::default();
        let transport = HttpTransport::new(store.server_url(), options.request_timeout)?;
        Ok(Self {
            store: Arc::new(store),
            transport,
            options,
            round: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces the batch and timeout settings.
    pub fn with_options(mut self, options: SyncOptions) -> Result<Self, ClientError> {
        if options.push_batch == 0 || options.pull_limit == 0 {
            return Err(ClientError::BadInput(
                "push_batch and pull_limit must be at least 1".into(),
            ));
        }
        self.transport = HttpTransport::new(self.store.server_url(), options.request_timeout)?;
        self.options = options;
        Ok(self)
    }

    /// The local store: CRUD, listing, status and conflict history.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// A shared handle on the local store, for use from other threads.
    pub fn store_handle(&self) -> Arc<LocalStore> {
        self.store.clone()
    }

    /// Asks the service whether it is up.
    pub async fn check_server(&self) -> Result<(), ClientError> {
        self.transport.health().await.map(|_| ())
    }

    /// Runs one sync round; see [`SyncClient::sync_with_progress`].
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        self.sync_with_progress(|_| {}).await
    }

    /// Runs one sync round, calling `progress` after each request. Waits if another round
    /// of this client is running. On error, what earlier requests applied stays applied
    /// (with its watermark) and pending changes not yet acknowledged stay pending.
    pub async fn sync_with_progress(
        &self,
        mut progress: impl FnMut(&SyncProgress),
    ) -> Result<SyncReport, ClientError> {
        let _round = self.round.lock().await;
        let started = Instant::now();
        let up_to_rev = self.store.edit_counter()?;
        let mut report = SyncReport::default();
        loop {
            let batch = {
                let store = self.store.clone();
                let (max, bytes) = (self.options.push_batch, self.options.push_max_bytes);
                blocking(move || store.pending_batch(up_to_rev, max, bytes)).await?
            };
            if batch.sent.is_empty() && batch.dropped_local_only > 0 {
                continue;
            }
            let request = SyncRequest {
                protocol: PROTOCOL_VERSION,
                client_id: self.store.client_id(),
                since: self.store.watermark()?,
                changes: batch.changes(),
                pull_limit: self.options.pull_limit,
            };
            let response = match self.transport.sync(&request).await {
                Err(ClientError::Server {
                    code: ErrorCode::ResetRequired,
                    ..
                }) if !report.reinitialised => {
                    tracing::warn!("server cannot serve our watermark; re-pulling everything");
                    let store = self.store.clone();
                    blocking(move || store.reset_for_full_pull()).await?;
                    report.reinitialised = true;
                    continue;
                }
                other => other?,
            };
            let has_more = response.has_more;
            let sent = batch.sent.len() as u64;
            let counts = {
                let store = self.store.clone();
                blocking(move || store.apply_response(&batch, &response)).await?
            };
            report.requests += 1;
            report.uploaded += sent;
            report.downloaded += counts.downloaded;
            report.conflicts_detected += counts.conflicts_detected;
            report.conflicts_resolved += counts.conflicts_resolved;
            report.watermark = self.store.watermark()?;
            progress(&SyncProgress {
                requests: report.requests,
                uploaded: report.uploaded,
                downloaded: report.downloaded,
                watermark: report.watermark,
            });
            if !has_more && !self.store.has_pending_up_to(up_to_rev)? {
                break;
            }
        }
        self.store.mark_synced()?;
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(?report, "sync round complete");
        Ok(report)
    }
}
