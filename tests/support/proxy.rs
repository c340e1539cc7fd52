//! A fault-injecting TCP proxy on 127.0.0.1 between a client and the server. It forwards
//! bytes both ways and, at the start of an answer (the first bytes the server sends after
//! the client spoke), can drop the connection, delay the answer or cut it short. The
//! server has then processed the request: exactly the "answer lost" case.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Faults to inject, shared with the running proxy.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answers still to drop (connection closed before any byte reaches the client).
    pub drop_answers: AtomicUsize,
    /// Answers still to cut short (half of the first chunk, then closed).
    pub truncate_answers: AtomicUsize,
    /// Delay before each answer is forwarded, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Answers seen so far.
    pub answers: AtomicUsize,
    /// Faults injected so far (drops plus truncations).
    pub injected: AtomicUsize,
    /// Bytes forwarded from clients to the server so far.
    pub forwarded_up: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    /// The faults to inject; change them at any time.
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, faults).await;
                    }
                });
            }
        });
        Self { addr, faults, task }
    }

    /// Base URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes one from `counter` if it is above zero.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let asked = Arc::new(AtomicBool::new(false));
    let asking = asked.clone();
    let counting = faults.clone();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            // Flagged before forwarding: the server's answer can arrive (and be relayed
            // unflagged, escaping the faults) before this task runs again after the write.
            asking.store(true, Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counting.forwarded_up.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = server_read.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if asked.swap(false, Ordering::SeqCst) {
            faults.answers.fetch_add(1, Ordering::SeqCst);
            let delay = faults.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if take(&faults.drop_answers) {
                faults.injected.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if take(&faults.truncate_answers) {
                faults.injected.fetch_add(1, Ordering::SeqCst);
                chunk = &chunk[..chunk.len() / 2];
                let _ = client_write.write_all(chunk).await;
                break;
            }
        }
        if client_write.write_all(chunk).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
