//! Running the service inside another Rust program, which is how a server owner plugs in
//! a [`ConflictHandler`]: open the store, build the router, serve on a listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::http::{AppState, router};
use crate::resolve::ConflictHandler;
use crate::store::{self, StoreError};

/// Why an embedded server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A service running on the current tokio runtime. Dropping it stops the server.
pub struct EmbeddedServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedServer {
    /// Opens the database `db` names (an SQLite file, or a `postgres://` URL) and serves
    /// `config`'s tables on `config.listen` (port 0 picks a free port), with `handler`
    /// deciding conflicts first when given. Accounts are those of the same database
    /// (create them with the admin commands, or [`crate::accounts::AccountStore`] on the
    /// [`store::Backend`] of that database).
    pub async fn start(
        config: &ServerConfig,
        db: &Path,
        handler: Option<Arc<dyn ConflictHandler>>,
    ) -> Result<Self, StartError> {
        let db = db.to_path_buf();
        // On a blocking thread: the PostgreSQL driver blocks.
        let store = tokio::task::spawn_blocking(move || store::open(&db))
            .await
            .map_err(|e| StartError::Store(StoreError::Unavailable(e.to_string())))??;
        let mut state = AppState::new(store.sync, store.accounts, config);
        if let Some(handler) = handler {
            state = state.with_handler(handler);
        }
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
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state, config.max_body_bytes);
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "embedded server failed");
            }
        });
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
