//! What the UI needs to know about the app itself: the schema and where things are.

use roster_protocol::Schema;
use serde::Serialize;
use tauri::State;

use crate::error::AppError;
use crate::state::AppState;

/// Facts about this installation, for the title bar and the Settings view.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    /// The app's version.
    pub version: String,
    /// The data dir (store and settings).
    pub data_dir: String,
    /// This installation's client id.
    pub client_id: String,
    /// The server the store syncs with.
    pub server_url: String,
    /// The device name from the settings.
    pub device_name: String,
    /// Whether a server was chosen: `unset` shows the connect screen.
    pub connection: crate::settings::Connection,
}

/// The synced tables and their typed columns; the UI builds its list and forms from it.
#[tauri::command]
pub fn get_schema(state: State<'_, AppState>) -> Result<Schema, AppError> {
    Ok(state.get()?.client.store().schema().as_ref().clone())
}

/// Version, data dir, client id, server and device name.
#[tauri::command]
pub fn app_info(state: State<'_, AppState>) -> Result<AppInfo, AppError> {
    let ready = state.get()?;
    let store = ready.client.store();
    Ok(AppInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        data_dir: ready.data_dir.display().to_string(),
        client_id: store.client_id().to_string(),
        server_url: store.server_url().to_owned(),
        device_name: ready.settings()?.device_name,
        connection: ready.settings()?.connection,
    })
}

/// What the app logs (info) once the UI painted its first list page; `cargo xtask bench`
/// times the cold start until this line.
pub const FIRST_PAGE_PAINTED: &str = "first list page painted";

/// Logs [`FIRST_PAGE_PAINTED`] with the rows on that page and the milliseconds since the
/// app's `run` began; the UI calls it once, after the frame holding the first page.
#[tauri::command]
pub fn first_page_painted(rows: u32) {
    let since_start_ms = crate::STARTED.get().map_or(0, |started| {
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
    });
    tracing::info!(rows, since_start_ms, "{FIRST_PAGE_PAINTED}");
}
