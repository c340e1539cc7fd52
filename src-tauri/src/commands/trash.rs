//! The trash: people deleted on this device, restorable (`roster_client`'s
//! `LocalStore::trash`, `restore_from_trash`, `empty_trash`).

use roster_client::{Record, TrashedRecord};
use tauri::State;

use super::blocking;
use super::records::parse_id;
use crate::error::AppError;
use crate::state::AppState;

/// Most people the Trash view lists.
const TRASH_LIST_LIMIT: u32 = 500;

/// The people of `table` in the trash, most recently deleted first.
#[tauri::command(rename_all = "snake_case")]
pub async fn list_trash(
    state: State<'_, AppState>,
    table: String,
) -> Result<Vec<TrashedRecord>, AppError> {
    let store = state.store()?;
    blocking(move || Ok(store.trash(&table, TRASH_LIST_LIMIT)?)).await
}

/// Brings a person back from the trash; the next sync brings them back everywhere.
#[tauri::command(rename_all = "snake_case")]
pub async fn restore_from_trash(
    state: State<'_, AppState>,
    table: String,
    id: String,
) -> Result<Record, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let id = parse_id(&id)?;
    let record = blocking(move || Ok(store.restore_from_trash(&table, id)?)).await?;
    ready.sync.edited();
    Ok(record)
}

/// Forgets every person in the trash of `table`; returns how many.
#[tauri::command(rename_all = "snake_case")]
pub async fn empty_trash(state: State<'_, AppState>, table: String) -> Result<u64, AppError> {
    let store = state.store()?;
    blocking(move || Ok(store.empty_trash(&table)?)).await
}
