//! The HTTP face of the service: routes, request decoding, and mapping of every failure
//! to a status code plus an [`ApiError`] JSON body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_protocol::{
    ApiError, CONFLICTS_PATH, ConflictLogEntry, ErrorCode, HEALTH_PATH, PROTOCOL_VERSION,
    SCHEMA_PATH, SYNC_PATH, Schema, SyncRequest, SyncResponse,
};
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::resolve::{ConflictHandler, Resolver};
use crate::store::{StoreError, SyncStore};
use crate::validate::validate_request;

/// The data set every request uses until accounts exist (issue 6).
const DEFAULT_DATASET: &str = "default";

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn SyncStore>,
    schema: Arc<Schema>,
    resolver: Arc<Resolver>,
}

impl AppState {
    /// State for `config`'s tables over `store`, resolving conflicts by the config.
    pub fn new(store: Arc<dyn SyncStore>, config: &ServerConfig) -> Self {
        Self {
            store,
            schema: Arc::new(config.schema()),
            resolver: Arc::new(Resolver::new(config)),
        }
    }

    /// The same state with `handler` deciding conflicts before the config's rules. With a
    /// handler, sync rounds become atomic so that it can roll one back.
    pub fn with_handler(mut self, handler: Arc<dyn ConflictHandler>) -> Self {
        let resolver = self.resolver.as_ref().clone().with_handler(handler);
        self.resolver = Arc::new(resolver);
        self
    }
}

/// An error response: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct HttpError(StatusCode, ApiError);

impl HttpError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(status_of(code), ApiError::new(code, message))
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self(status_of(error.error.code), error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// The status code that goes with an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedRequest => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnknownTable
        | ErrorCode::UnknownColumn
        | ErrorCode::InvalidValue
        | ErrorCode::InvalidChange => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnsupportedProtocol => StatusCode::BAD_REQUEST,
        ErrorCode::ResetRequired => StatusCode::GONE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::ResetRequired { .. } => {
                HttpError::new(ErrorCode::ResetRequired, error.to_string())
            }
            StoreError::ConcurrentWrite { .. } | StoreError::Unavailable(_) => {
                tracing::warn!(%error, "sync request failed, retryable");
                HttpError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiError::new(ErrorCode::Internal, error.to_string()),
                )
            }
            StoreError::Invalid(message) => {
                HttpError::new(ErrorCode::InvalidChange, message.clone())
            }
            StoreError::Handler(_) => {
                tracing::error!(%error, "conflict handler failed");
                HttpError::new(ErrorCode::Internal, format!("{error}; nothing was changed"))
            }
            StoreError::Corrupt(_) | StoreError::Database(_) => {
                tracing::error!(%error, "sync request failed");
                HttpError::new(
                    ErrorCode::Internal,
                    "the server failed to apply the request; nothing was changed",
                )
            }
        }
    }
}

/// The service's router, with the body limit from `max_body_bytes`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(SCHEMA_PATH, get(schema))
        .route(SYNC_PATH, post(sync))
        .route(CONFLICTS_PATH, get(conflicts))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, HttpError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.ping())
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "protocol": PROTOCOL_VERSION,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn schema(State(state): State<AppState>) -> Json<Schema> {
    Json(state.schema.as_ref().clone())
}

async fn not_found() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that HTTP method",
    )
}

async fn sync(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SyncResponse>, HttpError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                ErrorCode::PayloadTooLarge,
                "request body is larger than this server accepts; send smaller batches",
            )
        } else {
            HttpError::new(ErrorCode::MalformedRequest, rejection.body_text())
        }
    })?;
    let request: SyncRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::new(
            ErrorCode::MalformedRequest,
            format!("invalid sync request: {e}"),
        )
    })?;
    validate_request(&request, &state.schema)?;
    let store = state.store.clone();
    let resolver = state.resolver.clone();
    let response =
        tokio::task::spawn_blocking(move || store.sync(DEFAULT_DATASET, &request, &resolver))
            .await
            .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(response))
}

/// Query of the conflict history endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct ConflictQuery {
    /// Most entries to return (1 to 1000, default 100).
    limit: Option<u32>,
    /// Only entries older than this log position.
    before: Option<u64>,
}

async fn conflicts(
    State(state): State<AppState>,
    query: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ConflictLogEntry>>, HttpError> {
    let Query(query) =
        query.map_err(|e| HttpError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::new(
            ErrorCode::MalformedRequest,
            "limit must be between 1 and 1000",
        ));
    }
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || {
        store.conflict_log(DEFAULT_DATASET, limit, query.before)
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(entries))
}
