//! Before a device uses a server: [`check_connection`] says in one word what stands in the
//! way (nothing listens, TLS, a refused token, not a Roster server;
//! [`check_ama_connection`] the same of an Azure Mobile Apps backend), and
//! [`SyncClient::point_at_server`] moves a store that has never synced (made offline, or
//! against a server that never answered) to another server, keeping its rows as pending
//! inserts so the next round pushes them there.

use std::path::Path;
use std::time::Duration;

use roster_protocol::{PROTOCOL_VERSION, Schema};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::ama::{AmaSettings, Protocol};
use crate::transport::{
    ConnectionSecurity, Credentials, HttpTransport, TransportOptions, check_ca_pem,
    normalise_server_url,
};
use crate::{ClientError, StoreKey, SyncClient};

/// What stands between this device and a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionProblem {
    /// The URL is not an http(s) URL with a host.
    BadUrl,
    /// Nothing answers at that address (refused, unknown host, timed out).
    Unreachable,
    /// Something answers, but the secure (TLS) connection failed.
    Tls,
    /// The server does not accept the token (missing, unknown or revoked).
    Unauthorized,
    /// The token is valid but may not use this data set.
    Forbidden,
    /// Something answers over HTTP, but it is not a Roster sync server (or speaks another
    /// protocol version).
    NotRoster,
    /// The URL is cleartext `http://` to another machine, and cleartext was not allowed;
    /// nothing was sent.
    Cleartext,
    /// Something answers over HTTP, but it does not serve the schema's tables as an
    /// Azure Mobile Apps backend (`GET /tables/<table>` with `ZUMO-API-VERSION: 2.0.0`).
    NotAmaBackend,
}

/// The outcome of [`check_connection`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionCheck {
    /// The normalised URL that was tried (as typed when it was not a URL).
    pub server_url: String,
    /// `None` when the server is a Roster server that accepts the token.
    pub problem: Option<ConnectionProblem>,
    /// What the network or the server said, for a details line.
    pub detail: String,
    /// The server's schema, when the check passed.
    pub schema: Option<Schema>,
}

/// Checks `server_url` step by step: a TCP connection, `/health` answering like a Roster
/// server of this protocol version, then `/v1/schema` with `credentials`. Each step gives
/// up after `timeout`. Never fails: every problem is in the answer.
pub async fn check_connection(
    server_url: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> ConnectionCheck {
    check_connection_with(
        server_url,
        credentials,
        &ConnectionSecurity::default(),
        timeout,
    )
    .await
}

/// [`check_connection`] trusting `security.ca_cert_pem` besides the platform's roots and
/// applying its cleartext policy (a CA that is not PEM is a [`ConnectionProblem::Tls`]).
pub async fn check_connection_with(
    server_url: &str,
    credentials: &Credentials,
    security: &ConnectionSecurity,
    timeout: Duration,
) -> ConnectionCheck {
    let (mut check, transport, https) =
        match reach(server_url, credentials, security, timeout).await {
            Ok(reached) => reached,
            Err(check) => return check,
        };
    match transport.health().await {
        Ok(health) => {
            let is_roster = health.get("status").and_then(|s| s.as_str()) == Some("ok");
            let protocol = health.get("protocol").and_then(serde_json::Value::as_u64);
            if !is_roster || protocol.is_none() {
                return fail(
                    check,
                    ConnectionProblem::NotRoster,
                    format!("/health answered {health}"),
                );
            }
            if protocol != Some(u64::from(PROTOCOL_VERSION)) {
                return fail(
                    check,
                    ConnectionProblem::NotRoster,
                    format!(
                        "the server speaks protocol {}, this app {PROTOCOL_VERSION}",
                        protocol.unwrap_or_default()
                    ),
                );
            }
        }
        Err(error) => {
            return fail_transport(check, error, (https, false), ConnectionProblem::NotRoster);
        }
    }
    match transport.schema().await {
        Ok(schema) => match schema.validate() {
            Ok(()) => check.schema = Some(schema),
            Err(error) => {
                return fail(check, ConnectionProblem::NotRoster, error.to_string());
            }
        },
        Err(error) => {
            return fail_transport(check, error, (https, true), ConnectionProblem::NotRoster);
        }
    }
    check
}

/// Checks an Azure Mobile Apps backend at `server_url` for a store of `schema`: the same
/// first steps as [`check_connection_with`], then `GET /tables/<table>?$top=0` with
/// `ZUMO-API-VERSION: 2.0.0` and `credentials` for each table of `schema` (a missing
/// table is [`ConnectionProblem::NotAmaBackend`], naming it). When it passes, `schema`
/// is the check's schema (such a backend serves none).
pub async fn check_ama_connection(
    server_url: &str,
    credentials: &Credentials,
    security: &ConnectionSecurity,
    schema: &Schema,
    timeout: Duration,
) -> ConnectionCheck {
    let (mut check, transport, https) =
        match reach(server_url, credentials, security, timeout).await {
            Ok(reached) => reached,
            Err(check) => return check,
        };
    if let Err(error) = schema.validate() {
        return fail(check, ConnectionProblem::NotAmaBackend, error.to_string());
    }
    for table in &schema.tables {
        let path = format!("/tables/{}", table.name);
        let query = [("$top", "0".to_owned())];
        match transport
            .table_request(reqwest::Method::GET, &path, &query, None, None)
            .await
        {
            Ok(answer)
                if answer.status == 200 && answer.body.as_ref().is_some_and(|b| b.is_array()) => {}
            Ok(answer) => {
                return fail(
                    check,
                    ConnectionProblem::NotAmaBackend,
                    format!(
                        "GET {path}?$top=0 answered {} {}",
                        answer.status,
                        answer.body.map(|b| b.to_string()).unwrap_or_default()
                    ),
                );
            }
            Err(error) => {
                return fail_transport(
                    check,
                    error,
                    (https, false),
                    ConnectionProblem::NotAmaBackend,
                );
            }
        }
    }
    check.schema = Some(schema.clone());
    check
}

/// `check` failed with `problem`, `detail` saying why.
fn fail(mut check: ConnectionCheck, problem: ConnectionProblem, detail: String) -> ConnectionCheck {
    check.problem = Some(problem);
    check.detail = detail;
    check
}

/// `check` failed with a request's `error`: TLS, cleartext, a refused token, nothing
/// answering (before the server `answered` anything, after the port accepted: over
/// `https` the handshake, else something that does not speak HTTP, `other`), else
/// `other`.
fn fail_transport(
    check: ConnectionCheck,
    error: ClientError,
    (https, answered): (bool, bool),
    other: ConnectionProblem,
) -> ConnectionCheck {
    match error {
        ClientError::Tls { reason, .. } => fail(check, ConnectionProblem::Tls, reason),
        error @ ClientError::CleartextRefused { .. } => {
            fail(check, ConnectionProblem::Cleartext, error.to_string())
        }
        ClientError::Unauthorized(message) | ClientError::TokenExpired(message) => {
            fail(check, ConnectionProblem::Unauthorized, message)
        }
        ClientError::Forbidden(message) => fail(check, ConnectionProblem::Forbidden, message),
        ClientError::Unreachable { reason, .. } if answered => {
            fail(check, ConnectionProblem::Unreachable, reason)
        }
        ClientError::Unreachable { reason, .. } if https => {
            fail(check, ConnectionProblem::Tls, reason)
        }
        error => fail(check, other, error.to_string()),
    }
}

/// The steps every check shares: the URL, a TCP connection within `timeout`, the CA
/// file; then the transport that speaks to the server and whether it is `https`. `Err`
/// is the failed check.
async fn reach(
    server_url: &str,
    credentials: &Credentials,
    security: &ConnectionSecurity,
    timeout: Duration,
) -> Result<(ConnectionCheck, HttpTransport, bool), ConnectionCheck> {
    let mut check = ConnectionCheck {
        server_url: server_url.trim().to_owned(),
        problem: None,
        detail: String::new(),
        schema: None,
    };
    let url = match normalise_server_url(server_url) {
        Ok(url) => url,
        Err(error) => return Err(fail(check, ConnectionProblem::BadUrl, error.to_string())),
    };
    check.server_url = url.clone();
    let Some((host, port, https)) = reqwest::Url::parse(&url).ok().and_then(|parsed| {
        Some((
            parsed.host_str()?.trim_matches(['[', ']']).to_owned(),
            parsed.port_or_known_default()?,
            parsed.scheme() == "https",
        ))
    }) else {
        return Err(fail(
            check,
            ConnectionProblem::BadUrl,
            format!("{url}: no host"),
        ));
    };
    let unreachable = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {timeout:?}")),
    };
    if let Some(reason) = unreachable {
        return Err(fail(check, ConnectionProblem::Unreachable, reason));
    }
    if let Some(pem) = &security.ca_cert_pem
        && let Err(error) = check_ca_pem(pem)
    {
        return Err(fail(check, ConnectionProblem::Tls, error.to_string()));
    }
    let options = TransportOptions {
        security: security.clone(),
        request_timeout: timeout,
        ..TransportOptions::default()
    };
    match HttpTransport::with_options(&url, &options) {
        Ok(transport) => Ok((check, transport.with_credentials(credentials), https)),
        Err(error) => Err(fail(check, ConnectionProblem::BadUrl, error.to_string())),
    }
}

/// What a store in a data dir holds, read without opening a [`SyncClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoreSummary {
    /// Whether any round ever reached a server (a watermark, or a row with a server
    /// version): such a store's versions belong to that server.
    pub synced_before: bool,
    /// Rows of the user tables with any local state (pending or synced).
    pub rows: u64,
    /// Rows with a change waiting to be pushed.
    pub pending: u64,
}

/// Opens the store file in `dir` directly (for the checks below), keyed with `key` when
/// the store is encrypted.
fn connection(dir: &Path, key: Option<&StoreKey>) -> Result<Connection, ClientError> {
    let path = dir.join(crate::local::DB_FILE);
    if !path.exists() {
        return Err(ClientError::NotInitialised(dir.display().to_string()));
    }
    let conn = Connection::open(path)?;
    if let Some(key) = key {
        key.apply(&conn)?;
    }
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

fn summary(conn: &Connection) -> Result<StoreSummary, ClientError> {
    let watermark: Option<String> = conn
        .query_row(
            "SELECT value FROM _roster_meta WHERE key = 'watermark'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let (rows, synced_rows, pending) = crate::local::row_counts(conn)?;
    let conflicts: i64 =
        conn.query_row("SELECT COUNT(*) FROM _roster_open_conflicts", [], |r| {
            r.get(0)
        })?;
    Ok(StoreSummary {
        synced_before: watermark.as_deref().unwrap_or("0") != "0"
            || synced_rows > 0
            || conflicts > 0,
        rows,
        pending,
    })
}

/// Whether `a` and `b` declare the same tables with the same column names and types (in
/// any order): rows of one fit the SQL tables of the other.
fn same_shape(a: &Schema, b: &Schema) -> bool {
    let shape = |schema: &Schema| {
        let mut tables: Vec<(String, Vec<(String, String)>)> = schema
            .tables
            .iter()
            .map(|t| {
                let mut columns: Vec<_> = t
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), format!("{:?}", c.ty)))
                    .collect();
                columns.sort();
                (t.name.clone(), columns)
            })
            .collect();
        tables.sort();
        tables
    };
    shape(a) == shape(b)
}

impl SyncClient {
    /// What the store in `dir` holds: whether it ever synced, its rows, its pending rows.
    pub fn store_summary(dir: &Path) -> Result<StoreSummary, ClientError> {
        Self::store_summary_with_key(dir, None)
    }

    /// [`SyncClient::store_summary`] of a store encrypted with `key`.
    pub fn store_summary_with_key(
        dir: &Path,
        key: Option<&StoreKey>,
    ) -> Result<StoreSummary, ClientError> {
        summary(&connection(dir, key)?)
    }

    /// Points the store in `dir`, which must never have synced, at `server_url` with
    /// `credentials`, and opens it. Its rows stay pending inserts, so the next round
    /// pushes them to that server. `server_schema` (from [`check_connection`]) must declare
    /// the same tables with the same column names and types as the store's schema; it
    /// replaces it (so limits such as lengths are the server's from now on, and a row
    /// the server refuses stays pending with its error). Any other
    /// [`SyncClient`] open on `dir` must not be used afterwards (it still names the old
    /// server).
    pub fn point_at_server(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        server_schema: &Schema,
    ) -> Result<SyncClient, ClientError> {
        Self::point_at_server_with_key(dir, server_url, credentials, server_schema, None)
    }

    /// [`SyncClient::point_at_server`] for a store encrypted with `key`.
    pub fn point_at_server_with_key(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        server_schema: &Schema,
        key: Option<&StoreKey>,
    ) -> Result<SyncClient, ClientError> {
        let roster = (Protocol::Roster, AmaSettings::default());
        Self::point_at_server_with_protocol(
            dir,
            server_url,
            credentials,
            server_schema,
            key,
            &roster,
        )
    }

    /// [`SyncClient::point_at_server_with_key`] for a server that speaks `protocol.0`
    /// (an Azure Mobile Apps backend: `server_schema` is the schema the device was given
    /// for it, checked by [`check_ama_connection`]); the protocol is stored in the same
    /// transaction as the new server.
    pub fn point_at_server_with_protocol(
        dir: &Path,
        server_url: &str,
        credentials: &Credentials,
        server_schema: &Schema,
        key: Option<&StoreKey>,
        protocol: &(Protocol, AmaSettings),
    ) -> Result<SyncClient, ClientError> {
        protocol.1.check()?;
        let url = normalise_server_url(server_url)?;
        let mut conn = connection(dir, key)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state = summary(&tx)?;
        if state.synced_before {
            return Err(ClientError::BadInput(
                "this device's data has been synced with another server; it cannot move to a new one"
                    .into(),
            ));
        }
        let stored: String = tx.query_row(
            "SELECT value FROM _roster_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )?;
        let stored: Schema = serde_json::from_str(&stored)
            .map_err(|e| ClientError::Corrupt(format!("stored schema: {e}")))?;
        if !same_shape(&stored, server_schema) {
            return Err(ClientError::BadInput(format!(
                "the server at {url} declares other tables or columns than this device's data"
            )));
        }
        tx.execute(
            "UPDATE _roster_meta SET value = ?1 WHERE key = 'server_url'",
            [&url],
        )?;
        let schema_json = serde_json::to_string(server_schema)
            .map_err(|e| ClientError::Corrupt(e.to_string()))?;
        tx.execute(
            "UPDATE _roster_meta SET value = ?1 WHERE key = 'schema'",
            [&schema_json],
        )?;
        crate::local::store_protocol(&tx, protocol)?;
        tx.commit()?;
        drop(conn);
        let client = SyncClient::open_with_key(dir, key)?;
        client.store().set_credentials(credentials)?;
        SyncClient::open_with_key(dir, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_bad_url_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let check = check_connection(
            &format!("http://127.0.0.1:{port}"),
            &Credentials::default(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(check.problem, Some(ConnectionProblem::Unreachable));
        let check =
            check_connection("nowhere", &Credentials::default(), Duration::from_secs(2)).await;
        assert_eq!(check.problem, Some(ConnectionProblem::BadUrl));
    }

    #[tokio::test]
    async fn an_offline_store_moves_to_a_server_and_a_synced_one_does_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let schema = Schema::default_person();
        let client = SyncClient::init(
            dir.path(),
            "http://127.0.0.1:9",
            &Credentials::default(),
            Some(schema.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let mut row = roster_protocol::Fields::new();
        row.insert("name".into(), "Ada".into());
        client
            .store()
            .insert("person", row)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(client);
        let summary = SyncClient::store_summary(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (summary.synced_before, summary.rows, summary.pending),
            (false, 1, 1)
        );
        let moved = SyncClient::point_at_server(
            dir.path(),
            "http://127.0.0.1:10/",
            &Credentials::token("rst_x"),
            &schema,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(moved.store().server_url(), "http://127.0.0.1:10");
        assert_eq!(
            moved
                .store()
                .credentials()
                .ok()
                .and_then(|c| c.token)
                .as_deref(),
            Some("rst_x")
        );
        assert_eq!(moved.store().status().map(|s| s.pending).ok(), Some(1));
        let mut other = schema.clone();
        other.tables[0].columns[5].max_len = None;
        assert!(same_shape(&schema, &other), "limits may differ");
        other.tables[0].columns.pop();
        assert!(matches!(
            SyncClient::point_at_server(
                dir.path(),
                "http://127.0.0.1:11",
                &Credentials::default(),
                &other
            ),
            Err(ClientError::BadInput(_))
        ));
        drop(moved);
        let conn = connection(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
        conn.execute(
            "UPDATE _roster_meta SET value = '5' WHERE key = 'watermark'",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        drop(conn);
        assert!(matches!(
            SyncClient::point_at_server(
                dir.path(),
                "http://127.0.0.1:12",
                &Credentials::default(),
                &schema
            ),
            Err(ClientError::BadInput(_))
        ));
    }
}
