//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Roster: offline-first records with sync.
#[derive(Parser, Debug)]
#[command(name = "roster", version, about)]
pub struct Cli {
    /// Data dir of the local store [env: ROSTER_DATA_DIR; default: the platform data dir].
    #[arg(long, global = true, env = "ROSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer token for the sync server [env: ROSTER_TOKEN]. With `init` it is stored in
    /// the data dir; with other commands it is used instead of the stored one.
    #[arg(long, global = true, env = "ROSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the passphrase of an encrypted store (its text, one trailing line end
    /// ignored) [env: ROSTER_PASSPHRASE_FILE]. With `init` the new store is encrypted
    /// with it; with other commands it opens the encrypted store, and a plain store is
    /// first encrypted in place (a crash during that leaves the plain store usable).
    /// Without it an encrypted store is refused (exit 7). The passphrase is never stored.
    #[arg(
        long,
        global = true,
        env = "ROSTER_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Print results (and errors, on stderr) as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds an answer may send no byte before the request fails
    /// [env: ROSTER_READ_TIMEOUT; default: 30].
    #[arg(long, global = true, env = "ROSTER_READ_TIMEOUT", value_parser = parse_seconds)]
    pub read_timeout: Option<Duration>,
    /// Seconds one request may take in total [env: ROSTER_REQUEST_TIMEOUT; default: 60].
    #[arg(long, global = true, env = "ROSTER_REQUEST_TIMEOUT", value_parser = parse_seconds)]
    pub request_timeout: Option<Duration>,
    /// Seconds a whole `sync` may take, retries included
    /// [env: ROSTER_SYNC_DEADLINE; default: 600].
    #[arg(long, global = true, env = "ROSTER_SYNC_DEADLINE", value_parser = parse_seconds)]
    pub sync_deadline: Option<Duration>,
    /// Largest answer accepted from the server, in bytes
    /// [env: ROSTER_MAX_RESPONSE_BYTES; default: 67108864 (64 MiB)].
    #[arg(long, global = true, env = "ROSTER_MAX_RESPONSE_BYTES")]
    pub max_response_bytes: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the local store for a sync server (fetches the schema from the server).
    Init {
        /// Base URL of the sync server, e.g. http://127.0.0.1:8787.
        #[arg(long)]
        server: String,
        /// Use this JSON schema file instead of asking the server.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Work on this data set (shared with the token's user) instead of the user's
        /// own. Fixed for the data dir.
        #[arg(long)]
        dataset: Option<String>,
        /// PEM file of a CA certificate to trust besides the system's roots (for a
        /// self-hosted server). Its text is stored in the data dir's store and used by
        /// every later command.
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// Allow `http://` to a server that is not on this machine. Without it, cleartext
        /// is refused except to loopback addresses (127.0.0.0/8, ::1, localhost).
        #[arg(long)]
        allow_insecure_http: bool,
        /// The protocol the server speaks: `roster` (a Roster server), or
        /// `azure-mobile-apps` (an existing Azure Mobile Apps backend's `/tables`; needs
        /// `--schema`, since such a backend serves none).
        #[arg(long, default_value = "roster", value_name = "PROTOCOL")]
        protocol: String,
        /// With `--protocol azure-mobile-apps`: how this device resolves conflicts the
        /// backend reports (412/409): `server-wins` (default), `client-wins` or
        /// `defer-to-client`; `TABLE=POLICY` sets one table's rule (as a Roster server's
        /// `[[tables]] policy` does). Repeat it: `--conflict-policy defer-to-client
        /// --conflict-policy audit=server-wins`.
        #[arg(long, value_name = "[TABLE=]POLICY")]
        conflict_policy: Vec<String>,
    },
    /// Create a record: `roster add name=Jane age=25`.
    Add {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// FIELD=VALUE pairs; an empty value sets null.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Change fields of a record: `roster edit ID age=32`.
    Edit {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// Row id.
        id: String,
        /// FIELD=VALUE pairs; an empty value sets null.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Delete a record (pushed at the next sync).
    Delete {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// Row id.
        id: String,
    },
    /// Show one record.
    Show {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// Row id.
        id: String,
    },
    /// List records.
    List {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// Case-insensitive text to find in any text field.
        #[arg(long)]
        search: Option<String>,
        /// Column to sort by.
        #[arg(long)]
        sort: Option<String>,
        /// Sort descending.
        #[arg(long)]
        desc: bool,
        /// Rows per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Push local changes and pull the server's.
    Sync {
        /// Keep going until Ctrl-C: follow the server's change feed and sync as soon
        /// as the server has a change this device has not pulled.
        #[arg(long)]
        watch: bool,
    },
    /// Show conflicts waiting for a choice (default), this device's conflict history, or
    /// the server's conflict log.
    Conflicts {
        /// Show this device's history of conflicts and choices instead, newest first.
        #[arg(long, conflicts_with = "server")]
        history: bool,
        /// Show the server's conflict log (all devices) instead, newest first.
        #[arg(long)]
        server: bool,
        /// How many history or log entries to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Resolve a conflict waiting for a choice; the next sync pushes it.
    Resolve {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// Row id.
        id: String,
        /// keep-mine, keep-theirs, or merge (mine, except --theirs and --set fields).
        choice: ChoiceArg,
        /// With merge: comma-separated fields to take from the server's row.
        #[arg(long, value_delimiter = ',')]
        theirs: Vec<String>,
        /// With merge: FIELD=VALUE to set a field to a value of your own.
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Show pending changes, watermark and last sync.
    Status,
    /// Import people from a CSV (header row naming the fields) or vCard file, the format
    /// from the extension (.csv, .vcf). Invalid rows are refused and listed with their
    /// reasons; the others are added and pushed at the next sync.
    Import {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// The file (.csv, .vcf or .vcard).
        file: PathBuf,
    },
    /// Sync only a slice: add a subscription the server declares, with this device's
    /// values (`roster subscribe by_city city=Paris city=Lyon`), then sync. The server
    /// checks it first; a refused one changes nothing (exit 5).
    Subscribe {
        /// The subscription's name in the server's config.
        name: String,
        /// PARAM=VALUE pairs; a parameter given twice matches any of its values.
        params: Vec<String>,
        /// Do not sync now.
        #[arg(long)]
        no_sync: bool,
    },
    /// Remove a subscription (the same name and values as subscribed), then sync: the
    /// rows only it matched leave this device. `--all` syncs the whole data set again.
    Unsubscribe {
        /// The subscription's name (omit with --all).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// PARAM=VALUE pairs, as given to subscribe.
        params: Vec<String>,
        /// Drop every subscription: sync the whole data set.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Do not sync now.
        #[arg(long)]
        no_sync: bool,
    },
    /// Show this device's subscriptions (or that it syncs the whole data set).
    Subscriptions,
    /// Export people to a CSV or vCard file, the format from the extension (.csv, .vcf).
    Export {
        /// Table [default: the first table of the schema].
        #[arg(long)]
        table: Option<String>,
        /// The file to write (replaced if it exists).
        file: PathBuf,
        /// Only these row ids (all live rows when none is given).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

impl Command {
    /// Whether the command talks to the server (and so needs the sync engine and its
    /// HTTPS client); the others work on the local store alone.
    pub fn needs_server(&self) -> bool {
        match self {
            Command::Sync { .. }
            | Command::Subscribe { .. }
            | Command::Unsubscribe { .. }
            | Command::Subscriptions => true,
            Command::Conflicts { server, .. } => *server,
            Command::Init { .. }
            | Command::Add { .. }
            | Command::Edit { .. }
            | Command::Delete { .. }
            | Command::Show { .. }
            | Command::List { .. }
            | Command::Resolve { .. }
            | Command::Status
            | Command::Import { .. }
            | Command::Export { .. } => false,
        }
    }
}

/// The choices of `roster resolve`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceArg {
    /// Keep this device's row (or its delete).
    KeepMine,
    /// Take the server's row (or its delete).
    KeepTheirs,
    /// Field by field: mine unless named in --theirs or --set.
    Merge,
}

/// Parses a positive number of seconds (fractions allowed).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    if seconds <= 0.0 {
        return Err(format!("{text:?}: the time must be more than 0 seconds"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}
