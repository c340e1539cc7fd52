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
    /// Synced tables. Empty means the shipped `person` table with server-wins.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            db: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tombstone_retention_days: DEFAULT_TOMBSTONE_RETENTION_DAYS,
            tables: Vec::new(),
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
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Setting(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
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
