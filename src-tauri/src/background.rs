//! Background sync, owned by the shell: one tokio task runs every sync round of the app,
//! so two rounds never overlap.
//!
//! A round runs
//! * at start, then every `sync_interval_secs` after the last completed round;
//! * [`DEBOUNCE`] after the last local edit (edits in quick succession share one round);
//! * when someone presses "Sync now" ([`SyncHandle::sync_now`]);
//! * as soon as the server answers again after being unreachable: while offline, the task
//!   polls `/health` with exponential backoff and jitter instead of running rounds.
//!
//! A round the server refused is retried with exponential backoff and jitter. Every
//! change of state is emitted to the UI as a [`SyncStatus`] on [`STATUS_EVENT`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use roster_client::{ClientError, SyncClient, SyncProgress, SyncReport};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::AppError;
use crate::settings::Settings;

/// Event carrying a [`SyncStatus`] whenever it changes.
pub const STATUS_EVENT: &str = "sync-status";
/// Event sent after a sync round changed local rows or conflicts, so views reload.
pub const RECORDS_CHANGED_EVENT: &str = "records-changed";
/// Quiet time after the last local edit before a round starts.
pub const DEBOUNCE: Duration = Duration::from_millis(1500);

/// The state the status bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Nothing running; the last round (if any) succeeded.
    Idle,
    /// A round is running.
    Syncing,
    /// The server cannot be reached; edits queue locally.
    Offline,
    /// The last round failed for another reason (see `message`).
    Error,
    /// No server chosen yet (first start, or "work offline for now"): nothing syncs.
    NotConnected,
}

/// Progress of the running round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Requests completed.
    pub requests: u32,
    /// Local changes pushed so far.
    pub uploaded: u64,
    /// Local changes this round set out to push.
    pub to_upload: u64,
    /// Rows changed locally by the server so far.
    pub downloaded: u64,
    /// Change-log positions pulled so far this round (watermark minus its start).
    pub pull_done: u64,
    /// Change-log positions the pull must cover (newest position the server reported
    /// minus the starting watermark; 0 until the first answer). With `pull_done` it gives
    /// a determinate pull fraction: positions of superseded versions count too, so it is
    /// an estimate of rows, never more than 100%.
    pub pull_total: u64,
}

/// Everything the status bar shows, sent as the payload of [`STATUS_EVENT`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    /// Idle, syncing, offline or error.
    pub state: SyncState,
    /// Why the last round failed (offline and error states).
    pub message: Option<String>,
    /// Progress while syncing.
    pub progress: Option<Progress>,
    /// Local changes waiting to be pushed.
    pub pending: u64,
    /// Conflicts waiting for a person to resolve them.
    pub open_conflicts: u64,
    /// When the last round completed (Unix ms), if ever.
    pub last_sync_ms: Option<i64>,
    /// What the last successful round did.
    pub last_report: Option<SyncReport>,
    /// The sync server's URL.
    pub server_url: String,
    /// The last round failed in a way only Settings can fix (the token was refused).
    pub needs_settings: bool,
}

/// What wakes the sync task.
#[derive(Debug)]
enum Trigger {
    /// A local edit: refresh the counts, sync after [`DEBOUNCE`].
    Edited,
    /// Conflicts were resolved or settings changed: refresh the counts and the schedule.
    Refresh,
    /// Run a round now and report how it went.
    Now(oneshot::Sender<Result<SyncReport, AppError>>),
}

/// The app's handle on the sync task.
#[derive(Clone)]
pub struct SyncHandle {
    tx: mpsc::UnboundedSender<Trigger>,
    status: Arc<Mutex<SyncStatus>>,
}

impl SyncHandle {
    /// Tells the task a local edit happened.
    pub fn edited(&self) {
        let _ = self.tx.send(Trigger::Edited);
    }

    /// Tells the task to refresh its counts and schedule (after a conflict was resolved or
    /// the settings changed).
    pub fn refresh(&self) {
        let _ = self.tx.send(Trigger::Refresh);
    }

    /// Runs a round now (after the one in progress, if any) and returns its report.
    pub async fn sync_now(&self) -> Result<SyncReport, AppError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Trigger::Now(reply))
            .map_err(|_| AppError::internal("the sync task has stopped"))?;
        answer
            .await
            .map_err(|_| AppError::internal("the sync task has stopped"))?
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        lock(&self.status).clone()
    }
}

/// Locks a mutex, reusing it if a panic poisoned it (the data is a plain snapshot).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Starts the sync task on Tauri's async runtime and returns its handle.
pub fn start<R: Runtime>(
    app: AppHandle<R>,
    client: Arc<SyncClient>,
    settings: Arc<RwLock<Settings>>,
) -> SyncHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(SyncStatus {
        state: SyncState::Idle,
        message: None,
        progress: None,
        pending: 0,
        open_conflicts: 0,
        last_sync_ms: None,
        last_report: None,
        server_url: client.store().server_url().to_owned(),
        needs_settings: false,
    }));
    let task = SyncTask {
        app,
        client,
        settings,
        status: status.clone(),
        error_backoff: error_backoff(),
        offline_backoff: offline_backoff(),
    };
    tauri::async_runtime::spawn(task.run(rx));
    SyncHandle { tx, status }
}

/// The state of the sync task.
struct SyncTask<R: Runtime> {
    app: AppHandle<R>,
    client: Arc<SyncClient>,
    settings: Arc<RwLock<Settings>>,
    status: Arc<Mutex<SyncStatus>>,
    error_backoff: ExponentialBackoff,
    offline_backoff: ExponentialBackoff,
}

/// When the task wakes next, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Time for a round.
    Round,
    /// Offline: time to ask the server whether it is back.
    HealthCheck,
}

impl<R: Runtime> SyncTask<R> {
    /// The task's main loop; ends when every [`SyncHandle`] is gone.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Trigger>) {
        self.refresh_counts().await;
        let mut next = (Instant::now(), Due::Round);
        let mut debounce: Option<Instant> = None;
        let mut last_round = Instant::now();
        loop {
            let (deadline, due) = match debounce {
                Some(at) if at < next.0 && next.1 == Due::Round => (at, Due::Round),
                _ => next,
            };
            let trigger = tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => Some(message),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => None,
            };
            let mut waiters = Vec::new();
            match trigger {
                Some(Trigger::Edited) => {
                    self.refresh_counts().await;
                    if self.state() != SyncState::Offline {
                        debounce = Some(Instant::now() + DEBOUNCE);
                    }
                    continue;
                }
                Some(Trigger::Refresh) => {
                    self.refresh_counts().await;
                    if self.state() == SyncState::Idle {
                        next = (last_round + self.interval(), Due::Round);
                    }
                    continue;
                }
                Some(Trigger::Now(reply)) => waiters.push(reply),
                None if due == Due::HealthCheck => {
                    if self.client.check_server().await.is_err() {
                        next = (
                            Instant::now() + self.offline_backoff.next().unwrap_or(DEBOUNCE),
                            Due::HealthCheck,
                        );
                        continue;
                    }
                    tracing::info!("sync server reachable again");
                }
                None => {}
            }
            // Requests that arrived meanwhile share this round.
            while let Ok(message) = rx.try_recv() {
                if let Trigger::Now(reply) = message {
                    waiters.push(reply);
                }
            }
            debounce = None;
            if !self.syncs() {
                self.update(|status| {
                    status.state = SyncState::NotConnected;
                    status.message = None;
                });
                for waiter in waiters {
                    let _ = waiter.send(Err(AppError::new(
                        crate::error::ErrorKind::Offline,
                        "Not connected to a server yet: choose one in Settings.",
                    )));
                }
                next = (Instant::now() + self.interval(), Due::Round);
                continue;
            }
            let result = self.round().await;
            last_round = Instant::now();
            next = self.schedule_after(&result);
            for waiter in waiters {
                let _ = waiter.send(result.clone().map_err(|error| AppError::from(&*error)));
            }
        }
    }

    /// The sync interval from the settings.
    fn interval(&self) -> Duration {
        self.settings
            .read()
            .map(|s| s.interval())
            .unwrap_or(Duration::from_secs(30))
    }

    /// Whether a server was chosen (else no round runs).
    fn syncs(&self) -> bool {
        self.settings.read().map(|s| s.syncs()).unwrap_or(true)
    }

    /// The current state.
    fn state(&self) -> SyncState {
        lock(&self.status).state
    }

    /// When to wake next after a round ended with `result`.
    fn schedule_after(&mut self, result: &Result<SyncReport, Arc<ClientError>>) -> (Instant, Due) {
        let now = Instant::now();
        match result {
            Ok(report) => {
                self.error_backoff = error_backoff();
                self.offline_backoff = offline_backoff();
                if report.conflicts_decided_here > 0 {
                    // This device's rule decided conflicts: push the outcome now.
                    (now, Due::Round)
                } else {
                    (now + self.interval(), Due::Round)
                }
            }
            Err(error) if matches!(**error, ClientError::Unreachable { .. }) => {
                let delay = self.offline_backoff.next().unwrap_or(DEBOUNCE);
                (now + delay, Due::HealthCheck)
            }
            Err(_) => {
                let delay = self.error_backoff.next().unwrap_or(self.interval());
                (now + delay, Due::Round)
            }
        }
    }

    /// Runs one round, keeping the status (and the UI) up to date.
    async fn round(&mut self) -> Result<SyncReport, Arc<ClientError>> {
        let to_upload = lock(&self.status).pending;
        self.update(|status| {
            status.state = SyncState::Syncing;
            status.progress = Some(Progress {
                requests: 0,
                uploaded: 0,
                to_upload,
                downloaded: 0,
                pull_done: 0,
                pull_total: 0,
            });
        });
        let app = self.app.clone();
        let status = self.status.clone();
        let result = self
            .client
            .sync_with_progress(move |progress: &SyncProgress| {
                let snapshot = {
                    let mut status = lock(&status);
                    status.progress = Some(Progress {
                        requests: progress.requests,
                        uploaded: progress.uploaded,
                        to_upload: to_upload.max(progress.uploaded),
                        downloaded: progress.downloaded,
                        pull_done: progress.watermark.saturating_sub(progress.start_watermark),
                        pull_total: progress
                            .pull_target
                            .saturating_sub(progress.start_watermark),
                    });
                    status.clone()
                };
                let _ = app.emit(STATUS_EVENT, snapshot);
            })
            .await
            .map_err(Arc::new);
        match &result {
            Ok(report) => {
                let report = *report;
                self.update(|status| {
                    status.state = SyncState::Idle;
                    status.message = None;
                    status.needs_settings = false;
                    status.last_report = Some(report);
                });
                // Pushed rows are no longer "not synced": every view showing them reloads.
                if report.uploaded > 0
                    || report.downloaded > 0
                    || report.conflicts_detected > 0
                    || report.auto_merged > 0
                {
                    let _ = self.app.emit(RECORDS_CHANGED_EVENT, report);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sync round failed");
                let state = if matches!(**error, ClientError::Unreachable { .. }) {
                    SyncState::Offline
                } else {
                    SyncState::Error
                };
                let shown = AppError::from(&**error);
                let needs_settings = shown.kind == crate::error::ErrorKind::Unauthorized;
                self.update(|status| {
                    status.state = state;
                    status.message = Some(shown.message);
                    status.needs_settings = needs_settings;
                });
                // Earlier requests of the round may have applied rows.
                let _ = self.app.emit(RECORDS_CHANGED_EVENT, ());
            }
        }
        self.update(|status| status.progress = None);
        self.refresh_counts().await;
        result
    }

    /// Re-reads pending, conflict and last-sync counters from the store and emits them.
    async fn refresh_counts(&self) {
        let store = self.client.store_handle();
        let counts = tokio::task::spawn_blocking(move || store.status()).await;
        match counts {
            Ok(Ok(counts)) => self.update(|status| {
                status.pending = counts.pending;
                status.last_sync_ms = counts.last_sync_ms;
                status.open_conflicts = counts.open_conflicts;
            }),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read sync counters"),
            Err(error) => tracing::warn!(%error, "cannot read sync counters"),
        }
    }

    /// Changes the status and emits it.
    fn update(&self, change: impl FnOnce(&mut SyncStatus)) {
        let snapshot = {
            let mut status = lock(&self.status);
            change(&mut status);
            status.clone()
        };
        if let Err(error) = self.app.emit(STATUS_EVENT, snapshot) {
            tracing::warn!(%error, "cannot emit sync status");
        }
    }
}
