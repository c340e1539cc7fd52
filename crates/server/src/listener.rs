//! The network edge: accepting connections and serving HTTP/1.1 on them with bounds, so
//! that no client can hold the service's sockets or file descriptors.
//!
//! * **Header timeout**: hyper gets a timer, so a client that sends its request head
//!   slowly (slowloris) is dropped after `header_read_timeout_secs`.
//! * **Idle timeout**: a connection with no request in flight for `idle_timeout_secs` is
//!   shut down gracefully (a response being written is finished first). A request is in
//!   flight until its response body has been sent in full, so a long-lived stream (the
//!   change feed, [`crate::feed`]) is never cut as idle; the feed ends its streams when
//!   the server shuts down.
//! * **Connection cap**: at most `max_connections` connections are served at once (a
//!   semaphore); beyond it the server stops accepting and new clients wait in the
//!   kernel's listen backlog until a connection ends. The cap is kept below the open-file
//!   limit, which [`raise_open_file_limit`] raises to the hard limit at start.
//! * **TLS**: with a certificate configured, every connection first completes a TLS
//!   handshake (see [`crate::tls`]) within the header timeout.
//! * The body-read timeout and the early `Content-Length` refusal are in
//!   [`crate::http`], where the body is read.
//!
//! invariant: every accepted connection holds a permit until it is closed, so the
//! number of open client sockets never exceeds the cap.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// File descriptors kept free for the database, logs and the listener itself.
const RESERVED_FDS: u64 = 64;

/// How long to pause accepting after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds put on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most time a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// Most time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: u32,
    /// How long a shutdown waits for the requests in flight before it returns anyway.
    pub shutdown_grace: Duration,
}

impl ConnectionLimits {
    /// The limits `config` sets, with the connection cap kept below the process's
    /// open-file limit (raised first, see [`raise_open_file_limit`]).
    pub fn from_config(config: &ServerConfig) -> Self {
        let mut max_connections = config.max_connections;
        if let Some(files) = raise_open_file_limit() {
            let room = u32::try_from(files.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(u32::MAX);
            if room < max_connections {
                tracing::warn!(
                    configured = max_connections,
                    open_file_limit = files,
                    "max_connections lowered to fit the open-file limit"
                );
                max_connections = room;
            }
        }
        Self {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_connections,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        }
    }
}

/// Raises this process's soft open-file limit (RLIMIT_NOFILE) to its hard limit and
/// returns the soft limit now in force (`None` where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Serves `router` on `listener` within `limits` (over TLS with `tls`) until `shutdown`
/// completes; then stops accepting, shuts every connection down gracefully and returns
/// once all are closed, or once `limits.shutdown_grace` has passed (the connections
/// still open are then dropped with the process; a request's database transaction
/// commits whole or not at all either way).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (closing_tx, closing) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            router: router.clone(),
            limits,
            peer,
            closing: closing.clone(),
            tls: tls.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a permit until it ends: all are back once all have closed.
    let open = limits.max_connections as usize - permits.available_permits();
    tracing::info!(open, "stopped accepting; finishing the requests in flight");
    let all_closed = permits.acquire_many(limits.max_connections);
    if tokio::time::timeout(limits.shutdown_grace, all_closed)
        .await
        .is_err()
    {
        let open = limits.max_connections as usize - permits.available_permits();
        tracing::warn!(
            open,
            grace_secs = limits.shutdown_grace.as_secs(),
            "connections still open after the shutdown grace; stopping anyway"
        );
    }
}

/// Logs a failed accept; pauses when the process is out of file descriptors, so the
/// loop does not spin while they are exhausted.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed; pausing");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    router: Router,
    limits: ConnectionLimits,
    peer: SocketAddr,
    closing: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
}

impl Connection {
    /// Serves the connection; over TLS, after a handshake bounded by the header timeout.
    async fn run(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Some(tls) = self.tls.take() else {
            return self.serve_io(TokioIo::new(stream)).await;
        };
        match tokio::time::timeout(self.limits.header_read_timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => self.serve_io(TokioIo::new(stream)).await,
            Ok(Err(error)) => {
                tracing::debug!(%error, peer = %self.peer, "TLS handshake failed");
            }
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Serves HTTP/1.1 on `io` until the client closes, a timeout fires or the server
    /// shuts down.
    async fn serve_io<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection {
            router,
            limits,
            peer,
            mut closing,
            tls: _,
        } = self;
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let busy = activity.begin();
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    // Busy until the body is sent in full (a stream's body lasts).
                    response.map(|response| {
                        response.map(|body| TrackedBody {
                            inner: body,
                            _busy: busy,
                        })
                    })
                }
            })
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut shutting_down = false;
        loop {
            // After a graceful shutdown an idle connection gets one more header timeout
            // to finish; one still open then is dropped.
            let grace = if shutting_down {
                limits.header_read_timeout
            } else {
                Duration::ZERO
            };
            let wake = activity.idle_deadline(limits.idle_timeout + grace);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.changed(), if !shutting_down => {
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                () = tokio::time::sleep_until(wake) => {
                    if activity.idle_for() < limits.idle_timeout + grace {
                        continue;
                    }
                    if shutting_down {
                        tracing::debug!(%peer, "dropped a connection that did not close");
                        return;
                    }
                    tracing::debug!(%peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

/// A response body that keeps its request marked in flight until it is sent in full
/// (or dropped).
struct TrackedBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a connection has a request in flight, and since when it has none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long no request has been in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// When the connection will have been idle for `limit` if nothing happens (a check
    /// `limit` from now while a request is in flight).
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Instant::now() + limit;
        }
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            + limit
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_without_a_request_in_flight() {
        let activity = Arc::new(Activity::new());
        let busy = activity.begin();
        assert_eq!(activity.idle_for(), Duration::ZERO);
        let limit = Duration::from_secs(3600);
        assert!(activity.idle_deadline(limit) > Instant::now() + limit / 2);
        std::thread::sleep(Duration::from_millis(20));
        drop(busy);
        let idle_since_drop = activity.idle_for();
        assert!(
            idle_since_drop < Duration::from_millis(20),
            "{idle_since_drop:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(activity.idle_for() >= Duration::from_millis(20));
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let soft = raise_open_file_limit().unwrap();
        assert!(soft >= before);
        if hard != rlimit::INFINITY {
            assert_eq!(soft, hard);
        }
        assert_eq!(rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0, soft);
    }
}
