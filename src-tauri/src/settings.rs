//! The device's settings, persisted with tauri-plugin-store in `settings.json` inside the
//! data dir, and where that data dir is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_store::{Store, StoreExt};

use crate::error::AppError;

/// Environment variable that overrides the data dir (tests, a second instance).
pub const DATA_DIR_ENV: &str = "ROSTER_DATA_DIR";
/// Environment variable with the server URL to use when the app starts without settings.
pub const SERVER_URL_ENV: &str = "ROSTER_SERVER_URL";
/// Environment variable with the device name to use when the app starts without settings.
pub const DEVICE_NAME_ENV: &str = "ROSTER_DEVICE_NAME";
/// Environment variable with the bearer token; when set it replaces the stored one (and
/// is saved), so a launcher or a test can hand the app its credentials.
pub const TOKEN_ENV: &str = "ROSTER_TOKEN";
/// Longest token accepted in the settings.
pub const MAX_TOKEN_LEN: usize = 512;
/// Server URL used when neither the settings nor the environment name one.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8787";
/// File name of the settings store inside the data dir.
pub const SETTINGS_FILE: &str = "settings.json";
/// Key of the settings object inside the store.
const SETTINGS_KEY: &str = "settings";

/// Shortest sync interval accepted, in seconds.
pub const MIN_INTERVAL_SECS: u64 = 5;
/// Longest sync interval accepted, in seconds (one day).
pub const MAX_INTERVAL_SECS: u64 = 86_400;

/// What this device does when the server hands it a conflict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictMode {
    /// Keep the conflict open until a person resolves it in the Conflicts view.
    #[default]
    Ask,
    /// Take the server's row.
    ServerWins,
    /// Keep this device's row.
    MineWins,
}

/// Whether this device works with a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// First start without a server named anywhere: the connect screen is shown, and
    /// nothing syncs until a server is chosen.
    Unset,
    /// The person chose "work offline for now": nothing syncs; the local data moves to
    /// the server chosen later.
    Offline,
    /// Syncs with `server_url` (settings stored before this field existed say so too).
    #[default]
    Server,
}

/// Everything the Settings view edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Base URL of the sync server.
    pub server_url: String,
    /// A name for this device, shown in the title bar.
    pub device_name: String,
    /// Seconds between background sync rounds.
    pub sync_interval_secs: u64,
    /// What to do with conflicts.
    pub conflict_mode: ConflictMode,
    /// Bearer token this device presents to the server (`roster-server create-user` or
    /// `create-token` prints one); empty for none. Shown and edited with the settings,
    /// but owned by the local store (`SyncClient::set_token`): `settings.json` never
    /// holds it (see [`save`]).
    pub token: String,
    /// Whether a server was chosen (see [`Connection`]).
    pub connection: Connection,
    /// The protocol the server speaks: Roster's own, or an existing Azure Mobile Apps
    /// backend's table protocol (then the store is made from [`Settings::schema_file`],
    /// conflicts are resolved on this device, and the app polls: such a backend has no
    /// change feed). The store's own protocol is the truth; this mirrors it.
    pub protocol: roster_client::Protocol,
    /// With Azure Mobile Apps: the JSON schema file the store was made from (the tables
    /// and columns to sync; such a backend serves none), read again only if the store has
    /// to be made again at start. Empty otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema_file: String,
    /// Folder of the local store inside the data dir (`None`: the data dir itself). A
    /// reset or a move to another server starts a new store in a new folder, so the old
    /// one stays on disk untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_dir: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_url: DEFAULT_SERVER_URL.to_owned(),
            device_name: default_device_name(),
            sync_interval_secs: 30,
            conflict_mode: ConflictMode::Ask,
            token: String::new(),
            connection: Connection::Server,
            protocol: roster_client::Protocol::Roster,
            schema_file: String::new(),
            store_dir: None,
        }
    }
}

impl Settings {
    /// The sync interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(
            self.sync_interval_secs
                .clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS),
        )
    }

    /// Where the local store lives inside `data_dir`.
    pub fn store_path(&self, data_dir: &std::path::Path) -> PathBuf {
        match &self.store_dir {
            Some(dir) => data_dir.join(dir),
            None => data_dir.to_path_buf(),
        }
    }

    /// Whether background sync may run.
    pub fn syncs(&self) -> bool {
        self.connection == Connection::Server
    }

    /// The credentials the client presents (no token when the field is empty).
    pub fn credentials(&self) -> roster_client::Credentials {
        roster_client::Credentials {
            token: Some(self.token.trim().to_owned()).filter(|t| !t.is_empty()),
            dataset: None,
        }
    }

    /// Checks the values a person typed; the error names the field at fault.
    pub fn validate(&self) -> Result<(), AppError> {
        let invalid = |field: &str, message: String| AppError::invalid(field, message);
        roster_client::normalise_server_url(&self.server_url)
            .map_err(|e| invalid("server_url", e.to_string()))?;
        if self.device_name.trim().is_empty() {
            return Err(invalid("device_name", "A device name is required".into()));
        }
        if self.device_name.chars().count() > 100 {
            return Err(invalid(
                "device_name",
                "At most 100 characters allowed".into(),
            ));
        }
        if self.token.len() > MAX_TOKEN_LEN
            || self
                .token
                .trim()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "token",
                "Paste the token as printed by the server administrator (no spaces)".into(),
            ));
        }
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&self.sync_interval_secs) {
            return Err(invalid(
                "sync_interval_secs",
                format!("Use {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS} seconds"),
            ));
        }
        Ok(())
    }
}

/// The host name, or "This device".
fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "This device".to_owned())
}

/// The data dir: `$ROSTER_DATA_DIR` if set, else the platform's app-data dir
/// (e.g. `~/.local/share/org.roster.desktop` on Linux).
pub fn data_dir<R: Runtime>(app: &AppHandle<R>) -> Result<PathBuf, AppError> {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => app
            .path()
            .app_data_dir()
            .map_err(|e| AppError::internal(format!("no app data dir on this platform: {e}"))),
    }
}

/// The settings store file of `data_dir`, opened (or created) through the plugin.
fn store<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: &std::path::Path,
) -> Result<Arc<Store<R>>, AppError> {
    app.store(data_dir.join(SETTINGS_FILE))
        .map_err(|e| AppError::new(crate::error::ErrorKind::Storage, e.to_string()))
}

/// Loads the settings; on first start (nothing stored) the defaults, with the server URL
/// from `$ROSTER_SERVER_URL` and the device name from `$ROSTER_DEVICE_NAME` when set.
/// Returns whether they were stored before.
pub fn load<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: &std::path::Path,
) -> Result<(Settings, bool), AppError> {
    let store = store(app, data_dir)?;
    if let Some(value) = store.get(SETTINGS_KEY) {
        match serde_json::from_value::<Settings>(value) {
            Ok(settings) => return Ok((settings, true)),
            Err(error) => tracing::warn!(%error, "stored settings unreadable; using defaults"),
        }
    }
    let mut settings = Settings::default();
    if let Ok(url) = std::env::var(SERVER_URL_ENV)
        && !url.trim().is_empty()
    {
        settings.server_url = url.trim().to_owned();
    }
    if let Ok(name) = std::env::var(DEVICE_NAME_ENV)
        && !name.trim().is_empty()
    {
        settings.device_name = name.trim().to_owned();
    }
    Ok((settings, false))
}

/// Whether `$ROSTER_SERVER_URL` names a server (a launcher or a test chose it).
pub fn server_url_from_env() -> bool {
    std::env::var(SERVER_URL_ENV).is_ok_and(|url| !url.trim().is_empty())
}

/// The token from `$ROSTER_TOKEN`, if set and not empty.
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// `settings` as written to `settings.json`: everything but the token, whose one owner
/// is the local store.
fn file_value(settings: &Settings) -> Result<serde_json::Value, AppError> {
    let without_token = Settings {
        token: String::new(),
        ..settings.clone()
    };
    serde_json::to_value(without_token).map_err(|e| AppError::internal(e.to_string()))
}

/// Stores `settings` (without the token) and writes the file now.
pub fn save<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: &std::path::Path,
    settings: &Settings,
) -> Result<(), AppError> {
    let store = store(app, data_dir)?;
    store.set(SETTINGS_KEY, file_value(settings)?);
    store
        .save()
        .map_err(|e| AppError::new(crate::error::ErrorKind::Storage, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_json_fills_in() {
        assert_eq!(Settings::default().validate(), Ok(()));
        let parsed: Settings =
            serde_json::from_str(r#"{"sync_interval_secs": 60, "conflict_mode": "mine_wins"}"#)
                .unwrap_or_default();
        assert_eq!(parsed.sync_interval_secs, 60);
        assert_eq!(parsed.protocol, roster_client::Protocol::Roster);
        let ama: Settings = serde_json::from_str(
            r#"{"protocol": "azure-mobile-apps", "schema_file": "/etc/person.json"}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            (ama.protocol, ama.schema_file.as_str()),
            (roster_client::Protocol::AzureMobileApps, "/etc/person.json")
        );
        assert_eq!(parsed.conflict_mode, ConflictMode::MineWins);
        assert_eq!(parsed.server_url, DEFAULT_SERVER_URL);
    }

    #[test]
    fn the_settings_file_never_holds_the_token() {
        let settings = Settings {
            token: "rst_secret".into(),
            ..Settings::default()
        };
        let value = file_value(&settings).unwrap();
        assert!(!value.to_string().contains("rst_secret"), "{value}");
        let back: Settings = serde_json::from_value(value).unwrap();
        assert_eq!(back.token, "");
        assert_eq!(back.device_name, settings.device_name);
    }

    #[test]
    fn validation_names_the_field() {
        let mut settings = Settings {
            server_url: "ftp://x".into(),
            ..Settings::default()
        };
        assert_eq!(
            settings.validate().err().and_then(|e| e.field).as_deref(),
            Some("server_url")
        );
        settings.server_url = DEFAULT_SERVER_URL.into();
        settings.sync_interval_secs = 1;
        assert_eq!(
            settings.validate().err().and_then(|e| e.field).as_deref(),
            Some("sync_interval_secs")
        );
        settings.sync_interval_secs = 30;
        settings.device_name = "  ".into();
        assert_eq!(
            settings.validate().err().and_then(|e| e.field).as_deref(),
            Some("device_name")
        );
        settings.device_name = "Desk".into();
        settings.token = "rst_ab cd".into();
        assert_eq!(
            settings.validate().err().and_then(|e| e.field).as_deref(),
            Some("token")
        );
        settings.token = " rst_abcd ".into();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.credentials().token.as_deref(), Some("rst_abcd"));
        settings.token = String::new();
        assert_eq!(settings.credentials().token, None);
    }
}
