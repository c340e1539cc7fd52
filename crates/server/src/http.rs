//! The HTTP face of the service: routes, request decoding, and mapping of every failure
//! to a status code plus an [`ApiError`] JSON body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roster_protocol::{
    ApiError, CHANGES_PATH, CONFLICTS_PATH, ConflictLogEntry, DATASET_HEADER, ErrorCode,
    HEALTH_PATH, PROTOCOL_VERSION, READY_PATH, SCHEMA_PATH, SYNC_PATH, Schema, VersionedSchema,
};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::trace::TraceLayer;

use crate::accounts::{AccountError, AccountStore, TokenCheck, User, authenticate};
use crate::auth_limit::{Admission, AuthLimiter, AuthLimits};
use crate::config::ServerConfig;
use crate::feed::{Access, Feed, FeedLimits, Recheck, Stream};
use crate::quota::UserQuota;
use crate::resolve::{Resolver, ServerConflictHandler};
use crate::slices::Slices;
use crate::store::{StoreError, SyncStore};
use crate::telemetry;
use roster_protocol::validate::{RetiredColumns, decode_request_retiring};

/// The schema a server serves now, with what goes with it; replaced whole when a newer
/// stored version is found ([`ServerState::reload_schema`]).
struct Served {
    /// The schema, its version and the renames of its history.
    schema: VersionedSchema,
    /// Columns older versions declared: renamed ones moved, dropped ones removed from
    /// requests, not refused.
    retired: RetiredColumns,
    /// The conflict rules over this schema, carrying its version (the store refuses a
    /// request checked against an older version than it holds).
    resolver: Arc<Resolver>,
}

/// Shared state of the router.
#[derive(Clone)]
pub struct ServerState {
    store: Arc<dyn SyncStore>,
    accounts: Arc<dyn AccountStore>,
    /// The served schema, swapped whole when the store holds a newer version.
    served: Arc<std::sync::RwLock<Arc<Served>>>,
    /// The config's rules (and handler): what each served schema's rules derive from.
    rules: Arc<Resolver>,
    slices: Arc<Slices>,
    auth_limiter: Arc<AuthLimiter>,
    user_quota: Arc<UserQuota>,
    feed: Arc<Feed>,
}

impl ServerState {
    /// State for `config`'s tables over `store`, resolving conflicts by the config;
    /// every `/v1/*` request is authenticated and authorised against `accounts`.
    pub fn new(
        store: Arc<dyn SyncStore>,
        accounts: Arc<dyn AccountStore>,
        config: &ServerConfig,
    ) -> Self {
        let feed = Arc::new(Feed::new(store.changes(), FeedLimits::from_config(config)));
        let rules = Arc::new(Resolver::new(config));
        let served = Served {
            schema: VersionedSchema::new(0, config.schema()),
            retired: RetiredColumns::default(),
            resolver: rules.clone(),
        };
        Self {
            feed,
            store,
            accounts,
            served: Arc::new(std::sync::RwLock::new(Arc::new(served))),
            rules,
            slices: Arc::new(Slices::new(&config.subscriptions, &config.schema())),
            auth_limiter: Arc::new(AuthLimiter::new(AuthLimits::from_config(config))),
            user_quota: Arc::new(UserQuota::new(config.user_requests_per_minute)),
        }
    }

    /// The same state serving `schema` (its version and renames), moving or removing
    /// the values of `retired` columns in requests (see [`crate::schema_version`]).
    pub fn with_served_schema(self, schema: VersionedSchema, retired: RetiredColumns) -> Self {
        self.serve(schema, retired);
        self
    }

    /// Serves `schema` from now on, with rules derived from the config's.
    fn serve(&self, schema: VersionedSchema, retired: RetiredColumns) {
        let resolver = Arc::new(self.rules.for_served(&schema.schema, schema.version));
        let served = Arc::new(Served {
            schema,
            retired,
            resolver,
        });
        *self
            .served
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = served;
    }

    /// What is served now.
    fn served(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes the newest stored schema when it is newer than the one served: another
    /// instance started with a newer config, or an administrator ran `migrate`, since
    /// this one started. Blocks (reads the store): call it on a blocking thread.
    pub fn reload_schema(&self) -> Result<(), StoreError> {
        let serving = self.served().schema.version;
        if serving == 0 {
            return Ok(());
        }
        let Some((schema, retired)) = crate::schema_version::served(self.store.as_ref())? else {
            return Ok(());
        };
        if schema.version > serving {
            tracing::info!(
                from = serving,
                to = schema.version,
                "serving the newer schema another instance or a migration stored"
            );
            self.serve(schema, retired);
        }
        Ok(())
    }

    /// The change feed (closed when the server shuts down).
    pub fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// The store.
    pub(crate) fn store(&self) -> Arc<dyn SyncStore> {
        self.store.clone()
    }

    /// The tables served now.
    pub(crate) fn schema(&self) -> Schema {
        self.served().schema.schema.clone()
    }

    /// How conflicts are resolved (over the schema served now).
    pub(crate) fn resolver(&self) -> Arc<Resolver> {
        self.served().resolver.clone()
    }

    /// The same state with `handler` deciding conflicts before the config's rules. With a
    /// handler, sync rounds become atomic so that it can roll one back.
    pub fn with_handler(mut self, handler: Arc<dyn ServerConflictHandler>) -> Self {
        self.rules = Arc::new(self.rules.as_ref().clone().with_handler(handler));
        let served = self.served();
        self.serve(served.schema.clone(), served.retired.clone());
        self
    }
}

/// An error response: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct HttpError(StatusCode, ApiError);

impl HttpError {
    /// The error `code` with its status and `message`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(status_of(code), ApiError::new(code, message))
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self(status_of(error.error.code), error)
    }
}

/// Seconds a client is asked to wait after a 507 (storage full).
const STORAGE_FULL_RETRY_AFTER_SECS: u32 = 60;

/// Seconds a client is asked to wait after a 503 (the database is busy, restarting or
/// unreachable now).
const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = self.1.error.code;
        let mut response = match self.0 {
            StatusCode::INSUFFICIENT_STORAGE => (
                self.0,
                [(
                    header::RETRY_AFTER,
                    STORAGE_FULL_RETRY_AFTER_SECS.to_string(),
                )],
                Json(self.1),
            )
                .into_response(),
            StatusCode::SERVICE_UNAVAILABLE => (
                self.0,
                [(
                    header::RETRY_AFTER,
                    UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
                )],
                Json(self.1),
            )
                .into_response(),
            StatusCode::UNAUTHORIZED => (
                self.0,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"roster\"")],
                Json(self.1),
            )
                .into_response(),
            _ => (self.0, Json(self.1)).into_response(),
        };
        response.extensions_mut().insert(code);
        response
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
        ErrorCode::UnsupportedProtocol | ErrorCode::BadSubscription => StatusCode::BAD_REQUEST,
        ErrorCode::ResetRequired => StatusCode::GONE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::ResetRequired { .. } => {
                HttpError::new(ErrorCode::ResetRequired, error.to_string())
            }
            StoreError::ConcurrentWrite { .. }
            | StoreError::Unavailable(_)
            | StoreError::SchemaChanged { .. } => {
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
            StoreError::StorageFull(_) => {
                tracing::error!(%error, "sync request refused: storage full");
                HttpError::new(
                    ErrorCode::StorageFull,
                    "the server's storage is full; nothing was changed; retry later",
                )
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

impl From<AccountError> for HttpError {
    fn from(error: AccountError) -> Self {
        tracing::error!(%error, "account check failed");
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiError::new(ErrorCode::Internal, "cannot check credentials now; retry"),
        )
    }
}

/// Who a `/v1/*` request acts for: the authenticated user and the data set it may use,
/// put into the request's extensions by the authorisation layer. Handlers only ever
/// touch `dataset`.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The token's user.
    pub user: User,
    /// The data set the request works on (checked: owned by or shared with `user`).
    pub dataset: String,
}

/// The secret of an `Authorization: Bearer <secret>` header, else of an `X-ZUMO-AUTH`
/// header (how Azure Mobile Apps clients send it, see [`crate::tables`]), if there is one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let from_authorization = || {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, secret) = value.trim().split_once(' ')?;
        let secret = secret.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then(|| secret.to_owned())
    };
    from_authorization().or_else(|| {
        let secret = headers
            .get(crate::tables::ZUMO_AUTH_HEADER)?
            .to_str()
            .ok()?
            .trim();
        (!secret.is_empty()).then(|| secret.to_owned())
    })
}

fn unauthorized() -> HttpError {
    HttpError::new(
        ErrorCode::Unauthorized,
        "a valid bearer token is required (Authorization: Bearer <token>); the token is missing, unknown or revoked",
    )
}

fn forbidden() -> HttpError {
    HttpError::new(
        ErrorCode::Forbidden,
        "this token may not use that data set (or it does not exist)",
    )
}

/// The 429 of an address refused by the brute-force limit.
fn too_many_failures(retry_after: Duration) -> Response {
    too_many_requests(
        retry_after,
        "too many failed authentications from this address",
    )
}

/// A 429 `too_many_requests` saying `why`, with `Retry-After` in whole seconds (at
/// least 1).
fn too_many_requests(retry_after: Duration, why: &str) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Json(ApiError::new(
            ErrorCode::TooManyRequests,
            format!("{why}; retry in {secs} s"),
        )),
    )
        .into_response();
    response.extensions_mut().insert(ErrorCode::TooManyRequests);
    response
}

/// Who `secret` is and whether it may use `named` (its user's own data set when
/// `None`): the one check behind every `/v1/*` request and each re-check of an open
/// change stream. `authenticated` runs once the token is known valid, before the data
/// set is checked. Blocks (the store is read).
fn check_credentials(
    accounts: &dyn AccountStore,
    secret: &str,
    named: Option<String>,
    authenticated: impl FnOnce(),
) -> Result<Scope, HttpError> {
    let user = match authenticate(accounts, secret)? {
        TokenCheck::Valid(user) => user,
        TokenCheck::Expired => {
            return Err(HttpError::new(
                ErrorCode::TokenExpired,
                "the bearer token has expired; ask the administrator for a new one",
            ));
        }
        TokenCheck::Refused => return Err(unauthorized()),
    };
    authenticated();
    let dataset = named.unwrap_or_else(|| user.own_dataset().to_owned());
    if !accounts.may_use(&user, &dataset)? {
        tracing::warn!(user = %user.name, %dataset, "refused a data set");
        return Err(forbidden());
    }
    Ok(Scope { user, dataset })
}

/// Authenticates the bearer token and authorises the named data set (the user's own one
/// when no `x-roster-dataset` header is sent) before any `/v1/*` handler runs. Unknown
/// and foreign data sets get the same 403, so no one learns which data sets exist.
/// Failed authentications count against the client's address (see
/// [`crate::auth_limit`]): slowed, then refused with 429.
async fn authorise(
    State(state): State<ServerState>,
    mut request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let Some(secret) = bearer(request.headers()) else {
        telemetry::authentication_failed();
        return Err(unauthorized());
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(peer) = peer {
        if let Admission::Refuse(retry_after) = state.auth_limiter.admit(peer, &secret) {
            tracing::warn!(%peer, "refused: too many failed authentications");
            return Ok(too_many_failures(retry_after));
        }
    }
    let named = match request.headers().get(DATASET_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| forbidden())?.to_owned()),
    };
    let accounts = state.accounts.clone();
    let limiter = state.auth_limiter.clone();
    let token = secret.clone();
    let checked = tokio::task::spawn_blocking(move || {
        check_credentials(accounts.as_ref(), &token, named, || {
            limiter.succeeded(&token);
        })
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    let scope = match checked {
        Err(error) if error.0 == StatusCode::UNAUTHORIZED => {
            telemetry::authentication_failed();
            if let Some(peer) = peer {
                let delay = state.auth_limiter.failed(peer);
                tracing::warn!(%peer, "failed authentication");
                tokio::time::sleep(delay).await;
            }
            return Err(error);
        }
        checked => checked?,
    };
    if let Err(wait) = state.user_quota.check(&scope.user.name) {
        tracing::warn!(user = %scope.user.name, "refused: request quota used up");
        return Ok(too_many_requests(
            wait,
            "this user sent more requests than its quota allows",
        ));
    }
    request.extensions_mut().insert(scope);
    Ok(next.run(request).await)
}

/// Compresses answers for clients that accept it (`Accept-Encoding`), preferring zstd,
/// at the fastest level: a pull page of JSON shrinks several times for a few percent of
/// the CPU it took to build. Small bodies (under 1 KiB) are sent as they are.
fn response_compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024)))
}

/// How much of a request body the service reads, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes: a larger `Content-Length` is refused with 413
    /// before anything is read, and a body that grows past it while read too.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive (408 after that).
    pub read_timeout: Duration,
}

impl BodyLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            max_bytes: config.max_body_bytes,
            read_timeout: Duration::from_secs(config.body_read_timeout_secs),
        }
    }
}

fn payload_too_large() -> HttpError {
    HttpError::new(
        ErrorCode::PayloadTooLarge,
        "request body is larger than this server accepts; send smaller batches",
    )
}

/// Refuses a declared `Content-Length` above the limit before reading anything.
async fn refuse_oversized(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_bytes as u64) {
        return Err(payload_too_large());
    }
    Ok(next.run(request).await)
}

/// Reads the whole body (at most the limit) within the body-read timeout, so that a
/// client that declares a body and sends it slowly, or not at all, is answered 408 and
/// its connection freed; handlers then get the body already read. Runs after the
/// authorisation check: an unauthenticated body is never read.
async fn read_body_in_time(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        limits.read_timeout,
        axum::body::to_bytes(body, limits.max_bytes),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if is_length_limit(&error) => return Err(payload_too_large()),
        Ok(Err(error)) => {
            return Err(HttpError::new(
                ErrorCode::MalformedRequest,
                format!("cannot read the request body: {error}"),
            ));
        }
        Err(_) => {
            return Err(HttpError(
                StatusCode::REQUEST_TIMEOUT,
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!(
                        "the request body did not arrive within {} s",
                        limits.read_timeout.as_secs()
                    ),
                ),
            ));
        }
    };
    Ok(next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await)
}

/// Whether a body read failed on the length limit.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The route a path names, for metric labels: one of the service's paths, or `other`
/// (so a scan of random paths cannot grow the label set).
fn route_label(path: &str) -> &'static str {
    [
        SYNC_PATH,
        SCHEMA_PATH,
        CONFLICTS_PATH,
        CHANGES_PATH,
        HEALTH_PATH,
        READY_PATH,
    ]
    .into_iter()
    .find(|route| *route == path)
    .unwrap_or(if path.starts_with("/tables/") {
        "/tables"
    } else {
        "other"
    })
}

/// Times every request and counts error answers by their code (see
/// [`crate::telemetry`]); the outermost layer, so refusals by inner layers count too.
async fn measure(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = route_label(request.uri().path());
    let method = request.method().clone();
    let response = next.run(request).await;
    telemetry::request_answered(
        route,
        method.as_str(),
        response.status().as_u16(),
        response.extensions().get::<ErrorCode>().copied(),
        started.elapsed(),
    );
    response
}

/// The service's router, with the body `limits`. `/health` and `/ready` are open; every
/// `/v1/*` route and the table protocol's `/tables/*` ([`crate::tables`]) require a
/// bearer token (see [`Scope`]).
pub fn router(state: ServerState, limits: BodyLimits) -> Router {
    let v1 = Router::new()
        .route(SCHEMA_PATH, get(schema))
        .route(SYNC_PATH, post(sync))
        .route(CONFLICTS_PATH, get(conflicts))
        .route(CHANGES_PATH, get(changes))
        .merge(crate::tables::routes())
        .route_layer(middleware::from_fn_with_state(limits, read_body_in_time))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise));
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(READY_PATH, get(ready))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_bytes))
        .layer(middleware::from_fn_with_state(limits, refuse_oversized))
        .layer(response_compression())
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(measure))
        .with_state(state)
}

async fn health(State(state): State<ServerState>) -> Result<Json<serde_json::Value>, HttpError> {
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

/// `/ready`: the database answers and its migrations are done (503 with `Retry-After`
/// otherwise), so a load balancer sends requests only to an instance that can serve
/// them. `/health` only says the process is alive.
async fn ready(State(state): State<ServerState>) -> Result<Json<serde_json::Value>, HttpError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.ready())
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|error| {
            tracing::warn!(%error, "not ready");
            HttpError(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::new(ErrorCode::Internal, format!("not ready: {error}")),
            )
        })?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// `GET /v1/schema`: the newest stored schema (read again here: a device asks after an
/// answer named a newer version than it holds, which may have come from another
/// instance), with the renames of its history.
async fn schema(State(state): State<ServerState>) -> Result<Json<VersionedSchema>, HttpError> {
    let reloading = state.clone();
    tokio::task::spawn_blocking(move || reloading.reload_schema())
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(state.served().schema.clone()))
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
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large()
        } else {
            HttpError::new(ErrorCode::MalformedRequest, rejection.body_text())
        }
    })?;
    let mut served = state.served();
    let mut decoded = decode_request_retiring(&body, &served.schema.schema, &served.retired);
    if decoded
        .as_ref()
        .is_err_and(|e| e.error.code != ErrorCode::MalformedRequest)
    {
        // A device that follows a newer schema than this instance has seen (another
        // instance stored it): take it, then check the request against it.
        let reloading = state.clone();
        tokio::task::spawn_blocking(move || reloading.reload_schema())
            .await
            .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
        let now = state.served();
        if now.schema.version != served.schema.version {
            decoded = decode_request_retiring(&body, &now.schema.schema, &now.retired);
            served = now;
        }
    }
    let (request, discarded) = decoded?;
    for value in &discarded {
        tracing::info!(table = %value.table, id = %value.id, column = %value.column,
            "discarded the value of a dropped column from a device that has not followed the drop yet");
    }
    // Subscriptions filter inside the data set `authorise` let the user use; `:user` is
    // bound here, to the token's user. A bad one is refused before the store is touched.
    let slice = request
        .slice
        .as_ref()
        .map(|s| {
            state
                .slices
                .resolve(&s.subscriptions, s.backfill, &scope.user.name)
        })
        .transpose()?;
    let store = state.store.clone();
    let resolver = served.resolver.clone();
    let schema_version = served.schema.version;
    // Encoded on the blocking thread too: a pull page's rows are copied into the body as
    // stored, never decoded (see `store::Answer`).
    let (body, more_after) = tokio::task::spawn_blocking(move || {
        let answer = store.sync_answer_in(&scope.dataset, &request, &resolver, slice.as_ref());
        if let Err(StoreError::SchemaChanged { .. }) = &answer {
            // Served from the next request on; this one is retried by the device.
            state.reload_schema()?;
        }
        let mut answer = answer?;
        answer.schema_version = schema_version;
        let body = serde_json::to_vec(&answer)
            .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
        Ok::<_, HttpError>((body, answer.more_after()))
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(watermark) = more_after {
        // The device may ask for the next page before it reads this one.
        response.headers_mut().insert(
            roster_protocol::MORE_AFTER_HEADER,
            header::HeaderValue::from(watermark),
        );
    }
    Ok(response)
}

/// Seconds a device refused for too many open streams is asked to wait.
const STREAMS_FULL_RETRY_AFTER_SECS: u32 = 30;

/// `GET /v1/changes`: the change feed of the request's data set (see [`crate::feed`]).
/// The authorisation layer has checked token and data set; the stream checks them again
/// on a timer and before each notification, and ends once they are refused.
async fn changes(
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let Some(permit) = state.feed.admit() else {
        tracing::warn!(user = %scope.user.name, "refused a change stream: too many open");
        let mut refused = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                STREAMS_FULL_RETRY_AFTER_SECS.to_string(),
            )],
            Json(ApiError::new(
                ErrorCode::Internal,
                "this server holds as many change streams as it may; retry later or poll",
            )),
        )
            .into_response();
        refused.extensions_mut().insert(ErrorCode::Internal);
        return Ok(refused);
    };
    // Subscribed before the version is read: a commit in between is announced to it.
    let changes = state.feed.hub().subscribe(&scope.dataset);
    let store = state.store.clone();
    let dataset = scope.dataset.clone();
    let current = tokio::task::spawn_blocking(move || store.newest_version(&dataset))
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    let secret = bearer(&headers).ok_or_else(unauthorized)?;
    let named = headers
        .get(DATASET_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let accounts = state.accounts.clone();
    let user = scope.user.name.clone();
    let recheck: Recheck = Arc::new(move || {
        let accounts = accounts.clone();
        let secret = secret.clone();
        let named = named.clone();
        let user = user.clone();
        Box::pin(async move {
            let checked = tokio::task::spawn_blocking(move || {
                check_credentials(accounts.as_ref(), &secret, named, || ())
            })
            .await;
            match checked {
                Ok(Err(refused))
                    if matches!(refused.0, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
                {
                    tracing::info!(%user, "closed a change stream: credentials refused");
                    Access::Refused
                }
                // The account store cannot answer now: the stream stays, checked later.
                _ => Access::Allowed,
            }
        })
    });
    tracing::debug!(user = %scope.user.name, dataset = %scope.dataset, current, "change stream opened");
    Ok(Stream::new(&state.feed, changes, current, recheck, permit).into_response())
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
    State(state): State<ServerState>,
    Extension(scope): Extension<Scope>,
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
        store.conflict_log(&scope.dataset, limit, query.before)
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(entries))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_bearer_credentials_are_taken() {
        assert_eq!(
            bearer(&headers("Bearer rst_abc")).as_deref(),
            Some("rst_abc")
        );
        assert_eq!(
            bearer(&headers("bearer  rst_abc ")).as_deref(),
            Some("rst_abc")
        );
        assert_eq!(bearer(&headers("Basic rst_abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("rst_abc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        let mut zumo = HeaderMap::new();
        zumo.insert("x-zumo-auth", HeaderValue::from_static("rst_zumo"));
        assert_eq!(bearer(&zumo).as_deref(), Some("rst_zumo"));
    }

    #[test]
    fn a_busy_or_unreachable_database_is_a_503_with_retry_after_never_a_500() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let locked = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED),
            None,
        );
        for error in [
            StoreError::from(busy),
            StoreError::from(locked),
            StoreError::Unavailable("connection refused".into()),
        ] {
            let response = HttpError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).unwrap(),
                &UNAVAILABLE_RETRY_AFTER_SECS.to_string()
            );
            assert_eq!(
                response.extensions().get::<ErrorCode>(),
                Some(&ErrorCode::Internal)
            );
        }
    }

    #[test]
    fn refusals_have_their_status_and_a_bearer_challenge() {
        assert_eq!(status_of(ErrorCode::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(ErrorCode::Forbidden), StatusCode::FORBIDDEN);
        let response = unauthorized().into_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(
            !forbidden()
                .into_response()
                .headers()
                .contains_key(header::WWW_AUTHENTICATE)
        );
    }
}
