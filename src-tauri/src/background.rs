//! Background sync, owned by the shell: one tokio task runs every sync round of the app,
//! so two rounds never overlap.
//!
//! When a round runs (at start, every `sync_interval_secs`, [`DEBOUNCE`] after the last
//! edit, health polls while offline, backoff after a refused round) is the policy
//! [`roster_client::schedule::Schedule`], tested there; this task only sleeps until it
//! says, carries out what is due and reports back. A round also runs when someone presses
//! "Sync now" ([`SyncHandle::sync_now`]), and at once when the server's change feed
//! announces a version this device has not pulled: a second task keeps the feed open
//! ([`roster_client::LiveFeed`], reconnecting with backoff) and only tells this one
//! ([`Schedule::notified`]); while it cannot be held, the interval rounds go on as the
//! fallback. The status bar shows "Live" while a stream is open. An Azure Mobile Apps
//! backend has no change feed: against one no feed task runs, and the status says the app
//! polls every interval ([`SyncStatus::polling_secs`]). Every change of state is emitted
//! to the UI as a [`SyncStatus`] on [`STATUS_EVENT`].
//!
//! When the person connects, switches server or resets, the app stops this task
//! ([`SyncHandle::stop`]): it says nothing more to the UI, closes its client, so that a
//! round waiting on the old server gives up at once, and ends with its feed task once the
//! round's local work is over. The new task on the new store reports at once, and runs
//! its first round only after the old task has ended.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use roster_client::schedule::{Due, RoundOutcome, Schedule};
use roster_client::{
    ClientError, Closer, LiveEvent, LiveFeed, Protocol, SyncClient, SyncProgress, SyncReport,
};
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
pub use roster_client::schedule::DEBOUNCE;

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
    /// The change feed is open: other devices' changes arrive as they are made.
    pub live: bool,
    /// The server has no change feed (an Azure Mobile Apps backend): other devices'
    /// changes arrive by the rounds this app runs every this many seconds. `None` with a
    /// Roster server.
    pub polling_secs: Option<u64>,
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
    /// The change feed says the server has a version this device has not pulled.
    Notified,
    /// The change feed was opened (`true`) or lost (`false`).
    Live(bool),
    /// A new task replaces this one: end (see [`SyncHandle::stop`]).
    Stop,
}

/// Where the sync task reports: the app's window (an [`AppHandle`]), or a list in tests.
pub trait Reports: Send + Sync + 'static {
    /// The status changed.
    fn status(&self, status: &SyncStatus);
    /// A round changed local rows or conflicts (`report`, or `None` after a failed round
    /// whose earlier requests may have applied rows).
    fn records_changed(&self, report: Option<SyncReport>);
}

impl<R: Runtime> Reports for AppHandle<R> {
    fn status(&self, status: &SyncStatus) {
        if let Err(error) = self.emit(STATUS_EVENT, status) {
            tracing::warn!(%error, "cannot emit sync status");
        }
    }

    fn records_changed(&self, report: Option<SyncReport>) {
        let sent = match report {
            Some(report) => self.emit(RECORDS_CHANGED_EVENT, report),
            None => self.emit(RECORDS_CHANGED_EVENT, ()),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "cannot emit records-changed");
        }
    }
}

/// The status, and whether the task was stopped, under one lock.
struct Shared {
    status: SyncStatus,
    stopped: bool,
}

/// The task's status with its reports: a change is reported while the lock is held, so
/// reports leave in the order of the changes, and none leaves after [`SyncHandle::stop`].
#[derive(Clone)]
struct StatusCell {
    shared: Arc<Mutex<Shared>>,
    reports: Arc<dyn Reports>,
}

impl StatusCell {
    /// Changes the status and reports it, unless the task was stopped.
    fn update(&self, change: impl FnOnce(&mut SyncStatus)) {
        let mut shared = lock(&self.shared);
        if shared.stopped {
            return;
        }
        change(&mut shared.status);
        self.reports.status(&shared.status);
    }

    /// Reports that a round changed local rows, unless the task was stopped.
    fn records_changed(&self, report: Option<SyncReport>) {
        let shared = lock(&self.shared);
        if !shared.stopped {
            self.reports.records_changed(report);
        }
    }

    /// The current status.
    fn get(&self) -> SyncStatus {
        lock(&self.shared).status.clone()
    }
}

/// The app's handle on the sync task.
#[derive(Clone)]
pub struct SyncHandle {
    tx: mpsc::UnboundedSender<Trigger>,
    status: StatusCell,
    closer: Closer,
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

    /// Runs a round now (after the one in progress, if any) and returns its report; a
    /// task stopped before it answered says the app switched ([`AppError::switched`]).
    pub async fn sync_now(&self) -> Result<SyncReport, AppError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Trigger::Now(reply))
            .map_err(|_| AppError::switched())?;
        answer.await.map_err(|_| AppError::switched())?
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        self.status.get()
    }

    /// Stops the task, for good: it reports nothing from now on, and ends with its feed
    /// task once a round in progress (if any) has finished its local work: the task's
    /// client is closed, so the round waits on the server no more
    /// ([`SyncClient::closer`]). Called when a new task replaces it; pass what this
    /// returns to [`start`] the new one.
    pub fn stop(&self) -> Stopped {
        // invariant: a stopped task never reports, so the status bar shows only the
        // store the app now runs on.
        lock(&self.status.shared).stopped = true;
        // A server that stopped answering holds the old round no longer than this.
        self.closer.close();
        let _ = self.tx.send(Trigger::Stop);
        Stopped(self.tx.clone())
    }
}

/// A stopped sync task, until it has ended (see [`SyncHandle::stop`]).
pub struct Stopped(mpsc::UnboundedSender<Trigger>);

impl Stopped {
    /// Waits until the task has ended: its receiver is gone once its loop returned.
    async fn ended(self) {
        self.0.closed().await;
    }
}

/// Locks a mutex, reusing it if a panic poisoned it (the data is a plain snapshot).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the sync task on Tauri's async runtime and returns its handle. It reports its
/// status at once; its first round waits until `replaces` (the task it takes over from,
/// if any) has ended.
pub fn start(
    reports: impl Reports,
    client: Arc<SyncClient>,
    settings: Arc<RwLock<Settings>>,
    replaces: Option<Stopped>,
) -> SyncHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = SyncStatus {
        state: SyncState::Idle,
        message: None,
        progress: None,
        pending: 0,
        open_conflicts: 0,
        last_sync_ms: None,
        last_report: None,
        server_url: client.store().server_url().to_owned(),
        needs_settings: false,
        live: false,
        polling_secs: None,
    };
    let status = StatusCell {
        shared: Arc::new(Mutex::new(Shared {
            status,
            stopped: false,
        })),
        reports: Arc::new(reports),
    };
    let closer = client.closer();
    if client.protocol() == Protocol::Roster {
        tauri::async_runtime::spawn(follow_changes(client.live(), settings.clone(), tx.clone()));
    }
    let task = SyncTask {
        client,
        settings,
        status: status.clone(),
    };
    tauri::async_runtime::spawn(task.run(rx, replaces));
    SyncHandle { tx, status, closer }
}

/// How often the feed task looks again whether a server was chosen.
const NOT_CONNECTED_POLL: Duration = Duration::from_secs(2);

/// Keeps the change feed open and tells the sync task when a round is due and whether
/// the app is live; ends with the sync task (when the client is replaced or the app
/// quits).
async fn follow_changes(
    mut feed: LiveFeed,
    settings: Arc<RwLock<Settings>>,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    loop {
        let syncs = settings.read().map(|s| s.syncs()).unwrap_or(true);
        let event = tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(NOT_CONNECTED_POLL), if !syncs => continue,
            event = feed.next(), if syncs => event,
        };
        let triggers = match event {
            LiveEvent::Connected { version, behind } => {
                tracing::info!(version, "live: the change feed is open");
                if behind {
                    vec![Trigger::Live(true), Trigger::Notified]
                } else {
                    vec![Trigger::Live(true)]
                }
            }
            LiveEvent::Changed { .. } => vec![Trigger::Notified],
            LiveEvent::Lost { error, retry_in } => {
                tracing::info!(%error, ?retry_in, "change feed lost; polling until it is back");
                vec![Trigger::Live(false)]
            }
        };
        for trigger in triggers {
            if tx.send(trigger).is_err() {
                return;
            }
        }
    }
}

/// The state of the sync task.
struct SyncTask {
    client: Arc<SyncClient>,
    settings: Arc<RwLock<Settings>>,
    status: StatusCell,
}

impl SyncTask {
    /// The task's main loop; ends when stopped ([`SyncHandle::stop`]; its feed task holds
    /// a sender, so the channel alone would never close).
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Trigger>, replaces: Option<Stopped>) {
        self.refresh_counts().await;
        self.show_polling();
        if let Some(previous) = replaces {
            // invariant: two rounds never overlap, not even when a task replaces another
            // (on the same store after a new CA file): the old one's last round ends first.
            previous.ended().await;
        }
        let mut schedule = Schedule::new(Instant::now());
        loop {
            let (deadline, due) = schedule.wake_at();
            let trigger = tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => Some(message),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => None,
            };
            let mut waiters = Vec::new();
            match trigger {
                Some(Trigger::Stop) => return,
                Some(Trigger::Edited) => {
                    self.refresh_counts().await;
                    schedule.edited(Instant::now());
                    continue;
                }
                Some(Trigger::Refresh) => {
                    self.refresh_counts().await;
                    self.show_polling();
                    schedule.refreshed(self.interval());
                    continue;
                }
                Some(Trigger::Notified) => {
                    schedule.notified(Instant::now());
                    continue;
                }
                Some(Trigger::Live(live)) => {
                    schedule.set_live(live);
                    self.update(|status| status.live = live);
                    continue;
                }
                Some(Trigger::Now(reply)) => waiters.push(reply),
                None if due == Due::HealthCheck => {
                    if self.client.check_server().await.is_err() {
                        schedule.still_offline(Instant::now());
                        continue;
                    }
                    tracing::info!("sync server reachable again");
                }
                None => {}
            }
            // Requests that arrived meanwhile share this round.
            while let Ok(message) = rx.try_recv() {
                match message {
                    Trigger::Stop => return,
                    Trigger::Now(reply) => waiters.push(reply),
                    Trigger::Live(live) => {
                        schedule.set_live(live);
                        self.update(|status| status.live = live);
                    }
                    // This round pulls what was announced, and pushes the edit.
                    Trigger::Notified | Trigger::Edited | Trigger::Refresh => {}
                }
            }
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
                // Nothing to sync with: wake again after an interval.
                schedule.round_done(Instant::now(), RoundOutcome::Synced, self.interval());
                continue;
            }
            let result = self.round().await;
            schedule.round_done(
                Instant::now(),
                RoundOutcome::of(result.as_ref().map_err(|error| &**error)),
                self.interval(),
            );
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

    /// Says in the status how often the app polls a server without a change feed.
    fn show_polling(&self) {
        let polling_secs = (self.client.protocol() == Protocol::AzureMobileApps)
            .then(|| self.interval().as_secs());
        self.update(|status| status.polling_secs = polling_secs);
    }

    /// Whether a server was chosen (else no round runs).
    fn syncs(&self) -> bool {
        self.settings.read().map(|s| s.syncs()).unwrap_or(true)
    }

    /// Runs one round, keeping the status (and the UI) up to date.
    async fn round(&mut self) -> Result<SyncReport, Arc<ClientError>> {
        let to_upload = self.status.get().pending;
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
        let status = self.status.clone();
        let result = self
            .client
            .sync_with_progress(move |progress: &SyncProgress| {
                status.update(|status| {
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
                });
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
                    || report.evicted > 0
                {
                    self.status.records_changed(Some(report));
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
                self.status.records_changed(None);
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
        self.status.update(change);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use roster_client::{ConnectionSecurity, Credentials};
    use roster_protocol::Schema;

    use super::*;
    use crate::error::ErrorKind;
    use crate::settings::Connection;

    /// The statuses a task reported, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<SyncStatus>>);

    impl Reports for Arc<Recorded> {
        fn status(&self, status: &SyncStatus) {
            lock(&self.0).push(status.clone());
        }

        fn records_changed(&self, _report: Option<SyncReport>) {}
    }

    impl Recorded {
        fn len(&self) -> usize {
            lock(&self.0).len()
        }
    }

    /// Waits up to ten seconds for `done`.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let start = StdInstant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A store in `dir` that syncs with `url`.
    fn store_for(dir: &std::path::Path, url: &str) -> Arc<SyncClient> {
        let client = tauri::async_runtime::block_on(SyncClient::init_with_key(
            dir,
            url,
            &Credentials::token("rst_test"),
            &ConnectionSecurity::default(),
            None,
            Some(Schema::default_person()),
        ))
        .expect("store");
        Arc::new(client)
    }

    #[test]
    fn a_stopped_task_ends_with_its_feed_task_and_reports_nothing_more() {
        // One case per line: how the device is connected, what a round answers meanwhile.
        let cases = [
            (Connection::Offline, ErrorKind::Offline),
            // Nothing listens on port 1: every round and the feed fail to connect.
            (Connection::Server, ErrorKind::Offline),
        ];
        for (connection, answer) in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let client = store_for(dir.path(), "http://127.0.0.1:1");
            let settings = Arc::new(RwLock::new(Settings {
                connection,
                ..Settings::default()
            }));
            let recorded = Arc::new(Recorded::default());
            let handle = start(recorded.clone(), client.clone(), settings.clone(), None);

            let error =
                tauri::async_runtime::block_on(handle.sync_now()).expect_err("no server answers");
            assert_eq!(error.kind, answer, "{connection:?}: {}", error.message);
            let reported = recorded.len();
            assert!(reported > 0, "{connection:?}: the running task reports");

            handle.stop();
            // The sync task and the feed task each hold the settings until they end.
            eventually(&format!("{connection:?}: both tasks ended"), || {
                Arc::strong_count(&settings) == 1 && Arc::strong_count(&client) == 1
            });
            let error = tauri::async_runtime::block_on(handle.sync_now())
                .expect_err("a stopped task runs no round");
            assert_eq!(error, AppError::switched());
            assert_eq!(
                recorded.len(),
                reported,
                "{connection:?}: nothing reported after stop"
            );
        }
    }

    /// A server that accepts connections and never answers, until it is let go: then its
    /// connections close and nothing listens any more.
    struct SilentServer {
        url: String,
        let_go: Arc<std::sync::atomic::AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    }

    impl SilentServer {
        fn start() -> Self {
            use std::sync::atomic::Ordering;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let let_go = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = let_go.clone();
            let thread = std::thread::spawn(move || {
                let mut held = Vec::new();
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => held.push(socket),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Self {
                url,
                let_go,
                thread,
            }
        }

        fn let_go(self) {
            self.let_go.store(true, std::sync::atomic::Ordering::SeqCst);
            self.thread.join().expect("server thread");
        }
    }

    #[test]
    fn a_stopped_task_gives_up_its_round_on_a_silent_server_at_once() {
        let silent = SilentServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let client = store_for(dir.path(), &silent.url);
        let settings = Arc::new(RwLock::new(Settings::default()));
        let recorded = Arc::new(Recorded::default());
        let task = start(recorded.clone(), client, settings.clone(), None);
        // The round waits on the silent server: for the 60 s request timeout and its
        // retries, unless it is cut.
        eventually("the round started", || {
            lock(&recorded.0)
                .iter()
                .any(|s| s.state == SyncState::Syncing)
        });

        task.stop();
        // The silent server still holds the round's connection: only the stop ends it.
        eventually("the stopped task ended", || {
            Arc::strong_count(&settings) == 1
        });
        assert!(
            !lock(&recorded.0)
                .iter()
                .any(|s| s.state == SyncState::Offline || s.state == SyncState::Error),
            "the stopped task reported its cut round"
        );
        silent.let_go();
    }

    #[test]
    fn a_new_task_runs_its_first_round_only_once_the_replaced_task_ended() {
        // The replaced task, still running: its receiver is the one a task holds until its
        // loop returns.
        let (replaced, running) = mpsc::unbounded_channel();
        let dir = tempfile::tempdir().expect("temp dir");
        let client = store_for(dir.path(), "http://127.0.0.1:1");
        let recorded = Arc::new(Recorded::default());
        let new = start(
            recorded.clone(),
            client,
            Arc::new(RwLock::new(Settings::default())),
            Some(Stopped(replaced)),
        );
        let asked = {
            let new = new.clone();
            tauri::async_runtime::spawn(async move { new.sync_now().await })
        };
        let syncing = || {
            lock(&recorded.0)
                .iter()
                .any(|s| s.state == SyncState::Syncing)
        };
        // The new task reports its status at once, but starts no round.
        eventually("the new task reported", || recorded.len() > 0);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!syncing(), "a round started beside the replaced task's");
        assert!(
            !asked.inner().is_finished(),
            "Sync now was answered without a round"
        );

        drop(running);
        let answer = tauri::async_runtime::block_on(asked).expect("task");
        let error = answer.expect_err("nothing listens on port 1");
        assert_eq!(error.kind, ErrorKind::Offline, "{}", error.message);
        assert!(syncing(), "the new task ran its round");
    }
}
