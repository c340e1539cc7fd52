//! The state every command reaches through `tauri::State<AppState>`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use roster_client::LocalStore;
use roster_client::SyncClient;

use crate::background::SyncHandle;
use crate::error::{AppError, ErrorKind};
use crate::settings::Settings;

/// What a running app holds.
pub struct Ready {
    /// Where the store and the settings live.
    pub data_dir: PathBuf,
    /// The sync engine over the local store.
    pub client: Arc<SyncClient>,
    /// The current settings (written through [`crate::settings::save`]).
    pub settings: Arc<RwLock<Settings>>,
    /// The background sync task.
    pub sync: SyncHandle,
}

/// The app state: ready, or the reason it could not start (shown by the UI).
pub struct AppState(Result<Ready, AppError>);

impl AppState {
    /// A started app.
    pub fn ready(ready: Ready) -> Self {
        Self(Ok(ready))
    }

    /// An app whose start failed with `error`.
    pub fn failed(error: AppError) -> Self {
        Self(Err(error))
    }

    /// The running app, or why it is not running.
    pub fn get(&self) -> Result<&Ready, AppError> {
        self.0.as_ref().map_err(|error| AppError {
            kind: ErrorKind::NotReady,
            message: format!("Roster could not start: {}", error.message),
            field: None,
        })
    }

    /// A shared handle on the local store.
    pub fn store(&self) -> Result<Arc<LocalStore>, AppError> {
        Ok(self.get()?.client.store_handle())
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> Result<Settings, AppError> {
        let ready = self.get()?;
        ready
            .settings
            .read()
            .map(|settings| settings.clone())
            .map_err(|_| AppError::internal("settings lock poisoned"))
    }
}
