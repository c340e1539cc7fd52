//! The server's connection limits, against the real binary over raw sockets: idle
//! connections, a slow header sender (slowloris), a body that never arrives and an
//! oversized `Content-Length` cannot take the service away from other clients, and are
//! closed within the configured timeouts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use roster_e2e::{TWO_TABLE_CONFIG, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections the issue asks the server to survive.
const IDLE_CONNECTIONS: usize = 2000;

/// Short limits, so the test sees them fire.
fn config() -> String {
    format!(
        "header_read_timeout_secs = 1\nidle_timeout_secs = 2\nbody_read_timeout_secs = 1\n{TWO_TABLE_CONFIG}"
    )
}

/// Raises this test process's open-file limit (the server child inherits it and raises
/// its own) and returns how many idle connections it can hold: [`IDLE_CONNECTIONS`], or
/// fewer when the hard limit does not allow that many, which it says.
fn idle_connection_budget() -> usize {
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(soft.saturating_sub(200)).unwrap_or(usize::MAX);
    if room < IDLE_CONNECTIONS {
        eprintln!(
            "open-file limit {soft} cannot be raised to hold {IDLE_CONNECTIONS} connections; \
             holding {room}"
        );
    }
    room.min(IDLE_CONNECTIONS)
}

/// Opens `n` connections to `addr`, 100 at a time.
async fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..(n - streams.len()).min(100) {
            batch.spawn(TcpStream::connect(addr));
        }
        while let Some(stream) = batch.join_next().await {
            streams.push(stream.unwrap().unwrap());
        }
    }
    streams
}

/// Reads (and drops) what the server sends until it closes the connection; returns what
/// was read, or panics when it is still open after `limit`.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// Issue 19: 2000 idle connections and a client sending its headers a byte at a time do
/// not keep `/health` from answering, and the server closes all of them within its
/// timeouts (idle 2 s, headers 1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_a_slow_header_sender_neither_block_health_nor_stay_open() {
    let budget = idle_connection_budget();
    let server = TestServer::start_with_config(&config());
    let addr = server.addr();
    let opened = Instant::now();
    let mut idle = connect_many(addr, budget).await;

    let slow = TcpStream::connect(addr).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let _ = slow_write
            .write_all(b"GET /health HTTP/1.1\r\nHost: roster\r\n")
            .await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow_write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });

    // The issue asks for 100 ms; the bound is generous for a loaded 2-core machine.
    let asked = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", server.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(health.status(), 200);
    eprintln!("/health answered in {took:?} beside {budget} idle connections and a slow sender");
    assert!(took < Duration::from_secs(1), "/health took {took:?}");

    // Header timeout 1 s: the slow sender is cut off although it keeps sending.
    let started = Instant::now();
    read_until_closed(&mut slow_read, Duration::from_secs(6)).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "slow sender closed only after {:?}",
        started.elapsed()
    );
    trickle.abort();

    // Idle timeout 2 s: every idle connection is closed by the server.
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in idle.drain(..) {
        closing.spawn(async move { read_until_closed(&mut stream, Duration::from_secs(10)).await });
    }
    while let Some(read) = closing.join_next().await {
        assert_eq!(
            read.unwrap(),
            "",
            "an idle connection got an answer it did not ask for"
        );
    }
    eprintln!(
        "all idle connections closed {:?} after opening",
        opened.elapsed()
    );
}

/// A keep-alive connection whose request was answered is closed once idle, and the
/// server still answers new ones.
#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle() {
    let server = TestServer::start_with_config(&config());
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: roster\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let seen = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("\"status\":\"ok\""), "{seen}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before any timeout could fire: {:?}",
        started.elapsed()
    );
    let again = reqwest::get(format!("{}/health", server.url()))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// A request that declares a body and never sends it is answered 408 after the body-read
/// timeout; one that declares more than `max_body_bytes` is refused with 413 before the
/// server reads any of it.
#[tokio::test]
async fn a_missing_body_times_out_and_an_oversized_one_is_refused_unread() {
    let server = TestServer::start_with_config(&config());
    let head = |length: u64| {
        format!(
            "POST /v1/sync HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            server.token()
        )
    };

    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    silent.write_all(head(1000).as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut silent, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // TWO_TABLE_CONFIG allows 262144 bytes: declare a gigabyte and send none of it.
    let mut huge = TcpStream::connect(server.addr()).await.unwrap();
    huge.write_all(head(1 << 30).as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), huge.read(&mut buf))
        .await
        .expect("no answer to an oversized Content-Length")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}
