//! Server settings: where to listen, where the data lives, limits, and the synced tables
//! with their conflict policies. Read from a TOML file; command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use roster_protocol::{ConflictPolicy, Schema, SchemaError, TableSchema};
use serde::{Deserialize, Serialize};

/// Address the server listens on when neither flag nor file says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Largest request body accepted by default (bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long tombstones are kept by default before they are purged (days).
pub const DEFAULT_TOMBSTONE_RETENTION_DAYS: u64 = 30;
/// How often the running service purges old tombstones by default (seconds).
pub const DEFAULT_PURGE_INTERVAL_SECS: u64 = 3600;
/// How long a client may take to send a request's headers by default (seconds).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 15;
/// How long a connection may stay open with no request in flight by default (seconds).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// How long a client may take to send a request's body by default (seconds).
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 60;
/// Most connections served at once by default (also bounded by the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// How often the TLS certificate files are checked for changes by default (seconds).
pub const DEFAULT_TLS_RELOAD_POLL_SECS: u64 = 5;
/// Failed authentications from one address answered without delay, by default.
pub const DEFAULT_AUTH_FAILURES_BEFORE_DELAY: u32 = 5;
/// Failed authentications from one address after which it is refused (429), by default.
pub const DEFAULT_AUTH_FAILURES_BEFORE_BLOCK: u32 = 20;
/// Delay of each failed authentication past the first threshold by default (ms).
pub const DEFAULT_AUTH_FAILURE_DELAY_MS: u64 = 1000;
/// How long failed authentications are counted by default (seconds).
pub const DEFAULT_AUTH_FAILURE_WINDOW_SECS: u64 = 300;
/// Most addresses (and recently valid tokens) the limiter keeps by default.
pub const DEFAULT_AUTH_LIMITER_MAX_ENTRIES: usize = 10_000;
/// Default per-user request quota: 6000 a minute (a sustained 100 a second).
pub const DEFAULT_USER_REQUESTS_PER_MINUTE: u32 = 6000;
/// Default cap on open change streams (`GET /v1/changes`); each also holds a connection,
/// so it stays below [`DEFAULT_MAX_CONNECTIONS`] and leaves room for sync requests.
pub const DEFAULT_MAX_STREAMS: u32 = 3072;
/// Default seconds between keep-alive comments on an idle change stream.
pub const DEFAULT_STREAM_KEEPALIVE_SECS: u64 = 15;
/// Default seconds between two checks of an open change stream's token and data set.
pub const DEFAULT_STREAM_RECHECK_SECS: u64 = 60;

/// Default seconds a stopping server waits for the requests in flight.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// How the `merge` policy picks a field both sides changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldRule {
    /// The server's value (the default).
    #[default]
    PreferServer,
    /// The client's value.
    PreferClient,
    /// The value edited last, by the edit times the client and the server recorded
    /// (the server's value on a tie or when a time is unknown).
    Newest,
    /// The larger value (numbers by value, text by code points; a value beats null).
    Max,
    /// The smaller value (a value beats null).
    Min,
}

fn default_true() -> bool {
    true
}

/// One synced table: its columns and how conflicts on it are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    /// Name and typed columns.
    #[serde(flatten)]
    pub schema: TableSchema,
    /// What the server does on a conflict no handler decided (server-wins unless set).
    #[serde(default)]
    pub policy: ConflictPolicy,
    /// Merge concurrent updates that changed different fields without calling it a
    /// conflict, and let the policy decide only the fields both sides changed.
    #[serde(default = "default_true")]
    pub auto_merge: bool,
    /// Per-field rules of the `merge` policy; fields without one prefer the server.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, FieldRule>,
}

/// Everything the server needs to run. Constructed from [`ServerConfig::load`] or by hand
/// in tests; [`ServerConfig::validate`] must pass before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to bind.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Path of the SQLite database file; `None` means the platform data dir.
    #[serde(default)]
    pub db: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Days a tombstone is kept before the periodic purge removes it.
    #[serde(default = "default_retention")]
    pub tombstone_retention_days: u64,
    /// Seconds between two runs of the periodic tombstone purge (the first runs at start).
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
    /// Seconds a client may take to send a request's headers (slowloris); the
    /// connection is closed after that.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight (keep-alive).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a client may take to send a request's whole body (408 after that).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Most connections served at once; more wait in the listen backlog. Also kept
    /// below the process's open-file limit, which the server raises at start.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); plain HTTP without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between two checks of the TLS files for a change (they are also
    /// reloaded on SIGHUP).
    #[serde(default = "default_tls_reload_poll")]
    pub tls_reload_poll_secs: u64,
    /// Failed authentications from one address (in a window) answered without delay.
    #[serde(default = "default_auth_failures_before_delay")]
    pub auth_failures_before_delay: u32,
    /// Failed authentications from one address (in a window) after which its requests
    /// are refused with 429 until the window ends.
    #[serde(default = "default_auth_failures_before_block")]
    pub auth_failures_before_block: u32,
    /// Milliseconds each failed authentication past `auth_failures_before_delay` waits.
    #[serde(default = "default_auth_failure_delay")]
    pub auth_failure_delay_ms: u64,
    /// Seconds failed authentications are counted, from an address's first failure.
    #[serde(default = "default_auth_failure_window")]
    pub auth_failure_window_secs: u64,
    /// Most addresses, and most recently valid tokens, the limiter keeps in memory.
    #[serde(default = "default_auth_limiter_max_entries")]
    pub auth_limiter_max_entries: usize,
    /// Requests a minute each user may send to `/v1/*` (a burst of that many, refilled
    /// evenly); past it, 429 with `Retry-After`. 0 turns the quota off.
    #[serde(default = "default_user_requests_per_minute")]
    pub user_requests_per_minute: u32,
    /// Most change streams (`GET /v1/changes`) open at once; more are answered 503. 0
    /// turns the change feed off: devices keep polling on their interval.
    #[serde(default = "default_max_streams")]
    pub max_streams: u32,
    /// Every this many seconds each change stream gets a keep-alive comment (on the feed's
    /// one clock, so at most this long after it opened).
    #[serde(default = "default_stream_keepalive")]
    pub stream_keepalive_secs: u64,
    /// Seconds between two checks of an open change stream's token and data set (they
    /// are also checked before each notification).
    #[serde(default = "default_stream_recheck")]
    pub stream_recheck_secs: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`), apart from the sync API;
    /// none by default (no metrics are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds the server waits, once told to stop (SIGTERM, Ctrl-C), for the requests
    /// in flight to finish before it exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Synced tables. Empty means the shipped `person` table with server-wins.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Partial sync: named, parameterised filters devices subscribe to (see
    /// [`crate::slices`]). Each gets an index on the rows table at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<crate::slices::SubscriptionDef>,
}

fn default_shutdown_grace() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8787))
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_retention() -> u64 {
    DEFAULT_TOMBSTONE_RETENTION_DAYS
}
fn default_purge_interval() -> u64 {
    DEFAULT_PURGE_INTERVAL_SECS
}
fn default_header_read_timeout() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_SECS
}
fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_body_read_timeout() -> u64 {
    DEFAULT_BODY_READ_TIMEOUT_SECS
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_tls_reload_poll() -> u64 {
    DEFAULT_TLS_RELOAD_POLL_SECS
}
fn default_auth_failures_before_delay() -> u32 {
    DEFAULT_AUTH_FAILURES_BEFORE_DELAY
}
fn default_auth_failures_before_block() -> u32 {
    DEFAULT_AUTH_FAILURES_BEFORE_BLOCK
}
fn default_auth_failure_delay() -> u64 {
    DEFAULT_AUTH_FAILURE_DELAY_MS
}
fn default_auth_failure_window() -> u64 {
    DEFAULT_AUTH_FAILURE_WINDOW_SECS
}
fn default_auth_limiter_max_entries() -> usize {
    DEFAULT_AUTH_LIMITER_MAX_ENTRIES
}
fn default_user_requests_per_minute() -> u32 {
    DEFAULT_USER_REQUESTS_PER_MINUTE
}
fn default_max_streams() -> u32 {
    DEFAULT_MAX_STREAMS
}
fn default_stream_keepalive() -> u64 {
    DEFAULT_STREAM_KEEPALIVE_SECS
}
fn default_stream_recheck() -> u64 {
    DEFAULT_STREAM_RECHECK_SECS
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            db: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tombstone_retention_days: DEFAULT_TOMBSTONE_RETENTION_DAYS,
            purge_interval_secs: DEFAULT_PURGE_INTERVAL_SECS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_cert: None,
            tls_key: None,
            tls_reload_poll_secs: DEFAULT_TLS_RELOAD_POLL_SECS,
            auth_failures_before_delay: DEFAULT_AUTH_FAILURES_BEFORE_DELAY,
            auth_failures_before_block: DEFAULT_AUTH_FAILURES_BEFORE_BLOCK,
            auth_failure_delay_ms: DEFAULT_AUTH_FAILURE_DELAY_MS,
            auth_failure_window_secs: DEFAULT_AUTH_FAILURE_WINDOW_SECS,
            auth_limiter_max_entries: DEFAULT_AUTH_LIMITER_MAX_ENTRIES,
            user_requests_per_minute: DEFAULT_USER_REQUESTS_PER_MINUTE,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_keepalive_secs: DEFAULT_STREAM_KEEPALIVE_SECS,
            stream_recheck_secs: DEFAULT_STREAM_RECHECK_SECS,
            metrics_listen: None,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            tables: Vec::new(),
            subscriptions: Vec::new(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a server config.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: toml::de::Error,
    },
    /// The table declarations are not a valid schema.
    #[error("invalid table declarations: {0}")]
    Schema(#[from] SchemaError),
    /// A limit is out of range.
    #[error("invalid setting: {0}")]
    Setting(String),
}

impl ServerConfig {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: ServerConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the tables form a valid schema, field rules name declared columns, and
    /// the limits are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.schema().validate()?;
        for table in &self.tables {
            for field in table.fields.keys() {
                if table.schema.column(field).is_none() {
                    return Err(ConfigError::Setting(format!(
                        "field rule for unknown column {}.{field}",
                        table.schema.name
                    )));
                }
            }
        }
        let schema = self.schema();
        let mut names = std::collections::HashSet::new();
        for def in &self.subscriptions {
            if let Some(problem) = def.problem(&schema) {
                return Err(ConfigError::Setting(problem));
            }
            if !names.insert(def.name.as_str()) {
                return Err(ConfigError::Setting(format!(
                    "two subscriptions are named {}",
                    def.name
                )));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Setting(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        for (name, value) in [
            ("purge_interval_secs", self.purge_interval_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("max_connections", u64::from(self.max_connections)),
            ("tls_reload_poll_secs", self.tls_reload_poll_secs),
            (
                "auth_failures_before_block",
                u64::from(self.auth_failures_before_block),
            ),
            ("auth_failure_window_secs", self.auth_failure_window_secs),
            ("stream_keepalive_secs", self.stream_keepalive_secs),
            ("stream_recheck_secs", self.stream_recheck_secs),
            (
                "auth_limiter_max_entries",
                u64::try_from(self.auth_limiter_max_entries).unwrap_or(u64::MAX),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Setting(format!("{name} must be at least 1")));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Setting(
                "tls_cert and tls_key go together: set both for HTTPS, or neither".into(),
            ));
        }
        Ok(())
    }

    /// The certificate and key files to serve HTTPS with, when both are set.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// The tables, with the shipped `person` table standing in for an empty list.
    pub fn effective_tables(&self) -> Vec<TableConfig> {
        if self.tables.is_empty() {
            Schema::default_person()
                .tables
                .into_iter()
                .map(|schema| TableConfig {
                    schema,
                    policy: ConflictPolicy::default(),
                    auto_merge: true,
                    fields: Default::default(),
                })
                .collect()
        } else {
            self.tables.clone()
        }
    }

    /// The schema served to clients.
    pub fn schema(&self) -> Schema {
        Schema {
            tables: self
                .effective_tables()
                .into_iter()
                .map(|t| t.schema)
                .collect(),
        }
    }

    /// The conflict policy of `table` (server-wins for undeclared tables).
    pub fn policy(&self, table: &str) -> ConflictPolicy {
        self.effective_tables()
            .iter()
            .find(|t| t.schema.name == table)
            .map(|t| t.policy)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_ships_person() {
        let config: ServerConfig = toml::from_str("").unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.schema().tables[0].name, "person");
        assert_eq!(config.policy("person"), ConflictPolicy::ServerWins);
    }

    #[test]
    fn tables_and_policies_parse() {
        let config: ServerConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            [[tables]]
            name = "task"
            policy = "client-wins"
            columns = [
              { name = "title", type = "text", required = true },
              { name = "done", type = "boolean" },
            ]
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.policy("task"), ConflictPolicy::ClientWins);
        assert_eq!(config.schema().tables.len(), 1);
    }

    #[test]
    fn merge_rules_parse_and_must_name_columns() {
        let config: ServerConfig = toml::from_str(
            r#"
            [[tables]]
            name = "person"
            policy = "merge"
            auto_merge = false
            columns = [{ name = "age", type = "integer" }, { name = "notes", type = "text" }]
            fields = { age = "max", notes = "prefer-client" }
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let table = &config.tables[0];
        assert_eq!(table.policy, ConflictPolicy::Merge);
        assert!(!table.auto_merge);
        assert_eq!(table.fields["age"], FieldRule::Max);
        let bad: ServerConfig = toml::from_str(
            r#"
            [[tables]]
            name = "person"
            columns = [{ name = "age", type = "integer" }]
            fields = { shoe = "max" }
            "#,
        )
        .unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero() {
        let config: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(config.purge_interval_secs, DEFAULT_PURGE_INTERVAL_SECS);
        assert_eq!(
            config.header_read_timeout_secs,
            DEFAULT_HEADER_READ_TIMEOUT_SECS
        );
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        let set: ServerConfig =
            toml::from_str("idle_timeout_secs = 2\npurge_interval_secs = 1").unwrap();
        set.validate().unwrap();
        assert_eq!(set.idle_timeout_secs, 2);
        let zero: ServerConfig = toml::from_str("max_connections = 0").unwrap();
        assert!(zero.validate().is_err());
        let half_tls: ServerConfig = toml::from_str("tls_cert = \"c.pem\"").unwrap();
        assert!(half_tls.validate().is_err());
    }

    #[test]
    fn bad_tables_and_keys_are_rejected() {
        let bad_name: ServerConfig = toml::from_str(
            r#"
            [[tables]]
            name = "Bad-Name"
            columns = [{ name = "x", type = "text" }]
            "#,
        )
        .unwrap();
        assert!(bad_name.validate().is_err());
        assert!(toml::from_str::<ServerConfig>("lisen = \"x\"").is_err());
    }
}
