//! Shared machinery of the end-to-end tests: the real `roster-server` binary on a free
//! port of 127.0.0.1 with its own database, real clients with their own data dirs, and
//! a probe that reads the server's full state over HTTP.
//!
//! The backend comes from the environment: `ROSTER_TEST_BACKEND=postgres` with
//! `ROSTER_TEST_PG_URL` (an admin connection, e.g. `postgres://postgres@127.0.0.1:5432/postgres`)
//! gives every [`TestServer`] its own fresh PostgreSQL database, dropped afterwards;
//! otherwise (the default) each gets its own SQLite file. `cargo xtask test` runs the
//! suite once per backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roster_client::{Credentials, SyncClient, SyncOptions};
use roster_protocol::{Fields, PROTOCOL_VERSION, RowId, ServerRow, SyncRequest, SyncResponse};
use serde_json::Value;

/// Server config with two tables: `person` (server-wins) and `task` (client-wins). The
/// engine must treat both the same way apart from the policy.
pub const TWO_TABLE_CONFIG: &str = r#"
max_body_bytes = 262144

[[tables]]
name = "person"
policy = "server-wins"
columns = [
  { name = "name", type = "text", required = true, max_len = 200 },
  { name = "email", type = "text" },
  { name = "age", type = "integer" },
  { name = "city", type = "text" },
]

[[tables]]
name = "task"
policy = "client-wins"
columns = [
  { name = "title", type = "text", required = true },
  { name = "done", type = "boolean" },
  { name = "priority", type = "integer" },
  { name = "estimate", type = "real" },
]
"#;

/// [`TWO_TABLE_CONFIG`] with the person table's policy set to `policy` (e.g.
/// `"client-wins"`, `"defer-to-client"`).
pub fn two_table_config_with_person_policy(policy: &str) -> String {
    let config = TWO_TABLE_CONFIG.replacen(
        "name = \"person\"\npolicy = \"server-wins\"",
        &format!("name = \"person\"\npolicy = \"{policy}\""),
        1,
    );
    assert!(
        policy == "server-wins" || config != TWO_TABLE_CONFIG,
        "the person table's policy line was replaced"
    );
    config
}

/// Path of a workspace binary built next to the running test (target/debug/NAME).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir of the test executable");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, \
         which `cargo xtask test` does)",
        path.display()
    );
    path
}

pub mod ama_js;
pub mod backend;
pub mod cli;
pub mod proxy;
pub mod scenario;

pub use backend::{Backend, TestDatabase};

/// Name of the user every [`TestServer`] creates, whose token the harness's clients use.
pub const DEFAULT_USER: &str = "tester";

/// A running server with its own temp dir and database: the real `roster-server`
/// process, or (to plug in a Rust conflict handler) the same service embedded in the
/// test process, still over real HTTP on 127.0.0.1.
///
/// Every server has a user [`DEFAULT_USER`] created with the real admin command (or, for
/// the embedded one, the same library call); [`TestClient::new`] and the HTTP probes use
/// its token, so they see that user's own data set.
pub struct TestServer {
    child: Option<Child>,
    embedded: Option<roster_server::embed::EmbeddedServer>,
    dir: Arc<tempfile::TempDir>,
    db: Arc<TestDatabase>,
    addr: SocketAddr,
    /// `http`, or `https` for a server configured with a TLS certificate.
    scheme: String,
    token: String,
    /// What the process printed on stdout after its address line.
    stdout: StdoutLines,
}

/// Lines a server process printed on stdout after its address line.
type StdoutLines = Arc<Mutex<Vec<String>>>;

impl TestServer {
    /// Starts the server with [`TWO_TABLE_CONFIG`] on a free port.
    pub fn start() -> Self {
        Self::start_with_config(TWO_TABLE_CONFIG)
    }

    /// Starts the server with the given TOML config on a free port.
    pub fn start_with_config(config: &str) -> Self {
        // reqwest is built without a crypto provider: install the client's before any
        // test builds an HTTP client.
        roster_client::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create(dir.path());
        Self::start_in(dir, config, db)
    }

    /// Starts the server with the given TOML config on the database `db` (made by the
    /// caller, e.g. on a small disk).
    pub fn start_with_database(config: &str, db: TestDatabase) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config, db)
    }

    fn start_in(dir: tempfile::TempDir, config: &str, db: TestDatabase) -> Self {
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let token = admin(db.url(), &["create-user", DEFAULT_USER]).0;
        let (child, scheme, addr, stdout) = spawn_server(dir.path(), db.url(), "127.0.0.1:0");
        Self {
            child: Some(child),
            embedded: None,
            dir: Arc::new(dir),
            db: Arc::new(db),
            addr,
            scheme,
            token,
            stdout,
        }
    }

    /// Starts another server process on this server's database and config, on a free
    /// port: several stateless instances of one service.
    pub fn another_instance(&self) -> Self {
        let (child, scheme, addr, stdout) =
            spawn_server(self.dir.path(), self.db.url(), "127.0.0.1:0");
        Self {
            child: Some(child),
            embedded: None,
            dir: self.dir.clone(),
            db: self.db.clone(),
            addr,
            scheme,
            token: self.token.clone(),
            stdout,
        }
    }

    /// Runs the service in this process with `config` and `handler` deciding conflicts
    /// first (a Rust handler cannot be loaded into the binary).
    pub async fn start_embedded(
        config: &str,
        handler: std::sync::Arc<dyn roster_server::resolve::ServerConflictHandler>,
    ) -> Self {
        Self::start_embedded_with(config, Some(handler)).await
    }

    /// Runs the service in this process with `config`, through
    /// `roster_server::embed::EmbeddedServer::start` (as a program embedding it does),
    /// with `handler` deciding conflicts first when given.
    pub async fn start_embedded_with(
        config: &str,
        handler: Option<std::sync::Arc<dyn roster_server::resolve::ServerConflictHandler>>,
    ) -> Self {
        roster_client::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut parsed =
            roster_server::ServerConfig::load(&dir.path().join("config.toml")).unwrap();
        parsed.listen = "127.0.0.1:0".parse().unwrap();
        let db = TestDatabase::create(dir.path());
        let token = admin(db.url(), &["create-user", DEFAULT_USER]).0;
        let server =
            roster_server::embed::EmbeddedServer::start(&parsed, Path::new(db.url()), handler)
                .await
                .unwrap();
        let (scheme, addr) = split_url(&server.url()).unwrap();
        Self {
            child: None,
            embedded: Some(server),
            dir: Arc::new(dir),
            db: Arc::new(db),
            addr,
            scheme,
            token,
            stdout: StdoutLines::default(),
        }
    }

    /// The token of [`DEFAULT_USER`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Credentials of [`DEFAULT_USER`] on its own data set.
    pub fn credentials(&self) -> Credentials {
        Credentials::token(self.token.clone())
    }

    /// Creates another user (and its own data set) with the real
    /// `roster-server create-user` and returns its first token.
    pub fn create_user(&self, name: &str) -> String {
        admin(self.db.url(), &["create-user", name]).0
    }

    /// Issues another token for `user` with `roster-server create-token`; returns the
    /// token's id and secret.
    pub fn create_token(&self, user: &str) -> (i64, String) {
        let (secret, stderr) = admin(self.db.url(), &["create-token", "--user", user]);
        let id = stderr
            .split("issued token ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no token id in {stderr:?}"));
        (id, secret)
    }

    /// Revokes a token with `roster-server revoke-token`.
    pub fn revoke_token(&self, id: i64) {
        admin(self.db.url(), &["revoke-token", &id.to_string()]);
    }

    /// Lets `user` use `dataset` with `roster-server share`.
    pub fn share(&self, dataset: &str, user: &str) {
        admin(self.db.url(), &["share", dataset, "--with", user]);
    }

    /// Runs the admin command `roster-server --db DB ARGS...` on this server's database,
    /// asserts it succeeded and returns its whole stdout and its stderr.
    pub fn admin(&self, args: &[&str]) -> (String, String) {
        let out = Command::new(bin_path("roster-server"))
            .arg("--db")
            .arg(self.db.url())
            .args(args)
            .env("ROSTER_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "roster-server {args:?} failed: {stdout} {stderr}"
        );
        (stdout, stderr)
    }

    /// Backs the database up to the new file `to`, as the README says to, while the
    /// server runs: `roster-server backup --to` (which runs `pg_dump` on PostgreSQL).
    pub fn backup(&self, to: &Path) {
        backup_database(self.db.url(), to);
    }

    /// Restores the backup `from` over the database (the server must be stopped), as
    /// the README says to: `roster-server restore --from` on SQLite; `pg_restore --clean`
    /// then `roster-server new-epoch` on PostgreSQL.
    pub fn restore(&self, from: &Path) {
        assert!(self.child.is_none(), "stop the server before restoring");
        if roster_server::store::postgres::is_postgres_url(self.db.url()) {
            run_tool(
                Command::new("pg_restore")
                    .args(["--clean", "--if-exists", "--no-owner", "-d"])
                    .arg(self.db.url())
                    .arg(from),
            );
            self.admin(&["new-epoch"]);
        } else {
            self.admin(&["restore", "--from", &from.to_string_lossy()]);
        }
    }

    /// Takes a share back with `roster-server unshare`.
    pub fn unshare(&self, dataset: &str, user: &str) {
        admin(self.db.url(), &["unshare", dataset, "--with", user]);
    }

    /// Deletes a user with `roster-server delete-user`, keeping its data set
    /// (`--keep-data`) or removing it (`--delete-data`); returns the printed summary.
    pub fn delete_user(&self, name: &str, keep_data: bool) -> String {
        let data = if keep_data {
            "--keep-data"
        } else {
            "--delete-data"
        };
        admin(self.db.url(), &["delete-user", name, data]).0
    }

    /// An HTTP client sending [`DEFAULT_USER`]'s token on every request.
    pub fn http(&self) -> reqwest::Client {
        authed_http(&self.token, None)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (`https://` when the config sets a TLS
    /// certificate).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The server process's id (`None` for an embedded server).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's database: its SQLite file path or PostgreSQL URL (the `--db` value).
    pub fn db(&self) -> &TestDatabase {
        &self.db
    }

    /// The server's own directory: its config, and its SQLite files on SQLite.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the process (SIGKILL): no graceful shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the process SIGTERM and waits up to `limit` for it to exit; returns its exit
    /// status (`None` if it still ran after `limit`; it is then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .expect("terminate is for the server process");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The metrics URL the process printed (`roster-server metrics on URL`, with
    /// `metrics_listen` in its config), waiting up to 10 s for the line.
    pub fn metrics_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| roster_testkit::parse_metrics_line(line).map(str::to_owned));
            if let Some(url) = found {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the server printed no metrics URL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some() || self.embedded.is_some()
    }

    /// Starts the server process again on the same port and database.
    pub fn restart(&mut self) {
        assert!(self.embedded.is_none(), "restart is for the server process");
        self.kill();
        let mut last = None;
        for _ in 0..50 {
            match try_spawn_server(self.dir.path(), self.db.url(), &self.addr.to_string()) {
                Ok((child, scheme, addr, stdout)) => {
                    self.child = Some(child);
                    self.scheme = scheme;
                    self.addr = addr;
                    self.stdout = stdout;
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not restart on {}: {last:?}", self.addr);
    }

    /// Replaces the server's config with `config` and restarts it on it (same port and
    /// database): how an owner changes the schema.
    pub fn restart_with_config(&mut self, config: &str) {
        std::fs::write(self.dir.path().join("config.toml"), config).unwrap();
        self.restart();
    }

    /// Starts a server process on this database with `config`, which it must refuse to
    /// serve: returns what it printed on stderr. Fails if it starts listening.
    pub fn refused_start(&self, config: &str) -> String {
        let path = self.dir.path().join("refused.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(bin_path("roster-server"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(self.db.url())
            .arg("--config")
            .arg(&path)
            .env("ROSTER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + SERVER_START_LIMIT;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server started with a config it should refuse:\n{config}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "the refused start must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs the admin command `roster-server --config CONFIG --db DB ARGS...` with
    /// `config` written to a file; returns whether it succeeded, and its stdout and stderr.
    pub fn admin_with_config(&self, config: &str, args: &[&str]) -> (bool, String, String) {
        let path = self.dir.path().join("admin.toml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(bin_path("roster-server"))
            .arg("--config")
            .arg(&path)
            .arg("--db")
            .arg(self.db.url())
            .args(args)
            .env("ROSTER_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `roster-server purge-tombstones --older-than-secs 0` against the database
    /// (a separate process, while the server keeps running).
    pub fn purge_all_tombstones(&self) -> String {
        let out = Command::new(bin_path("roster-server"))
            .args(["--config"])
            .arg(self.dir.path().join("config.toml"))
            .arg("--db")
            .arg(self.db.url())
            .args(["purge-tombstones", "--older-than-secs", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "purge failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every row of [`DEFAULT_USER`]'s data set, tombstones included, read with a full
    /// pull over HTTP.
    pub async fn rows(&self) -> BTreeMap<(String, RowId), ServerRow> {
        self.rows_as(&self.token, None).await
    }

    /// Every row a pull with `token` (on `dataset`, or the user's own) returns.
    pub async fn rows_as(
        &self,
        token: &str,
        dataset: Option<&str>,
    ) -> BTreeMap<(String, RowId), ServerRow> {
        let http = authed_http(token, dataset);
        let mut since = 0;
        let mut rows = BTreeMap::new();
        loop {
            let request = SyncRequest {
                slice: None,
                protocol: PROTOCOL_VERSION,
                client_id: uuid::Uuid::now_v7(),
                since,
                changes: vec![],
                pull_limit: 5_000,
                round: None,
                batch_id: None,
                epoch: None,
            };
            let response: SyncResponse = http
                .post(format!("{}/v1/sync", self.url()))
                .json(&request)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            for change in response.changes {
                rows.insert((change.table, change.id), change.row);
            }
            since = response.watermark;
            if !response.has_more {
                return rows;
            }
        }
    }

    /// Live rows of `table` in [`DEFAULT_USER`]'s data set, by id, each with every
    /// column the server serves (a row stored before a column existed reads its
    /// default, else null, as on a device).
    pub async fn live(&self, table: &str) -> BTreeMap<RowId, Fields> {
        let schema = self.served_schema(&self.http()).await;
        live_of(self.rows().await, table, &schema)
    }

    /// The schema the server serves, read with `http`.
    async fn served_schema(&self, http: &reqwest::Client) -> roster_protocol::Schema {
        http.get(format!("{}{}", self.url(), roster_protocol::SCHEMA_PATH))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The server's conflict log (every data set) as (table, row id, kind, resolution),
    /// oldest first, read from its database.
    pub fn conflict_log(&self) -> Vec<(String, String, String, String)> {
        self.db.conflict_log(None)
    }

    /// Live rows of `table` a pull with `token` (on `dataset`) returns, by id.
    pub async fn live_as(
        &self,
        token: &str,
        dataset: Option<&str>,
        table: &str,
    ) -> BTreeMap<RowId, Fields> {
        let schema = self.served_schema(&authed_http(token, dataset)).await;
        live_of(self.rows_as(token, dataset).await, table, &schema)
    }

    /// The conflict log entries of one data set, as [`TestServer::conflict_log`].
    pub fn conflict_log_of(&self, dataset: &str) -> Vec<(String, String, String, String)> {
        self.db.conflict_log(Some(dataset))
    }
}

/// Live rows of `table` among `rows`, by id, with the columns `schema` declares that a
/// row lacks given their default (else null).
fn live_of(
    rows: BTreeMap<(String, RowId), ServerRow>,
    table: &str,
    schema: &roster_protocol::Schema,
) -> BTreeMap<RowId, Fields> {
    let declared = schema.table(table).ok();
    rows.into_iter()
        .filter(|((t, _), row)| t == table && !row.deleted)
        .map(|((_, id), row)| {
            let mut fields = row.fields.unwrap_or_default();
            for column in declared.iter().flat_map(|t| &t.columns) {
                fields
                    .entry(column.name.clone())
                    .or_insert_with(|| column.default.clone().unwrap_or(Value::Null));
            }
            (id, fields)
        })
        .collect()
}

/// An HTTP client sending `token` (and the `dataset` header when given) on every request.
pub fn authed_http(token: &str, dataset: Option<&str>) -> reqwest::Client {
    roster_client::install_tls_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    if let Some(dataset) = dataset {
        headers.insert(roster_protocol::DATASET_HEADER, dataset.parse().unwrap());
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Runs `roster-server --db DB ARGS...` (an admin command on the SQLite file or
/// PostgreSQL database `db`), asserts it succeeded and returns its stdout's first line
/// and its stderr.
/// [`TestServer::backup`] of the database `db` (a path or URL), callable from another
/// thread while the server serves: `roster-server backup --to` (`pg_dump` on PostgreSQL).
pub fn backup_database(db: &str, to: &Path) {
    admin(db, &["backup", "--to", &to.to_string_lossy()]);
}

/// Runs a database tool and asserts it succeeded.
fn run_tool(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn admin(db: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(bin_path("roster-server"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env("ROSTER_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "roster-server {args:?} failed: {stdout} {stderr}"
    );
    (
        stdout.lines().next().unwrap_or("").trim().to_owned(),
        stderr,
    )
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(dir: &Path, db: &str, listen: &str) -> (Child, String, SocketAddr, StdoutLines) {
    try_spawn_server(dir, db, listen).unwrap()
}

/// The scheme and address of a base URL such as `https://127.0.0.1:41234`.
fn split_url(url: &str) -> Option<(String, SocketAddr)> {
    let (scheme, addr) = url.split_once("://")?;
    Some((scheme.to_owned(), addr.parse().ok()?))
}

/// Starts the server process and reads its address line (see `roster_testkit`):
/// returns the process, the URL's scheme, the address and the lines it prints later.
fn try_spawn_server(
    dir: &Path,
    db: &str,
    listen: &str,
) -> Result<(Child, String, SocketAddr, StdoutLines), String> {
    let mut command = Command::new(bin_path("roster-server"));
    command
        .arg("--listen")
        .arg(listen)
        .arg("--db")
        .arg(db)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("ROSTER_LOG", "warn")
        .stderr(Stdio::inherit());
    let stdout = StdoutLines::default();
    let lines = stdout.clone();
    let started =
        roster_testkit::start_server_process(&mut command, SERVER_START_LIMIT, move |line| {
            lines.lock().unwrap().push(line);
        })
        .map_err(|e| e.to_string())?;
    let mut child = started.child;
    match split_url(&started.url) {
        Some((scheme, addr)) => Ok((child, scheme, addr, stdout)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "server listens on an unexpected URL {}",
                started.url
            ))
        }
    }
}

/// How long a server process may take to print its address line.
const SERVER_START_LIMIT: Duration = Duration::from_secs(30);

/// A client with its own data dir.
pub struct TestClient {
    /// The client under test.
    pub client: SyncClient,
    dir: tempfile::TempDir,
}

impl TestClient {
    /// A new client of `server` as [`DEFAULT_USER`], schema fetched from the server.
    pub async fn new(server: &TestServer) -> Self {
        Self::with_options(server, SyncOptions::default()).await
    }

    /// A new client of `server` as [`DEFAULT_USER`] with the given batch settings.
    pub async fn with_options(server: &TestServer, options: SyncOptions) -> Self {
        Self::at_url(&server.url(), &server.credentials(), options).await
    }

    /// A new client of `server` presenting `credentials` (another user, a shared data set).
    pub async fn as_user(server: &TestServer, credentials: &Credentials) -> Self {
        Self::at_url(&server.url(), credentials, SyncOptions::default()).await
    }

    /// A new client of the service at `url` (for example through a proxy).
    pub async fn at_url(url: &str, credentials: &Credentials, options: SyncOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client = SyncClient::init(dir.path(), url, credentials, None)
            .await
            .unwrap()
            .with_options(options)
            .unwrap();
        Self { client, dir }
    }

    /// A new client of the Azure Mobile Apps backend at `url` (`roster init --protocol
    /// azure-mobile-apps`), with Roster's default schema, resolving the conflicts the
    /// backend reports by `policy`.
    pub async fn of_ama_backend(url: &str, policy: roster_protocol::ConflictPolicy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client = SyncClient::init_with_protocol(
            dir.path(),
            url,
            &Credentials::default(),
            &roster_client::ConnectionSecurity::default(),
            None,
            Some(roster_protocol::Schema::default_person()),
            (
                roster_client::Protocol::AzureMobileApps,
                roster_client::AmaSettings {
                    policy,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        Self { client, dir }
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Reopens the store from disk (as after an app restart).
    pub fn reopen(&mut self) {
        self.client = SyncClient::open(self.dir.path()).unwrap();
    }

    /// Inserts a row and returns its id.
    pub fn insert(&self, table: &str, fields: Value) -> RowId {
        self.client.store().insert(table, obj(fields)).unwrap().id
    }

    /// Updates fields of a row.
    pub fn update(&self, table: &str, id: RowId, patch: Value) {
        self.client.store().update(table, id, obj(patch)).unwrap();
    }

    /// Deletes a row.
    pub fn delete(&self, table: &str, id: RowId) {
        self.client.store().delete(table, id).unwrap();
    }

    /// Inserts `count` people named `Row 0`, `Row 1`, ... with `age` = their number, in
    /// one local write (the set-up of the push-interruption tests).
    pub fn insert_numbered_people(&self, count: usize) {
        let records: Vec<_> = (0..count)
            .map(|i| obj(serde_json::json!({"name": format!("Row {i}"), "age": i})))
            .collect();
        self.client.store().insert_many("person", records).unwrap();
    }

    /// Every live local row of `table` by id (the declared columns, nulls included).
    pub fn live(&self, table: &str) -> BTreeMap<RowId, Fields> {
        let store = self.client.store();
        let mut out = BTreeMap::new();
        let mut offset = 0;
        loop {
            let page = store
                .list(
                    table,
                    &roster_client::ListQuery {
                        limit: 10_000,
                        offset,
                        ..Default::default()
                    },
                )
                .unwrap();
            if page.is_empty() {
                return out;
            }
            offset += page.len() as u64;
            out.extend(page.into_iter().map(|r| (r.id, r.fields)));
        }
    }

    /// Number of rows with a pending change.
    pub fn pending(&self) -> u64 {
        self.client.store().status().unwrap().pending
    }
}

/// A JSON object literal as [`Fields`].
pub fn obj(value: Value) -> Fields {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// Asserts the client's live rows of `table` equal the server's.
pub async fn assert_converged(server: &TestServer, table: &str, clients: &[&TestClient]) {
    let expected = server.live(table).await;
    for (index, client) in clients.iter().enumerate() {
        assert_eq!(
            client.live(table),
            expected,
            "client #{index} differs from the server in table {table}"
        );
        assert_eq!(
            client.pending(),
            0,
            "client #{index} still has pending changes"
        );
    }
}
