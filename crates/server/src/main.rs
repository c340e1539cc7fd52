//! `roster-server`: runs the sync service, or maintains its database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roster_server::accounts::{OwnedData, issue_expiring_token, issue_token, now_ms, rotate_token};
use roster_server::app::{Application, unix_ms_ago};
use roster_server::config::ServerConfig;
use roster_server::store;
use tracing_subscriber::EnvFilter;

/// The Roster sync service.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (overrides the config file) [default: 127.0.0.1:8787].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Database: an SQLite file path, or a PostgreSQL URL such as
    /// `postgres://roster@127.0.0.1:5432/roster` (overrides the config file)
    /// [default: an SQLite file in the platform data dir].
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// TOML config file with settings and table declarations.
    #[arg(long, global = true, env = "ROSTER_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key; overrides the config file).
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`, apart from the sync API
    /// (overrides the config file; off by default).
    #[arg(long, global = true)]
    metrics_listen: Option<SocketAddr>,
    /// Log format on stderr: `text` for people, `json` (one object a line) for a log
    /// collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ROSTER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (time, level, target, message, fields, spans).
    Json,
}

/// Logs to stderr in `format`, filtered by `ROSTER_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("ROSTER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Remove tombstones older than the given age now, then exit.
    PurgeTombstones {
        /// Minimum age of a tombstone to purge, in seconds.
        #[arg(long)]
        older_than_secs: u64,
    },
    /// Print the effective configuration as TOML, then exit.
    PrintConfig,
    /// Write a consistent copy of the database to a new file, also while the server
    /// runs (SQLite: `VACUUM INTO`; PostgreSQL: runs `pg_dump --format=custom`, which
    /// must be on the PATH; restore that with `pg_restore`, then `new-epoch`).
    Backup {
        /// The backup file to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place of the SQLite database (stop the server first), and start
    /// a new epoch: devices that synced after the backup re-base at their next round.
    Restore {
        /// The backup file (from `backup --to`).
        #[arg(long)]
        from: PathBuf,
    },
    /// Start a new epoch on the database as it is now: run it after restoring a
    /// PostgreSQL database with `pg_restore` (`restore` does it for SQLite).
    NewEpoch,
    /// Migrate the stored rows to the config's tables for the changes the server refuses
    /// at start (dropped, renamed or narrowed columns): every dropped or renamed column
    /// or table must be named; narrower rules are checked on every stored row. One
    /// transaction with the next schema version; devices follow on their next sync.
    /// Restart the servers with the config afterwards.
    Migrate {
        /// A renamed column, `TABLE.OLD=NEW` (its values move to the new name).
        #[arg(long = "rename", value_name = "TABLE.OLD=NEW")]
        renames: Vec<roster_server::schema_migration::Rename>,
        /// A dropped column `TABLE.COLUMN` (its values are removed) or table `TABLE`
        /// (its rows are removed).
        #[arg(long = "drop", value_name = "TABLE[.COLUMN]")]
        drops: Vec<String>,
    },
    /// Create a user, its own data set (same name) and a first token. Prints the token
    /// secret alone on stdout: it is shown only this once.
    CreateUser {
        /// User name (also its data set's name): letters, digits, '_', '.', '-'.
        name: String,
        /// Label of the first token (e.g. the device it is for).
        #[arg(long, default_value = "first token")]
        label: String,
    },
    /// Issue another token for a user. Prints the secret alone on stdout (shown once).
    CreateToken {
        /// The user.
        #[arg(long)]
        user: String,
        /// Label (e.g. the device it is for).
        #[arg(long, default_value = "")]
        label: String,
        /// Let it expire after this long (e.g. `30d`, `12h`, `90m`, `45s`); never if absent.
        #[arg(long, value_parser = parse_duration_ms)]
        expires_in: Option<i64>,
    },
    /// Issue a new token in place of token ID: same user and label; the old one keeps
    /// working for the grace period, then expires. Prints the new secret (shown once).
    RotateToken {
        /// The old token's id.
        id: i64,
        /// How long the old token keeps working (e.g. `1d`, `0s`).
        #[arg(long, value_parser = parse_duration_ms, default_value = "1d")]
        grace: i64,
    },
    /// List tokens (of one user, or all): id, user, label, state, expiry, last use.
    ListTokens {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (see list-users): it is refused from then on.
    RevokeToken {
        /// The token's id.
        id: i64,
    },
    /// List users, their tokens (ids, labels, revoked or not) and data sets shared with
    /// them.
    ListUsers {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a user read and write a data set (a user's own, or `default`).
    Share {
        /// The data set.
        dataset: String,
        /// The user who may use it from now on.
        #[arg(long = "with")]
        with_user: String,
    },
    /// Take a share back: the user may no longer use the data set.
    Unshare {
        /// The data set.
        dataset: String,
        /// The user who loses access.
        #[arg(long = "with")]
        with_user: String,
    },
    /// Delete a user: every token and share of it goes, and its id is never reused.
    DeleteUser {
        /// The user.
        name: String,
        /// Keep its data set (rows and others' shares), owned by no one.
        #[arg(
            long,
            conflicts_with = "delete_data",
            required_unless_present = "delete_data"
        )]
        keep_data: bool,
        /// Remove its data set with every row.
        #[arg(long)]
        delete_data: bool,
    },
}

/// Parses `30d`, `12h`, `90m` or `45s` into milliseconds.
fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let split = text.len().saturating_sub(1);
    let (number, unit) = (
        text.get(..split).unwrap_or(""),
        text.get(split..).unwrap_or(""),
    );
    let unit_ms: i64 = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => {
            return Err(format!(
                "{text:?}: use a number and d, h, m or s (e.g. 30d)"
            ));
        }
    };
    let count: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: use a number and d, h, m or s (e.g. 30d)"))?;
    if count < 0 {
        return Err(format!("{text:?}: must not be negative"));
    }
    count
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A Unix time in ms as UTC RFC 3339 text, for the admin listings.
fn show_time(ms: Option<i64>) -> String {
    ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".into())
}

fn default_db() -> PathBuf {
    directories::ProjectDirs::from("org", "Roster", "roster-server")
        .map(|d| d.data_dir().join("roster.db"))
        .unwrap_or_else(|| PathBuf::from("roster-server.db"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut config = match &cli.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(metrics) = cli.metrics_listen {
        config.metrics_listen = Some(metrics);
    }
    if let Some(db) = cli.db {
        config.db = Some(db);
    }
    if let (Some(cert), Some(key)) = (cli.tls_cert, cli.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    let db = config.db.clone().unwrap_or_else(default_db);
    match cli.command.unwrap_or(Command::Serve) {
        Command::PrintConfig => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::PurgeTombstones { older_than_secs } => {
            let store = open_store(db.clone()).await?.sync;
            let cutoff = unix_ms_ago(Duration::from_secs(older_than_secs));
            let report =
                tokio::task::spawn_blocking(move || store.purge_tombstones(cutoff)).await??;
            println!(
                "purged {} tombstones; purge horizon is now {}",
                report.purged, report.horizon
            );
            Ok(())
        }
        Command::Backup { to } if store::postgres::is_postgres_url(&db.to_string_lossy()) => {
            let shown = store::describe(&db);
            let target = to.clone();
            tokio::task::spawn_blocking(move || pg_dump_to(&db, &target)).await??;
            println!("backed up {shown} to {} (pg_dump)", to.display());
            Ok(())
        }
        Command::Backup { to } => {
            let store = open_store(db.clone()).await?.sync;
            let target = to.clone();
            tokio::task::spawn_blocking(move || store.backup_to(&target))
                .await?
                .with_context(|| format!("cannot back up to {}", to.display()))?;
            println!("backed up {} to {}", store::describe(&db), to.display());
            Ok(())
        }
        Command::Restore { from } => {
            tokio::task::spawn_blocking(move || put_backup_in_place(&from, &db)).await??;
            Ok(())
        }
        Command::NewEpoch => {
            let store = open_store(db.clone()).await?.sync;
            let epoch = tokio::task::spawn_blocking(move || store.begin_new_epoch()).await??;
            println!("new epoch {epoch}");
            Ok(())
        }
        Command::Migrate { renames, drops } => {
            let store = open_store(db.clone()).await?.sync;
            let target = config.schema();
            let (served, report) = tokio::task::spawn_blocking(move || {
                roster_server::schema_migration::run(store.as_ref(), &target, &renames, &drops)
            })
            .await??;
            println!(
                "migrated to schema version {}: {} rows rewritten, {} rows of dropped tables removed",
                served.version, report.rewritten, report.removed
            );
            Ok(())
        }
        Command::Serve => serve(config, db).await,
        admin => tokio::task::spawn_blocking(move || administer(admin, &db)).await?,
    }
}

/// Runs an account command on the database, SQLite file or PostgreSQL URL (also while
/// servers run on it). Blocks: call it on a blocking thread.
fn administer(command: Command, db: &std::path::Path) -> anyhow::Result<()> {
    let backend =
        store::open(db).with_context(|| format!("cannot open database {}", store::describe(db)))?;
    let store = backend.accounts.as_ref();
    match command {
        Command::CreateUser { name, label } => {
            let user = store.create_user(&name)?;
            let token = issue_token(store, &user.name, &label)?;
            eprintln!(
                "created user {} (data set {:?}) with token {}; the secret below is shown only once",
                user.name,
                user.own_dataset(),
                token.id
            );
            println!("{}", token.secret);
        }
        Command::CreateToken {
            user,
            label,
            expires_in,
        } => {
            let token = issue_expiring_token(store, &user, &label, expires_in)?;
            eprintln!(
                "issued token {} for {user}; the secret below is shown only once",
                token.id
            );
            println!("{}", token.secret);
        }
        Command::RevokeToken { id } => {
            store.revoke_token(id)?;
            println!("revoked token {id}");
        }
        Command::ListUsers { json } => {
            let users = store.users()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            }
            for summary in users.iter().filter(|_| !json) {
                let tokens: Vec<String> = summary
                    .tokens
                    .iter()
                    .map(|t| {
                        let state = if t.revoked { "revoked" } else { "active" };
                        format!("{} {:?} {state}", t.id, t.label)
                    })
                    .collect();
                println!(
                    "{}\tshared with it: [{}]\ttokens: [{}]",
                    summary.user.name,
                    summary.shared_with.join(", "),
                    tokens.join("; ")
                );
            }
        }
        Command::Share { dataset, with_user } => {
            store.grant(&dataset, &with_user)?;
            println!("{with_user} may now use data set {dataset}");
        }
        Command::RotateToken { id, grace } => {
            let token = rotate_token(store, id, grace)?;
            eprintln!(
                "issued token {} in place of token {id}, which expires {}; the secret below is shown only once",
                token.id,
                show_time(Some(now_ms().saturating_add(grace)))
            );
            println!("{}", token.secret);
        }
        Command::ListTokens { user } => {
            println!("id\tuser\tlabel\tstate\texpires\tlast used");
            for summary in store.users()? {
                if user.as_ref().is_some_and(|u| *u != summary.user.name) {
                    continue;
                }
                for t in &summary.tokens {
                    let state = if t.revoked {
                        "revoked"
                    } else if t.expires_at_ms.is_some_and(|at| at <= now_ms()) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{:?}\t{state}\t{}\t{}",
                        t.id,
                        summary.user.name,
                        t.label,
                        show_time(t.expires_at_ms),
                        show_time(t.last_used_at_ms)
                    );
                }
            }
        }
        Command::Unshare { dataset, with_user } => {
            store.revoke_grant(&dataset, &with_user)?;
            println!("{with_user} may no longer use data set {dataset}");
        }
        Command::DeleteUser {
            name, delete_data, ..
        } => {
            let data = if delete_data {
                OwnedData::Delete
            } else {
                OwnedData::Keep
            };
            let gone = store.delete_user(&name, data)?;
            let what = if gone.data_deleted {
                "its data set removed"
            } else {
                "its data set kept, owned by no one"
            };
            println!(
                "deleted user {name}: {} tokens and {} shares gone, {what}",
                gone.tokens, gone.grants
            );
        }
        Command::Serve
        | Command::PrintConfig
        | Command::PurgeTombstones { .. }
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::NewEpoch
        | Command::Migrate { .. } => {}
    }
    Ok(())
}

/// Backs the PostgreSQL database `url` up to the new file `to` with `pg_dump` (custom
/// format, one consistent snapshot while the servers serve); its errors go to stderr.
/// A failed dump leaves no file. Blocks.
fn pg_dump_to(url: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !to.exists(),
        "{} exists; a backup is written to a new file",
        to.display()
    );
    let status = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(to)
        .arg("--dbname")
        .arg(url)
        .status();
    let status = match status {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "pg_dump is not on the PATH: install the PostgreSQL client tools (the same major \
             version as the server or newer)"
        ),
        other => other.context("cannot run pg_dump")?,
    };
    if !status.success() {
        let _ = std::fs::remove_file(to);
        anyhow::bail!("pg_dump failed ({status}); nothing was written");
    }
    Ok(())
}

/// Replaces the SQLite database `db` with the backup `from`, then starts a new epoch.
/// Refused, changing nothing, while a server serves `db` (see [`store::db_lock`]).
/// The backup is checked first and copied beside `db`, then renamed over it, so an
/// interrupted restore leaves the old database or the whole backup. Blocks.
fn put_backup_in_place(from: &std::path::Path, db: &std::path::Path) -> anyhow::Result<()> {
    if store::postgres::is_postgres_url(&db.to_string_lossy()) {
        anyhow::bail!(
            "restore a PostgreSQL database with pg_restore, then run `roster-server --db URL new-epoch`"
        );
    }
    let _restoring = store::db_lock::hold_for_restore(db).context("cannot restore")?;
    {
        let backup =
            rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("cannot open the backup {}", from.display()))?;
        let check: String = backup
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .with_context(|| format!("{} is not an SQLite database", from.display()))?;
        anyhow::ensure!(check == "ok", "{} is damaged: {check}", from.display());
    }
    let staged = db.with_extension("restoring");
    std::fs::copy(from, &staged)
        .with_context(|| format!("cannot copy {} to {}", from.display(), staged.display()))?;
    std::fs::File::open(&staged)?.sync_all()?;
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot remove {side:?}"));
            }
            _ => {}
        }
    }
    std::fs::rename(&staged, db)
        .with_context(|| format!("cannot move the backup into {}", db.display()))?;
    let backend =
        store::open(db).with_context(|| format!("cannot open the restored {}", db.display()))?;
    let epoch = backend.sync.begin_new_epoch()?;
    println!(
        "restored {} from {}; new epoch {epoch}",
        db.display(),
        from.display()
    );
    Ok(())
}

async fn serve(config: ServerConfig, db: PathBuf) -> anyhow::Result<()> {
    let app = Application::build(&config, &db, None)
        .await
        .with_context(|| format!("cannot start on {}", store::describe(&db)))?;
    tracing::info!(addr = %app.addr(), db = %store::describe(&db), "roster-server started");
    // The first stdout line is the contract tests and scripts read the address from.
    println!("{}", app.listening_line());
    if let Some(metrics) = app.metrics_addr() {
        println!(
            "{}",
            roster_testkit::metrics_line(&format!("http://{metrics}/metrics"))
        );
    }
    app.run_until(shutdown_signal()).await;
    tracing::info!("roster-server stopped");
    Ok(())
}

/// Opens the database on a blocking thread (the PostgreSQL driver blocks).
async fn open_store(db: PathBuf) -> anyhow::Result<store::Backend> {
    let shown = store::describe(&db);
    tokio::task::spawn_blocking(move || store::open(&db))
        .await?
        .with_context(|| format!("cannot open database {shown}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
