//! This device's conflict handling: the [`DeviceHandler`] that applies the
//! "conflicts on this device" setting during sync, and remembers what it decided (in
//! `device-rule.jsonl` in the data dir), so History can say "the server's version won by
//! this device's rule" instead of "you kept", and the editor can tell the person.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use roster_client::{Choice, DeviceConflictHandler, OpenConflict, SyncClient};
use roster_protocol::RowId;
use serde::{Deserialize, Serialize};

use crate::settings::{ConflictMode, Settings};

/// File (JSON lines) of the decisions this device's rule took.
pub const DECISIONS_FILE: &str = "device-rule.jsonl";

/// One conflict the device rule decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDecision {
    /// The row.
    pub id: RowId,
    /// `kept_theirs` or `kept_mine`, as the history names it.
    pub resolution: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// Decides conflicts as the settings say: leave them to a person (ask me), take the
/// server's row, or keep this device's.
pub struct DeviceHandler {
    settings: Arc<RwLock<Settings>>,
    log: PathBuf,
}

impl DeviceHandler {
    /// A handler that reads the conflict mode from `settings` at each conflict and logs
    /// its decisions in `data_dir`.
    pub fn new(settings: Arc<RwLock<Settings>>, data_dir: &std::path::Path) -> Self {
        Self {
            settings,
            log: data_dir.join(DECISIONS_FILE),
        }
    }

    fn remember(&self, id: RowId, resolution: &str) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let decision = RuleDecision {
            id,
            resolution: resolution.to_owned(),
            at_ms,
        };
        let written = serde_json::to_string(&decision)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .and_then(|mut file| writeln!(file, "{line}"))
            });
        if let Err(error) = written {
            tracing::warn!(%error, "cannot log a device-rule decision");
        }
    }
}

impl DeviceConflictHandler for DeviceHandler {
    fn decide(&self, conflict: &OpenConflict) -> Option<Choice> {
        let mode = self
            .settings
            .read()
            .map(|settings| settings.conflict_mode)
            .unwrap_or_default();
        let choice = match mode {
            ConflictMode::Ask => return None,
            ConflictMode::ServerWins => Choice::KeepTheirs,
            ConflictMode::MineWins => Choice::KeepMine,
        };
        self.remember(
            conflict.id,
            match choice {
                Choice::KeepTheirs => "kept_theirs",
                _ => "kept_mine",
            },
        );
        Some(choice)
    }
}

/// The decisions logged in `data_dir`, oldest first (unreadable lines are skipped).
pub fn rule_decisions(data_dir: &std::path::Path) -> Vec<RuleDecision> {
    std::fs::read_to_string(data_dir.join(DECISIONS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// `client` with a [`DeviceHandler`] reading `settings` and logging in `data_dir`.
pub fn attach_handler(
    client: SyncClient,
    settings: Arc<RwLock<Settings>>,
    data_dir: &std::path::Path,
) -> SyncClient {
    client.with_handler(Arc::new(DeviceHandler::new(settings, data_dir)))
}
