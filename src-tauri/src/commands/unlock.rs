//! The unlock screen's command: open (or create) this device's encrypted store with the
//! passphrase a person typed, where no keyring keeps its key.

use roster_client::StoreKey;
use tauri::{AppHandle, State};

use crate::error::{AppError, ErrorKind};
use crate::state::AppState;

/// Shortest passphrase accepted when a new one is chosen.
pub const MIN_NEW_PASSPHRASE_CHARS: usize = 8;

/// Starts the app on the store opened with `passphrase`. Refused (kind `locked`, nothing
/// changed) when it does not open the store; a new passphrase shorter than
/// [`MIN_NEW_PASSPHRASE_CHARS`] is refused too. The passphrase is kept in memory only.
#[tauri::command]
pub async fn unlock_store(
    app: AppHandle,
    state: State<'_, AppState>,
    passphrase: String,
) -> Result<(), AppError> {
    if !state.is_locked() {
        return Err(AppError::new(
            ErrorKind::BadInput,
            "This device's data is already open.",
        ));
    }
    if let Err(AppError { field, .. }) = state.get()
        && field.as_deref() == Some("new_passphrase")
        && passphrase.chars().count() < MIN_NEW_PASSPHRASE_CHARS
    {
        return Err(AppError::locked(
            "new_passphrase",
            format!("Choose a passphrase of at least {MIN_NEW_PASSPHRASE_CHARS} characters."),
        ));
    }
    let key = StoreKey::passphrase(passphrase)
        .map_err(|_| AppError::locked("passphrase", "Enter the passphrase."))?;
    let started = {
        let app = app.clone();
        super::blocking(move || crate::startup::try_start(&app, Some(key))).await
    };
    match started {
        Ok(ready) => state.replace(ready),
        Err(error) => {
            tracing::warn!(message = %error.message, "unlock failed");
            Err(error)
        }
    }
}
