//! Running the service inside another Rust program, which is how a server owner plugs in
//! a [`ServerConflictHandler`]: a thin wrapper that builds an [`Application`] (the same start
//! as `roster-server serve`, background purge included) and serves it on a task.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::app::Application;
pub use crate::app::StartError;
use crate::config::ServerConfig;
use crate::resolve::ServerConflictHandler;

/// A service running on the current tokio runtime. Dropping it stops the server.
pub struct EmbeddedServer {
    addr: SocketAddr,
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedServer {
    /// Opens the database `db` names (an SQLite file, or a `postgres://` URL) and serves
    /// `config`'s tables on `config.listen` (port 0 picks a free port), with `handler`
    /// deciding conflicts first when given. Accounts are those of the same database
    /// (create them with the admin commands, or [`crate::accounts::AccountStore`] on the
    /// [`crate::store::Backend`] of that database). Tombstones are purged periodically as
    /// by `roster-server serve`.
    pub async fn start(
        config: &ServerConfig,
        db: &Path,
        handler: Option<Arc<dyn ServerConflictHandler>>,
    ) -> Result<Self, StartError> {
        let app = Application::build(config, db, handler).await?;
        let addr = app.addr();
        let url = app.url();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            url,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
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
