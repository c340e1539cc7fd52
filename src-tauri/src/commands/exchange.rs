//! Import and export of people as CSV or vCard files (the logic is
//! `roster_client::LocalStore::import_file` / `export_file`). The UI names the file by
//! its path; an import emits [`IMPORT_PROGRESS_EVENT`] after each chunk.

use std::path::PathBuf;

use roster_client::{Format, ImportProgress, ImportReport, ListQuery, LocalStore, MAX_LIST_LIMIT};
use roster_protocol::RowId;
use tauri::{AppHandle, Emitter, State};

use super::blocking;
use super::records::parse_id;
use crate::background::RECORDS_CHANGED_EVENT;
use crate::error::AppError;
use crate::state::AppState;

/// Event emitted after each chunk of an import, with an [`ImportProgress`].
pub const IMPORT_PROGRESS_EVENT: &str = "import-progress";

/// A path the UI sent: trimmed, `~/` expanded, never empty.
fn file_path(path: &str) -> Result<PathBuf, AppError> {
    let path = path.trim();
    if path.is_empty() {
        return Err(AppError::invalid(
            "path",
            "Name the file, e.g. ~/people.csv",
        ));
    }
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Ok(PathBuf::from(home).join(rest)),
        _ => Ok(PathBuf::from(path)),
    }
}

/// Where an import reads from.
enum Source {
    /// A file on disk, by path.
    Path(PathBuf),
    /// A file's whole text, as the UI read it from a file picker, with its name (for the
    /// format).
    Text { name: String, text: String },
}

/// Imports the CSV or vCard file at `path` into `table`: valid rows are added (and synced
/// shortly), the others are listed in the report with their reasons.
#[tauri::command(rename_all = "snake_case")]
pub async fn import_file(
    app: AppHandle,
    state: State<'_, AppState>,
    table: String,
    path: String,
) -> Result<ImportReport, AppError> {
    import(app, &state, table, Source::Path(file_path(&path)?)).await
}

/// Imports `text`, the content of the file called `name` (the format comes from its
/// extension) that the person picked in the UI's file picker.
#[tauri::command(rename_all = "snake_case")]
pub async fn import_text(
    app: AppHandle,
    state: State<'_, AppState>,
    table: String,
    name: String,
    text: String,
) -> Result<ImportReport, AppError> {
    import(app, &state, table, Source::Text { name, text }).await
}

/// The import both commands run, with progress events; announces new rows.
async fn import(
    app: AppHandle,
    state: &AppState,
    table: String,
    source: Source,
) -> Result<ImportReport, AppError> {
    let ready = state.get()?;
    let store = ready.client.store_handle();
    let progress_app = app.clone();
    let report = blocking(move || {
        let mut progress = |progress: ImportProgress| {
            if let Err(error) = progress_app.emit(IMPORT_PROGRESS_EVENT, progress) {
                tracing::warn!(%error, "cannot emit import progress");
            }
        };
        Ok(match source {
            Source::Path(path) => store.import_file(&table, &path, &mut progress)?,
            Source::Text { name, text } => {
                let format = Format::from_path(std::path::Path::new(&name))?;
                store.import(&table, format, text.as_bytes(), &mut progress)?
            }
        })
    })
    .await?;
    if report.imported > 0 {
        ready.sync.edited();
        if let Err(error) = app.emit(RECORDS_CHANGED_EVENT, ()) {
            tracing::warn!(%error, "cannot emit records-changed");
        }
    }
    Ok(report)
}

/// The ids of every live row of `table` matching `search`, in list order.
fn matching_ids(store: &LocalStore, table: &str, search: &str) -> Result<Vec<RowId>, AppError> {
    let mut ids = Vec::new();
    loop {
        let query = ListQuery {
            search: Some(search.to_owned()),
            limit: MAX_LIST_LIMIT,
            offset: ids.len() as u64,
            ..ListQuery::default()
        };
        let page = store.list(table, &query)?;
        let last = page.len() < MAX_LIST_LIMIT as usize;
        ids.extend(page.into_iter().map(|record| record.id));
        if last {
            return Ok(ids);
        }
    }
}

/// Writes the live rows of `table` to the CSV or vCard file at `path`: those of `ids`,
/// else those matching `search` (the People view's search), else all. Returns how many
/// people it holds.
#[tauri::command(rename_all = "snake_case")]
pub async fn export_file(
    state: State<'_, AppState>,
    table: String,
    path: String,
    ids: Option<Vec<String>>,
    search: Option<String>,
) -> Result<u64, AppError> {
    let store = state.store()?;
    let path = file_path(&path)?;
    let ids = ids
        .map(|ids| {
            ids.iter()
                .map(|id| parse_id(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let search = search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    blocking(move || {
        let ids = match (ids, search) {
            (Some(ids), _) => Some(ids),
            (None, Some(search)) => Some(matching_ids(&store, &table, &search)?),
            (None, None) => None,
        };
        Ok(store.export_file(&table, &path, ids.as_deref())?)
    })
    .await
}
