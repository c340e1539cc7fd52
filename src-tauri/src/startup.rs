//! Starting the app: the data dir, the settings, the local store (created on first start,
//! offline if need be) and the background sync task; and starting them again on another
//! store when the person connects, switches server or resets the local data.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use roster_client::{ClientError, ConnectionSecurity, Credentials, Protocol, StoreKey, SyncClient};
use roster_protocol::Schema;
use tauri::{AppHandle, Runtime};

use crate::error::{AppError, ErrorKind};
use crate::settings::{self, Connection, Settings};
use crate::state::{AppState, Ready};
use crate::store_key::{DeviceKey, device_key};

/// How long the first start waits for the server's schema before going on offline.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(4);

/// Starts everything; a failure becomes an [`AppState`] the UI reports.
pub fn start<R: Runtime>(app: &AppHandle<R>) -> AppState {
    match try_start(app, None) {
        Ok(ready) => AppState::ready(ready),
        Err(error) if error.kind == ErrorKind::Locked => {
            tracing::info!("waiting for the store's passphrase");
            AppState::failed(error)
        }
        Err(error) => {
            tracing::error!(message = %error.message, "roster-app could not start");
            AppState::failed(error)
        }
    }
}

/// Starts everything with the store key `passphrase_key` (typed on the unlock screen), or
/// when `None` the key from [`device_key`]; a [`ErrorKind::Locked`] error when the key
/// is missing or wrong.
pub fn try_start<R: Runtime>(
    app: &AppHandle<R>,
    passphrase_key: Option<StoreKey>,
) -> Result<Ready, AppError> {
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
    let has_store = store_dir.join(roster_client::DB_FILE).exists();
    let key = match passphrase_key {
        Some(key) => key,
        None => match device_key(&data_dir, &store_dir)? {
            DeviceKey::Ready(key) => key,
            DeviceKey::NeedsPassphrase(error) => return Err(error),
        },
    };
    let key = Some(&key);
    if !stored && !has_store && !settings::server_url_from_env() {
        // Installed app, first start: a person names the server on the connect screen.
        settings.connection = Connection::Unset;
    }
    // The local store owns the token. A token left in settings.json by an older version
    // moves into the store and then leaves the file (saving drops it).
    let from_file = std::mem::take(&mut settings.token);
    let incoming = token_to_store(settings::token_from_env(), &from_file);
    settings.token = incoming.clone().unwrap_or_default();
    let credentials = settings.credentials();
    let client = if settings.syncs() {
        tauri::async_runtime::block_on(open_or_init(&store_dir, &settings, &credentials, key))?
    } else if has_store {
        SyncClient::open_with_key(&store_dir, key)?
    } else {
        tracing::info!("no server chosen yet: creating the local store with the built-in schema");
        tauri::async_runtime::block_on(SyncClient::init_with_key(
            &store_dir,
            &settings.server_url,
            &credentials,
            &ConnectionSecurity::default(),
            key,
            Some(Schema::default_person()),
        ))?
    };
    if incoming.is_some() && client.store().credentials()?.token != incoming {
        client.set_token(incoming)?;
    }
    // What the settings view shows: the store's token.
    settings.token = client.store().credentials()?.token.unwrap_or_default();
    let server_url = client.store().server_url().to_owned();
    let protocol = client.protocol();
    if !stored
        || !from_file.is_empty()
        || settings.server_url != server_url
        || settings.protocol != protocol
    {
        // The store is the truth: its server and protocol.
        settings.server_url = server_url;
        settings.protocol = protocol;
        settings::save(app, &data_dir, &settings)?;
    }
    Ok(launch(app, data_dir, client, settings, key.cloned(), None))
}

/// Starts the sync task over `client` and returns the running app; its rounds wait until
/// the task it `replaces` (if any) has ended.
pub fn launch<R: Runtime>(
    app: &AppHandle<R>,
    data_dir: std::path::PathBuf,
    client: SyncClient,
    settings: Settings,
    store_key: Option<StoreKey>,
    replaces: Option<crate::background::Stopped>,
) -> Ready {
    // Each start gets its own settings cell: a replaced sync task (stopped, perhaps
    // finishing a round) keeps reading the old one, so it never starts a round against
    // the new server with the old store.
    let settings = Arc::new(RwLock::new(settings));
    let client = Arc::new(crate::conflicts::attach_handler(
        client,
        settings.clone(),
        &data_dir,
    ));
    let sync = crate::background::start(app.clone(), client.clone(), settings.clone(), replaces);
    Ready {
        data_dir,
        client,
        settings,
        sync,
        store_key,
    }
}

/// The token to put into the store at start, if any: `$ROSTER_TOKEN` first, else one an
/// older version left in settings.json.
fn token_to_store(from_env: Option<String>, from_file: &str) -> Option<String> {
    from_env.or_else(|| Some(from_file.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Opens the store in `dir`, or creates it: with the server's schema when the server
/// answers within [`SCHEMA_TIMEOUT`], else with the shipped person schema, so the app
/// works offline from its first start. For an Azure Mobile Apps backend (which serves
/// no schema) the store is made from the settings' schema file.
async fn open_or_init(
    dir: &Path,
    settings: &Settings,
    credentials: &Credentials,
    key: Option<&StoreKey>,
) -> Result<SyncClient, AppError> {
    if dir.join(roster_client::DB_FILE).exists() {
        return Ok(SyncClient::open_with_key(dir, key)?);
    }
    let server_url = settings.server_url.as_str();
    let default_security = ConnectionSecurity::default();
    if settings.protocol == Protocol::AzureMobileApps {
        let schema = crate::commands::connect::read_schema(&settings.schema_file)?;
        let ama = crate::commands::connect::app_ama_settings();
        tracing::info!(
            server_url,
            "creating the local store for an Azure Mobile Apps backend"
        );
        return Ok(SyncClient::init_with_protocol(
            dir,
            server_url,
            credentials,
            &default_security,
            key,
            Some(schema),
            (Protocol::AzureMobileApps, ama),
        )
        .await?);
    }
    let fetched = tokio::time::timeout(
        SCHEMA_TIMEOUT,
        SyncClient::init_with_key(dir, server_url, credentials, &default_security, key, None),
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
    Ok(SyncClient::init_with_key(
        dir,
        server_url,
        credentials,
        &default_security,
        key,
        Some(Schema::default_person()),
    )
    .await?)
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
                | ClientError::TokenExpired(_)
                | ClientError::Forbidden(_)
        )
}

#[cfg(test)]
mod tests {
    use super::token_to_store;

    #[test]
    fn the_environment_token_wins_then_a_token_left_in_the_settings_file() {
        let cases = [
            (Some("rst_env"), "rst_file", Some("rst_env")),
            (None, " rst_file ", Some("rst_file")),
            (None, "", None),
            (Some("rst_env"), "", Some("rst_env")),
        ];
        for (from_env, from_file, expected) in cases {
            assert_eq!(
                token_to_store(from_env.map(str::to_owned), from_file).as_deref(),
                expected,
                "{from_env:?} / {from_file:?}"
            );
        }
    }
}
