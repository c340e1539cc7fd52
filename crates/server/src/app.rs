//! One way to start the service. [`Application::build`] opens the store and builds the
//! state, the router and the listener; [`Application::run_until`] serves connections
//! (see [`crate::listener`]) and runs the background tasks, the periodic tombstone purge
//! among them, until a shutdown signal. `roster-server serve`,
//! [`crate::embed::EmbeddedServer`] and the tests all start the service this way, so an
//! embedded server behaves as the binary does.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerConfig;
use crate::feed::Feed;
use crate::http::{BodyLimits, ServerState, router};
use crate::listener::{self, ConnectionLimits};
use crate::resolve::ServerConflictHandler;
use crate::store::{self, StoreError, SyncStore};
use crate::telemetry::{MetricsError, MetricsServer};
use crate::tls::{self, Tls, TlsError};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// The config's tables cannot be served over what the database holds.
    #[error("cannot serve the configured tables: {0}")]
    Schema(#[from] crate::schema_version::SchemaVersionError),
    /// The TLS certificate or key could not be loaded.
    #[error("cannot use the TLS certificate: {0}")]
    Tls(#[from] TlsError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A restore holds the SQLite database (see [`store::db_lock`]).
    #[error("cannot serve the database: {0}")]
    Locked(#[from] store::db_lock::DbLockError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// The service, built and bound, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    store: Arc<dyn SyncStore>,
    feed: Arc<Feed>,
    limits: ConnectionLimits,
    tls: Option<(Arc<Tls>, Duration)>,
    retention: Duration,
    purge_interval: Duration,
    metrics: Option<MetricsServer>,
    /// An SQLite database's serving lock, held while the service runs.
    db_lock: Option<store::db_lock::DbLock>,
}

impl Application {
    /// Opens the database `db` names (an SQLite file, or a `postgres://` URL), builds the
    /// service for `config`'s tables with `handler` deciding conflicts first when given,
    /// raises the open-file limit and binds `config.listen` (port 0 picks a free port).
    pub async fn build(
        config: &ServerConfig,
        db: &Path,
        handler: Option<Arc<dyn ServerConflictHandler>>,
    ) -> Result<Self, StartError> {
        let db = db.to_path_buf();
        let wanted = config.schema();
        let defs = config.subscriptions.clone();
        // On a blocking thread: the PostgreSQL driver blocks. Each subscription's index
        // is made before the first request is served.
        let (db_lock, backend, served) = tokio::task::spawn_blocking(move || {
            let db_lock = match store::postgres::is_postgres_url(&db.to_string_lossy()) {
                true => None,
                false => Some(store::db_lock::hold_for_serving(&db)?),
            };
            let backend = store::open(&db)?;
            let adopted = crate::schema_version::adopt(backend.sync.as_ref(), &wanted)?;
            // The adopted version with the renames of its history and the columns older
            // versions declared (another instance may have stored a newer one since).
            let served = crate::schema_version::served(backend.sync.as_ref())?
                .unwrap_or_else(|| (adopted, Default::default()));
            backend.sync.ensure_slice_indexes(&defs)?;
            Ok::<_, StartError>((db_lock, backend, served))
        })
        .await
        .map_err(|e| StartError::Store(StoreError::Unavailable(e.to_string())))??;
        let (served, retired) = served;
        tracing::info!(version = served.version, "serving schema");
        // PostgreSQL: versions committed by other instances reach this one's streams.
        backend.sync.start_change_listener()?;
        let mut state = ServerState::new(backend.sync.clone(), backend.accounts, config)
            .with_served_schema(served, retired);
        let feed = state.feed();
        if let Some(handler) = handler {
            state = state.with_handler(handler);
        }
        let limits = ConnectionLimits::from_config(config);
        let tls = match config.tls_files() {
            Some(files) => Some((
                Arc::new(Tls::load(files)?),
                Duration::from_secs(config.tls_reload_poll_secs),
            )),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics = match config.metrics_listen {
            Some(at) => Some(MetricsServer::bind(at, backend.sync.clone(), feed.clone()).await?),
            None => None,
        };
        Ok(Self {
            listener,
            addr,
            router: router(state, BodyLimits::from_config(config)),
            store: backend.sync,
            feed,
            limits,
            tls,
            retention: Duration::from_secs(config.tombstone_retention_days.saturating_mul(86_400)),
            purge_interval: Duration::from_secs(config.purge_interval_secs),
            metrics,
            db_lock,
        })
    }

    /// The metrics endpoint's address, when it is on (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:8787` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The line `roster-server` prints first on stdout once it listens.
    pub fn listening_line(&self) -> String {
        roster_testkit::listening_line(&self.url())
    }

    /// Serves until `shutdown` completes, then ends the change streams, stops
    /// accepting, lets the requests in flight finish and stops the background tasks: the periodic tombstone purge, and
    /// with TLS the certificate reload (SIGHUP, or a change of its files).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) {
        let _db_lock = self.db_lock;
        if self.tls.is_none() && !self.addr.ip().is_loopback() {
            tracing::warn!(addr = %self.addr, "serving plain HTTP beyond loopback: put a TLS proxy in front, or set tls_cert and tls_key");
        }
        let mut background = vec![tokio::spawn(purge_periodically(
            self.store,
            self.retention,
            self.purge_interval,
        ))];
        if let Some(metrics) = self.metrics {
            tracing::info!(addr = %metrics.addr(), "metrics at /metrics");
            background.push(tokio::spawn(metrics.serve()));
        }
        let acceptor = self.tls.map(|(tls, poll)| {
            background.push(tokio::spawn(tls::watch_for_changes(tls.clone(), poll)));
            tls.acceptor()
        });
        let feed = self.feed;
        let shutdown = async move {
            shutdown.await;
            feed.close();
        };
        listener::serve(self.listener, self.router, self.limits, acceptor, shutdown).await;
        for task in background {
            task.abort();
        }
    }
}

/// Milliseconds since the Unix epoch, `age` ago.
pub fn unix_ms_ago(age: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(i64::MAX)
}

/// Purges tombstones older than `retention` at start and then every `interval`.
async fn purge_periodically(store: Arc<dyn SyncStore>, retention: Duration, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let cutoff = unix_ms_ago(retention);
        match tokio::task::spawn_blocking(move || store.purge_tombstones(cutoff)).await {
            Ok(Ok(report)) if report.purged > 0 => {
                tracing::info!(
                    purged = report.purged,
                    horizon = report.horizon,
                    "purged tombstones"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "tombstone purge failed"),
            Err(error) => tracing::warn!(%error, "tombstone purge task failed"),
        }
    }
}
