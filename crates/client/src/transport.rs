//! HTTP calls to the sync service. Network failures become
//! [`ClientError::Unreachable`]; a refused token [`ClientError::Unauthorized`], a refused
//! data set [`ClientError::Forbidden`]; other error answers become
//! [`ClientError::Server`] with the server's code and message.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use roster_protocol::{
    ApiError, CONFLICTS_PATH, ConflictLogEntry, DATASET_HEADER, HEALTH_PATH, SCHEMA_PATH,
    SYNC_PATH, Schema, SyncRequest, SyncResponse,
};
use serde::de::DeserializeOwned;

use crate::ClientError;

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

/// Client for one sync service. Clones share the token, so [`HttpTransport::set_token`]
/// reaches every clone.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base: String,
    token: Arc<RwLock<Option<String>>>,
    dataset: Option<String>,
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

impl HttpTransport {
    /// A transport for `base_url` whose requests give up after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let base = normalise_server_url(base_url)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::BadInput(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token: Arc::new(RwLock::new(None)),
            dataset: None,
        })
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

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: error.to_string(),
        }
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("cannot decode answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(api) if status == reqwest::StatusCode::UNAUTHORIZED => {
                Err(ClientError::Unauthorized(api.error.message))
            }
            Ok(api) if status == reqwest::StatusCode::FORBIDDEN => {
                Err(ClientError::Forbidden(api.error.message))
            }
            Ok(api) => Err(ClientError::Server {
                status: status.as_u16(),
                code: api.error.code,
                message: api.error.message,
            }),
            Err(_) => Err(ClientError::Protocol(format!(
                "status {status} with body {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
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

    /// `POST /v1/sync`: one batch.
    pub async fn sync(&self, request: &SyncRequest) -> Result<SyncResponse, ClientError> {
        let response = self
            .request(reqwest::Method::POST, SYNC_PATH)
            .json(request)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.decode(response).await
    }
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
