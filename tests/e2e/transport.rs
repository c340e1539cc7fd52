//! The client's transport against misconfigured and hostile servers, through the real
//! `roster` binary and the engine:
//! * HTTPS with certificates made here by rcgen: a small TLS-terminating proxy in front of
//!   the real server (plain HTTP on 127.0.0.1) gives a real sync over HTTPS; an unknown CA
//!   and a wrong host name fail with a TLS error, tried once, nothing sent in cleartext;
//! * the cleartext rule (`http://` only to loopback unless allowed);
//! * fake servers on 127.0.0.1 that declare or stream a huge answer, never answer, stall,
//!   trickle a byte per second, redirect, or answer 401 with a proxy's HTML page.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use roster_client::{ClientError, ConnectionSecurity, SyncClient, SyncOptions};
use roster_e2e::cli::{CliRun, run_roster_within};
use roster_e2e::{TestServer, obj};
use roster_protocol::Schema;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// The `roster` binary
// ---------------------------------------------------------------------------------------

/// Longest any `roster` run here may take before the test fails (the hangs this file
/// pins used to last minutes).
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Runs `roster --data-dir DIR ARGS...` with `env`, failing the test if it runs longer
/// than [`RUN_LIMIT`]. Blocking; call from `spawn_blocking` while a fake server runs.
fn roster(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    run_roster_within(dir, args, env, RUN_LIMIT)
}

/// [`roster`] off the async runtime, so fake servers in this process keep serving.
async fn roster_async(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        roster(&dir, &args, &env)
    })
    .await
    .unwrap()
}

/// Asserts `run` exited with `code`.
fn assert_exit(run: &CliRun, code: i32) {
    assert_eq!(
        run.code, code,
        "wrong exit code; stdout {:?}, stderr {:?}",
        run.stdout, run.stderr
    );
}

/// Pending changes of the store in `dir`.
fn pending(dir: &Path) -> u64 {
    let run = roster(dir, &["status", "--json"], &[]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    status["pending"].as_u64().unwrap()
}

/// Writes `schema` as a JSON file in `dir` for `roster init --schema`.
fn schema_file(dir: &Path, schema: &Schema) -> PathBuf {
    let path = dir.join("schema.json");
    std::fs::write(&path, serde_json::to_string(schema).unwrap()).unwrap();
    path
}

/// A store in `dir` for `server_url` with the built-in person schema (no server asked)
/// and one pending insert.
fn offline_store_with_one_edit(dir: &Path, server_url: &str, extra: &[&str]) {
    let schema = schema_file(dir.parent().unwrap(), &Schema::default_person());
    let mut args = vec![
        "init",
        "--server",
        server_url,
        "--schema",
        schema.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    assert_exit(&roster(dir, &args, &[("ROSTER_TOKEN", "rst_test")]), 0);
    assert_exit(&roster(dir, &["add", "name=Jane"], &[]), 0);
    assert_eq!(pending(dir), 1);
}

// ---------------------------------------------------------------------------------------
// Certificates and the TLS front
// ---------------------------------------------------------------------------------------

/// A certificate authority made for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate as PEM.
    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        self.server_config_with(CertificateParams::new(names).unwrap())
    }

    /// A server certificate for `names` signed by this CA that expired yesterday (valid
    /// for the 30 days before).
    fn expired_server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(31);
        params.not_after = now - time::Duration::days(1);
        self.server_config_with(params)
    }

    /// The certificate of `params` signed by this CA, served with its chain.
    fn server_config_with(&self, params: CertificateParams) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Arc::new(config)
    }
}

/// What reached a [`TlsFront`].
#[derive(Default)]
struct FrontCounts {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// Connections whose first byte was not a TLS handshake record (cleartext HTTP).
    cleartext: AtomicUsize,
    /// Handshakes completed, each then forwarded to the server.
    forwarded: AtomicUsize,
}

/// A TLS-terminating proxy on 127.0.0.1 forwarding to a plain-HTTP server.
struct TlsFront {
    port: u16,
    counts: Arc<FrontCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(config: Arc<rustls::ServerConfig>, upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(FrontCounts::default());
        let shared = counts.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counts = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    // 0x16: a TLS handshake record; anything else is cleartext.
                    if client.peek(&mut first).await.unwrap_or(0) == 1 && first[0] != 0x16 {
                        counts.cleartext.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    counts.forwarded.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    }
                });
            }
        });
        Self { port, counts, task }
    }

    /// The HTTPS URL of the front, by IP address.
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    fn cleartext(&self) -> usize {
        self.counts.cleartext.load(Ordering::SeqCst)
    }

    fn forwarded(&self) -> usize {
        self.counts.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// HTTPS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sync_over_https_with_a_custom_ca_given_to_init_works_for_later_commands() {
    let server = TestServer::start();
    let ca = TestCa::new("Roster test CA");
    let front = TlsFront::start(ca.server_config(&["127.0.0.1"]), server.addr()).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let dir = tmp.path().join("data");

    // init fetches the schema over HTTPS; the CA is stored with the store.
    let url = front.url();
    let run = roster_async(
        &dir,
        &[
            "init",
            "--server",
            &url,
            "--ca-cert",
            ca_file.to_str().unwrap(),
        ],
        &[("ROSTER_TOKEN", server.token())],
    )
    .await;
    assert_exit(&run, 0);
    std::fs::remove_file(&ca_file).unwrap();

    // Later commands trust the stored CA without being told again.
    assert_exit(
        &roster_async(&dir, &["add", "name=Jane", "age=30"], &[]).await,
        0,
    );
    let run = roster_async(&dir, &["sync", "--json"], &[]).await;
    assert_exit(&run, 0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["uploaded"], json!(1));
    assert_eq!(front.cleartext(), 0);
    assert!(
        front.forwarded() >= 2,
        "init and sync went through the TLS front"
    );
    let names: Vec<Value> = server
        .live("person")
        .await
        .values()
        .map(|row| row["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Jane")]);

    // The engine API takes the CA too, and keeps it for the next open.
    let other = tempfile::tempdir().unwrap();
    let security = ConnectionSecurity {
        ca_cert_pem: Some(ca.pem()),
        allow_cleartext: false,
    };
    let client =
        SyncClient::init_with_security(other.path(), &url, &server.credentials(), &security, None)
            .await
            .unwrap();
    drop(client);
    let reopened = SyncClient::open(other.path()).unwrap();
    assert_eq!(reopened.store().connection_security().unwrap(), security);
    assert_eq!(reopened.sync().await.unwrap().downloaded, 1);
}

/// A store whose server is behind `front`, trusting `ca_pem`, syncs once: the sync fails
/// with exit 6 naming `reason`, after exactly one connection that was TLS, and nothing
/// reached the server; the pending edit stays.
async fn assert_sync_refused_for_tls(front: &TlsFront, ca_pem: &str, reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let dir = tmp.path().join("data");
    let url = front.url();
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    let dir_for_init = dir.clone();
    tokio::task::spawn_blocking(move || {
        offline_store_with_one_edit(&dir_for_init, &url, &["--ca-cert", &ca_arg]);
    })
    .await
    .unwrap();

    let run = roster_async(&dir, &["sync"], &[]).await;
    assert_exit(&run, 6);
    assert!(
        run.stderr.contains("cannot trust the sync server") && run.stderr.contains(reason),
        "stderr gives the certificate problem: {}",
        run.stderr
    );
    assert_eq!(
        front.connections(),
        1,
        "tried once, not retried as a network error"
    );
    assert_eq!(front.cleartext(), 0, "nothing sent over HTTP");
    assert_eq!(front.forwarded(), 0, "nothing reached the server");
    assert_eq!(pending(&dir), 1);

    let run = roster_async(&dir, &["sync", "--json"], &[]).await;
    assert_exit(&run, 6);
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["kind"], json!("tls"));
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_once_with_a_tls_error_and_no_http() {
    let server = TestServer::start();
    let real_ca = TestCa::new("Server CA");
    let trusted_ca = TestCa::new("Some other CA");
    let front = TlsFront::start(real_ca.server_config(&["127.0.0.1"]), server.addr()).await;
    assert_sync_refused_for_tls(&front, &trusted_ca.pem(), "unknown certificate authority").await;

    // The engine reports it as its own error, not as an unreachable server.
    let dir = tempfile::tempdir().unwrap();
    let error = SyncClient::init(dir.path(), &front.url(), &server.credentials(), None)
        .await
        .err()
        .expect("init against an untrusted certificate must fail");
    assert!(
        matches!(&error, ClientError::Tls { .. }) && !error.is_transient(),
        "{error:?}"
    );
    assert!(!dir.path().join("roster.db").exists());
    assert_eq!(front.forwarded(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_host_name_fails_once_with_a_tls_error_and_no_http() {
    let server = TestServer::start();
    let ca = TestCa::new("Roster test CA");
    let front = TlsFront::start(ca.server_config(&["roster.example"]), server.addr()).await;
    assert_sync_refused_for_tls(&front, &ca.pem(), "not valid for this host name").await;
}

#[tokio::test]
async fn an_expired_certificate_fails_once_with_a_tls_error_saying_it_expired() {
    let server = TestServer::start();
    let ca = TestCa::new("Roster test CA");
    let front = TlsFront::start(ca.expired_server_config(&["127.0.0.1"]), server.addr()).await;
    assert_sync_refused_for_tls(&front, &ca.pem(), "certificate has expired").await;

    // The engine too: a TLS error naming the expiry, not a transient one to retry.
    let dir = tempfile::tempdir().unwrap();
    let security = ConnectionSecurity {
        ca_cert_pem: Some(ca.pem()),
        allow_cleartext: false,
    };
    let error = SyncClient::init_with_security(
        dir.path(),
        &front.url(),
        &server.credentials(),
        &security,
        None,
    )
    .await
    .err()
    .expect("init against an expired certificate must fail");
    assert!(
        matches!(&error, ClientError::Tls { reason, .. } if reason.contains("expired"))
            && !error.is_transient(),
        "{error:?}"
    );
    assert_eq!(front.forwarded(), 0);
}

#[tokio::test]
async fn cleartext_to_a_remote_host_is_refused_unless_allowed_and_loopback_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = schema_file(tmp.path(), &Schema::default_person());
    let schema = schema.to_str().unwrap();
    let refused = tmp.path().join("refused");
    // 192.0.2.0/24 is reserved for documentation: nothing answers there.
    let run = roster_async(
        &refused,
        &[
            "init",
            "--server",
            "http://192.0.2.1:8787",
            "--schema",
            schema,
        ],
        &[],
    )
    .await;
    assert_exit(&run, 2);
    assert!(
        run.stderr.contains("cleartext") && run.stderr.contains("--allow-insecure-http"),
        "{}",
        run.stderr
    );
    assert!(!refused.join("roster.db").exists());

    let allowed = tmp.path().join("allowed");
    let run = roster_async(
        &allowed,
        &[
            "init",
            "--server",
            "http://192.0.2.1:8787",
            "--schema",
            schema,
            "--allow-insecure-http",
        ],
        &[],
    )
    .await;
    assert_exit(&run, 0);

    let server = TestServer::start();
    let loopback = tmp.path().join("loopback");
    let url = server.url().replace("127.0.0.1", "localhost");
    let run = roster_async(
        &loopback,
        &["init", "--server", &url],
        &[("ROSTER_TOKEN", server.token())],
    )
    .await;
    assert_exit(&run, 0);
}

// ---------------------------------------------------------------------------------------
// Fake servers
// ---------------------------------------------------------------------------------------

/// How a [`FakeServer`] answers every request.
#[derive(Clone)]
enum Answer {
    /// These bytes, then the connection stays open for the next request.
    Raw(Vec<u8>),
    /// 200 declaring a 10 GB body, then zeros until the client hangs up.
    DeclaresTenGigabytes,
    /// 200 with a chunked body that never ends.
    ChunkedForever,
    /// Nothing, ever.
    Never,
    /// The headers of a 100-byte answer, then nothing.
    StallsAfterHeaders,
    /// The headers of a 1000-byte answer, then one byte per second.
    BytePerSecond,
}

/// A fake sync server on 127.0.0.1 that reads each request and answers with [`Answer`].
struct FakeServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conn_count, req_count) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conn_count.fetch_add(1, Ordering::SeqCst);
                let requests = req_count.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, answer, requests).await;
                });
            }
        });
        Self {
            port,
            connections,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (headers, then a `Content-Length` body); `false` at end of stream.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(false);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(true)
}

async fn serve(
    mut stream: TcpStream,
    answer: Answer,
    requests: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    while read_request(&mut stream).await? {
        requests.fetch_add(1, Ordering::SeqCst);
        match &answer {
            Answer::Raw(bytes) => stream.write_all(bytes).await?,
            Answer::DeclaresTenGigabytes => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          content-length: 10737418240\r\n\r\n",
                    )
                    .await?;
                let zeros = vec![b' '; 64 * 1024];
                loop {
                    stream.write_all(&zeros).await?;
                }
            }
            Answer::ChunkedForever => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          transfer-encoding: chunked\r\n\r\n",
                    )
                    .await?;
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b' ', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                loop {
                    stream.write_all(&chunk).await?;
                }
            }
            Answer::Never => std::future::pending::<()>().await,
            Answer::StallsAfterHeaders => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                    .await?;
                std::future::pending::<()>().await;
            }
            Answer::BytePerSecond => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    .await?;
                loop {
                    stream.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    Ok(())
}

/// A raw HTTP/1.1 answer with `status` line, extra `headers` and `body`.
fn raw_answer(status: &str, headers: &[&str], body: &str) -> Answer {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    Answer::Raw(text.into_bytes())
}

/// An engine client of `url` with the person schema (no server asked) and one pending
/// insert.
async fn engine_client_with_one_edit(dir: &Path, url: &str, options: SyncOptions) -> SyncClient {
    let client = SyncClient::init(
        dir,
        url,
        &roster_client::Credentials::token("rst_test"),
        Some(Schema::default_person()),
    )
    .await
    .unwrap()
    .with_options(options)
    .unwrap();
    client
        .store()
        .insert("person", obj(json!({"name": "Jane"})))
        .unwrap();
    client
}

// ---------------------------------------------------------------------------------------
// Response size cap
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_answer_declaring_ten_gigabytes_fails_with_a_protocol_error_before_reading_it() {
    let fake = FakeServer::start(Answer::DeclaresTenGigabytes).await;
    let dir = tempfile::tempdir().unwrap();
    let client = engine_client_with_one_edit(dir.path(), &fake.url(), SyncOptions::default()).await;
    let error = tokio::time::timeout(RUN_LIMIT, client.sync())
        .await
        .expect("the client must not read the declared body")
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Protocol(m) if m.contains("10737418240") && m.contains("limit")),
        "{error:?}"
    );
    assert_eq!(fake.requests(), 1, "a protocol error is not retried");
    assert_eq!(client.store().status().unwrap().pending, 1);
}

#[tokio::test]
async fn a_chunked_answer_that_never_ends_fails_at_the_response_cap() {
    let fake = FakeServer::start(Answer::ChunkedForever).await;
    let dir = tempfile::tempdir().unwrap();
    let options = SyncOptions {
        max_response_bytes: 1024 * 1024,
        ..SyncOptions::default()
    };
    let client = engine_client_with_one_edit(dir.path(), &fake.url(), options).await;
    let error = tokio::time::timeout(RUN_LIMIT, client.sync())
        .await
        .expect("the client must stop reading at the cap")
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Protocol(m) if m.contains("larger than the 1048576-byte limit")),
        "{error:?}"
    );
    assert_eq!(client.store().status().unwrap().pending, 1);

    // The default cap holds too (64 MiB), through the CLI.
    let tmp = tempfile::tempdir().unwrap();
    let cli_dir = tmp.path().join("data");
    let (url, cli) = (fake.url(), cli_dir.clone());
    tokio::task::spawn_blocking(move || offline_store_with_one_edit(&cli, &url, &[]))
        .await
        .unwrap();
    let run = roster_async(&cli_dir, &["sync"], &[]).await;
    assert_exit(&run, 1);
    assert!(run.stderr.contains("67108864-byte limit"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// Timeouts and the round deadline
// ---------------------------------------------------------------------------------------

/// Syncs a CLI store of `fake` with `env`: it must fail with exit 3, saying `says`, and
/// keep the pending edit.
async fn assert_cli_sync_times_out(fake: &FakeServer, env: &[(&str, &str)], says: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (url, init_dir) = (fake.url(), dir.clone());
    tokio::task::spawn_blocking(move || offline_store_with_one_edit(&init_dir, &url, &[]))
        .await
        .unwrap();
    let run = roster_async(&dir, &["sync"], env).await;
    assert_exit(&run, 3);
    assert!(run.stderr.contains(says), "stderr: {}", run.stderr);
    assert_eq!(pending(&dir), 1, "the pending edit stays");
    assert!(fake.requests() >= 1);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_on_the_read_idle_timeout() {
    let fake = FakeServer::start(Answer::Never).await;
    assert_cli_sync_times_out(
        &fake,
        &[("ROSTER_READ_TIMEOUT", "0.5")],
        "no answer in time",
    )
    .await;
}

#[tokio::test]
async fn a_server_that_stalls_after_the_headers_times_out_on_the_read_idle_timeout() {
    let fake = FakeServer::start(Answer::StallsAfterHeaders).await;
    assert_cli_sync_times_out(
        &fake,
        &[("ROSTER_READ_TIMEOUT", "0.5")],
        "no answer in time",
    )
    .await;
}

#[tokio::test]
async fn a_server_sending_a_byte_per_second_is_stopped_by_the_round_deadline() {
    let fake = FakeServer::start(Answer::BytePerSecond).await;
    assert_cli_sync_times_out(
        &fake,
        &[("ROSTER_READ_TIMEOUT", "5"), ("ROSTER_SYNC_DEADLINE", "2")],
        "did not finish within 2 s",
    )
    .await;

    // The engine reports the same as its own error.
    let dir = tempfile::tempdir().unwrap();
    let options = SyncOptions {
        round_deadline: Duration::from_millis(1500),
        ..SyncOptions::default()
    };
    let client = engine_client_with_one_edit(dir.path(), &fake.url(), options).await;
    let error = client.sync().await.unwrap_err();
    assert!(
        matches!(error, ClientError::DeadlineExceeded { .. }),
        "{error:?}"
    );
    assert_eq!(client.store().status().unwrap().pending, 1);
}

// ---------------------------------------------------------------------------------------
// Redirects and a proxy's 401
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_redirect_is_reported_with_its_location_and_the_target_receives_nothing() {
    let target = FakeServer::start(raw_answer("200 OK", &[], "{}")).await;
    let location = format!("{}/v1/sync", target.url());
    let redirecting = FakeServer::start(raw_answer(
        "307 Temporary Redirect",
        &[&format!("location: {location}")],
        "",
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client =
        engine_client_with_one_edit(dir.path(), &redirecting.url(), SyncOptions::default()).await;
    let error = client.sync().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Redirected { status: 307, location: l } if *l == location),
        "{error:?}"
    );
    assert!(error.to_string().contains(&location));
    assert_eq!(redirecting.requests(), 1, "a redirect is not retried");
    assert_eq!(
        target.connections(),
        0,
        "the redirect target receives nothing"
    );
    assert_eq!(client.store().status().unwrap().pending, 1);

    // The CLI names the location too, as a refused request.
    let tmp = tempfile::tempdir().unwrap();
    let cli_dir = tmp.path().join("data");
    let (url, init_dir) = (redirecting.url(), cli_dir.clone());
    tokio::task::spawn_blocking(move || offline_store_with_one_edit(&init_dir, &url, &[]))
        .await
        .unwrap();
    let run = roster_async(&cli_dir, &["sync"], &[]).await;
    assert_exit(&run, 5);
    assert!(run.stderr.contains(&location), "{}", run.stderr);
    assert_eq!(target.connections(), 0);
}

#[tokio::test]
async fn a_proxy_401_with_an_html_body_gives_exit_code_5() {
    let fake = FakeServer::start(raw_answer(
        "401 Unauthorized",
        &[
            "content-type: text/html",
            "www-authenticate: Basic realm=\"proxy\"",
        ],
        "<html><body>Proxy authentication required</body></html>",
    ))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (url, init_dir) = (fake.url(), dir.clone());
    tokio::task::spawn_blocking(move || offline_store_with_one_edit(&init_dir, &url, &[]))
        .await
        .unwrap();
    let run = roster_async(&dir, &["sync", "--json"], &[]).await;
    assert_exit(&run, 5);
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["kind"], json!("server"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("credentials") && message.contains("401"),
        "{message}"
    );
    assert_eq!(pending(&dir), 1);
}
