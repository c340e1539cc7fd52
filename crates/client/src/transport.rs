//! HTTP(S) calls to the sync service. Network failures become
//! [`ClientError::Unreachable`]; a certificate the client cannot trust
//! [`ClientError::Tls`] (never retried, never retried over HTTP); a refused token
//! [`ClientError::Unauthorized`], a refused data set [`ClientError::Forbidden`]; a
//! redirect [`ClientError::Redirected`] (redirects are not followed); other error answers
//! become [`ClientError::Server`] with the server's code and message.
//!
//! TLS is rustls with the `ring` provider and the platform's roots (through
//! rustls-platform-verifier), plus an optional custom CA given as PEM. Cleartext
//! `http://` is refused except to loopback addresses unless
//! [`ConnectionSecurity::allow_cleartext`] is set. Every answer body is read with a size
//! cap ([`TransportOptions::max_response_bytes`]) and a read-idle timeout.
//!
//! The platform verifier is built once per process ([`platform_tls`]): on Linux it parses
//! the whole system CA bundle, which took most of the CPU of test runs that make many
//! transports, and costs every CLI command that syncs.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use roster_protocol::{
    ApiError, CHANGES_PATH, CONFLICTS_PATH, ConflictLogEntry, DATASET_HEADER, ErrorCode,
    HEALTH_PATH, MORE_AFTER_HEADER, PulledResponse, SCHEMA_PATH, SYNC_PATH, Schema, SyncRequest,
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::ClientError;

/// Default cap on the size of one answer body: far above the largest answer the protocol
/// allows (a pull page stops at about 4 MiB of row values and 5,000 rows; a push answer
/// holds at most 5,000 acks or conflicts).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Default read-idle timeout: an answer that sends no byte for this long fails.
pub const DEFAULT_READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time limit for opening a connection (TCP and TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs rustls's `ring` crypto provider as the process default, once. Every process
/// that builds a `reqwest::Client` must call it first (reqwest is built without a
/// provider of its own); [`HttpTransport`] does so itself.
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one in between: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The TLS configuration that trusts the platform's roots, as reqwest would build it
/// (rustls-platform-verifier, the process's crypto provider, HTTP/1.1 by ALPN), built on
/// first use and shared by every later transport of the process.
fn platform_tls() -> Result<rustls::ClientConfig, String> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("cannot load the platform's certificate roots: {e}"))?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot configure TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(config)
        })
        .clone()
}

/// Whom the device trusts and what it sends in cleartext. Stored with the local store
/// (see [`crate::local::LocalStore::connection_security`]) so every later command and
/// the app use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSecurity {
    /// PEM text of extra CA certificates trusted besides the platform's roots (for a
    /// self-hosted server).
    pub ca_cert_pem: Option<String>,
    /// Allows `http://` to hosts other than loopback addresses. Off by default: data and
    /// the token would cross the network readable by anyone on the path.
    pub allow_cleartext: bool,
}

/// Settings of one transport: trust, time limits and the answer size cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Trusted CA and cleartext policy.
    pub security: ConnectionSecurity,
    /// Time limit of one whole request, answer included.
    pub request_timeout: Duration,
    /// Time limit for connecting (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// An answer that sends no byte for this long fails.
    pub read_idle_timeout: Duration,
    /// Largest answer body accepted, whether declared by `Content-Length` or streamed.
    pub max_response_bytes: u64,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            security: ConnectionSecurity::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_idle_timeout: DEFAULT_READ_IDLE_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// What a device presents to the service: its bearer token and the data set it works on
/// (`None`: the token's user's own data set). `Debug` never prints the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Bearer token secret, as printed by `roster-server create-user` / `create-token`.
    pub token: Option<String>,
    /// Data set shared with the token's user to work on instead of its own.
    pub dataset: Option<String>,
}

impl Credentials {
    /// Credentials with `token` and the user's own data set.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            dataset: None,
        }
    }

    /// The same credentials working on `dataset`.
    pub fn with_dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = Some(dataset.into());
        self
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("dataset", &self.dataset)
            .finish()
    }
}

/// Closes the client it came from ([`crate::SyncClient::closer`]); holds nothing else of
/// it.
#[derive(Debug, Clone)]
pub struct Closer(CancellationToken);

impl Closer {
    /// Closes the transport and its clones for good: every request waiting on the
    /// server, and every later one, fails at once with [`ClientError::Closed`]. Only
    /// waits on the network are cut, so whoever drives a round still finishes its local
    /// work (an answer being applied) before the error reaches it.
    pub fn close(&self) {
        self.0.cancel();
    }
}

/// Client for one sync service. Clones share the token, so [`HttpTransport::set_token`]
/// reaches every clone, and [`Closer::close`] closes every clone.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base: String,
    token: Arc<RwLock<Option<String>>>,
    dataset: Option<String>,
    /// The URL, when the cleartext rule refuses it: requests then fail before sending.
    refused: Option<String>,
    max_response_bytes: u64,
    /// Cancelled by [`Closer::close`], for this transport and its clones.
    closed: CancellationToken,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .field("dataset", &self.dataset)
            .finish_non_exhaustive()
    }
}

/// Checks `url` is an absolute http(s) URL and returns it without a trailing slash.
pub fn normalise_server_url(url: &str) -> Result<String, ClientError> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| ClientError::BadInput(format!("invalid server URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ClientError::BadInput(format!(
            "invalid server URL {url:?}: use http://host:port or https://host:port"
        )));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// The cleartext rule shared by the CLI and the app: `http://` is allowed only to a
/// loopback address, or when `allow_cleartext` is set. `https://` is always allowed.
pub fn check_cleartext(url: &str, allow_cleartext: bool) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::BadInput(format!("invalid server URL {url:?}: {e}")))?;
    if parsed.scheme() == "http" && !allow_cleartext && !is_loopback(&parsed) {
        return Err(ClientError::CleartextRefused {
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// The extra CA certificates in `pem`; an error when it holds none or cannot be read.
fn parse_ca_pem(pem: &str) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| ClientError::BadInput(format!("invalid CA certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::BadInput(
            "invalid CA certificate: no PEM `CERTIFICATE` block found".into(),
        ));
    }
    Ok(certs)
}

/// Checks that `pem` holds at least one usable CA certificate.
pub fn check_ca_pem(pem: &str) -> Result<(), ClientError> {
    parse_ca_pem(pem).map(|_| ())
}

impl HttpTransport {
    /// A transport for `base_url` whose requests give up after `timeout` (other settings:
    /// [`TransportOptions::default`]).
    #[cfg(test)]
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_options(
            base_url,
            &TransportOptions {
                request_timeout: timeout,
                ..TransportOptions::default()
            },
        )
    }

    /// A transport for `base_url` with `options`. A cleartext URL the policy refuses
    /// does not fail here (the local store stays usable offline): every request fails
    /// with [`ClientError::CleartextRefused`] before anything is sent.
    pub fn with_options(base_url: &str, options: &TransportOptions) -> Result<Self, ClientError> {
        install_tls_provider();
        let base = normalise_server_url(base_url)?;
        let refused = check_cleartext(&base, options.security.allow_cleartext)
            .is_err()
            .then(|| base.clone());
        let mut builder = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_idle_timeout)
            .redirect(reqwest::redirect::Policy::none());
        builder = match &options.security.ca_cert_pem {
            Some(pem) => builder.tls_certs_merge(parse_ca_pem(pem)?),
            None => builder.use_preconfigured_tls(platform_tls().map_err(|reason| {
                ClientError::Tls {
                    url: base.to_string(),
                    reason,
                }
            })?),
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::BadInput(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token: Arc::new(RwLock::new(None)),
            dataset: None,
            refused,
            max_response_bytes: options.max_response_bytes,
            closed: CancellationToken::new(),
        })
    }

    /// A handle that closes this transport ([`Closer::close`]) without keeping anything
    /// else of it.
    pub fn closer(&self) -> Closer {
        Closer(self.closed.clone())
    }

    /// Waits for `io` unless the transport is closed first.
    async fn until_closed<T, E>(
        &self,
        io: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, ClientError> {
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(ClientError::Closed),
            result = io => Ok(result),
        }
    }

    /// The same transport presenting `credentials` on every request.
    pub fn with_credentials(mut self, credentials: &Credentials) -> Self {
        self.token = Arc::new(RwLock::new(credentials.token.clone()));
        self.dataset = credentials.dataset.clone();
        self
    }

    /// The credentials this transport presents now.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            token: self
                .token
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            dataset: self.dataset.clone(),
        }
    }

    /// Replaces the bearer token (for this transport and its clones).
    pub fn set_token(&self, token: Option<String>) {
        *self
            .token
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = token;
    }

    /// A request to `path` carrying the credentials.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        let token = self
            .token
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(dataset) = &self.dataset {
            builder = builder.header(DATASET_HEADER, dataset);
        }
        builder
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Maps a failure in transit: a certificate problem is [`ClientError::Tls`], anything
    /// else [`ClientError::Unreachable`].
    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        if let Some(reason) = tls_failure(error) {
            return ClientError::Tls {
                url: self.base.clone(),
                reason,
            };
        }
        let reason = if error.is_timeout() {
            format!("no answer in time ({error})")
        } else {
            error_chain(error)
        };
        ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Sends `request`, unless the cleartext policy refuses this server.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(refused) = &self.refused {
            return Err(ClientError::CleartextRefused {
                url: refused.clone(),
            });
        }
        // invariant: every request leaves through here, and every body is read through
        // `read_body` or `next_chunk`, so a closed transport waits on nothing.
        self.until_closed(request.send())
            .await?
            .map_err(|e| self.unreachable(&e))
    }

    /// Reads the whole body, failing once it passes the size cap (declared or streamed).
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let max = self.max_response_bytes;
        // The header itself: a compressed body's size hint is unknown, but a compressed
        // body larger than the cap decompresses to more still.
        let declared = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| response.content_length());
        if let Some(declared) = declared
            && declared > max
        {
            return Err(ClientError::Protocol(format!(
                "the answer declares {declared} bytes, more than the {max}-byte limit"
            )));
        }
        let read = async {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
                if body.len() as u64 + chunk.len() as u64 > max {
                    return Err(ClientError::Protocol(format!(
                        "the answer is larger than the {max}-byte limit"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        self.until_closed(read).await?
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(ClientError::Redirected {
                status: status.as_u16(),
                location: location.unwrap_or_else(|| "(no Location header)".into()),
            });
        }
        let body = self.read_body(response).await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("cannot decode answer: {e}")));
        }
        let api = serde_json::from_slice::<ApiError>(&body).ok();
        // 401 and 403 mean the same whoever answered (the server or a proxy in front).
        let message = |api: Option<ApiError>| match api {
            Some(api) => api.error.message,
            None => format!("HTTP {status}: {}", body_excerpt(&body)),
        };
        match (status, api) {
            (reqwest::StatusCode::UNAUTHORIZED, Some(api))
                if api.error.code == ErrorCode::TokenExpired =>
            {
                Err(ClientError::TokenExpired(api.error.message))
            }
            (reqwest::StatusCode::UNAUTHORIZED, api) => {
                Err(ClientError::Unauthorized(message(api)))
            }
            (reqwest::StatusCode::FORBIDDEN, api) => Err(ClientError::Forbidden(message(api))),
            (_, Some(api)) => Err(ClientError::Server {
                status: status.as_u16(),
                code: api.error.code,
                message: api.error.message,
            }),
            (_, None) => Err(ClientError::Protocol(format!(
                "status {status} with body {:?}",
                body_excerpt(&body)
            ))),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(self.request(reqwest::Method::GET, path)).await?;
        self.decode(response).await
    }

    /// `GET /health`: succeeds when the service and its store answer.
    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.get(HEALTH_PATH).await
    }

    /// `GET /v1/schema`: the tables the service syncs.
    pub async fn schema(&self) -> Result<Schema, ClientError> {
        self.get(SCHEMA_PATH).await
    }

    /// `GET /v1/schema` with the server's version of it (0 from a server that does not
    /// version its schema).
    pub async fn versioned_schema(&self) -> Result<roster_protocol::VersionedSchema, ClientError> {
        self.get(SCHEMA_PATH).await
    }

    /// `GET /v1/conflicts`: the server's conflict log, newest first.
    pub async fn conflict_log(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ConflictLogEntry>, ClientError> {
        let mut path = format!("{CONFLICTS_PATH}?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        self.get(&path).await
    }

    /// `POST /v1/sync`: one batch. `on_more` is called with the answer's
    /// [`MORE_AFTER_HEADER`] as soon as its head arrives, before the body is read.
    pub async fn sync(
        &self,
        request: &SyncRequest,
        on_more: impl FnOnce(u64),
    ) -> Result<PulledResponse, ClientError> {
        let response = self
            .send(self.request(reqwest::Method::POST, SYNC_PATH).json(request))
            .await?;
        let more_after = response
            .headers()
            .get(MORE_AFTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(watermark) = more_after
            && response.status().is_success()
        {
            on_more(watermark);
        }
        self.decode(response).await
    }
}

/// The protocol-version header of the Azure Mobile Apps table protocol.
const ZUMO_API_VERSION: (&str, &str) = ("zumo-api-version", "2.0.0");

/// The answer of an Azure Mobile Apps table request whose status the AMA driver reads
/// (2xx, 404, 409, 412): the status and the JSON body, if any.
#[derive(Debug)]
pub(crate) struct TableAnswer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body as JSON (`None` when empty).
    pub(crate) body: Option<serde_json::Value>,
}

impl HttpTransport {
    /// A request of the Azure Mobile Apps table protocol to `path` (`/tables/...`) with
    /// `query`, `If-Match: "<version>"` and a JSON body. The token goes as
    /// `X-ZUMO-AUTH` (an AMA backend's header) besides `Authorization: Bearer`. A 2xx,
    /// 404, 409 or 412 is returned for the driver to read; 401 and 403 map as for
    /// `/v1/*`, anything else is [`ClientError::Server`] (5xx and 429 are transient).
    pub(crate) async fn table_request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        if_match: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<TableAnswer, ClientError> {
        let mut target = path.to_owned();
        if !query.is_empty() {
            let mut encoder = reqwest::Url::parse("http://query.invalid/")
                .map_err(|e| ClientError::BadInput(e.to_string()))?;
            encoder.query_pairs_mut().extend_pairs(query);
            target.push('?');
            target.push_str(encoder.query().unwrap_or_default());
        }
        let mut request = self
            .request(method, &target)
            .header(ZUMO_API_VERSION.0, ZUMO_API_VERSION.1)
            .header(reqwest::header::ACCEPT, "application/json");
        let token = self.credentials().token;
        if let Some(token) = token {
            request = request.header("x-zumo-auth", token);
        }
        if let Some(version) = if_match {
            let quoted = format!("\"{}\"", version.replace('"', "\\\""));
            request = request.header(reqwest::header::IF_MATCH, quoted);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let bytes = self.read_body(response).await?;
        let code = status.as_u16();
        if status.is_success() || matches!(code, 404 | 409 | 412) {
            let body = if bytes.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match serde_json::from_slice(&bytes) {
                    Ok(value) => Some(value),
                    // A 404 of a gateway or a plain-text error page: no item.
                    Err(_) if !status.is_success() => None,
                    Err(e) => {
                        return Err(ClientError::Protocol(format!(
                            "cannot decode the answer of {path}: {e}"
                        )));
                    }
                }
            };
            return Ok(TableAnswer { status: code, body });
        }
        let message = format!("HTTP {status} from {path}: {}", body_excerpt(&bytes));
        Err(match code {
            401 => ClientError::Unauthorized(message),
            403 => ClientError::Forbidden(message),
            _ => ClientError::Server {
                status: code,
                code: if status.is_server_error() {
                    ErrorCode::Internal
                } else {
                    ErrorCode::MalformedRequest
                },
                message,
            },
        })
    }
}

/// Longest a change stream is held before it is opened anew (the whole-request timeout
/// of other requests would cut it; its read-idle timeout still applies, and the
/// server's keep-alives reset it).
pub const CHANGE_STREAM_LIFETIME: Duration = Duration::from_secs(6 * 3600);

impl HttpTransport {
    /// `GET /v1/changes`: opens the change feed; the answer's body is the event stream
    /// (see [`crate::watch`]). A refusal maps like any other request's.
    pub async fn open_changes(&self) -> Result<reqwest::Response, ClientError> {
        let request = self
            .request(reqwest::Method::GET, CHANGES_PATH)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(CHANGE_STREAM_LIFETIME);
        let response = self.send(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        match self.decode::<serde_json::Value>(response).await {
            Err(error) => Err(error),
            Ok(_) => Err(ClientError::Protocol(format!(
                "the change feed answered {status}"
            ))),
        }
    }

    /// The next piece of a streamed answer (`None` at its end).
    pub async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let chunk = self
            .until_closed(response.chunk())
            .await?
            .map_err(|e| self.unreachable(&e))?;
        Ok(chunk.map(|bytes| bytes.to_vec()))
    }

    /// [`ClientError::Unreachable`] for this server, saying `reason`.
    pub fn unreachable_because(&self, reason: &str) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// The first 200 bytes of a body, as text.
fn body_excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// The error and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The rustls error somewhere in `error`'s sources, looking inside `io::Error`s too
/// (their `source()` skips the error they wrap).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = err.source();
    }
    None
}

/// Why the TLS handshake failed, in words, when `error` is a TLS failure.
fn tls_failure(error: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as Cert;
    let tls = find_rustls_error(error)?;
    let reason = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => "the server's certificate is signed by an unknown \
                certificate authority (trust its CA with `--ca-cert`)"
                .to_owned(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for this host name ({cert})")
            }
            Cert::Expired | Cert::ExpiredContext { .. } => {
                format!("the server's certificate has expired ({cert})")
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                format!("the server's certificate is not valid yet ({cert})")
            }
            Cert::Revoked => "the server's certificate is revoked".to_owned(),
            other => format!("invalid server certificate: {other}"),
        },
        other => format!("TLS handshake failed: {other}"),
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            normalise_server_url("http://127.0.0.1:8787/").unwrap(),
            "http://127.0.0.1:8787"
        );
        assert!(normalise_server_url("127.0.0.1:8787").is_err());
        assert!(normalise_server_url("ftp://x").is_err());
        assert!(normalise_server_url("").is_err());
    }

    #[test]
    fn cleartext_is_allowed_only_to_loopback_unless_allowed() {
        for url in [
            "http://127.0.0.1:8787",
            "http://127.8.9.10",
            "http://[::1]:8787",
            "http://localhost:8787",
            "http://LOCALHOST",
            "http://app.localhost",
            "https://example.com",
            "https://192.0.2.1",
        ] {
            assert!(check_cleartext(url, false).is_ok(), "{url} is allowed");
        }
        for url in [
            "http://192.0.2.1:8787",
            "http://example.com",
            "http://localhost.example.com",
            "http://[2001:db8::1]",
            "http://10.0.0.1",
        ] {
            assert!(
                matches!(
                    check_cleartext(url, false),
                    Err(ClientError::CleartextRefused { .. })
                ),
                "{url} is refused"
            );
            assert!(check_cleartext(url, true).is_ok(), "{url} when allowed");
        }
    }

    #[tokio::test]
    async fn closing_ends_a_wait_on_a_server_that_never_answers_and_refuses_later_requests() {
        // A server that accepts connections and never answers a byte.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (accepted, first) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut accepted = Some(accepted);
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                if let Some(accepted) = accepted.take() {
                    let _ = accepted.send(());
                }
            }
        });
        let transport = HttpTransport::new(&url, Duration::from_secs(60)).expect("transport");
        let waiting = tokio::spawn({
            let transport = transport.clone();
            async move { transport.health().await }
        });
        first.await.expect("the request reached the server");

        transport.closer().close();
        let error = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("closing ends the wait at once, not after the 60 s timeout")
            .expect("task")
            .expect_err("no answer came");
        assert!(matches!(error, ClientError::Closed), "{error}");
        let later = transport
            .schema()
            .await
            .expect_err("a closed transport sends nothing");
        assert!(matches!(later, ClientError::Closed), "{later}");
        assert!(!later.is_transient(), "a closed client is not retried");
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_cleartext_server_gets_no_request() {
        // Nothing listens on this documentation address: a request sent would fail as
        // unreachable, not as refused.
        let transport = HttpTransport::new("http://192.0.2.1:9", Duration::from_secs(5)).unwrap();
        let error = transport.health().await.unwrap_err();
        assert!(
            matches!(error, ClientError::CleartextRefused { .. }),
            "{error:?}"
        );
        assert!(!error.is_transient());
    }

    #[test]
    fn a_ca_file_must_hold_a_pem_certificate() {
        assert!(matches!(check_ca_pem(""), Err(ClientError::BadInput(_))));
        assert!(matches!(
            check_ca_pem("not a certificate"),
            Err(ClientError::BadInput(_))
        ));
        let options = TransportOptions {
            security: ConnectionSecurity {
                ca_cert_pem: Some(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                ),
                allow_cleartext: false,
            },
            ..TransportOptions::default()
        };
        assert!(HttpTransport::with_options("https://127.0.0.1:1", &options).is_err());
    }

    #[test]
    fn tls_errors_are_not_transient() {
        let error = ClientError::Tls {
            url: "https://x".into(),
            reason: "unknown issuer".into(),
        };
        assert!(!error.is_transient());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let credentials = Credentials::token("rst_secret").with_dataset("team");
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("rst_secret"));
        assert!(shown.contains("team"));
        let transport = HttpTransport::new("http://127.0.0.1:9", Duration::from_secs(1))
            .unwrap()
            .with_credentials(&credentials);
        assert!(!format!("{transport:?}").contains("rst_secret"));
    }
}
