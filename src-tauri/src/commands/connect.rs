//! Choosing the server: test a connection, connect (the first time, or to another
//! server), work offline for now, and reset the local data.
//!
//! A store that never synced moves to the chosen server with its rows, which the next
//! round pushes. A store that synced with another server cannot (its versions belong to
//! that server): after the person confirms, a new store is started in a new folder of the
//! data dir, and the old one stays on disk untouched.
//!
//! The server may also be an existing Azure Mobile Apps backend (the form's protocol
//! choice): it serves no schema, so the form names a schema file, the check lists each of
//! its tables (`GET /tables/<table>?$top=0`), and the store is made for that protocol.

use std::time::Duration;

use roster_client::{
    AmaSettings, ConnectionCheck, ConnectionProblem, ConnectionSecurity, Credentials, Protocol,
    SyncClient, check_ama_connection, check_connection_with,
};
use roster_protocol::ConflictPolicy;
use roster_protocol::Schema;
use serde::Serialize;
use tauri::{AppHandle, Manager, State};

use crate::error::{AppError, ErrorKind};
use crate::settings::{self, Connection, Settings};
use crate::state::{AppState, Ready};

/// How long each step of a connection test may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection test in words.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    /// Whether the server is a Roster server that accepts the token.
    pub ok: bool,
    /// What is wrong, if anything.
    pub problem: Option<ConnectionProblem>,
    /// One sentence for a person.
    pub message: String,
    /// What the network or the server said, for the curious.
    pub detail: String,
    /// The form field to fix (`server_url` or `token`).
    pub field: Option<String>,
}

/// `check` of a server speaking `protocol` in plain words.
fn describe(check: &ConnectionCheck, protocol: Protocol) -> ConnectionReport {
    let url = &check.server_url;
    let (message, field) = match check.problem {
        None if protocol == Protocol::AzureMobileApps => (
            "Connected: this Azure Mobile Apps backend serves every table of the schema and accepts the token.".to_owned(),
            None,
        ),
        None => ("Connected: this is a Roster server and it accepts the token.".to_owned(), None),
        Some(ConnectionProblem::BadUrl) => (
            "Enter the server's address, like https://roster.example.org or http://192.168.1.5:8787.".to_owned(),
            Some("server_url"),
        ),
        Some(ConnectionProblem::Unreachable) => (
            format!("Can't reach a server at {url}: nothing answers there. Check the address and that the server is running."),
            Some("server_url"),
        ),
        Some(ConnectionProblem::Tls) => (
            format!("The secure (TLS) connection to {url} failed: its certificate is not trusted, or it does not speak HTTPS."),
            Some("server_url"),
        ),
        Some(ConnectionProblem::Unauthorized) => (
            "The server does not accept this access token. Check it, or ask the server's administrator for a new one.".to_owned(),
            Some("token"),
        ),
        Some(ConnectionProblem::Forbidden) => (
            "This access token may not use this data. Ask the server's administrator.".to_owned(),
            Some("token"),
        ),
        Some(ConnectionProblem::Cleartext) => (
            format!("{url} is not encrypted (http://). Use an https:// address, or allow unencrypted HTTP to this server if you trust the network between you."),
            Some("server_url"),
        ),
        Some(ConnectionProblem::NotRoster) => (
            format!("Something answers at {url}, but it is not a Roster server."),
            Some("server_url"),
        ),
        Some(ConnectionProblem::NotAmaBackend) => (
            format!("Something answers at {url}, but not as an Azure Mobile Apps backend serving the tables of the schema."),
            Some("server_url"),
        ),
    };
    ConnectionReport {
        ok: check.problem.is_none(),
        problem: check.problem,
        message,
        detail: check.detail.clone(),
        field: field.map(str::to_owned),
    }
}

/// `token` as the client presents it.
fn credentials(token: &str) -> Credentials {
    Credentials {
        token: Some(token.trim().to_owned()).filter(|t| !t.is_empty()),
        dataset: None,
    }
}

/// The connection security a form asks for: the CA in the PEM file at `ca_cert_path`
/// (none when empty) and whether cleartext `http://` to another machine is allowed. An
/// unreadable file is an error on the `ca_cert` field.
fn security(
    ca_cert_path: Option<String>,
    allow_http: Option<bool>,
) -> Result<ConnectionSecurity, AppError> {
    let path = ca_cert_path
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    let ca_cert_pem = match path {
        Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
            AppError::invalid(
                "ca_cert",
                format!("Can't read the CA certificate file {path}: {e}"),
            )
        })?),
        None => None,
    };
    Ok(ConnectionSecurity {
        ca_cert_pem,
        allow_cleartext: allow_http.unwrap_or(false),
    })
}

/// The kind of server a form names: its protocol and, for an Azure Mobile Apps backend,
/// the schema file and the schema read from it.
struct Target {
    protocol: Protocol,
    schema_file: String,
    schema: Option<Schema>,
}

/// The conflict settings of a store the app makes for an Azure Mobile Apps backend: every
/// conflict the merge cannot settle is handed to this device, where the "conflicts on
/// this device" setting decides (ask me, the server's version, mine), as with a Roster
/// server that defers to its clients.
pub(crate) fn app_ama_settings() -> AmaSettings {
    AmaSettings {
        policy: ConflictPolicy::DeferToClient,
        ..AmaSettings::default()
    }
}

/// The server kind a form asks for: `protocol` (`roster` when empty) and, for
/// `azure-mobile-apps`, the schema in the JSON file `schema_file` (errors on that field).
fn target(protocol: Option<String>, schema_file: Option<String>) -> Result<Target, AppError> {
    let protocol = match protocol.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        Some(name) => {
            Protocol::parse(name).map_err(|e| AppError::invalid("protocol", e.to_string()))?
        }
        None => Protocol::Roster,
    };
    if protocol == Protocol::Roster {
        return Ok(Target {
            protocol,
            schema_file: String::new(),
            schema: None,
        });
    }
    let schema_file = schema_file.unwrap_or_default().trim().to_owned();
    if schema_file.is_empty() {
        return Err(AppError::invalid(
            "schema_file",
            "An Azure Mobile Apps backend does not say which tables it has: give the schema file (JSON) of the tables and columns to sync",
        ));
    }
    let schema = read_schema(&schema_file)?;
    Ok(Target {
        protocol,
        schema_file,
        schema: Some(schema),
    })
}

/// The schema in the JSON file at `path`, checked; errors on the `schema_file` field.
pub(crate) fn read_schema(path: &str) -> Result<Schema, AppError> {
    let invalid = |message: String| AppError::invalid("schema_file", message);
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("Can't read the schema file {path}: {e}")))?;
    let schema: Schema = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{path} is not a schema file: {e}")))?;
    schema
        .validate()
        .map_err(|e| invalid(format!("{path}: {e}")))?;
    Ok(schema)
}

/// Checks the server of `target` at `server_url` (see [`check_connection_with`] and
/// [`check_ama_connection`]).
async fn check(
    server_url: &str,
    credentials: &Credentials,
    security: &ConnectionSecurity,
    target: &Target,
) -> ConnectionCheck {
    match &target.schema {
        Some(schema) if target.protocol == Protocol::AzureMobileApps => {
            check_ama_connection(server_url, credentials, security, schema, CHECK_TIMEOUT).await
        }
        _ => check_connection_with(server_url, credentials, security, CHECK_TIMEOUT).await,
    }
}

/// Checks the server `ready`'s store syncs with, at `server_url` with `credentials`, as
/// its protocol wants (an Azure Mobile Apps backend with the store's schema).
pub(crate) async fn check_current(
    ready: &Ready,
    server_url: &str,
    credentials: &Credentials,
) -> Result<ConnectionCheck, AppError> {
    let target = Target {
        protocol: ready.client.protocol(),
        schema_file: String::new(),
        schema: Some(ready.client.store().schema().as_ref().clone()),
    };
    let security = ready.client.store().connection_security()?;
    Ok(check(server_url, credentials, &security, &target).await)
}

/// Checks `server_url` with `token` (trusting the CA in `ca_cert_path` besides the
/// system's, allowing cleartext to another machine only with `allow_http`) as a server of
/// `protocol` (`roster` when absent; `azure-mobile-apps` with the schema in
/// `schema_file`) and says what is wrong, in words.
#[tauri::command(rename_all = "snake_case")]
pub async fn test_connection(
    server_url: String,
    token: String,
    ca_cert_path: Option<String>,
    allow_http: Option<bool>,
    protocol: Option<String>,
    schema_file: Option<String>,
) -> Result<ConnectionReport, AppError> {
    let security = security(ca_cert_path, allow_http)?;
    let target = target(protocol, schema_file)?;
    let check = check(&server_url, &credentials(&token), &security, &target).await;
    Ok(describe(&check, target.protocol))
}

/// The local data a change of server or a reset concerns.
#[derive(Debug, Clone, Serialize)]
pub struct LocalData {
    /// The server the store belongs to.
    pub server_url: String,
    /// Whether a server was chosen.
    pub connection: Connection,
    /// Changes not on the server yet (those held by open conflicts too).
    pub pending: u64,
    /// Open conflicts.
    pub open_conflicts: u64,
    /// Whether the store ever synced (then it cannot move to another server).
    pub synced_before: bool,
    /// Rows in the store.
    pub rows: u64,
    /// Whether the store trusts a CA of its own besides the system's.
    pub custom_ca: bool,
    /// Whether cleartext `http://` to another machine is allowed.
    pub allow_http: bool,
    /// The protocol the store syncs with.
    pub protocol: Protocol,
}

fn local_data_of(ready: &Ready) -> Result<LocalData, AppError> {
    let status = ready.client.store().status()?;
    let security = ready.client.store().connection_security()?;
    let summary = SyncClient::store_summary_with_key(
        &ready.settings()?.store_path(&ready.data_dir),
        ready.store_key.as_ref(),
    )?;
    Ok(LocalData {
        server_url: status.server_url,
        connection: ready.settings()?.connection,
        pending: summary.pending,
        open_conflicts: status.open_conflicts,
        synced_before: summary.synced_before,
        rows: summary.rows,
        custom_ca: security.ca_cert_pem.is_some(),
        allow_http: security.allow_cleartext,
        protocol: ready.client.protocol(),
    })
}

/// What a switch of server or a reset would concern.
#[tauri::command]
pub async fn local_data(state: State<'_, AppState>) -> Result<LocalData, AppError> {
    let ready = state.get()?;
    super::blocking(move || local_data_of(&ready)).await
}

/// What [`connect_server`] did.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectOutcome {
    /// Same server, new token.
    TokenChanged,
    /// The local data moved to the server and is pushed by the next round.
    Moved,
    /// A new store was started from the server (the old one is kept on disk).
    NewStore,
}

/// Connects to `server_url` with `token` after testing it: the first time, after working
/// offline, or to another server (of `protocol`, with `schema_file`, as in
/// [`test_connection`]). Moving a store that synced with another server (or with this
/// one in the other protocol) sets it aside; that happens only with `replace_local`,
/// else the answer is a [`ErrorKind::NeedsConfirm`] error saying how many changes would
/// stay behind.
#[allow(clippy::too_many_arguments)]
#[tauri::command(rename_all = "snake_case")]
pub async fn connect_server(
    app: AppHandle,
    state: State<'_, AppState>,
    server_url: String,
    token: String,
    replace_local: bool,
    ca_cert_path: Option<String>,
    allow_http: Option<bool>,
    protocol: Option<String>,
    schema_file: Option<String>,
) -> Result<ConnectOutcome, AppError> {
    let mut security = security(ca_cert_path, allow_http)?;
    let target = target(protocol, schema_file)?;
    let ready = state.get()?;
    // No CA file named for the server this store belongs to: keep the CA it trusts.
    let current = ready.client.store().connection_security()?;
    let same_url = roster_client::normalise_server_url(&server_url)
        .is_ok_and(|url| url == ready.client.store().server_url());
    if security.ca_cert_pem.is_none() && same_url {
        security.ca_cert_pem = current.ca_cert_pem;
    }
    let mut settings = ready.settings()?;
    settings.server_url = server_url.trim().to_owned();
    settings.token = token.trim().to_owned();
    settings.connection = Connection::Server;
    settings.validate()?;
    let credentials = settings.credentials();
    let check = check(&settings.server_url, &credentials, &security, &target).await;
    let report = describe(&check, target.protocol);
    let Some(schema) = check.schema.filter(|_| report.ok) else {
        return Err(AppError {
            field: report.field.clone(),
            ..AppError::new(ErrorKind::Server, report.message)
        });
    };
    settings.server_url = check.server_url;
    settings.protocol = target.protocol;
    settings.schema_file = target.schema_file;
    let protocol = (target.protocol, app_ama_settings());
    let data = {
        let ready = ready.clone();
        super::blocking(move || local_data_of(&ready)).await?
    };
    let same_server = data.server_url == settings.server_url && data.protocol == protocol.0;
    let outcome = if data.synced_before && same_server {
        ready.client.set_token(credentials.token.clone())?;
        if ready.client.store().connection_security()? != security {
            // The transport is built from the stored security: reopen with the new one.
            ready.client.store().set_connection_security(&security)?;
            let dir = settings.store_path(&ready.data_dir);
            let key = ready.store_key.clone();
            let client =
                super::blocking(move || Ok(SyncClient::open_with_key(&dir, key.as_ref())?)).await?;
            restart(&app, &state, &ready, client, &settings)?;
            return Ok(ConnectOutcome::TokenChanged);
        }
        ConnectOutcome::TokenChanged
    } else if !data.synced_before && data.rows > 0 {
        // Made offline: the rows move to the server (when its tables fit them).
        let dir = settings.store_path(&ready.data_dir);
        let url = settings.server_url.clone();
        let key = ready.store_key.clone();
        let client = super::blocking(move || {
            Ok(SyncClient::point_at_server_with_protocol(
                &dir,
                &url,
                &credentials,
                &schema,
                key.as_ref(),
                &protocol,
            )?
            .with_connection_security(&security)?)
        })
        .await?;
        restart(&app, &state, &ready, client, &settings)?;
        return Ok(ConnectOutcome::Moved);
    } else {
        if data.pending > 0 && !replace_local {
            return Err(AppError::new(
                ErrorKind::NeedsConfirm,
                format!(
                    "{} on this device {} not reached {} and would stay behind.",
                    count(data.pending, "change", "changes"),
                    if data.pending == 1 { "has" } else { "have" },
                    data.server_url
                ),
            ));
        }
        let client = new_store(&ready, &mut settings, Some(schema), &security, protocol).await?;
        restart(&app, &state, &ready, client, &settings)?;
        return Ok(ConnectOutcome::NewStore);
    };
    save(&app, &ready, settings)?;
    Ok(outcome)
}

/// "Work offline for now": hides the connect screen; nothing syncs until a server is set.
#[tauri::command]
pub fn work_offline(app: AppHandle, state: State<'_, AppState>) -> Result<(), AppError> {
    let ready = state.get()?;
    let mut settings = ready.settings()?;
    if settings.connection == Connection::Unset {
        settings.connection = Connection::Offline;
    }
    save(&app, &ready, settings)?;
    ready.sync.refresh();
    Ok(())
}

/// Starts a new, empty store (from the server's schema when it answers) and keeps the old
/// one on disk. Refused with [`ErrorKind::NeedsConfirm`] while changes are waiting,
/// unless `confirmed`.
#[tauri::command]
pub async fn reset_local_data(
    app: AppHandle,
    state: State<'_, AppState>,
    confirmed: bool,
) -> Result<(), AppError> {
    let ready = state.get()?;
    let data = {
        let ready = ready.clone();
        super::blocking(move || local_data_of(&ready)).await?
    };
    if data.pending > 0 && !confirmed {
        return Err(AppError::new(
            ErrorKind::NeedsConfirm,
            format!(
                "{} would be lost.",
                count(data.pending, "change", "changes")
            ),
        ));
    }
    let mut settings = ready.settings()?;
    // The new store keeps trusting what the old one did.
    let security = ready.client.store().connection_security()?;
    // The new store speaks what the old one did; an Azure Mobile Apps store keeps its
    // schema (such a backend serves none).
    let protocol = (
        ready.client.protocol(),
        ready.client.store().ama_settings()?,
    );
    let schema = match (protocol.0, settings.connection) {
        (Protocol::AzureMobileApps, _) => Some(ready.client.store().schema().as_ref().clone()),
        (Protocol::Roster, Connection::Server) => {
            check_current(&ready, &settings.server_url, &settings.credentials())
                .await?
                .schema
        }
        (Protocol::Roster, _) => None,
    };
    let client = new_store(&ready, &mut settings, schema, &security, protocol).await?;
    restart(&app, &state, &ready, client, &settings)
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A new store in a new folder of the data dir for `settings`' server, speaking
/// `protocol`, with `schema` (the built-in one when `None`); `settings.store_dir` names
/// the folder afterwards.
async fn new_store(
    ready: &Ready,
    settings: &mut Settings,
    schema: Option<Schema>,
    security: &ConnectionSecurity,
    protocol: (Protocol, AmaSettings),
) -> Result<SyncClient, AppError> {
    let folder = format!("store-{}", uuid::Uuid::now_v7().simple());
    let dir = ready.data_dir.join(&folder);
    let client = SyncClient::init_with_protocol(
        &dir,
        &settings.server_url,
        &settings.credentials(),
        security,
        ready.store_key.as_ref(),
        Some(schema.unwrap_or_else(Schema::default_person)),
        protocol,
    )
    .await?;
    tracing::info!(store = %dir.display(), old = ?settings.store_dir, "started a new local store");
    settings.store_dir = Some(folder);
    Ok(client)
}

/// Saves `settings` and runs the app on `client` from now on.
fn restart(
    app: &AppHandle,
    state: &AppState,
    ready: &Ready,
    client: SyncClient,
    settings: &Settings,
) -> Result<(), AppError> {
    settings::save(app, &ready.data_dir, settings)?;
    // The old task stops before the new one starts, so the status bar never shows the
    // old store again, and the old server is no longer synced with.
    let stopped = ready.sync.stop();
    let next = crate::startup::launch(
        app,
        ready.data_dir.clone(),
        client,
        settings.clone(),
        ready.store_key.clone(),
        Some(stopped),
    );
    state.replace(next)?;
    Ok(())
}

/// Stores `settings` for the running app (file, memory, window title) and wakes the sync
/// task.
pub(crate) fn save(app: &AppHandle, ready: &Ready, settings: Settings) -> Result<(), AppError> {
    settings::save(app, &ready.data_dir, &settings)?;
    if let Some(window) = app.get_webview_window(crate::MAIN_WINDOW) {
        let _ = window.set_title(&crate::window_title(&settings.device_name));
    }
    *ready
        .settings
        .write()
        .map_err(|_| AppError::internal("settings lock poisoned"))? = settings;
    ready.sync.refresh();
    Ok(())
}
