//! [`SyncClient`]: the local store plus the sync round.
//!
//! A round pushes every change edited before the round started, in bounded batches, and
//! pulls every server change after the watermark, in bounded pages; each request's answer
//! is applied locally in one transaction together with the new watermark, so an
//! interrupted round resumes where it stopped. Only one round runs at a time per client.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_protocol::{ErrorCode, PROTOCOL_VERSION, RoundInfo, Schema, SyncRequest, SyncResponse};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::local::LocalStore;
pub use crate::local::apply::ApplyCounts;
use crate::local::apply::SentChange;
pub use crate::local::conflicts::ConflictHandler;
use crate::transport::{
    ConnectionSecurity, Credentials, HttpTransport, TransportOptions, check_ca_pem,
    check_cleartext, normalise_server_url,
};

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
    /// How often a request that failed in transit (or with a 5xx) is sent again, as the
    /// same batch, before the round gives up. The server applies a batch once however
    /// often it arrives.
    pub retries: usize,
    /// Delay before the first retry; later ones back off exponentially, with jitter.
    pub retry_delay: Duration,
    /// An answer that sends no byte for this long fails (and is retried like a lost one).
    pub read_idle_timeout: Duration,
    /// Total time limit of one sync round, retries included.
    pub round_deadline: Duration,
    /// Largest answer body accepted (declared or streamed); larger fails the round with
    /// a protocol error.
    pub max_response_bytes: u64,
}

impl SyncOptions {
    /// The transport settings of these options with `security`.
    fn transport(&self, security: ConnectionSecurity) -> TransportOptions {
        TransportOptions {
            security,
            request_timeout: self.request_timeout,
            read_idle_timeout: self.read_idle_timeout,
            max_response_bytes: self.max_response_bytes,
            ..TransportOptions::default()
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            push_batch: 1_000,
            push_max_bytes: 4 * 1024 * 1024,
            pull_limit: 2_000,
            request_timeout: Duration::from_secs(60),
            retries: 3,
            retry_delay: Duration::from_millis(100),
            read_idle_timeout: crate::transport::DEFAULT_READ_IDLE_TIMEOUT,
            round_deadline: Duration::from_secs(600),
            max_response_bytes: crate::transport::DEFAULT_MAX_RESPONSE_BYTES,
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
    handler: Option<Arc<dyn ConflictHandler>>,
    round: tokio::sync::Mutex<()>,
}

/// Where a round stands: its id, the edit number of the last change sent, whether its
/// final batch is still to come, and the changes staged on the server so far.
struct Round {
    id: uuid::Uuid,
    cursor: i64,
    open: bool,
    staged: Vec<SentChange>,
}

impl Round {
    fn new() -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            cursor: 0,
            open: true,
            staged: Vec::new(),
        }
    }
}

/// The next batch of pending changes, collected from the local store.
#[derive(Default)]
struct Batch {
    /// The changes with their edit numbers.
    sent: Vec<SentChange>,
    /// The round's cursor after this batch.
    cursor: i64,
    /// No pending change of the round is left after this batch.
    last: bool,
}

/// An answer received but not yet applied, with the changes it answers.
struct Received {
    sent: Vec<SentChange>,
    response: SyncResponse,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Task(e.to_string()))?
}

impl SyncClient {
    /// Creates a store in `dir` for the service at `server_url`, presenting `credentials`
    /// (stored with the store). The schema is fetched from the service unless given.
    /// Trusts only the platform's roots and refuses cleartext to a remote host; see
    /// [`SyncClient::init_with_security`].
    pub async fn init(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        schema: Option<Schema>,
    ) -> Result<Self, ClientError> {
        Self::init_with_security(
            dir,
            server_url,
            credentials,
            &ConnectionSecurity::default(),
            schema,
        )
        .await
    }

    /// [`SyncClient::init`] with a trusted CA and cleartext policy, stored with the store
    /// and used by every later [`SyncClient::open`]. A cleartext URL to a remote host
    /// without `allow_cleartext`, or a CA that is not PEM, fails before anything is
    /// created or sent.
    pub async fn init_with_security(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        security: &ConnectionSecurity,
        schema: Option<Schema>,
    ) -> Result<Self, ClientError> {
        let url = normalise_server_url(server_url)?;
        check_cleartext(&url, security.allow_cleartext)?;
        if let Some(pem) = &security.ca_cert_pem {
            check_ca_pem(pem)?;
        }
        if dir.join(crate::local::DB_FILE).exists() {
            return Err(ClientError::AlreadyInitialised(dir.display().to_string()));
        }
        let schema = match schema {
            Some(schema) => schema,
            None => {
                let options = SyncOptions::default().transport(security.clone());
                HttpTransport::with_options(&url, &options)?
                    .with_credentials(credentials)
                    .schema()
                    .await?
            }
        };
        let store = LocalStore::create(dir, &url, &schema)?;
        store.set_credentials(credentials)?;
        store.set_connection_security(security)?;
        Self::open(dir)
    }

    /// Opens the store in `dir` with the credentials stored in it; works offline.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let store = LocalStore::open(dir)?;
        let options = SyncOptions::default();
        let transport = HttpTransport::with_options(
            store.server_url(),
            &options.transport(store.connection_security()?),
        )?
        .with_credentials(&store.credentials()?);
        Ok(Self {
            store: Arc::new(store),
            transport,
            options,
            handler: None,
            round: tokio::sync::Mutex::new(()),
        })
    }

    /// Lets `handler` choose for conflicts the server defers to this client, during the
    /// round that receives them; those it returns `None` for wait for a person.
    pub fn with_handler(mut self, handler: Arc<dyn ConflictHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// Replaces the batch and timeout settings.
    pub fn with_options(mut self, options: SyncOptions) -> Result<Self, ClientError> {
        if options.push_batch == 0 || options.pull_limit == 0 {
            return Err(ClientError::BadInput(
                "push_batch and pull_limit must be at least 1".into(),
            ));
        }
        self.transport = HttpTransport::with_options(
            self.store.server_url(),
            &options.transport(self.store.connection_security()?),
        )?
        .with_credentials(&self.transport.credentials());
        self.options = options;
        Ok(self)
    }

    /// Trusts `security.ca_cert_pem` (besides the platform's roots) and applies its
    /// cleartext policy from now on; both are saved with the store, so the next
    /// [`SyncClient::open`] uses them too. A CA that is not PEM changes nothing.
    pub fn with_connection_security(
        self,
        security: &ConnectionSecurity,
    ) -> Result<Self, ClientError> {
        if let Some(pem) = &security.ca_cert_pem {
            check_ca_pem(pem)?;
        }
        self.store.set_connection_security(security)?;
        let options = self.options.clone();
        self.with_options(options)
    }

    /// Uses `token` from now on, for this client and its store (it is saved, so the
    /// next [`SyncClient::open`] uses it too).
    pub fn set_token(&self, token: Option<String>) -> Result<(), ClientError> {
        self.store.set_token(token.as_deref())?;
        self.transport.set_token(token);
        Ok(())
    }

    /// Uses `token` for this client's requests only, without saving it (for example a
    /// token from the environment).
    pub fn with_token(self, token: String) -> Self {
        self.transport.set_token(Some(token));
        self
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

    /// The server's conflict log of this device's data set (every client's conflicts in
    /// it), newest first.
    pub async fn server_conflicts(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<roster_protocol::ConflictLogEntry>, ClientError> {
        self.transport.conflict_log(limit, before).await
    }

    /// Sends one batch, sending the same batch again after transient failures.
    async fn send(
        &self,
        request: &SyncRequest,
    ) -> Result<roster_protocol::SyncResponse, ClientError> {
        use backon::{ExponentialBuilder, Retryable};
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.options.retry_delay)
            .with_max_times(self.options.retries)
            .with_jitter();
        (|| self.transport.sync(request))
            .retry(policy)
            .when(ClientError::is_transient)
            .notify(|error, delay| {
                tracing::warn!(%error, ?delay, batch = ?request.batch_id, "retrying sync request");
            })
            .await
    }

    /// Runs one sync round; see [`SyncClient::sync_with_progress`].
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        self.sync_with_progress(|_| {}).await
    }

    /// Collects the round's next batch after edit number `after` (rows created and
    /// deleted offline are dropped on the way), and whether it is the round's last.
    async fn collect(
        &self,
        after: i64,
        up_to_rev: i64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Batch, ClientError> {
        let store = self.store.clone();
        blocking(move || {
            loop {
                let batch = store.pending_batch(after, up_to_rev, max, max_bytes)?;
                if batch.sent.is_empty() && batch.dropped_local_only > 0 {
                    continue;
                }
                let cursor = batch.sent.last().map_or(after, |last| last.local_rev);
                let last = !store.has_pending_between(cursor, up_to_rev)?;
                return Ok(Batch {
                    sent: batch.sent,
                    cursor,
                    last,
                });
            }
        })
        .await
    }

    /// Applies one answer in one local transaction (with its watermark; with the time of
    /// the last sync when `round_done`), and adds what it did to `report`.
    async fn apply(
        &self,
        received: Received,
        round_done: bool,
        report: &mut SyncReport,
    ) -> Result<(), ClientError> {
        let store = self.store.clone();
        let handler = self.handler.clone();
        let watermark = received.response.watermark;
        let counts = blocking(move || {
            store.apply_answer(
                &received.sent,
                &received.response,
                handler.as_deref(),
                round_done,
            )
        })
        .await?;
        report.downloaded += counts.downloaded;
        report.conflicts_detected += counts.conflicts_detected;
        report.conflicts_resolved += counts.conflicts_resolved;
        report.conflicts_deferred += counts.conflicts_deferred;
        report.conflicts_decided_here += counts.conflicts_decided_here;
        report.auto_merged += counts.auto_merged;
        report.watermark = watermark;
        Ok(())
    }

    /// Runs one sync round, calling `progress` after each request. Waits if another round
    /// of this client is running. The round's batches carry one round id, so a server
    /// that can roll rounds back applies them together with the final batch. On error,
    /// what earlier requests applied stays applied (with its watermark) and pending
    /// changes not yet acknowledged stay pending.
    ///
    /// The round is pipelined, with one request at the server at a time and every answer
    /// applied in order, each in its own transaction with its watermark: while a request
    /// is at the server, the previous answer is applied and the next batch is collected
    /// (it holds other rows, which applying the answer does not touch; the request's
    /// `since` is the previous answer's watermark, known before it is applied). If
    /// applying an answer fails, the round stops with that error after the request in
    /// flight is answered, and that answer is dropped too: the rows of both batches stay
    /// pending, and when the next round sends them again the server, which already holds
    /// their values, acknowledges them without a conflict.
    ///
    /// The round stops with [`ClientError::DeadlineExceeded`] once it has run for
    /// [`SyncOptions::round_deadline`]; what it applied so far stays applied.
    pub async fn sync_with_progress(
        &self,
        progress: impl FnMut(&SyncProgress),
    ) -> Result<SyncReport, ClientError> {
        let deadline = self.options.round_deadline;
        tokio::time::timeout(deadline, self.run_round(progress))
            .await
            .unwrap_or(Err(ClientError::DeadlineExceeded {
                seconds: deadline.as_secs_f64(),
            }))
    }

    /// The round of [`SyncClient::sync_with_progress`], without its deadline.
    async fn run_round(
        &self,
        mut progress: impl FnMut(&SyncProgress),
    ) -> Result<SyncReport, ClientError> {
        let _round_lock = self.round.lock().await;
        let started = Instant::now();
        let up_to_rev = self.store.edit_counter()?;
        let start_watermark = self.store.watermark()?;
        let mut report = SyncReport {
            watermark: start_watermark,
            ..SyncReport::default()
        };
        let mut round = Round::new();
        let mut since = start_watermark;
        // Shrunk for the rest of the round when the server finds a batch too large.
        let mut push_batch = self.options.push_batch;
        let mut push_max_bytes = self.options.push_max_bytes;
        // The next batch, collected while the previous request was at the server.
        let mut ahead: Option<Batch> = None;
        // An answer not applied yet: applied while the next request is at the server.
        let mut unapplied: Option<Received> = None;
        loop {
            let batch = match (round.open, ahead.take()) {
                (false, _) => Batch {
                    cursor: round.cursor,
                    last: true,
                    ..Batch::default()
                },
                (true, Some(batch)) => batch,
                (true, None) => {
                    self.collect(round.cursor, up_to_rev, push_batch, push_max_bytes)
                        .await?
                }
            };
            let final_batch = round.open && batch.last;
            // The changes move into the request (and back out once it is answered).
            let (changes, revs): (Vec<_>, Vec<_>) = batch
                .sent
                .into_iter()
                .map(|s| (s.change, s.local_rev))
                .unzip();
            let mut request = SyncRequest {
                protocol: PROTOCOL_VERSION,
                client_id: self.store.client_id(),
                since,
                changes,
                pull_limit: self.options.pull_limit,
                round: round.open.then_some(RoundInfo {
                    id: round.id,
                    final_batch,
                }),
                batch_id: Some(uuid::Uuid::now_v7()),
            };
            let collect_ahead = round.open && !final_batch;
            let local = async {
                if let Some(received) = unapplied.take() {
                    self.apply(received, false, &mut report).await?;
                }
                if collect_ahead {
                    // A failure here is not final: the batch is collected again, in
                    // turn, after this request's answer is applied.
                    let next = self
                        .collect(batch.cursor, up_to_rev, push_batch, push_max_bytes)
                        .await;
                    return Ok(next
                        .inspect_err(|error| {
                            tracing::debug!(%error, "collecting ahead failed; collecting again");
                        })
                        .ok());
                }
                Ok::<_, ClientError>(None)
            };
            let (sent, local) = tokio::join!(self.send(&request), local);
            ahead = local?;
            let response = match sent {
                Err(ClientError::Server {
                    code: ErrorCode::ResetRequired,
                    ..
                }) if !report.reinitialised => {
                    tracing::warn!("server cannot serve our watermark; re-pulling everything");
                    let store = self.store.clone();
                    blocking(move || store.reset_for_full_pull()).await?;
                    report.reinitialised = true;
                    round = Round::new();
                    since = 0;
                    ahead = None;
                    continue;
                }
                Err(ClientError::Server {
                    code: ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge,
                    ..
                }) if revs.len() > 1 => {
                    push_batch = revs.len() / 2;
                    push_max_bytes = (push_max_bytes / 2).max(1);
                    tracing::warn!(
                        push_batch,
                        "the server refused a batch as too large; halving it"
                    );
                    ahead = None;
                    continue;
                }
                other => other?,
            };
            if let Some(rollback) = response.rollback {
                return Err(ClientError::RolledBack {
                    table: rollback.table,
                    id: rollback.id,
                    kind: rollback.kind,
                    reason: rollback.reason,
                });
            }
            report.requests += 1;
            report.uploaded += revs.len() as u64;
            round.cursor = batch.cursor;
            round.staged.extend(
                std::mem::take(&mut request.changes)
                    .into_iter()
                    .zip(revs)
                    .map(|(change, local_rev)| SentChange { change, local_rev }),
            );
            if final_batch {
                round.open = false;
            }
            let pull_target = response.newest;
            if !response.staged {
                since = response.watermark;
                let done = !round.open && !response.has_more;
                let received = Received {
                    sent: std::mem::take(&mut round.staged),
                    response,
                };
                if done {
                    self.apply(received, true, &mut report).await?;
                } else {
                    unapplied = Some(received);
                }
            }
            progress(&SyncProgress {
                requests: report.requests,
                uploaded: report.uploaded,
                downloaded: report.downloaded,
                watermark: since,
                start_watermark,
                pull_target,
            });
            if !round.open && unapplied.is_none() {
                break;
            }
        }
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(?report, "sync round complete");
        Ok(report)
    }
}
