//! Starting the app: the data dir, the settings, the local store (created on first start,
//! offline if need be) and the background sync task; and starting them again on another
//! store when the person connects, switches server or resets the local data.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use roster_client::{ClientError, Credentials, SyncClient};
use roster_protocol::Schema;
use tauri::{AppHandle, Runtime};

use crate::error::{AppError, ErrorKind};
use crate::settings::{self, Connection, Settings};
use crate::state::{AppState, Ready};

/// How long the first start waits for the server's schema before going on offline.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(4);

/// Starts everything; a failure becomes an [`AppState`] the UI reports.
pub fn start<R: Runtime>(app: &AppHandle<R>) -> AppState {
    match try_start(app) {
        Ok(ready) => AppState::ready(ready),
        Err(error) => {
            tracing::error!(message = %error.message, "roster-app could not start");
            AppState::failed(error)
        }
    }
}

fn try_start<R: Runtime>(app: &AppHandle<R>) -> Result<Ready, AppError> {
    let data_dir = settings::data_dir(app)?;
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        AppError::new(
            ErrorKind::Storage,
            format!("cannot create data dir {}: {e}", data_dir.display()),
        )
    })?;
    tracing::info!(data_dir = %data_dir.display(), "starting");
    let (mut settings, stored) = settings::load(app, &data_dir)?;
    let store_dir = settings.store_path(&data_dir);
    let has_store = store_dir.join(roster_client::local::DB_FILE).exists();
    let mut changed = false;
    if !stored && !has_store && !settings::server_url_from_env() {
        // Installed app, first start: a person names the server on the connect screen.
        settings.connection = Connection::Unset;
    }
    if let Some(token) = settings::token_from_env().filter(|t| *t != settings.token) {
        settings.token = token;
        changed = true;
    }
    let credentials = settings.credentials();
    let client = if settings.syncs() {
        tauri::async_runtime::block_on(open_or_init(
            &store_dir,
            &settings.server_url,
            &credentials,
        ))?
    } else if has_store {
        SyncClient::open(&store_dir)?
    } else {
        tracing::info!("no server chosen yet: creating the local store with the built-in schema");
        tauri::async_runtime::block_on(SyncClient::init(
            &store_dir,
            &settings.server_url,
            &credentials,
            Some(Schema::default_person()),
        ))?
    };
    if client.store().credentials()?.token != credentials.token {
        client.set_token(credentials.token)?;
    }
    let server_url = client.store().server_url().to_owned();
    if !stored || changed || settings.server_url != server_url {
        settings.server_url = server_url;
        settings::save(app, &data_dir, &settings)?;
    }
    Ok(launch(app, data_dir, client, settings))
}

/// Starts the sync task over `client` and returns the running app.
pub fn launch<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: std::path::PathBuf,
    client: SyncClient,
    settings: Settings,
) -> Ready {
    // Each start gets its own settings cell: a replaced sync task keeps reading the old
    // one, so it never starts a round against the new server with the old store.
    let settings = Arc::new(RwLock::new(settings));
    let client = Arc::new(crate::conflicts::attach_handler(
        client,
        settings.clone(),
        &data_dir,
    ));
    let sync = crate::background::start(app.clone(), client.clone(), settings.clone());
    Ready {
        data_dir,
        client,
        settings,
        sync,
    }
}

/// Opens the store in `dir`, or creates it: with the server's schema when the server
/// answers within [`SCHEMA_TIMEOUT`], else with the shipped person schema, so the app
/// works offline from its first start.
async fn open_or_init(
    dir: &Path,
    server_url: &str,
    credentials: &Credentials,
) -> Result<SyncClient, AppError> {
    if dir.join(roster_client::local::DB_FILE).exists() {
        return Ok(SyncClient::open(dir)?);
    }
    let fetched = tokio::time::timeout(
        SCHEMA_TIMEOUT,
        SyncClient::init(dir, server_url, credentials, None),
    )
    .await;
    match fetched {
        Ok(Ok(client)) => {
            tracing::info!(
                server_url,
                "created the local store with the server's schema"
            );
            return Ok(client);
        }
        Ok(Err(error)) if !offline_start_ok(&error) => return Err(error.into()),
        Ok(Err(error)) => tracing::warn!(%error, "server unavailable at first start"),
        Err(_) => tracing::warn!("server did not answer within {SCHEMA_TIMEOUT:?} at first start"),
    }
    tracing::info!("creating the local store with the built-in person schema");
    Ok(SyncClient::init(dir, server_url, credentials, Some(Schema::default_person())).await?)
}

/// Whether a failed schema fetch should fall back to the built-in schema. A refused
/// token does too: the app works locally and the status bar shows the refusal until a
/// valid token is set in the settings.
fn offline_start_ok(error: &ClientError) -> bool {
    error.is_transient()
        || matches!(
            error,
            ClientError::Protocol(_)
                | ClientError::Server { .. }
                | ClientError::Unauthorized(_)
                | ClientError::Forbidden(_)
        )
}
