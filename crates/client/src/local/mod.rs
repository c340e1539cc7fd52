//! The client's on-disk store: one SQLite file holding the user tables (one SQL table per
//! schema table, one typed column per declared column) and the sync metadata.
//!
//! Metadata tables (their `_roster_` prefix cannot clash with schema names, which start
//! with a letter):
//! * `_roster_meta`: client id, server URL, schema, watermark, edit counter, and the
//!   device's credentials (bearer token, data set) and connection security (trusted CA
//!   PEM `ca_cert_pem`, `allow_cleartext`).
//! * `_roster_rows`, the outbox: per row with a pending change (or waiting for a
//!   conflict choice): the base version last seen from the server, the pending op
//!   (`insert`/`update`/`delete`) and `local_rev`, the edit counter at the row's last
//!   local edit, and its base values (`base_data`, copied at the row's first local edit).
//!   A clean row has no entry: its base version is the `_roster_version` column of its
//!   user table row (store format 8; `rows.rs` states the rule). A sync round only clears
//!   a row's pending op if `local_rev` is unchanged since the change was sent, so an edit
//!   made while a sync is in flight is never marked clean.
//! * `_roster_conflicts`: history of every conflict this client was told about, and of
//!   every choice made on it here.
//! * `_roster_open_conflicts`: conflicts the server deferred to this client, waiting for
//!   a person: the remote row and the base, next to the local row in its user table.
//!   A row with an open conflict keeps its local edit and is not pushed until resolved.
//! * `_roster_trash`: the values of rows deleted here, restorable for a while (`trash`).
//! * `_roster_acked_deletes`: this device's deletes the server acknowledged, with the
//!   tombstone's version, kept `ACKED_DELETE_KEEP_DAYS` (30) days: after a restore from an
//!   older backup, those the backup does not hold are pushed again (`apply`).
//!
//! The file may be encrypted (SQLCipher, every page and the WAL): it is then opened with
//! its [`crate::StoreKey`]. A plain file opened with a key is first encrypted in place
//! (`encrypt`).

mod ama;
mod apply;
mod collect;
pub(crate) mod conflicts;
mod encrypt;
mod evolve;
mod records;
mod rows;
mod slice;
mod sql;
#[cfg(test)]
pub(crate) mod test_fixtures;
mod trash;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use roster_protocol::{ChangeOp, Fields, RowId, Schema};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub(crate) use ama::{AmaAnswer, store_protocol};
pub use conflicts::{Choice, DeviceConflictHandler, OpenConflict};
pub use records::{ListQuery, MAX_LIST_LIMIT};
pub use trash::{TRASH_KEEP_DAYS, TrashedRecord};

use crate::{ClientError, StoreKey};

/// File name of the store inside a data dir.
pub const DB_FILE: &str = "roster.db";

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE _roster_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE _roster_rows (
        tbl          TEXT    NOT NULL,
        id           TEXT    NOT NULL,
        base_version INTEGER,
        base_data    TEXT,
        pending      TEXT,
        local_rev    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
    CREATE INDEX _roster_rows_pending ON _roster_rows(local_rev) WHERE pending IS NOT NULL;
    CREATE TABLE _roster_conflicts (
        seq        INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        tbl        TEXT    NOT NULL,
        row_id     TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        resolution TEXT    NOT NULL,
        client_row TEXT,
        server_row TEXT,
        outcome    TEXT
    );
"#,
    r#"
    ALTER TABLE _roster_rows ADD COLUMN edited_at_ms INTEGER;
    CREATE TABLE _roster_open_conflicts (
        tbl                TEXT    NOT NULL,
        id                 TEXT    NOT NULL,
        kind               TEXT    NOT NULL,
        remote             TEXT,
        base               TEXT,
        conflicting_fields TEXT    NOT NULL,
        detected_at_ms     INTEGER NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
"#,
    // A clean row's base values are its current values: keep them only for pending rows.
    r#"
    UPDATE _roster_rows SET base_data = NULL WHERE pending IS NULL;
"#,
    // The trash: values of rows deleted here, restorable (local/trash.rs).
    r#"
    CREATE TABLE IF NOT EXISTS _roster_trash (
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        data          TEXT    NOT NULL,
        deleted_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
"#,
    // Partial sync: rows evicted while they held an unpushed edit (local/slice.rs).
    r#"
    CREATE TABLE IF NOT EXISTS _roster_evict_later (
        tbl TEXT NOT NULL,
        id  TEXT NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
"#,
    // Against an Azure Mobile Apps backend: the version string behind each numeric
    // version a row or an open conflict holds (local/ama.rs).
    r#"
    CREATE TABLE IF NOT EXISTS _roster_ama_versions (
        tbl     TEXT    NOT NULL,
        id      TEXT    NOT NULL,
        version INTEGER NOT NULL,
        etag    TEXT    NOT NULL,
        PRIMARY KEY (tbl, id, version)
    ) WITHOUT ROWID;
    "#,
    // Deletes of this device the server acknowledged, with the tombstone's version, kept
    // for a while to replay after a restore from an older backup (local/apply.rs).
    r#"
    CREATE TABLE IF NOT EXISTS _roster_acked_deletes (
        tbl         TEXT    NOT NULL,
        id          TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        acked_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS _roster_acked_deletes_at ON _roster_acked_deletes(acked_at_ms);
"#,
    // Store format 8: a clean row's base version moves into its user table's
    // `_roster_version` column and `_roster_rows` keeps only rows with a pending change.
    // The user tables depend on the stored schema, so `migrate` does the move in code
    // (`move_clean_rows_out`) in the same transaction, right after this step.
    "-- format 8: see move_clean_rows_out",
];

/// The store format from which `_roster_rows` holds only pending rows (see `rows.rs`).
const OUTBOX_FORMAT: u32 = 8;

/// A live local row as the app sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Row id.
    pub id: RowId,
    /// Current local values (declared columns only; absent values are `null`).
    pub fields: Fields,
    /// The change waiting to be pushed, if any.
    pub pending: Option<ChangeOp>,
    /// Server version this row is based on (`None` until first acknowledged).
    pub base_version: Option<u64>,
}

/// One conflict from the local history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Position in the local history (increasing).
    pub seq: i64,
    /// When this client learned of it (Unix ms).
    pub at_ms: i64,
    /// Table of the row.
    pub table: String,
    /// Row id.
    pub id: RowId,
    /// Conflict kind (snake_case name).
    pub kind: String,
    /// How it was resolved (snake_case name).
    pub resolution: String,
    /// What this client had sent.
    pub client_row: Option<serde_json::Value>,
    /// The server's row before resolution.
    pub server_row: Option<serde_json::Value>,
    /// The row that stands after resolution.
    pub outcome: Option<serde_json::Value>,
}

/// Counters describing the store's sync state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Sync service base URL.
    pub server_url: String,
    /// This installation's id.
    pub client_id: uuid::Uuid,
    /// Rows with a change waiting to be pushed (rows created and deleted before reaching
    /// the server, and rows waiting for a conflict choice, are not counted).
    pub pending: u64,
    /// Conflicts waiting for a person's choice.
    pub open_conflicts: u64,
    /// Change-log position pulled up to.
    pub watermark: u64,
    /// Conflicts in the local history.
    pub conflicts_logged: u64,
    /// When the last sync round completed (Unix ms), if ever.
    pub last_sync_ms: Option<i64>,
}

/// The local store. All access goes through one connection behind a mutex; every public
/// operation is a single transaction, so a crash leaves either all of it or none.
pub struct LocalStore {
    conn: Mutex<Connection>,
    /// The schema the store holds; replaced by a migration (`migrate_schema`) while
    /// the connection is locked.
    schema: RwLock<Arc<Schema>>,
    client_id: uuid::Uuid,
    server_url: String,
    path: PathBuf,
}

/// Opens the file with WAL and full durability, keyed with `key` when given. The page
/// cache may grow to 16 MiB
/// (allocated as used; SQLite's default is 2 MiB): a large pull then keeps more of the
/// B-tree pages it writes in memory (a larger cache made random-order inserts up to 1.9
/// times faster in the raw benchmark), while the client's peak memory stays bounded and
/// flat in the number of rows (64 MiB let it grow from 59 MB at 100k rows to 86 MB at 1M).
///
/// The first read checks the key: an encrypted file without a key gives
/// [`ClientError::StoreLocked`], a wrong key [`ClientError::WrongStoreKey`]; neither writes.
fn open_connection(path: &Path, key: Option<&StoreKey>) -> Result<Connection, ClientError> {
    let conn = Connection::open(path)?;
    if let Some(key) = key {
        key.apply(&conn)?;
    }
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        let not_a_database = e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase);
        return Err(match (not_a_database, key) {
            (true, Some(_)) => ClientError::WrongStoreKey(path.display().to_string()),
            (true, None) => ClientError::StoreLocked(path.display().to_string()),
            (false, _) => e.into(),
        });
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16384;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), ClientError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let format: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    roster_migrate::run(
        &mut roster_migrate::SqliteUserVersion(&tx),
        "store format",
        MIGRATIONS,
    )
    .map_err(|e| match e {
        roster_migrate::MigrateError::Database(e) => ClientError::from(e),
        newer => ClientError::Corrupt(newer.to_string()),
    })?;
    if (1..OUTBOX_FORMAT).contains(&format) {
        move_clean_rows_out(&tx)?;
    }
    tx.commit()?;
    Ok(())
}

/// The store's user tables: its tables without the `_roster_` prefix (read from the
/// file, so it works on a store of any format).
fn user_tables(conn: &Connection) -> Result<Vec<String>, ClientError> {
    Ok(conn
        .prepare(
            r"SELECT name FROM sqlite_schema WHERE type = 'table'
              AND name NOT LIKE '\_roster\_%' ESCAPE '\'
              AND name NOT LIKE 'sqlite\_%' ESCAPE '\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// How many rows a store file holds with any local state, how many of them have a
/// server version, and how many are pending; read from a store of any format (also
/// one not migrated yet: before format 8 every such row had a `_roster_rows` entry).
pub(crate) fn row_counts(conn: &Connection) -> Result<(u64, u64, u64), ClientError> {
    let (mut synced, pending, mut rows): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(base_version), COUNT(pending), COUNT(*) FILTER (WHERE pending = 'delete')
         FROM _roster_rows",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for table in user_tables(conn)? {
        let versioned = sql::column_names(conn, &table)?
            .iter()
            .any(|c| c == sql::VERSION_COLUMN);
        let (held, with_version): (i64, i64) = conn.query_row(
            &format!(
                "SELECT COUNT(*), {} FROM {}",
                if versioned {
                    "COUNT(_roster_version)"
                } else {
                    "0"
                },
                sql::quote(&table)
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows += held;
        synced += with_version;
    }
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok((count(rows), count(synced), count(pending)))
}

/// Converts a store written before format 8: every user table gets its
/// `_roster_version` column, which takes the base version of each of its clean rows
/// from `_roster_rows`; then those clean entries are deleted. Pending rows keep their
/// entries as they are.
fn move_clean_rows_out(tx: &Connection) -> Result<(), ClientError> {
    let tables = user_tables(tx)?;
    let mut moved = 0;
    for table in &tables {
        if !sql::column_names(tx, table)?
            .iter()
            .any(|c| c == sql::VERSION_COLUMN)
        {
            sql::add_version_column(tx, table)?;
        }
        moved += tx.execute(
            &format!(
                "UPDATE {t} SET {v} = r.base_version FROM _roster_rows r
                 WHERE r.tbl = ?1 AND r.id = {t}.id AND r.pending IS NULL",
                t = sql::quote(table),
                v = sql::VERSION_COLUMN
            ),
            [table],
        )?;
    }
    let dropped = tx.execute("DELETE FROM _roster_rows WHERE pending IS NULL", [])?;
    tracing::info!(
        tables = tables.len(),
        moved,
        dropped,
        "store format 8: clean rows' base versions moved into their tables"
    );
    Ok(())
}

/// A setting of `_roster_meta`. Cached statements, as for `set_meta`: every local edit
/// reads and writes the edit counter through them (`rows::next_rev`).
fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, ClientError> {
    Ok(conn
        .prepare_cached("SELECT value FROM _roster_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), ClientError> {
    conn.prepare_cached(
        "INSERT INTO _roster_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn required_meta(conn: &Connection, key: &str) -> Result<String, ClientError> {
    get_meta(conn, key)?.ok_or_else(|| ClientError::Corrupt(format!("missing setting {key:?}")))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl LocalStore {
    /// Creates a new store in `dir` for `server_url` with `schema`, under a fresh client
    /// id. Fails if the dir already holds a store. The file is plain; see
    /// [`LocalStore::create_with_key`].
    pub fn create(dir: &Path, server_url: &str, schema: &Schema) -> Result<Self, ClientError> {
        Self::create_with_key(dir, server_url, schema, None)
    }

    /// [`LocalStore::create`], encrypted with `key` when given.
    pub fn create_with_key(
        dir: &Path,
        server_url: &str,
        schema: &Schema,
        key: Option<&StoreKey>,
    ) -> Result<Self, ClientError> {
        schema.validate()?;
        std::fs::create_dir_all(dir).map_err(|source| ClientError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        if path.exists() {
            return Err(ClientError::AlreadyInitialised(dir.display().to_string()));
        }
        let mut conn = open_connection(&path, key)?;
        migrate(&mut conn)?;
        let schema_json =
            serde_json::to_string(schema).map_err(|e| ClientError::Corrupt(e.to_string()))?;
        let tx = conn.transaction()?;
        set_meta(&tx, "client_id", &uuid::Uuid::now_v7().to_string())?;
        set_meta(&tx, "server_url", server_url)?;
        set_meta(&tx, "schema", &schema_json)?;
        set_meta(&tx, "watermark", "0")?;
        set_meta(&tx, "edit_counter", "0")?;
        tx.commit()?;
        drop(conn);
        Self::open_with_key(dir, key)
    }

    /// Opens the plain store in `dir`, creating any user table or column the schema
    /// declares but the file lacks. An encrypted store gives [`ClientError::StoreLocked`].
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        Self::open_with_key(dir, None)
    }

    /// [`LocalStore::open`] with the store's key. With a key, a plain store is first
    /// encrypted in place (a crash during that leaves the plain store usable); a wrong
    /// key gives [`ClientError::WrongStoreKey`] and changes nothing.
    pub fn open_with_key(dir: &Path, key: Option<&StoreKey>) -> Result<Self, ClientError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(ClientError::NotInitialised(dir.display().to_string()));
        }
        if let Some(key) = key
            && encrypt::is_plain(&path)?
        {
            encrypt::encrypt_in_place(&path, key)?;
        }
        let mut conn = open_connection(&path, key)?;
        migrate(&mut conn)?;
        let schema: Schema = serde_json::from_str(&required_meta(&conn, "schema")?)
            .map_err(|e| ClientError::Corrupt(format!("stored schema: {e}")))?;
        schema.validate()?;
        let client_id = uuid::Uuid::parse_str(&required_meta(&conn, "client_id")?)
            .map_err(|e| ClientError::Corrupt(format!("client id: {e}")))?;
        let server_url = required_meta(&conn, "server_url")?;
        sql::ensure_user_tables(&mut conn, &schema)?;
        Ok(Self {
            conn: Mutex::new(conn),
            schema: RwLock::new(Arc::new(schema)),
            client_id,
            server_url,
            path,
        })
    }

    /// Whether `dir` holds a store that is encrypted (false when it holds none, or a
    /// plain one).
    pub fn is_encrypted(dir: &Path) -> Result<bool, ClientError> {
        let path = dir.join(DB_FILE);
        Ok(path.exists() && !encrypt::is_plain(&path)?)
    }

    /// The schema this store holds: the one it was created with, as migrated since to
    /// each newer server schema (see [`LocalStore::schema_version`]).
    pub fn schema(&self) -> Arc<Schema> {
        self.schema
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// This installation's id.
    pub fn client_id(&self) -> uuid::Uuid {
        self.client_id
    }

    /// The sync service base URL.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Path of the SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the connection. A panic while it was held cannot leave a half-done write
    /// (transactions roll back on drop), so a poisoned lock is safe to reuse.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The credentials stored for this device (token and data set), if any.
    pub fn credentials(&self) -> Result<crate::Credentials, ClientError> {
        let conn = self.lock();
        Ok(crate::Credentials {
            token: get_meta(&conn, "token")?,
            dataset: get_meta(&conn, "dataset")?,
        })
    }

    /// Stores `credentials` for this device (absent parts are removed). The data set
    /// belongs to the store like the server URL: set it only when the store is created.
    pub(crate) fn set_credentials(
        &self,
        credentials: &crate::Credentials,
    ) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for (key, value) in [
            ("token", &credentials.token),
            ("dataset", &credentials.dataset),
        ] {
            match value {
                Some(value) => set_meta(&tx, key, value)?,
                None => {
                    tx.execute("DELETE FROM _roster_meta WHERE key = ?1", [key])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces only the stored token (the data set stays).
    pub(crate) fn set_token(&self, token: Option<&str>) -> Result<(), ClientError> {
        let dataset = self.credentials()?.dataset;
        self.set_credentials(&crate::Credentials {
            token: token.map(str::to_owned),
            dataset,
        })
    }

    /// The trusted CA and cleartext policy stored for this device (meta keys
    /// `ca_cert_pem` and `allow_cleartext`).
    pub fn connection_security(&self) -> Result<crate::ConnectionSecurity, ClientError> {
        let conn = self.lock();
        Ok(crate::ConnectionSecurity {
            ca_cert_pem: get_meta(&conn, "ca_cert_pem")?,
            allow_cleartext: get_meta(&conn, "allow_cleartext")?.as_deref() == Some("true"),
        })
    }

    /// Stores the trusted CA (removed when `None`) and the cleartext policy.
    pub fn set_connection_security(
        &self,
        security: &crate::ConnectionSecurity,
    ) -> Result<(), ClientError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        match &security.ca_cert_pem {
            Some(pem) => set_meta(&tx, "ca_cert_pem", pem)?,
            None => {
                tx.execute("DELETE FROM _roster_meta WHERE key = 'ca_cert_pem'", [])?;
            }
        }
        let allow = if security.allow_cleartext {
            "true"
        } else {
            "false"
        };
        set_meta(&tx, "allow_cleartext", allow)?;
        tx.commit()?;
        Ok(())
    }

    /// The change-log position pulled up to.
    pub fn watermark(&self) -> Result<u64, ClientError> {
        let conn = self.lock();
        parse_u64(&required_meta(&conn, "watermark")?)
    }

    /// Sync counters for display.
    pub fn status(&self) -> Result<Status, ClientError> {
        let conn = self.lock();
        // A row inserted and deleted before it ever reached the server is no change.
        let pending: i64 = conn.query_row(
            "SELECT COUNT(*) FROM _roster_rows r WHERE pending IS NOT NULL
             AND NOT (pending = 'delete' AND base_version IS NULL)
             AND NOT EXISTS (SELECT 1 FROM _roster_open_conflicts o
                             WHERE o.tbl = r.tbl AND o.id = r.id)",
            [],
            |r| r.get(0),
        )?;
        let open: i64 = conn.query_row("SELECT COUNT(*) FROM _roster_open_conflicts", [], |r| {
            r.get(0)
        })?;
        let conflicts: i64 =
            conn.query_row("SELECT COUNT(*) FROM _roster_conflicts", [], |r| r.get(0))?;
        let last_sync_ms = get_meta(&conn, "last_sync_ms")?
            .map(|v| v.parse::<i64>())
            .transpose()
            .map_err(|e| ClientError::Corrupt(format!("last_sync_ms: {e}")))?;
        Ok(Status {
            server_url: self.server_url.clone(),
            client_id: self.client_id,
            pending: u64::try_from(pending).unwrap_or(0),
            open_conflicts: u64::try_from(open).unwrap_or(0),
            watermark: parse_u64(&required_meta(&conn, "watermark")?)?,
            conflicts_logged: u64::try_from(conflicts).unwrap_or(0),
            last_sync_ms,
        })
    }

    /// The most recent `limit` conflicts, newest first.
    pub fn conflict_history(&self, limit: u32) -> Result<Vec<ConflictRecord>, ClientError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at_ms, tbl, row_id, kind, resolution, client_row, server_row, outcome
             FROM _roster_conflicts ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>, ClientError> {
            text.map(|t| serde_json::from_str(&t).map_err(|e| ClientError::Corrupt(e.to_string())))
                .transpose()
        };
        let mut out = Vec::new();
        for row in rows {
            let (seq, at_ms, table, id, kind, resolution, client_row, server_row, outcome) = row?;
            out.push(ConflictRecord {
                seq,
                at_ms,
                table,
                id: parse_id(&id)?,
                kind,
                resolution,
                client_row: json(client_row)?,
                server_row: json(server_row)?,
                outcome: json(outcome)?,
            });
        }
        Ok(out)
    }
}

fn parse_u64(text: &str) -> Result<u64, ClientError> {
    text.parse()
        .map_err(|e| ClientError::Corrupt(format!("number {text:?}: {e}")))
}

fn parse_id(text: &str) -> Result<RowId, ClientError> {
    RowId::parse_str(text).map_err(|e| ClientError::Corrupt(format!("row id {text:?}: {e}")))
}

fn parse_op(text: &str) -> Result<ChangeOp, ClientError> {
    match text {
        "insert" => Ok(ChangeOp::Insert),
        "update" => Ok(ChangeOp::Update),
        "delete" => Ok(ChangeOp::Delete),
        other => Err(ClientError::Corrupt(format!("pending op {other:?}"))),
    }
}
