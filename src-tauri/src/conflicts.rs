//! This device's conflict handling: the [`DeviceHandler`] that applies the
//! "conflicts on this device" setting during sync.

use std::sync::{Arc, RwLock};

use roster_client::{Choice, ConflictHandler, OpenConflict, SyncClient};

use crate::settings::{ConflictMode, Settings};

/// Decides conflicts as the settings say: leave them to a person (ask me), take the
/// server's row, or keep this device's.
pub struct DeviceHandler {
    settings: Arc<RwLock<Settings>>,
}

impl DeviceHandler {
    /// A handler that reads the conflict mode from `settings` at each conflict.
    pub fn new(settings: Arc<RwLock<Settings>>) -> Self {
        Self { settings }
    }
}

impl ConflictHandler for DeviceHandler {
    fn decide(&self, _conflict: &OpenConflict) -> Option<Choice> {
        let mode = self
            .settings
            .read()
            .map(|settings| settings.conflict_mode)
            .unwrap_or_default();
        match mode {
            ConflictMode::Ask => None,
            ConflictMode::ServerWins => Some(Choice::KeepTheirs),
            ConflictMode::MineWins => Some(Choice::KeepMine),
        }
    }
}

/// `client` with a [`DeviceHandler`] reading `settings`.
pub fn attach_handler(client: SyncClient, settings: Arc<RwLock<Settings>>) -> SyncClient {
    client.with_handler(Arc::new(DeviceHandler::new(settings)))
}
