//! The real `roster-server` binary as a child process on a free port of 127.0.0.1, and
//! raw protocol calls to it (seeding, request splits) that bypass the client engine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roster_protocol::{
    MAX_CHANGES_PER_REQUEST, PROTOCOL_VERSION, RowId, SYNC_PATH, Schema, SyncResponse,
};
use serde_json::{Value, json};

/// How long the server may take to print its address line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `roster-server`, killed on drop. Its stderr goes to `server.log` in its dir.
pub struct ServerProcess {
    child: Child,
    url: String,
    token: String,
    log: PathBuf,
}

/// Name of the user every benchmark server gets (`roster-server create-user`).
pub const BENCH_USER: &str = "bench";

/// Creates [`BENCH_USER`] in the database `db` with the real admin command and returns
/// its token.
pub fn create_user(bin: &Path, db: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--db")
        .arg(db)
        .args(["create-user", BENCH_USER])
        .env_remove("ROSTER_SERVER_CONFIG")
        .output()
        .with_context(|| format!("cannot run {} create-user", bin.display()))?;
    if !out.status.success() {
        bail!(
            "create-user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if token.is_empty() {
        bail!("create-user printed no token");
    }
    Ok(token)
}

/// A server config declaring the shipped Person table with `policy`.
pub fn person_config(policy: &str) -> String {
    let mut out = format!("[[tables]]\nname = \"person\"\npolicy = \"{policy}\"\ncolumns = [\n");
    for column in &Schema::default_person().tables[0].columns {
        let ty = match column.ty {
            roster_protocol::ColumnType::Text => "text",
            roster_protocol::ColumnType::Integer => "integer",
            roster_protocol::ColumnType::Real => "real",
            roster_protocol::ColumnType::Boolean => "boolean",
        };
        out.push_str(&format!(
            "  {{ name = \"{}\", type = \"{ty}\", required = {}",
            column.name, column.required
        ));
        if let Some(max) = column.max_len {
            out.push_str(&format!(", max_len = {max}"));
        }
        out.push_str(" },\n");
    }
    out.push_str("]\n");
    out
}

impl ServerProcess {
    /// Starts `bin --listen 127.0.0.1:0 --db DIR/server.db --config DIR/config.toml`
    /// (`config`, when given, with the request quota turned off) and waits for its
    /// address line.
    /// The server runs with its default log level (info), as in production.
    pub fn start(bin: &Path, dir: &Path, config: Option<&str>) -> Result<Self> {
        Self::start_on(bin, dir, config, None, None)
    }

    /// [`ServerProcess::start`] on the database `db` (a PostgreSQL URL, or a file) instead
    /// of `DIR/server.db`; several processes may share one database. [`BENCH_USER`] is
    /// created in it unless `token` (that user's, from a process on the same database) is
    /// given.
    pub fn start_on(
        bin: &Path,
        dir: &Path,
        config: Option<&str>,
        db: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = dir.join("server.log");
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let db = db.map_or_else(|| dir.join("server.db"), PathBuf::from);
        let token = match token {
            Some(token) => token.to_owned(),
            None => create_user(bin, &db)?,
        };
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(&db)
            .env_remove("ROSTER_LOG")
            .env_remove("ROSTER_SERVER_CONFIG")
            .stdin(Stdio::null())
            .stderr(log_file);
        // Benchmarks measure throughput, and every client of a run is the one bench user:
        // the per-user request quota is off (top-level keys go before any table).
        let config = format!("user_requests_per_minute = 0\n{}", config.unwrap_or(""));
        let path = dir.join("config.toml");
        std::fs::write(&path, config)
            .with_context(|| format!("cannot write {}", path.display()))?;
        cmd.arg("--config").arg(path);
        let started = roster_testkit::start_server_process(&mut cmd, STARTUP_TIMEOUT, |_| {});
        let (child, url) = match started {
            Ok(started) => (started.child, started.url),
            Err(error) => bail!("{error}; see {}", log.display()),
        };
        tracing::info!(pid = child.id(), %url, dir = %dir.display(), "roster-server started");
        Ok(Self {
            child,
            url,
            token,
            log,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token of [`BENCH_USER`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server's process id, as `/proc` names it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Measures the server process's CPU time from now on.
    pub fn cpu(&self) -> crate::stats::CpuMeter {
        crate::stats::CpuMeter::start(&self.child.id().to_string())
    }

    /// Fails (with the end of its log) if the server process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("roster-server exited ({status}); end of its log:\n{tail}");
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client for raw protocol calls (no retries, JSON built here).
#[derive(Clone)]
pub struct Raw {
    http: reqwest::Client,
    url: String,
    token: String,
    client_id: uuid::Uuid,
}

/// What one raw call cost, split in phases, and the answer's body.
#[derive(Debug, Default, Clone)]
pub struct RawTiming {
    /// From sending until the whole answer body arrived (server work + loopback).
    pub http: Duration,
    /// Decoding the answer.
    pub decode: Duration,
    /// Answer body size.
    pub bytes: usize,
}

impl Raw {
    pub fn new(url: &str, token: &str) -> Result<Self> {
        roster_client::install_tls_provider();
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            url: url.to_owned(),
            token: token.to_owned(),
            client_id: uuid::Uuid::now_v7(),
        })
    }

    /// The client id the raw requests carry.
    pub fn client_id(&self) -> uuid::Uuid {
        self.client_id
    }

    /// One `POST /v1/sync` with the given changes (JSON values) and pull settings; the
    /// request is built as JSON so fields added to the protocol later keep their
    /// defaults.
    pub async fn sync(
        &self,
        since: u64,
        changes: &[Value],
        pull_limit: u32,
    ) -> Result<(SyncResponse, RawTiming)> {
        self.sync_with(since, changes, pull_limit, None).await
    }

    /// [`Raw::sync`] with more request fields (e.g. `round`, `batch_id`) from `extras`,
    /// a JSON object.
    pub async fn sync_with(
        &self,
        since: u64,
        changes: &[Value],
        pull_limit: u32,
        extras: Option<Value>,
    ) -> Result<(SyncResponse, RawTiming)> {
        let mut request = json!({
            "protocol": PROTOCOL_VERSION,
            "client_id": self.client_id,
            "since": since,
            "changes": changes,
            "pull_limit": pull_limit,
        });
        if let (Some(Value::Object(extras)), Some(request)) = (extras, request.as_object_mut()) {
            request.extend(extras);
        }
        self.post_body(serde_json::to_vec(&request)?).await
    }

    /// One `POST /v1/sync` of an already encoded request body (the engine's request
    /// encoded by the caller, to time that encoding separately), its answer decoded as
    /// `T` ([`SyncResponse`], or [`roster_protocol::PulledResponse`] as the engine
    /// decodes it).
    pub async fn post_body<T: serde::de::DeserializeOwned>(
        &self,
        body: Vec<u8>,
    ) -> Result<(T, RawTiming)> {
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}{SYNC_PATH}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let http = sent.elapsed();
        if !status.is_success() {
            bail!(
                "sync answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        let decoding = Instant::now();
        let answer: T = serde_json::from_slice(&bytes)?;
        Ok((
            answer,
            RawTiming {
                http,
                decode: decoding.elapsed(),
                bytes: bytes.len(),
            },
        ))
    }

    /// Number of live rows on the server, by a full pull.
    pub async fn count_rows(&self) -> Result<u64> {
        let mut since = 0;
        let mut count = 0;
        loop {
            let (page, _) = self.sync(since, &[], 5_000).await?;
            count += page.changes.iter().filter(|c| !c.row.deleted).count() as u64;
            since = page.watermark;
            if !page.has_more {
                return Ok(count);
            }
        }
    }
}

/// An insert of `fields` as row `id`, as JSON for [`Raw::sync`].
pub fn insert_change(id: RowId, fields: &roster_protocol::Fields) -> Value {
    json!({"table": "person", "id": id, "op": "insert", "fields": fields})
}

/// An update of row `id` from `base` (at `base_version`) to `fields`.
pub fn update_change(
    id: RowId,
    base_version: u64,
    base: &roster_protocol::Fields,
    fields: &roster_protocol::Fields,
) -> Value {
    json!({"table": "person", "id": id, "op": "update", "base_version": base_version,
           "fields": fields, "base_fields": base})
}

/// How seeding went: rows written and the server's ingest rate.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub rows: u64,
    pub secs: f64,
}

/// Writes `changes` to the server in batches of the largest allowed size, keeping one
/// request in flight while the next body is built. Stops at `deadline`.
pub async fn push_raw(raw: &Raw, changes: Vec<Value>, deadline: Instant) -> Result<Seeded> {
    push_raw_acked(raw, changes, deadline, |_| {}).await
}

/// [`push_raw`], showing each acknowledgement to `acked`. Two requests are in flight at
/// once, so a batch may be numbered before the one sent ahead of it: a row's version is
/// its ack's, never its place in `changes`.
pub async fn push_raw_acked(
    raw: &Raw,
    changes: Vec<Value>,
    deadline: Instant,
    mut acked: impl FnMut(&roster_protocol::Ack),
) -> Result<Seeded> {
    let started = Instant::now();
    let mut rows = 0u64;
    let mut in_flight: Option<tokio::task::JoinHandle<Result<SyncResponse>>> = None;
    let take = |answer: SyncResponse, acked: &mut dyn FnMut(&roster_protocol::Ack)| {
        answer.acks.iter().for_each(&mut *acked);
        (answer.acks.len() + answer.conflicts.len()) as u64
    };
    let mut batches = changes.chunks(MAX_CHANGES_PER_REQUEST).peekable();
    while let Some(batch) = batches.next() {
        let batch = batch.to_vec();
        let raw = raw.clone();
        let task = tokio::spawn(async move {
            let (answer, _) = raw.sync(0, &batch, 0).await?;
            let applied = answer.acks.len() + answer.conflicts.len();
            if applied != batch.len() {
                bail!("{} of {} seeded changes applied", applied, batch.len());
            }
            Ok(answer)
        });
        if let Some(previous) = in_flight.replace(task) {
            rows += take(previous.await??, &mut acked);
        }
        if Instant::now() > deadline && batches.peek().is_some() {
            tracing::warn!(rows, "seeding stopped at its time limit");
            break;
        }
    }
    if let Some(last) = in_flight {
        rows += take(last.await??, &mut acked);
    }
    Ok(Seeded {
        rows,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Seeds `n` new Person rows from `generator` with v7 ids (the client's kind: within a
/// request the server's version order is id order; `push_raw` keeps two requests in
/// flight, so two neighbouring batches may take their versions in either order),
/// generated in chunks so the bench process never holds more than a chunk.
pub async fn seed(
    raw: &Raw,
    n: u64,
    generator: &mut crate::data::RowGen,
    deadline: Instant,
) -> Result<Seeded> {
    seed_ids(raw, n, generator, deadline, false).await
}

/// [`seed`], with random ids when `random_ids`: a pull then meets ids in no order, as
/// from a server whose rows were edited after they were created.
pub async fn seed_ids(
    raw: &Raw,
    n: u64,
    generator: &mut crate::data::RowGen,
    deadline: Instant,
    random_ids: bool,
) -> Result<Seeded> {
    const CHUNK: u64 = 100_000;
    let mut total = Seeded { rows: 0, secs: 0.0 };
    while total.rows < n {
        let take = CHUNK.min(n - total.rows);
        let changes: Vec<Value> = (0..take)
            .map(|_| {
                let id = if random_ids {
                    generator.random_id()
                } else {
                    RowId::now_v7()
                };
                insert_change(id, &generator.person().fields())
            })
            .collect();
        let done = push_raw(raw, changes, deadline).await?;
        total.rows += done.rows;
        total.secs += done.secs;
        if done.rows < take {
            break;
        }
        tracing::info!(rows = total.rows, of = n, "seeding the server");
    }
    Ok(total)
}
