//! Sync now and the sync status.

use roster_client::SyncReport;
use tauri::State;

use crate::background::SyncStatus;
use crate::error::AppError;
use crate::state::AppState;

/// Runs a sync round now (after the running one, if any) and returns what it did.
#[tauri::command]
pub async fn sync_now(state: State<'_, AppState>) -> Result<SyncReport, AppError> {
    let sync = state.get()?.sync.clone();
    sync.sync_now().await
}

/// The status the status bar shows (also pushed as `sync-status` events).
#[tauri::command]
pub fn sync_status(state: State<'_, AppState>) -> Result<SyncStatus, AppError> {
    Ok(state.get()?.sync.status())
}
