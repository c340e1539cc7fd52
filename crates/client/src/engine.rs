//! [`SyncClient`]: the local store plus the sync round.
//!
//! A round pushes every change edited before the round started, in bounded batches, and
//! pulls every server change after the watermark, in bounded pages; each request's answer
//! is applied locally in one transaction together with the new watermark, so an
//! interrupted round resumes where it stopped. Only one round runs at a time per client.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_protocol::{PulledResponse, Schema, SyncRequest};

use crate::ama::{AmaSettings, Protocol};
use crate::local::LocalStore;
use crate::local::conflicts::DeviceConflictHandler;
use crate::round::{
    ApplyCounts, Batch, CollectSpec, Event, Received, RoundParams, RoundState, Step, SyncProgress,
    SyncReport,
};
use crate::transport::{
    ConnectionSecurity, Credentials, HttpTransport, TransportOptions, check_ca_pem,
    check_cleartext, normalise_server_url,
};
use crate::{ClientError, StoreKey};

mod ama;
mod subscriptions;

/// Batch and timeout settings of a sync round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Most changes pushed per request. The default, 5000, is the server's largest pull
    /// page: a push of 100k new rows took 12-17 % less time than in batches of 1000, on
    /// SQLite and PostgreSQL alike (docs/BENCHMARKS.md, round seventeen), while
    /// `push_max_bytes` still bounds what one request carries.
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
            push_batch: 5_000,
            push_max_bytes: 4 * 1024 * 1024,
            pull_limit: roster_protocol::MAX_PULL_LIMIT,
            request_timeout: Duration::from_secs(60),
            retries: 3,
            retry_delay: Duration::from_millis(100),
            read_idle_timeout: crate::transport::DEFAULT_READ_IDLE_TIMEOUT,
            round_deadline: Duration::from_secs(600),
            max_response_bytes: crate::transport::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// An offline-first client: local CRUD through [`SyncClient::store`], and sync rounds.
pub struct SyncClient {
    store: Arc<LocalStore>,
    /// The protocol the store syncs with (fixed at init).
    protocol: Protocol,
    transport: HttpTransport,
    options: SyncOptions,
    handler: Option<Arc<dyn DeviceConflictHandler>>,
    round: tokio::sync::Mutex<()>,
}

/// Sends one batch, sending the same batch again after transient failures; `on_more`
/// as [`HttpTransport::sync`] calls it, for each answer's head.
async fn send_with_retries(
    transport: &HttpTransport,
    options: &SyncOptions,
    request: &SyncRequest,
    on_more: &(dyn Fn(u64) + Sync),
) -> Result<PulledResponse, ClientError> {
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(options.retry_delay)
        .with_max_times(options.retries)
        .with_jitter();
    (|| transport.sync(request, on_more))
        .retry(policy)
        .when(ClientError::is_transient)
        .notify(|error, delay| {
            tracing::warn!(%error, ?delay, batch = ?request.batch_id, "retrying sync request");
        })
        .await
}

/// A pull sent on the head of the previous answer ([`Step::Send`]'s `follow`), answered
/// on a task of its own. Dropping it stops the task: a round that does not take it (it
/// failed, or the answer said otherwise) loses nothing, since a pull writes nothing.
struct SentAhead {
    pull: SyncRequest,
    /// The answer's [`roster_protocol::MORE_AFTER_HEADER`], once its head arrived.
    more_after: tokio::sync::watch::Receiver<Option<u64>>,
    answer: tokio::task::JoinHandle<Result<PulledResponse, ClientError>>,
}

impl SentAhead {
    /// Its answer, when it is `request`; `on_more` as [`HttpTransport::sync`] calls it.
    async fn answer_to(
        mut self,
        request: &SyncRequest,
        on_more: &(dyn Fn(u64) + Sync),
    ) -> Result<PulledResponse, ClientError> {
        if self.pull.batch_id != request.batch_id {
            return Err(ClientError::Task(
                "sync round driven out of turn: another pull was sent ahead".into(),
            ));
        }
        // Fails when the task ended without a head that said more: then there is none.
        if let Ok(head) = self.more_after.wait_for(Option::is_some).await
            && let Some(watermark) = *head
        {
            on_more(watermark);
        }
        (&mut self.answer)
            .await
            .map_err(|e| ClientError::Task(e.to_string()))?
    }
}

impl Drop for SentAhead {
    fn drop(&mut self) {
        self.answer.abort();
    }
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
        Self::init_with_key(dir, server_url, credentials, security, None, schema).await
    }

    /// [`SyncClient::init_with_security`] with the store encrypted by `key` when given
    /// (a random key from the OS keyring, or a passphrase). The key is not stored.
    pub async fn init_with_key(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        security: &ConnectionSecurity,
        key: Option<&StoreKey>,
        schema: Option<Schema>,
    ) -> Result<Self, ClientError> {
        let protocol = (Protocol::Roster, AmaSettings::default());
        Self::init_with_protocol(
            dir,
            server_url,
            credentials,
            security,
            key,
            schema,
            protocol,
        )
        .await
    }

    /// [`SyncClient::init_with_key`] for a server that speaks `protocol.0`; against an
    /// Azure Mobile Apps backend ([`Protocol::AzureMobileApps`]) `schema` is required
    /// (such a backend serves none: its tables and columns as Roster declares them) and
    /// conflicts are resolved on this device by `protocol.1`. Fixed for the store.
    pub async fn init_with_protocol(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        security: &ConnectionSecurity,
        key: Option<&StoreKey>,
        schema: Option<Schema>,
        protocol: (Protocol, AmaSettings),
    ) -> Result<Self, ClientError> {
        protocol.1.check()?;
        if let Some(schema) = &schema {
            protocol.1.check_tables(schema)?;
        }
        if protocol.0 == Protocol::AzureMobileApps && schema.is_none() {
            return Err(ClientError::BadInput(
                "an Azure Mobile Apps backend serves no schema: give the tables and columns \
                 to sync as a schema file (`roster init --schema FILE`)"
                    .into(),
            ));
        }
        let url = normalise_server_url(server_url)?;
        check_cleartext(&url, security.allow_cleartext)?;
        if let Some(pem) = &security.ca_cert_pem {
            check_ca_pem(pem)?;
        }
        if dir.join(crate::local::DB_FILE).exists() {
            return Err(ClientError::AlreadyInitialised(dir.display().to_string()));
        }
        // A given schema has no version: the first answer makes the store follow the
        // server's.
        let (schema, version) = match schema {
            Some(schema) => (schema, 0),
            None => {
                let options = SyncOptions::default().transport(security.clone());
                let served = HttpTransport::with_options(&url, &options)?
                    .with_credentials(credentials)
                    .versioned_schema()
                    .await?;
                (served.schema, served.version)
            }
        };
        let store = LocalStore::create_with_key(dir, &url, &schema, key)?;
        store.set_schema_version(version)?;
        store.set_credentials(credentials)?;
        store.set_connection_security(security)?;
        store.set_protocol(protocol.0, protocol.1)?;
        drop(store);
        Self::open_with_key(dir, key)
    }

    /// Opens the plain store in `dir` with the credentials stored in it; works offline.
    /// An encrypted store gives [`ClientError::StoreLocked`].
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        Self::open_with_key(dir, None)
    }

    /// [`SyncClient::open`] with the store's key; with a key, a plain store is first
    /// encrypted in place (see [`LocalStore::open_with_key`]).
    pub fn open_with_key(dir: &Path, key: Option<&StoreKey>) -> Result<Self, ClientError> {
        let store = LocalStore::open_with_key(dir, key)?;
        let options = SyncOptions::default();
        let transport = HttpTransport::with_options(
            store.server_url(),
            &options.transport(store.connection_security()?),
        )?
        .with_credentials(&store.credentials()?);
        Ok(Self {
            protocol: store.protocol()?,
            store: Arc::new(store),
            transport,
            options,
            handler: None,
            round: tokio::sync::Mutex::new(()),
        })
    }

    /// Lets `handler` choose for conflicts the server defers to this client, during the
    /// round that receives them; those it returns `None` for wait for a person.
    pub fn with_handler(mut self, handler: Arc<dyn DeviceConflictHandler>) -> Self {
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

    /// The transport this client's requests go through.
    pub(crate) fn transport(&self) -> &HttpTransport {
        &self.transport
    }

    /// A handle that closes this client for good, once another replaces it, without
    /// holding it: a round waiting on the server then fails at once with
    /// [`ClientError::Closed`] after finishing its local work, and so does every later
    /// request ([`crate::Closer::close`]). The local store stays open.
    pub fn closer(&self) -> crate::transport::Closer {
        self.transport.closer()
    }

    /// A shared handle on the local store, for use from other threads.
    pub fn store_handle(&self) -> Arc<LocalStore> {
        self.store.clone()
    }

    /// The protocol this client syncs with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Asks the service whether it is up (an Azure Mobile Apps backend: whether it
    /// answers a one-row list of the first table).
    pub async fn check_server(&self) -> Result<(), ClientError> {
        if self.protocol == Protocol::AzureMobileApps {
            let schema = self.store.schema();
            let table = schema.tables.first().map_or("", |t| t.name.as_str());
            let query = [("$top", "1".to_owned())];
            let answer = self
                .transport
                .table_request(
                    reqwest::Method::GET,
                    &format!("/tables/{table}"),
                    &query,
                    None,
                    None,
                )
                .await?;
            return match answer.status {
                200 => Ok(()),
                status => Err(ClientError::Protocol(format!(
                    "the Azure Mobile Apps backend answered {status} to a list of {table}"
                ))),
            };
        }
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
    ) -> Result<roster_protocol::PulledResponse, ClientError> {
        send_with_retries(&self.transport, &self.options, request, &|_| {}).await
    }

    /// Sends `pull` on a task of its own, now, while the answer before it is read.
    fn send_ahead(&self, pull: SyncRequest) -> SentAhead {
        let (transport, options) = (self.transport.clone(), self.options.clone());
        let request = pull.clone();
        let (head, more_after) = tokio::sync::watch::channel(None);
        let answer = tokio::spawn(async move {
            let on_more = |watermark: u64| {
                head.send_replace(Some(watermark));
            };
            send_with_retries(&transport, &options, &request, &on_more).await
        });
        SentAhead {
            pull,
            more_after,
            answer,
        }
    }

    /// Fetches the server's schema and migrates the store to it, in one local
    /// transaction (see [`LocalStore::migrate_schema`]). `at_least` is the version an
    /// answer was made with; a server still serving an older one (another instance not
    /// yet restarted) fails the round, which the next one retries.
    async fn follow_schema(&self, at_least: u64) -> Result<(), ClientError> {
        let served = self.transport.versioned_schema().await?;
        if served.version < at_least {
            return Err(ClientError::Protocol(format!(
                "the server answered with schema version {at_least} but serves version {}",
                served.version
            )));
        }
        let store = self.store.clone();
        blocking(move || store.migrate_schema(&served)).await?;
        Ok(())
    }

    /// Runs one sync round; see [`SyncClient::sync_with_progress`].
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        self.sync_with_progress(|_| {}).await
    }

    /// Collects the batch `spec` names (rows created and deleted offline are dropped on
    /// the way).
    async fn collect(&self, spec: CollectSpec) -> Result<Batch, ClientError> {
        let store = self.store.clone();
        blocking(move || store.collect_batch(&spec)).await
    }

    /// Applies one answer in one local transaction (with its watermark; with the time of
    /// the last sync when `round_done`). An answer made with a newer schema than the
    /// store holds first makes the store follow it ([`SyncClient::follow_schema`]).
    async fn apply(
        &self,
        received: Received,
        round_done: bool,
    ) -> Result<ApplyCounts, ClientError> {
        let answered_with = received.response.schema_version;
        let store = self.store.clone();
        if answered_with > blocking(move || store.schema_version()).await? {
            self.follow_schema(answered_with).await?;
        }
        let store = self.store.clone();
        let handler = self.handler.clone();
        blocking(move || {
            store.apply_answer(
                &received.sent,
                &received.response,
                handler.as_deref(),
                round_done,
            )
        })
        .await
    }

    /// Runs one sync round, calling `progress` after each request. Waits if another round
    /// of this client is running. The round's batches carry one round id, so a server
    /// that can roll rounds back applies them together with the final batch. On error,
    /// what earlier requests applied stays applied (with its watermark) and pending
    /// changes not yet acknowledged stay pending.
    ///
    /// The decisions are [`RoundState`]'s (crate::round); this function only carries out
    /// its steps. The round is pipelined, with one request at the server at a time and
    /// every answer applied in order, each in its own transaction with its watermark:
    /// while a request is at the server, the previous answer is applied and the next
    /// batch is collected. Once nothing is left to push, the next pull is sent as soon as
    /// an answer's head says more changes wait, while its body is read. If applying an
    /// answer fails, the round stops with that error after the request in flight is
    /// answered, and that answer is dropped too: the rows of both batches stay pending,
    /// and when the next round sends them again the server, which already holds their
    /// values, acknowledges them without a conflict.
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
        if self.protocol == Protocol::AzureMobileApps {
            let mut report = self.run_ama_round(&mut progress).await?;
            report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(
                server = self.transport.base_url(),
                ?report,
                "Azure Mobile Apps sync round complete"
            );
            return Ok(report);
        }
        // A subscription added since the last round: its rows first, on their own.
        let (backfilled, backfill_requests) = self.run_backfills().await?;
        let mut round = RoundState::new(RoundParams {
            client_id: self.store.client_id(),
            up_to_rev: self.store.edit_counter()?,
            start_watermark: self.store.watermark()?,
            push_batch: self.options.push_batch,
            push_max_bytes: self.options.push_max_bytes,
            pull_limit: self.options.pull_limit,
            epoch: self.store.server_epoch()?,
        })
        .with_slice(self.store.slice_request()?);
        let mut step = round.start();
        let mut sent_ahead: Option<SentAhead> = None;
        loop {
            step = match step {
                Step::Collect(spec) => round.on(Event::Collected(self.collect(spec).await)),
                Step::Send {
                    request,
                    sent,
                    follow,
                    apply,
                    collect_ahead,
                } => {
                    let earlier = sent_ahead.take();
                    let follow_up = std::sync::OnceLock::new();
                    let on_more = |watermark: u64| {
                        if let Some(pull) = &follow {
                            follow_up.get_or_init(|| {
                                self.send_ahead(SyncRequest {
                                    since: watermark,
                                    ..pull.clone()
                                })
                            });
                        }
                    };
                    let remote = async {
                        match (sent, earlier) {
                            (true, Some(earlier)) => earlier.answer_to(&request, &on_more).await,
                            (true, None) => Err(ClientError::Task(
                                "sync round driven out of turn: no pull was sent ahead".into(),
                            )),
                            (false, _) => {
                                send_with_retries(
                                    &self.transport,
                                    &self.options,
                                    &request,
                                    &on_more,
                                )
                                .await
                            }
                        }
                    };
                    let local = async {
                        let applied = match apply {
                            Some(received) => self.apply(received, false).await.map(Some),
                            None => Ok(None),
                        };
                        // A failed apply ends the round: nothing is collected ahead.
                        let ahead = match applied {
                            Ok(_) => self.collect_ahead(collect_ahead).await,
                            Err(_) => None,
                        };
                        (applied, ahead)
                    };
                    let (answer, (applied, ahead)) = tokio::join!(remote, local);
                    sent_ahead = follow_up.into_inner();
                    round.on(Event::Answered {
                        request,
                        answer,
                        applied,
                        ahead,
                        followed: sent_ahead.as_ref().map(|p| p.pull.clone()),
                    })
                }
                Step::Reset => {
                    let store = self.store.clone();
                    let reset = blocking(move || store.reset_for_full_pull()).await;
                    round.on(Event::ResetDone(reset))
                }
                Step::Rebase(rebase) => {
                    let store = self.store.clone();
                    let rebased = blocking(move || store.rebase_after_restore(rebase)).await;
                    round.on(Event::Rebased(rebased))
                }
                Step::ApplyLast(received) => {
                    round.on(Event::LastApplied(self.apply(received, true).await))
                }
                Step::Done(mut report) => {
                    report.downloaded += backfilled;
                    report.requests += backfill_requests;
                    if let Some(update) = round.take_progress() {
                        progress(&update);
                    }
                    report.duration_ms =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(
                        server = self.transport.base_url(),
                        ?report,
                        "sync round complete"
                    );
                    return Ok(report);
                }
                Step::Fail(error) => return Err(error),
            };
            if !matches!(step, Step::Send { sent: true, .. }) {
                // The round did not take the pull sent ahead: stop it.
                sent_ahead = None;
            }
            if let Some(update) = round.take_progress() {
                progress(&update);
            }
        }
    }

    /// Collects the batch after the one being sent, if the round asks for it. A failure
    /// here is not final: the batch is collected again, in turn, after the answer.
    async fn collect_ahead(&self, spec: Option<CollectSpec>) -> Option<Batch> {
        let spec = spec?;
        self.collect(spec)
            .await
            .inspect_err(|error| {
                tracing::debug!(%error, "collecting ahead failed; collecting again");
            })
            .ok()
    }
}
