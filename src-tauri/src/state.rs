//! The state every command reaches through `tauri::State<AppState>`.
//!
//! The running part ([`Ready`]) can be replaced as a whole: connecting a store made
//! offline to a server, switching server or resetting the local data opens another
//! client and starts another sync task. Commands take an `Arc<Ready>` snapshot, so one
//! in flight finishes on the client it started with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use roster_client::SyncClient;
use roster_client::{LocalStore, StoreKey};

use crate::background::SyncHandle;
use crate::error::{AppError, ErrorKind};
use crate::settings::Settings;

/// What a running app holds.
pub struct Ready {
    /// Where the store(s), the settings and the web view's storage live.
    pub data_dir: PathBuf,
    /// The sync engine over the local store.
    pub client: Arc<SyncClient>,
    /// The current settings (written through [`crate::settings::save`]).
    pub settings: Arc<RwLock<Settings>>,
    /// The background sync task.
    pub sync: SyncHandle,
    /// The key of the data dir's stores (held in memory only), if they are encrypted.
    pub store_key: Option<StoreKey>,
}

/// The app state: ready, or the reason it could not start (shown by the UI; a
/// [`ErrorKind::Locked`] one waits for the passphrase).
pub struct AppState(RwLock<Result<Arc<Ready>, AppError>>);

impl AppState {
    /// A started app.
    pub fn ready(ready: Ready) -> Self {
        Self(RwLock::new(Ok(Arc::new(ready))))
    }

    /// An app whose start failed with `error`.
    pub fn failed(error: AppError) -> Self {
        Self(RwLock::new(Err(error)))
    }

    /// The running app, or why it is not running.
    pub fn get(&self) -> Result<Arc<Ready>, AppError> {
        let guard = self
            .0
            .read()
            .map_err(|_| AppError::internal("app state lock poisoned"))?;
        guard
            .as_ref()
            .map(Arc::clone)
            .map_err(|error| match error.kind {
                ErrorKind::Locked => error.clone(),
                _ => AppError {
                    kind: ErrorKind::NotReady,
                    message: format!("Roster could not start: {}", error.message),
                    field: None,
                    errors: Vec::new(),
                },
            })
    }

    /// Replaces the running app (its old sync task stops once nothing holds it).
    pub fn replace(&self, ready: Ready) -> Result<(), AppError> {
        *self
            .0
            .write()
            .map_err(|_| AppError::internal("app state lock poisoned"))? = Ok(Arc::new(ready));
        Ok(())
    }

    /// Whether the app waits for the store's passphrase.
    pub fn is_locked(&self) -> bool {
        self.0
            .read()
            .map(|g| matches!(&*g, Err(e) if e.kind == ErrorKind::Locked))
            .unwrap_or(false)
    }

    /// A shared handle on the local store.
    pub fn store(&self) -> Result<Arc<LocalStore>, AppError> {
        Ok(self.get()?.client.store_handle())
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> Result<Settings, AppError> {
        self.get()?.settings()
    }
}

impl Ready {
    /// A copy of the current settings.
    pub fn settings(&self) -> Result<Settings, AppError> {
        self.settings
            .read()
            .map(|settings| settings.clone())
            .map_err(|_| AppError::internal("settings lock poisoned"))
    }
}
