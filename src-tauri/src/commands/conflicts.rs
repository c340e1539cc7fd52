//! Open conflicts, resolving them (keep mine, keep theirs, field by field, all at once),
//! and the conflict history.

use roster_client::{Choice, ConflictRecord, OpenConflict};
use roster_protocol::RowId;
use serde::Deserialize;
use tauri::{AppHandle, Emitter, State};

use super::blocking;
use crate::background::RECORDS_CHANGED_EVENT;
use crate::error::AppError;
use crate::state::AppState;

/// Which side resolve-all keeps.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Keep this device's rows.
    KeepMine,
    /// Take the server's rows.
    KeepTheirs,
}

/// Conflicts waiting for a person, oldest first.
#[tauri::command]
pub async fn list_conflicts(state: State<'_, AppState>) -> Result<Vec<OpenConflict>, AppError> {
    let store = state.store()?;
    blocking(move || Ok(store.open_conflicts()?)).await
}

/// Tells every view that local rows changed: a resolution can rewrite the row (keep
/// theirs, merge) without any sync bringing news of it.
fn announce_change(app: &AppHandle) {
    if let Err(error) = app.emit(RECORDS_CHANGED_EVENT, ()) {
        tracing::warn!(%error, "cannot emit records-changed");
    }
}

/// Resolves one conflict; the result is synced shortly. `choice` is
/// `{"choice": "keep_mine"}`, `{"choice": "keep_theirs"}` or
/// `{"choice": "merge", "fields": {...}}`.
#[tauri::command(rename_all = "snake_case")]
pub async fn resolve_conflict(
    app: AppHandle,
    state: State<'_, AppState>,
    table: String,
    id: String,
    choice: Choice,
) -> Result<(), AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let id = RowId::parse_str(id.trim())
        .map_err(|e| AppError::bad_input(format!("invalid id {id:?}: {e}")))?;
    blocking(move || Ok(store.resolve_conflict(&table, id, choice)?)).await?;
    announce_change(&app);
    ready.sync.edited();
    Ok(())
}

/// Resolves every open conflict the same way; returns how many were resolved.
#[tauri::command]
pub async fn resolve_all_conflicts(
    app: AppHandle,
    state: State<'_, AppState>,
    side: Side,
) -> Result<u64, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let resolved = blocking(move || {
        let mut resolved = 0;
        for conflict in store.open_conflicts()? {
            let choice = match side {
                Side::KeepMine => Choice::KeepMine,
                Side::KeepTheirs => Choice::KeepTheirs,
            };
            store.resolve_conflict(&conflict.table, conflict.id, choice)?;
            resolved += 1;
        }
        Ok(resolved)
    })
    .await?;
    announce_change(&app);
    ready.sync.edited();
    Ok(resolved)
}

/// How far apart a history entry and a device-rule decision about the same row may be
/// to be the same event (both are written while one sync answer is applied).
const SAME_ROUND_MS: i64 = 5_000;

/// The most recent `limit` conflicts (resolved ones included), newest first. A choice
/// this device's rule made (not a person) reads `rule_kept_theirs` / `rule_kept_mine`.
#[tauri::command]
pub async fn conflict_history(
    state: State<'_, AppState>,
    limit: Option<u32>,
) -> Result<Vec<ConflictRecord>, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let data_dir = ready.data_dir.clone();
    let limit = limit.unwrap_or(200).clamp(1, 10_000);
    blocking(move || {
        let decisions = crate::conflicts::rule_decisions(&data_dir);
        let mut history = store.conflict_history(limit)?;
        // Both are written while one answer is applied, milliseconds apart.
        let decided = |entry: &ConflictRecord, resolution: Option<&str>| {
            decisions.iter().any(|d| {
                d.id == entry.id
                    && (d.at_ms - entry.at_ms).abs() < SAME_ROUND_MS
                    && resolution.is_none_or(|r| r == d.resolution)
            })
        };
        // A conflict the rule decided in the round that brought it was never left for a
        // person: its "deferred" entry is dropped, its choice reads as the rule's.
        history.retain(|entry| entry.resolution != "deferred" || !decided(entry, None));
        for entry in &mut history {
            if decided(entry, Some(&entry.resolution)) {
                entry.resolution = format!("rule_{}", entry.resolution);
            }
        }
        Ok(history)
    })
    .await
}

/// The conflicts this device's rule decided since `since_ms` (for the editor's notice).
#[tauri::command]
pub fn rule_decisions(
    state: State<'_, AppState>,
    since_ms: i64,
) -> Result<Vec<crate::conflicts::RuleDecision>, AppError> {
    let ready = state.get()?;
    Ok(crate::conflicts::rule_decisions(&ready.data_dir)
        .into_iter()
        .filter(|d| d.at_ms >= since_ms)
        .collect())
}
