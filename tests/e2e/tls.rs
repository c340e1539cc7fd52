//! HTTPS served by the real server binary with rustls, certificates made in the test by
//! rcgen under a test CA: `/health` and a sync round over TLS, a client that does not
//! trust the CA is refused, and the certificate is replaced without a restart (SIGHUP, or
//! a change of its files) while a request in flight on the old one completes.
//!
//! The client side is tokio-rustls speaking raw HTTP/1.1, trusting only the test CA (the
//! sync client's own TLS support is built elsewhere).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use roster_e2e::{TWO_TABLE_CONFIG, TestServer};
use roster_protocol::PROTOCOL_VERSION;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The host name the server's certificates are issued for.
const HOST: &str = "localhost";

/// A certificate authority made for one test.
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Self { params, key, der }
    }

    /// Issues a server certificate for [`HOST`] with a fresh key and writes it as the
    /// PEM files `cert` and `key`; returns the certificate's DER.
    fn issue_into(&self, cert: &Path, key: &Path) -> Vec<u8> {
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = CertificateParams::new(vec![HOST.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        // Key first: a server polling the files never pairs the new certificate with
        // the old key (it would keep the old pair until both changed anyway).
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        leaf.der().to_vec()
    }

    /// A TLS client trusting only this CA. It never resumes a session, so every
    /// connection sees the certificate the server presents now (a resumed session
    /// reports the one it was first authenticated with).
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

/// A server over TLS and the dir its certificate and key are read from.
struct TlsServer {
    server: TestServer,
    files: tempfile::TempDir,
}

impl TlsServer {
    /// Starts a server with a certificate from `ca`, reloading its files every
    /// `poll_secs`; returns it and the certificate's DER.
    fn start(ca: &TestCa, poll_secs: u64) -> (Self, Vec<u8>) {
        let files = tempfile::tempdir().unwrap();
        let (cert, key) = (
            files.path().join("server.crt"),
            files.path().join("server.key"),
        );
        let der = ca.issue_into(&cert, &key);
        let config = format!(
            "tls_cert = {cert:?}\ntls_key = {key:?}\ntls_reload_poll_secs = {poll_secs}\n{TWO_TABLE_CONFIG}"
        );
        let server = TestServer::start_with_config(&config);
        (Self { server, files }, der)
    }

    /// Replaces the certificate and key with a new pair from `ca`; returns its DER.
    fn replace_certificate(&self, ca: &TestCa) -> Vec<u8> {
        let dir = self.files.path();
        ca.issue_into(&dir.join("server.crt"), &dir.join("server.key"))
    }
}

/// Opens a TLS connection to `server` as [`HOST`]; returns it and the certificate the
/// server presented (DER).
async fn connect(
    connector: &TlsConnector,
    server: &TestServer,
) -> std::io::Result<(TlsStream<TcpStream>, Vec<u8>)> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let stream = connector
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((stream, leaf))
}

/// The head of an HTTP/1.1 request that closes the connection after its answer.
fn head(method: &str, path: &str, token: &str, body_len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
}

/// Reads an answer to its end; returns the status and the JSON body.
async fn read_answer(stream: &mut TlsStream<TcpStream>) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify ends the stream with an error.
            Ok(Err(_)) if !raw.is_empty() => break,
            Ok(Err(error)) => panic!("reading the answer failed: {error}"),
            Err(_) => panic!("no complete answer within 10 s"),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// One request on a new connection; returns the status, the JSON body and the
/// certificate the server presented.
async fn request(
    connector: &TlsConnector,
    server: &TestServer,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value, Vec<u8>) {
    let (mut stream, leaf) = connect(connector, server).await.unwrap();
    let request = format!("{}{body}", head(method, path, server.token(), body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, answer) = read_answer(&mut stream).await;
    (status, answer, leaf)
}

/// A sync request inserting one person named `name`.
fn insert_request(name: &str) -> String {
    json!({
        "protocol": PROTOCOL_VERSION,
        "client_id": uuid::Uuid::now_v7(),
        "since": 0,
        "changes": [{"table": "person", "id": uuid::Uuid::now_v7(), "op": "insert",
                     "fields": {"name": name}}],
        "pull_limit": 100,
    })
    .to_string()
}

/// Waits until a new connection is served `expected`, for at most `limit`.
async fn await_certificate(
    connector: &TlsConnector,
    server: &TestServer,
    expected: &[u8],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let (_, leaf) = connect(connector, server).await.unwrap();
        if leaf == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still get the old certificate after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_and_a_sync_round_are_served_over_https_with_a_custom_ca() {
    let ca = TestCa::new("Roster test CA");
    let (tls, der) = TlsServer::start(&ca, 3600);
    let server = &tls.server;
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let connector = ca.connector();

    let (status, health, leaf) = request(&connector, server, "GET", "/health", "").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    assert_eq!(leaf, der);

    let (status, answer, _) = request(
        &connector,
        server,
        "POST",
        "/v1/sync",
        &insert_request("Ada"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acks"].as_array().unwrap().len(), 1, "{answer}");
    let (_, pulled, _) = request(
        &connector,
        server,
        "POST",
        "/v1/sync",
        &json!({"protocol": PROTOCOL_VERSION, "client_id": uuid::Uuid::now_v7(),
                "since": 0, "changes": [], "pull_limit": 100})
        .to_string(),
    )
    .await;
    assert_eq!(
        pulled["changes"][0]["fields"]["name"],
        json!("Ada"),
        "{pulled}"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let ca = TestCa::new("Roster test CA");
    let (tls, _) = TlsServer::start(&ca, 3600);
    let server = &tls.server;
    let stranger = TestCa::new("Some other CA");
    let Err(error) = connect(&stranger.connector(), server).await else {
        panic!("a handshake with an untrusted certificate must fail");
    };
    assert!(
        error.to_string().to_lowercase().contains("unknownissuer")
            || error.to_string().to_lowercase().contains("unknown issuer"),
        "{error}"
    );
    // A plain-HTTP request to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr()).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// SIGHUP: new connections get the new certificate (same host, new key), while a sync
/// request sent half before and half after the reload completes on the old one.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_a_request_in_flight() {
    let ca = TestCa::new("Roster test CA");
    // Polling off (an hour): only the signal can reload here.
    let (tls, first) = TlsServer::start(&ca, 3600);
    let server = &tls.server;
    let connector = ca.connector();

    let (mut in_flight, leaf) = connect(&connector, server).await.unwrap();
    assert_eq!(leaf, first);
    let body = insert_request("Sent across a reload");
    let (before, after) = body.split_at(body.len() / 2);
    in_flight
        .write_all(
            format!(
                "{}{before}",
                head("POST", "/v1/sync", server.token(), body.len())
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    in_flight.flush().await.unwrap();

    let second = tls.replace_certificate(&ca);
    assert_ne!(first, second);
    let (_, unchanged) = connect(&connector, server).await.unwrap();
    assert_eq!(
        unchanged, first,
        "reloaded without a signal although polling is off"
    );
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    await_certificate(&connector, server, &second, Duration::from_secs(10)).await;

    in_flight.write_all(after.as_bytes()).await.unwrap();
    let (status, answer) = read_answer(&mut in_flight).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acks"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(
        in_flight.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        first.as_slice()
    );
    let (status, health, leaf) = request(&connector, server, "GET", "/health", "").await;
    assert_eq!(
        (status, health["status"].as_str(), leaf),
        (200, Some("ok"), second)
    );
}

/// Without a signal, a change of the files is picked up by polling (every second here).
#[tokio::test]
async fn changed_certificate_files_are_picked_up_without_a_signal() {
    let ca = TestCa::new("Roster test CA");
    let (tls, first) = TlsServer::start(&ca, 1);
    let server = &tls.server;
    let connector = ca.connector();
    let second = tls.replace_certificate(&ca);
    assert_ne!(first, second);
    await_certificate(&connector, server, &second, Duration::from_secs(10)).await;
}
