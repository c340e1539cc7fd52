//! Reading and changing the device's settings.

use roster_client::ConnectionProblem;
use tauri::{AppHandle, State};

use crate::error::AppError;
use crate::settings::{Connection, Settings};
use crate::state::AppState;

/// The current settings.
#[tauri::command]
pub fn get_settings(state: State<'_, AppState>) -> Result<Settings, AppError> {
    state.settings()
}

/// Validates and stores new settings; they take effect at once (a new token is used by
/// the next sync round, which this starts). A changed token is first tried on the server:
/// one it refuses is not saved. The server itself changes through `connect_server`.
#[tauri::command]
pub async fn set_settings(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: Settings,
) -> Result<Settings, AppError> {
    let ready = state.get()?;
    settings.validate()?;
    let current = ready.settings()?;
    let url = roster_client::normalise_server_url(&settings.server_url)?;
    if url != ready.client.store().server_url() && current.connection == Connection::Server {
        return Err(AppError::invalid(
            "server_url",
            "To use another server, press \"Switch server\"",
        ));
    }
    let mut settings = Settings {
        server_url: url,
        token: settings.token.trim().to_owned(),
        connection: current.connection,
        // The protocol and schema file change only with the server (`connect_server`).
        protocol: current.protocol,
        schema_file: current.schema_file.clone(),
        store_dir: current.store_dir.clone(),
        ..settings
    };
    if settings.connection != Connection::Server {
        // Not connected: the server and token are chosen through `connect_server`.
        settings.server_url = current.server_url.clone();
        settings.token = current.token.clone();
    }
    let token = settings.credentials().token;
    if token != current.credentials().token {
        let check =
            super::connect::check_current(&ready, &settings.server_url, &settings.credentials())
                .await?;
        match check.problem {
            Some(ConnectionProblem::Unauthorized) | Some(ConnectionProblem::Forbidden) => {
                return Err(AppError::invalid(
                    "token",
                    if settings.token.is_empty() {
                        "The server needs an access token. Ask its administrator for one."
                    } else {
                        "The server does not accept this access token. Check it, or ask the server's administrator for a new one."
                    },
                ));
            }
            Some(problem) => {
                tracing::info!(
                    ?problem,
                    "token saved without a check: server not usable now"
                );
            }
            None => {}
        }
        ready.client.set_token(token)?;
    }
    super::connect::save(&app, &ready, settings.clone())?;
    Ok(settings)
}
