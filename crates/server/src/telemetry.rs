//! What the service counts, and the Prometheus endpoint that shows it.
//!
//! Every metric is recorded at the one place its event happens, through the functions
//! here (so names and labels are written once):
//!
//! | metric | kind | recorded in |
//! | --- | --- | --- |
//! | `roster_sync_rounds_total{outcome}` | counter | `store/flow.rs`: a round's final batch committed (`completed`) or rolled back by the handler (`rolled_back`) |
//! | `roster_sync_changes_applied_total` | counter | `store/flow.rs`: changes acknowledged as sent |
//! | `roster_sync_conflicts_total{kind,resolution}` | counter | `store/flow.rs`: conflicts answered |
//! | `roster_sync_pulled_rows_total` | counter | `store/flow.rs`: rows sent in pull pages |
//! | `roster_http_request_duration_seconds{route,method,status}` | histogram | `http.rs` (the outermost layer; a change stream counts until its head is sent) |
//! | `roster_http_rejected_requests_total{code,status}` | counter | `http.rs`: every error answer, by its [`ErrorCode`] |
//! | `roster_auth_failures_total` | counter | `http.rs` `authorise`: a refused or expired token |
//! | `roster_change_streams_open` | gauge | read from [`crate::feed::Feed`] when scraped |
//! | `roster_db_pool_connections{state}` | gauge | read from the store's pool when scraped (`in_use`, `idle`, `max`) |
//!
//! The endpoint is off by default. With `metrics_listen` (`--metrics-listen`) set,
//! [`serve_metrics`] answers `GET /metrics` on that address only, apart from the sync
//! API, so it can stay on a private interface. Without it no recorder is installed and
//! every recording is a no-op.
//!
//! The recorder is process-wide (the `metrics` facade has one); several services in one
//! process (tests, an embedding program) share its counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use roster_protocol::{Conflict, ErrorCode};

use crate::feed::Feed;
use crate::store::SyncStore;

/// Path of the Prometheus endpoint on the metrics address.
pub const METRICS_PATH: &str = "/metrics";

/// Buckets of the request latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram data is folded into its buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's recorder, installed at most once.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be built or installed.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// The process's Prometheus recorder: installed on the first call, the same handle
/// afterwards.
pub fn recorder() -> Result<PrometheusHandle, MetricsError> {
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Recorder(e.to_string()))?;
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Gives each metric its help text.
fn describe() {
    metrics::describe_counter!(
        "roster_sync_rounds_total",
        "Sync rounds whose final batch was answered, by outcome"
    );
    metrics::describe_counter!(
        "roster_sync_changes_applied_total",
        "Pushed changes applied as sent"
    );
    metrics::describe_counter!(
        "roster_sync_conflicts_total",
        "Pushed changes that met a conflict, by kind and resolution"
    );
    metrics::describe_counter!(
        "roster_sync_pulled_rows_total",
        "Rows sent to devices in pull pages"
    );
    metrics::describe_histogram!(
        "roster_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's head to its answer's head, by route, method and status"
    );
    metrics::describe_counter!(
        "roster_http_rejected_requests_total",
        "Requests answered with an error, by error code and status"
    );
    metrics::describe_counter!(
        "roster_auth_failures_total",
        "Requests whose bearer token was missing, unknown, revoked or expired"
    );
    metrics::describe_gauge!("roster_change_streams_open", "Open change streams");
    metrics::describe_gauge!(
        "roster_db_pool_connections",
        "Database pool connections: in_use, idle, and the pool's max"
    );
}

/// How a round ended on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Its final batch committed.
    Completed,
    /// The conflict handler rolled it back.
    RolledBack,
}

/// A round's final batch was answered.
pub fn round_finished(outcome: RoundOutcome) {
    let outcome = match outcome {
        RoundOutcome::Completed => "completed",
        RoundOutcome::RolledBack => "rolled_back",
    };
    metrics::counter!("roster_sync_rounds_total", "outcome" => outcome).increment(1);
}

/// A committed request applied `acks` changes as sent, answered `conflicts` and sent
/// `pulled` rows.
pub fn request_applied(acks: usize, conflicts: &[Conflict], pulled: usize) {
    if acks > 0 {
        metrics::counter!("roster_sync_changes_applied_total").increment(acks as u64);
    }
    for conflict in conflicts {
        metrics::counter!(
            "roster_sync_conflicts_total",
            "kind" => conflict.kind.as_str(),
            "resolution" => conflict.resolution.as_str()
        )
        .increment(1);
    }
    if pulled > 0 {
        metrics::counter!("roster_sync_pulled_rows_total").increment(pulled as u64);
    }
}

/// A request was answered: its latency, and the error code when it was refused.
pub fn request_answered(
    route: &'static str,
    method: &str,
    status: u16,
    error: Option<ErrorCode>,
    elapsed: Duration,
) {
    let status_text = status.to_string();
    metrics::histogram!(
        "roster_http_request_duration_seconds",
        "route" => route,
        "method" => method.to_owned(),
        "status" => status_text.clone()
    )
    .record(elapsed.as_secs_f64());
    if let Some(code) = error {
        metrics::counter!(
            "roster_http_rejected_requests_total",
            "code" => error_code_name(code),
            "status" => status_text
        )
        .increment(1);
    }
}

/// A request's token was refused (missing, unknown, revoked or expired).
pub fn authentication_failed() {
    metrics::counter!("roster_auth_failures_total").increment(1);
}

/// An error code's wire name (`unauthorized`, `storage_full`, ...).
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::MalformedRequest => "malformed_request",
        ErrorCode::PayloadTooLarge => "payload_too_large",
        ErrorCode::UnknownTable => "unknown_table",
        ErrorCode::UnknownColumn => "unknown_column",
        ErrorCode::InvalidValue => "invalid_value",
        ErrorCode::InvalidChange => "invalid_change",
        ErrorCode::BatchTooLarge => "batch_too_large",
        ErrorCode::UnsupportedProtocol => "unsupported_protocol",
        ErrorCode::ResetRequired => "reset_required",
        ErrorCode::NotFound => "not_found",
        ErrorCode::MethodNotAllowed => "method_not_allowed",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::TooManyRequests => "too_many_requests",
        ErrorCode::StorageFull => "storage_full",
        ErrorCode::BadSubscription => "bad_subscription",
        ErrorCode::Internal => "internal",
    }
}

/// What the scrape handler reads the gauges from.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    store: Arc<dyn SyncStore>,
    feed: Arc<Feed>,
}

/// The metrics endpoint, bound and not yet serving.
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    handle: PrometheusHandle,
}

impl MetricsServer {
    /// Installs the recorder (once per process) and binds `addr` for `GET /metrics`,
    /// whose gauges are read from `store` and `feed`.
    pub async fn bind(
        addr: SocketAddr,
        store: Arc<dyn SyncStore>,
        feed: Arc<Feed>,
    ) -> Result<Self, MetricsError> {
        let handle = recorder()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let router = Router::new()
            .route(METRICS_PATH, get(scrape))
            .with_state(Scrape {
                handle: handle.clone(),
                store,
                feed,
            });
        Ok(Self {
            listener,
            addr,
            router,
            handle,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `GET /metrics` (and runs the recorder's upkeep) until the task is aborted.
    pub async fn serve(self) {
        let handle = self.handle;
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
        if let Err(error) = axum::serve(self.listener, self.router).await {
            tracing::warn!(%error, "the metrics endpoint stopped");
        }
        upkeep.abort();
    }
}

/// `GET /metrics`: the gauges read now, then every metric in Prometheus text format.
async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    metrics::gauge!("roster_change_streams_open").set(scrape.feed.open_streams() as f64);
    if let Some(pool) = scrape.store.pool_use() {
        metrics::gauge!("roster_db_pool_connections", "state" => "in_use")
            .set(f64::from(pool.in_use));
        metrics::gauge!("roster_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
        metrics::gauge!("roster_db_pool_connections", "state" => "max").set(f64::from(pool.max));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        scrape.handle.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_names_are_the_wire_names() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnknownTable,
            ErrorCode::UnknownColumn,
            ErrorCode::InvalidValue,
            ErrorCode::InvalidChange,
            ErrorCode::BatchTooLarge,
            ErrorCode::UnsupportedProtocol,
            ErrorCode::ResetRequired,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Unauthorized,
            ErrorCode::TokenExpired,
            ErrorCode::Forbidden,
            ErrorCode::TooManyRequests,
            ErrorCode::StorageFull,
            ErrorCode::Internal,
        ] {
            let wire = serde_json::to_value(code).unwrap();
            assert_eq!(wire.as_str(), Some(error_code_name(code)));
        }
    }
}
