//! `roster`: the Roster client from a shell. Every command works on a data dir (one local
//! store); only `init` (without `--schema`) and `sync` need the server.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad input (including a cleartext `http://`
//! server URL to another machine without `--allow-insecure-http`), 3 server unreachable
//! (including a read-idle timeout and a sync past its deadline), 4 no such row, 5 the
//! server refused the request (including a missing, unknown or revoked token, a data set
//! the token may not use, and a redirect, which is never followed), 6 the server's TLS
//! certificate cannot be trusted (unknown CA, wrong host name, expired).

mod args;
mod fields;
mod live;
mod output;
mod resolve;
mod subscribe;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use roster_client::{
    AmaSettings, ClientError, ConnectionSecurity, Credentials, ListQuery, LocalStore, Protocol,
    StoreKey, SyncClient, SyncOptions,
};
use roster_protocol::{RowId, Schema};

use args::{Cli, Command};
use output::Output;

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("org", "Roster", "roster")
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from(".roster"))
}

/// What kind of failure an error is; decides both the exit code and the `--json` kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bad arguments or values, or a data dir in the wrong state (exit 2).
    Invalid,
    /// The server could not be reached (exit 3).
    Unreachable,
    /// No such row (exit 4).
    NotFound,
    /// The server refused the request (or the token), redirected it, or rolled the sync
    /// back (exit 5).
    Server,
    /// The server's certificate could not be trusted (exit 6).
    Tls,
    /// The store is encrypted and no key, or a wrong one, was given (exit 7).
    Locked,
    /// Anything else (exit 1).
    Other,
}

impl FailureKind {
    /// Classifies an error.
    pub fn of(error: &anyhow::Error) -> Self {
        if error.downcast_ref::<fields::FieldError>().is_some() {
            return Self::Invalid;
        }
        match error.downcast_ref::<ClientError>() {
            Some(ClientError::Unreachable { .. } | ClientError::DeadlineExceeded { .. }) => {
                Self::Unreachable
            }
            Some(ClientError::Tls { .. }) => Self::Tls,
            Some(ClientError::StoreLocked(_) | ClientError::WrongStoreKey(_)) => Self::Locked,
            Some(ClientError::NotFound { .. }) => Self::NotFound,
            Some(
                ClientError::Server { .. }
                | ClientError::RolledBack { .. }
                | ClientError::Unauthorized(_)
                | ClientError::TokenExpired(_)
                | ClientError::Forbidden(_)
                | ClientError::Redirected { .. },
            ) => Self::Server,
            Some(
                ClientError::Invalid(_)
                | ClientError::BadInput(_)
                | ClientError::NotInitialised(_)
                | ClientError::AlreadyInitialised(_)
                | ClientError::CleartextRefused { .. },
            ) => Self::Invalid,
            _ => Self::Other,
        }
    }

    /// The documented exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Invalid => 2,
            Self::Unreachable => 3,
            Self::NotFound => 4,
            Self::Server => 5,
            Self::Tls => 6,
            Self::Locked => 7,
        }
    }

    /// The `error.kind` of `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Unreachable => "unreachable",
            Self::NotFound => "not_found",
            Self::Server => "server",
            Self::Tls => "tls",
            Self::Locked => "locked",
            Self::Other => "error",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls-platform-verifier logs every refused certificate at error level; the
    // `ClientError::Tls` printed below already says it (and a log line would break
    // `--json` error output).
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("ROSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    if let Ok(quiet) = "rustls_platform_verifier=off".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let out = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            out.error(&anyhow::Error::new(error), FailureKind::Other);
            return ExitCode::from(FailureKind::Other.exit_code());
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let kind = FailureKind::of(&error);
            out.error(&error, kind);
            ExitCode::from(kind.exit_code())
        }
    }
}

/// The sync options the command line changes from the defaults.
fn sync_options(cli: &Cli) -> SyncOptions {
    let defaults = SyncOptions::default();
    SyncOptions {
        read_idle_timeout: cli.read_timeout.unwrap_or(defaults.read_idle_timeout),
        request_timeout: cli.request_timeout.unwrap_or(defaults.request_timeout),
        round_deadline: cli.sync_deadline.unwrap_or(defaults.round_deadline),
        max_response_bytes: cli
            .max_response_bytes
            .unwrap_or(defaults.max_response_bytes),
        ..defaults
    }
}

fn parse_id(text: &str) -> anyhow::Result<RowId> {
    RowId::parse_str(text)
        .map_err(|e| ClientError::BadInput(format!("{text:?} is not a row id: {e}")).into())
}

async fn run(mut cli: Cli, out: &Output) -> anyhow::Result<()> {
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    // An empty `ROSTER_TOKEN=` means no token, not an empty one.
    cli.token = cli
        .token
        .take()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let options = sync_options(&cli);
    let key = cli
        .passphrase_file
        .as_deref()
        .map(StoreKey::from_passphrase_file)
        .transpose()?;
    if let Command::Init {
        server,
        schema,
        dataset,
        ca_cert,
        allow_insecure_http,
        protocol,
        conflict_policy,
    } = &cli.command
    {
        let protocol = Protocol::parse(protocol)?;
        let mut settings = AmaSettings::default();
        if !conflict_policy.is_empty() && protocol != Protocol::AzureMobileApps {
            return Err(ClientError::BadInput(
                "--conflict-policy is for --protocol azure-mobile-apps; a Roster server's \
                 config sets its tables' policies"
                    .into(),
            )
            .into());
        }
        for arg in conflict_policy {
            settings.set_from_arg(arg)?;
        }
        let schema = match schema {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read schema file {}", path.display()))?;
                let schema: Schema = serde_json::from_str(&text).map_err(|e| {
                    ClientError::BadInput(format!("invalid schema file {}: {e}", path.display()))
                })?;
                Some(schema)
            }
            None => None,
        };
        let credentials = Credentials {
            token: cli.token.clone(),
            dataset: dataset.clone(),
        };
        let ca_cert_pem = match ca_cert {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ClientError::BadInput(format!("cannot read CA file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let security = ConnectionSecurity {
            ca_cert_pem,
            allow_cleartext: *allow_insecure_http,
        };
        let client = SyncClient::init_with_protocol(
            &dir,
            server,
            &credentials,
            &security,
            key.as_ref(),
            schema,
            (protocol, settings),
        )
        .await?;
        return out.initialised(&dir, &client.store().status()?, &client.store().schema());
    }
    // Only the commands that talk to the server open the sync engine: its HTTPS client
    // loads the platform's CA roots, which a local command (`list`, `show`, `add`...)
    // would pay for nothing (about a third of `roster list`, docs/BENCHMARKS.md issue 20).
    let engine = if cli.command.needs_server() {
        let mut client = SyncClient::open_with_key(&dir, key.as_ref())?;
        if options != SyncOptions::default() {
            client = client.with_options(options)?;
        }
        if let Some(token) = cli.token.clone() {
            client = client.with_token(token);
        }
        Some(client)
    } else {
        None
    };
    let store_handle = match &engine {
        Some(client) => client.store_handle(),
        None => std::sync::Arc::new(LocalStore::open_with_key(&dir, key.as_ref())?),
    };
    let store = store_handle.as_ref();
    let client = || {
        engine
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this command did not open the sync engine"))
    };
    let table_name = |table: &Option<String>| -> anyhow::Result<String> {
        match table {
            Some(t) => Ok(t.clone()),
            None => store
                .schema()
                .tables
                .first()
                .map(|t| t.name.clone())
                .ok_or_else(|| ClientError::Corrupt("the schema has no table".into()).into()),
        }
    };
    match cli.command {
        Command::Init { .. } => Ok(()),
        Command::Add { table, assignments } => {
            let table = table_name(&table)?;
            let fields = fields::parse(store.schema().table(&table)?, &assignments)?;
            out.changed("Added", &table, &store.insert(&table, fields)?)
        }
        Command::Edit {
            table,
            id,
            assignments,
        } => {
            let table = table_name(&table)?;
            let fields = fields::parse(store.schema().table(&table)?, &assignments)?;
            out.changed(
                "Updated",
                &table,
                &store.update(&table, parse_id(&id)?, fields)?,
            )
        }
        Command::Delete { table, id } => {
            let table = table_name(&table)?;
            let id = parse_id(&id)?;
            store.delete(&table, id)?;
            out.deleted(&table, id)
        }
        Command::Show { table, id } => {
            let table = table_name(&table)?;
            let record = store.get(&table, parse_id(&id)?)?;
            out.record(store.schema().table(&table)?, &record)
        }
        Command::List {
            table,
            search,
            sort,
            desc,
            limit,
            offset,
        } => {
            let table = table_name(&table)?;
            let query = ListQuery {
                search,
                sort,
                descending: desc,
                limit,
                offset,
            };
            let total = store.count(&table, query.search.as_deref())?;
            let records = store.list(&table, &query)?;
            out.list(store.schema().table(&table)?, total, &records)
        }
        Command::Sync { watch: false } => out.synced(&client()?.sync().await?),
        Command::Sync { watch: true } => live::sync_until_interrupted(client()?, out).await,
        Command::Conflicts {
            history,
            server,
            limit,
        } => {
            if server {
                out.server_conflicts(&client()?.server_conflicts(limit, None).await?)
            } else if history {
                out.conflicts(&store.conflict_history(limit)?)
            } else {
                out.open_conflicts(&store.open_conflicts()?)
            }
        }
        Command::Resolve {
            table,
            id,
            choice,
            theirs,
            set,
        } => {
            let table = table_name(&table)?;
            let id = parse_id(&id)?;
            let choice = resolve::choice(store, &table, id, choice, &theirs, &set)?;
            store.resolve_conflict(&table, id, choice)?;
            out.resolved(&table, id)
        }
        Command::Status => out.status(&store.status()?),
        Command::Subscribe {
            name,
            params,
            no_sync,
        } => {
            let subscription = subscribe::parse(&name, &params)?;
            let client = client()?;
            let added = client.subscribe(subscription.clone()).await?;
            out.subscribed(&subscription, added)?;
            if no_sync {
                Ok(())
            } else {
                out.synced(&client.sync().await?)
            }
        }
        Command::Unsubscribe {
            name,
            params,
            all,
            no_sync,
        } => {
            let client = client()?;
            let removed = match name.filter(|_| !all) {
                Some(name) => {
                    let subscription = subscribe::parse(&name, &params)?;
                    let removed = client.unsubscribe(&subscription).await?;
                    out.unsubscribed(Some(&subscription), removed)?;
                    removed
                }
                None => {
                    client.sync_everything().await?;
                    out.unsubscribed(None, true)?;
                    true
                }
            };
            if no_sync || !removed {
                Ok(())
            } else {
                out.synced(&client.sync().await?)
            }
        }
        Command::Subscriptions => out.subscriptions(client()?.subscriptions()?.as_deref()),
        Command::Import { table, file } => {
            let table = table_name(&table)?;
            // On a terminal, a line that counts the rows as the chunks are written.
            let live = !cli.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut progress = |p: roster_client::ImportProgress| {
                if live && p.total > 0 {
                    eprint!("\rimporting: {} of {} rows", p.done, p.total);
                }
            };
            let report = store.import_file(&table, &file, &mut progress);
            if live {
                eprintln!();
            }
            let report = report?;
            out.imported(&file, &report)
        }
        Command::Export { table, file, ids } => {
            let table = table_name(&table)?;
            let ids = ids
                .iter()
                .map(|id| parse_id(id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ids = (!ids.is_empty()).then_some(ids.as_slice());
            out.exported(&file, store.export_file(&table, &file, ids)?)
        }
    }
}
