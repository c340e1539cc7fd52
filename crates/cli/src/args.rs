//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Roster: offline-first records with sync.
#[derive(Parser, Debug)]
#[command(name = "roster", version, about)]
pub struct Cli {
    /// Data dir of the local store [env: ROSTER_DATA_DIR; default: the platform data dir].
    #[arg(long, global = true, env = "ROSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print results (and errors, on stderr) as JSON.
    #[arg(long, global = true)]
    pub json: bool,
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
    Sync,
    /// Show the conflict history, newest first.
    Conflicts {
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show pending changes, watermark and last sync.
    Status,
}
