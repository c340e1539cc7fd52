//! HTTP calls to the sync service. Network failures become
//! [`ClientError::Unreachable`]; error answers become [`ClientError::Server`] with the
//! server's code and message.

use std::time::Duration;

use roster_protocol::{
    ApiError, CONFLICTS_PATH, ConflictLogEntry, HEALTH_PATH, SCHEMA_PATH, SYNC_PATH, Schema,
    SyncRequest, SyncResponse,
};
use serde::de::DeserializeOwned;

use crate::ClientError;

/// Client for one sync service.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base: String,
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
        Ok(Self { http, base })
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
            .http
            .get(format!("{}{path}", self.base))
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
            .http
            .post(format!("{}{SYNC_PATH}", self.base))
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
}
