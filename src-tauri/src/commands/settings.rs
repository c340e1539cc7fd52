//! Reading and changing the device's settings.

use tauri::{AppHandle, Manager, State};

use crate::error::{AppError, ErrorKind};
use crate::settings::{self, Settings};
use crate::state::AppState;

/// The current settings.
#[tauri::command]
pub fn get_settings(state: State<'_, AppState>) -> Result<Settings, AppError> {
    state.settings()
}

/// Validates and stores new settings; they take effect at once (a new token is used by
/// the next sync round, which this starts).
#[tauri::command]
pub fn set_settings(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: Settings,
) -> Result<Settings, AppError> {
    let ready = state.get()?;
    settings.validate()?;
    let current = roster_client::normalise_server_url(&settings.server_url)?;
    if current != ready.client.store().server_url() {
        // The store's watermark and row versions belong to one server.
        return Err(AppError {
            kind: ErrorKind::Invalid,
            message: format!(
                "This data dir syncs with {}; to use another server, start Roster with another data dir",
                ready.client.store().server_url()
            ),
            field: Some("server_url".to_owned()),
        });
    }
    let mut settings = settings;
    settings.server_url = current;
    settings.token = settings.token.trim().to_owned();
    let token = settings.credentials().token;
    if ready.client.store().credentials()?.token != token {
        ready.client.set_token(token)?;
    }
    settings::save(&app, &ready.data_dir, &settings)?;
    if let Some(window) = app.get_webview_window(crate::MAIN_WINDOW) {
        let _ = window.set_title(&crate::window_title(&settings.device_name));
    }
    *ready
        .settings
        .write()
        .map_err(|_| AppError::internal("settings lock poisoned"))? = settings.clone();
    ready.sync.refresh();
    Ok(settings)
}
