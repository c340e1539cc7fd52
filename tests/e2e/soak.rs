//! Bounded soak: many clients edit and sync against one server at the same time for a
//! fixed time. Every round must succeed, and at the end every client equals the server
//! and every client's own rows hold exactly its last edit (nothing lost).
//!
//! Short by default so CI stays quick (200 clients for 10 s); `ROSTER_SOAK_CLIENTS` and
//! `ROSTER_SOAK_SECS` make it longer, e.g. `ROSTER_SOAK_SECS=60 cargo nextest run
//! --workspace -E 'test(/^soak::/)' --no-capture`. The figures are printed at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_client::SyncOptions;
use roster_e2e::{TestClient, TestServer, assert_converged};
use roster_protocol::RowId;
use serde_json::{Value, json};

/// Reads a positive number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|value| *value > 0)
        .unwrap_or(default)
}

/// What one client did during the soak.
#[derive(Default)]
struct ClientLog {
    /// Latency of every successful round.
    rounds: Vec<Duration>,
    /// Errors seen (rounds that failed).
    errors: Vec<String>,
    /// The client's own rows: last name written, or `None` once deleted.
    own: BTreeMap<RowId, Option<String>>,
    /// Changes made locally.
    edits: u64,
}

/// A few random edits (1–3) of the client's own rows and of the shared rows, recorded
/// in `log`. Runs on a blocking thread: the local store writes to disk.
fn edit(
    client: &TestClient,
    index: usize,
    shared: &[RowId],
    rng: &mut fastrand::Rng,
    counter: &mut u64,
    log: &mut ClientLog,
) {
    for _ in 0..rng.usize(1..=3) {
        *counter += 1;
        let live: Vec<RowId> = log
            .own
            .iter()
            .filter(|(_, name)| name.is_some())
            .map(|(id, _)| *id)
            .collect();
        let name = format!("c{index}-{counter}");
        match rng.u8(0..10) {
            0..=3 => {
                let id = client.insert("person", json!({"name": name, "age": index}));
                log.own.insert(id, Some(name));
            }
            4..=6 if !live.is_empty() => {
                let id = live[rng.usize(0..live.len())];
                client.update("person", id, json!({"name": name}));
                log.own.insert(id, Some(name));
            }
            7 if !live.is_empty() => {
                let id = live[rng.usize(0..live.len())];
                client.delete("person", id);
                log.own.insert(id, None);
            }
            _ => {
                // Shared rows: every client writes them, the server's policy decides.
                let id = shared[rng.usize(0..shared.len())];
                client.update("person", id, json!({"city": name}));
            }
        }
        log.edits += 1;
    }
}

/// One client's loop until `until`: edit, sync, pause 50–250 ms.
async fn run_client(
    client: Arc<TestClient>,
    index: usize,
    shared: Arc<Vec<RowId>>,
    until: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = fastrand::Rng::with_seed(index as u64);
    let mut counter = 0u64;
    while Instant::now() < until {
        let editor = client.clone();
        let shared_rows = shared.clone();
        (log, rng, counter) = tokio::task::spawn_blocking(move || {
            edit(
                &editor,
                index,
                &shared_rows,
                &mut rng,
                &mut counter,
                &mut log,
            );
            (log, rng, counter)
        })
        .await
        .unwrap();
        let started = Instant::now();
        match client.client.sync().await {
            Ok(_) => log.rounds.push(started.elapsed()),
            Err(error) => log.errors.push(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(50..=250))).await;
    }
    log
}

/// The value at `fraction` (0..=1) of sorted `values`.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_sync_for_a_while_with_no_error_and_nothing_lost() {
    let clients = env_or("ROSTER_SOAK_CLIENTS", 200) as usize;
    let seconds = env_or("ROSTER_SOAK_SECS", 10);
    let server = TestServer::start();
    let options = SyncOptions {
        retry_delay: Duration::from_millis(50),
        ..SyncOptions::default()
    };

    let seeder = TestClient::new(&server).await;
    let shared: Vec<RowId> = (0..20)
        .map(|i| seeder.insert("person", json!({"name": format!("Shared {i}")})))
        .collect();
    seeder.client.sync().await.unwrap();
    let shared = Arc::new(shared);

    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = TestClient::with_options(&server, options.clone()).await;
        client.client.sync().await.unwrap();
        handles.push(Arc::new(client));
    }

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(run_client(client.clone(), index, shared.clone(), until))
        })
        .collect();
    let mut logs = Vec::with_capacity(clients);
    for task in tasks {
        logs.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();

    let errors: Vec<&String> = logs.iter().flat_map(|log| &log.errors).collect();
    let mut latencies: Vec<Duration> = logs.iter().flat_map(|log| log.rounds.clone()).collect();
    latencies.sort();
    let edits: u64 = logs.iter().map(|log| log.edits).sum();
    assert!(!latencies.is_empty(), "no round completed");
    eprintln!(
        "soak: {clients} clients for {:.1} s: {} rounds ({:.0}/s), {edits} edits, {} errors, \
         round latency p50 {:?} p99 {:?} max {:?}",
        elapsed.as_secs_f64(),
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        errors.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    assert!(errors.is_empty(), "rounds failed: {errors:?}");

    // Two settling passes: every client pushes what is left, then pulls everyone's.
    for _ in 0..2 {
        for client in &handles {
            client.client.sync().await.unwrap();
        }
    }
    let on_server = server.live("person").await;
    for (index, log) in logs.iter().enumerate() {
        for (id, name) in &log.own {
            let stored = on_server.get(id).map(|fields| fields["name"].clone());
            let expected = name.as_ref().map(|name| Value::String(name.clone()));
            assert_eq!(
                stored, expected,
                "client {index}'s row {id} lost its last edit"
            );
        }
    }
    let refs: Vec<&TestClient> = handles.iter().map(|client| client.as_ref()).collect();
    assert_converged(&server, "person", &refs).await;
}
