//! Live sync through the change feed (`GET /v1/changes`): a device that follows the
//! feed gets another device's edit without polling (no interval rounds run in these
//! tests: the only rounds are the ones the feed asks for), across two instances on
//! PostgreSQL, across a server restart, not with a revoked token, and not slowed by a
//! device that never reads its stream. Runs on both backends.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_client::{ClientError, Credentials, LiveEvent, SyncClient};
use roster_e2e::{Backend, TestClient, TestServer, bin_path};
use roster_protocol::{CHANGES_PATH, RowId};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How long a notified edit may take to show on the other device here (the benchmark
/// measures the real latency; this bound only keeps a broken feed from passing).
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Follows `client`'s change feed in the background and runs a round whenever it says
/// one is due, as the app's background task and `roster sync --watch` do; every event
/// is also sent to the returned channel (`true` connected, `false` lost).
fn follow(client: Arc<TestClient>) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut feed = client.client.live();
        loop {
            let due = match feed.next().await {
                LiveEvent::Connected { behind, .. } => {
                    let _ = tx.send(true);
                    behind
                }
                LiveEvent::Changed { .. } => true,
                LiveEvent::Lost { .. } => {
                    let _ = tx.send(false);
                    false
                }
            };
            if due {
                let _ = client.client.sync().await;
            }
        }
    });
    (task, rx)
}

/// Waits until `client`'s store holds `id` with `name`, or fails after
/// [`VISIBLE_WITHIN`].
async fn wait_for_name(client: &TestClient, id: RowId, name: &str) {
    let start = Instant::now();
    loop {
        let shown = client
            .live("person")
            .get(&id)
            .and_then(|fields| fields.get("name").cloned());
        if shown == Some(json!(name)) {
            return;
        }
        assert!(
            start.elapsed() < VISIBLE_WITHIN,
            "{name:?} not visible after {VISIBLE_WITHIN:?} (shows {shown:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the follower's next connected (`true`) or lost (`false`) report.
async fn next_report(reports: &mut mpsc::UnboundedReceiver<bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(15), reports.recv())
        .await
        .expect("a feed report in time")
        .expect("the follower runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_edit_on_one_device_shows_on_the_other_without_polling() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = Arc::new(TestClient::new(&server).await);
    let (follower, mut reports) = follow(b.clone());
    assert!(next_report(&mut reports).await, "b is live");
    let id = a.insert("person", json!({"name": "Ada"}));
    a.client.sync().await.unwrap();
    wait_for_name(&b, id, "Ada").await;
    for name in ["Grace", "Edsger", "Barbara"] {
        a.update("person", id, json!({"name": name}));
        a.client.sync().await.unwrap();
        wait_for_name(&b, id, name).await;
    }
    follower.abort();
}

/// `roster sync --watch` in its own data dir until it is killed (Ctrl-C in a shell).
struct Watching(Child);

impl Watching {
    fn start(server: &TestServer, dir: &Path) -> Self {
        let init = Command::new(bin_path("roster"))
            .args(["--data-dir", dir.to_str().unwrap(), "init", "--server"])
            .arg(server.url())
            .args(["--token", server.token()])
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
        let child = Command::new(bin_path("roster"))
            .args(["--data-dir", dir.to_str().unwrap(), "sync", "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_watch_pulls_each_edit_as_it_is_made() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let _watching = Watching::start(&server, dir.path());
    for name in ["Ada", "Grace"] {
        let id = a.insert("person", json!({"name": name}));
        a.client.sync().await.unwrap();
        let start = Instant::now();
        loop {
            // The watching process's store, read as another process would.
            let store = SyncClient::open(dir.path()).unwrap();
            if store.store().get("person", id).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < VISIBLE_WITHIN,
                "{name} not pulled by --watch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_through_one_instance_reaches_devices_streaming_from_another() {
    if !Backend::from_env().is_postgres() {
        // One SQLite file is served by one process: in-process notification only.
        eprintln!("skipped on SQLite: several instances need PostgreSQL");
        return;
    }
    let first = TestServer::start();
    let second = first.another_instance();
    let a = TestClient::new(&first).await;
    let b = Arc::new(TestClient::new(&second).await);
    let (follower, mut reports) = follow(b.clone());
    assert!(next_report(&mut reports).await);
    let id = a.insert("person", json!({"name": "Ada"}));
    a.client.sync().await.unwrap();
    wait_for_name(&b, id, "Ada").await;
    a.update("person", id, json!({"name": "Grace"}));
    a.client.sync().await.unwrap();
    wait_for_name(&b, id, "Grace").await;
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reconnect_after_a_server_restart_and_catch_up() {
    let mut server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = Arc::new(TestClient::new(&server).await);
    let (follower, mut reports) = follow(b.clone());
    assert!(next_report(&mut reports).await);
    let id = a.insert("person", json!({"name": "Ada"}));
    a.client.sync().await.unwrap();
    wait_for_name(&b, id, "Ada").await;

    server.kill();
    assert!(!next_report(&mut reports).await, "the stream is lost");
    server.restart();
    // Made before b is back: b learns of it only by comparing versions at reconnect.
    a.update("person", id, json!({"name": "Grace"}));
    a.client.sync().await.unwrap();
    loop {
        if next_report(&mut reports).await {
            break;
        }
    }
    wait_for_name(&b, id, "Grace").await;
    // And live again after the reconnect.
    a.update("person", id, json!({"name": "Edsger"}));
    a.client.sync().await.unwrap();
    wait_for_name(&b, id, "Edsger").await;
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_closes_its_stream() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let (token_id, secret) = server.create_token(roster_e2e::DEFAULT_USER);
    let b = TestClient::as_user(&server, &Credentials::token(secret)).await;
    let mut stream = b.client.watch().await.unwrap();
    let at_connect = stream.next_version().await.unwrap();

    server.revoke_token(token_id);
    // A change of the data set: the stream checks the token before telling about it.
    a.insert("person", json!({"name": "Ada"}));
    a.client.sync().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next_version())
        .await
        .expect("the stream ends in time");
    assert!(
        matches!(ended, Err(ClientError::Unreachable { .. })),
        "no version after the revocation (connected at {at_connect}): {ended:?}"
    );
    let reopened = b.client.watch().await;
    assert!(
        matches!(reopened, Err(ClientError::Unauthorized(_))),
        "{reopened:?}"
    );
}

/// Opens a change stream over a raw socket with a tiny receive buffer and never reads
/// it.
async fn stuck_stream(server: &TestServer) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(server.addr()).await.unwrap();
    let request = format!(
        "GET {CHANGES_PATH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr(),
        server.token()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_reads_its_stream_does_not_stall_the_others() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = Arc::new(TestClient::new(&server).await);
    let mut stuck = Vec::new();
    for _ in 0..20 {
        stuck.push(stuck_stream(&server).await);
    }
    let (follower, mut reports) = follow(b.clone());
    assert!(next_report(&mut reports).await);
    let id = a.insert("person", json!({"name": "n0"}));
    a.client.sync().await.unwrap();
    // Many commits, each announced to every stream, the stuck ones included.
    let start = Instant::now();
    for n in 1..=60 {
        a.update("person", id, json!({"name": format!("n{n}")}));
        a.client.sync().await.unwrap();
    }
    let writes = start.elapsed();
    wait_for_name(&b, id, "n60").await;
    assert!(
        writes < Duration::from_secs(20),
        "60 rounds took {writes:?} beside 20 unread streams"
    );
    drop(stuck);
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_feed_off_a_stream_is_refused_and_the_device_still_syncs() {
    let server = TestServer::start_with_config(&format!(
        "max_streams = 0\n{}",
        roster_e2e::TWO_TABLE_CONFIG
    ));
    let a = TestClient::new(&server).await;
    let refused = a.client.watch().await;
    assert!(
        matches!(&refused, Err(error @ ClientError::Server { status: 503, .. }) if error.is_transient()),
        "{refused:?}"
    );
    a.insert("person", json!({"name": "Ada"}));
    a.client.sync().await.unwrap();
    assert_eq!(server.live("person").await.len(), 1);
}
