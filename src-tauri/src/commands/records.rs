//! Records: list (search, sort, paging), get, create, update, delete.

use roster_client::LocalStore;
use roster_client::{ListQuery, Record};
use roster_protocol::{Fields, RowId};
use serde::{Deserialize, Serialize};
use tauri::State;

use super::blocking;
use crate::error::{AppError, FieldError};
use crate::state::AppState;

/// One page of a list request.
#[derive(Debug, Clone, Deserialize)]
pub struct ListArgs {
    /// Case-insensitive text to look for in every text column.
    #[serde(default)]
    pub search: Option<String>,
    /// Column to sort by (`None`: creation order).
    #[serde(default)]
    pub sort: Option<String>,
    /// Sort descending.
    #[serde(default)]
    pub descending: bool,
    /// Rows per page.
    pub limit: u32,
    /// Rows to skip.
    #[serde(default)]
    pub offset: u64,
}

/// A page of rows plus the number of rows matching the search.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The rows of this page.
    pub rows: Vec<Record>,
    /// All rows matching the search.
    pub total: u64,
    /// Offset of the first row of `rows`.
    pub offset: u64,
}

/// A page of `table`'s live rows matching `query`, with the total count.
#[tauri::command(rename_all = "snake_case")]
pub async fn list_records(
    state: State<'_, AppState>,
    table: String,
    query: ListArgs,
) -> Result<Page, AppError> {
    let store = state.store()?;
    blocking(move || {
        let search = query
            .search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let list = ListQuery {
            search: search.clone(),
            sort: query.sort.filter(|s| !s.is_empty()),
            descending: query.descending,
            limit: query.limit,
            offset: query.offset,
        };
        let rows = store.list(&table, &list)?;
        let total = store.count(&table, search.as_deref())?;
        Ok(Page {
            rows,
            total,
            offset: query.offset,
        })
    })
    .await
}

/// Checks every field of the row `row` of `table` at once against the schema's rules
/// (type, required, length, format), so the form shows every problem together; the
/// store and the server check the same rules again.
fn check_fields(store: &LocalStore, table: &str, row: &Fields) -> Result<(), AppError> {
    let schemas = store.schema();
    let schema = schemas.table(table)?;
    let errors = roster_client::field_problems(schema, row)
        .into_iter()
        .map(|problem| FieldError {
            field: problem.field,
            message: problem.message,
        })
        .collect();
    AppError::invalid_fields(errors).map_or(Ok(()), Err)
}

/// Parses a row id the UI sent.
pub(crate) fn parse_id(id: &str) -> Result<RowId, AppError> {
    RowId::parse_str(id.trim()).map_err(|e| AppError::bad_input(format!("invalid id {id:?}: {e}")))
}

/// The live row `id` of `table`.
#[tauri::command(rename_all = "snake_case")]
pub async fn get_record(
    state: State<'_, AppState>,
    table: String,
    id: String,
) -> Result<Record, AppError> {
    let store = state.store()?;
    let id = parse_id(&id)?;
    blocking(move || Ok(store.get(&table, id)?)).await
}

/// Creates a row after validating it; sync picks it up shortly.
#[tauri::command(rename_all = "snake_case")]
pub async fn create_record(
    state: State<'_, AppState>,
    table: String,
    fields: Fields,
) -> Result<Record, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let record = blocking(move || {
        check_fields(&store, &table, &fields)?;
        Ok(store.insert(&table, fields)?)
    })
    .await?;
    ready.sync.edited();
    Ok(record)
}

/// Changes the given fields of a row (`null` clears one) after validating the result.
#[tauri::command(rename_all = "snake_case")]
pub async fn update_record(
    state: State<'_, AppState>,
    table: String,
    id: String,
    fields: Fields,
) -> Result<Record, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let id = parse_id(&id)?;
    let record = blocking(move || {
        let mut row = store.get(&table, id)?.fields;
        row.extend(fields.clone());
        check_fields(&store, &table, &row)?;
        Ok(store.update(&table, id, fields)?)
    })
    .await?;
    ready.sync.edited();
    Ok(record)
}

/// Deletes a row; the delete is synced like any edit.
#[tauri::command(rename_all = "snake_case")]
pub async fn delete_record(
    state: State<'_, AppState>,
    table: String,
    id: String,
) -> Result<(), AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let id = parse_id(&id)?;
    blocking(move || Ok(store.delete(&table, id)?)).await?;
    ready.sync.edited();
    Ok(())
}
