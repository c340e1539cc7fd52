//! Partial sync from Settings: the device's subscriptions, adding one (checked by the
//! server first), removing one, and going back to the whole data set; each then runs a
//! sync round so the list shows the new slice.

use std::collections::BTreeMap;

use roster_client::{Subscription, SyncReport};
use serde_json::Value;
use tauri::{AppHandle, Emitter, State};

use crate::background::RECORDS_CHANGED_EVENT;
use crate::error::AppError;
use crate::state::AppState;

/// The device's subscriptions; `null` while it syncs the whole data set.
#[tauri::command]
pub fn list_subscriptions(
    state: State<'_, AppState>,
) -> Result<Option<Vec<Subscription>>, AppError> {
    Ok(state.get()?.client.subscriptions()?)
}

/// Subscribes to `name` with `params` (a value or a list per parameter), then syncs.
/// A subscription the server refuses changes nothing.
#[tauri::command]
pub async fn subscribe(
    app: AppHandle,
    state: State<'_, AppState>,
    name: String,
    params: BTreeMap<String, Value>,
) -> Result<SyncReport, AppError> {
    let ready = state.get()?;
    ready
        .client
        .subscribe(Subscription { name, params })
        .await?;
    synced(&app, ready.sync.sync_now().await)
}

/// Removes the subscription `name` with `params`, then syncs: its rows leave the device.
#[tauri::command]
pub async fn unsubscribe(
    app: AppHandle,
    state: State<'_, AppState>,
    name: String,
    params: BTreeMap<String, Value>,
) -> Result<SyncReport, AppError> {
    let ready = state.get()?;
    ready
        .client
        .unsubscribe(&Subscription { name, params })
        .await?;
    synced(&app, ready.sync.sync_now().await)
}

/// Drops every subscription and syncs the whole data set.
#[tauri::command]
pub async fn sync_everything(
    app: AppHandle,
    state: State<'_, AppState>,
) -> Result<SyncReport, AppError> {
    let ready = state.get()?;
    ready.client.sync_everything().await?;
    synced(&app, ready.sync.sync_now().await)
}

/// The round after a change of slice; every view reloads, since the device may have
/// dropped its rows and fetched others (even when the round itself moved none).
fn synced(app: &AppHandle, report: Result<SyncReport, AppError>) -> Result<SyncReport, AppError> {
    if let Err(error) = app.emit(RECORDS_CHANGED_EVENT, ()) {
        tracing::warn!(%error, "cannot emit records-changed");
    }
    report
}
