//! Several server processes on one database (stateless instances behind no balancer):
//! clients spread across them converge, and a reader pulling continuously while many
//! writers commit through two instances ends with every row (no change that commits
//! late with a lower version is skipped). Runs on both backends; with PostgreSQL this is
//! the multi-instance deployment, with SQLite several processes share one WAL file.
//! Accounts live in the same database, so every instance sees the same users, tokens,
//! grants and revocations. A bulk load keeps PostgreSQL's planner statistics current as
//! it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use roster_client::Credentials;
use roster_e2e::{TestClient, TestServer, assert_converged, authed_http};
use roster_protocol::{Change, ChangeOp, PROTOCOL_VERSION, RowId, SyncRequest, SyncResponse};
use serde_json::json;

/// A small deterministic generator, so a failure replays the same edits.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_spread_over_three_instances_converge() {
    let first = TestServer::start();
    let instances = [first.another_instance(), first.another_instance()];
    let servers: Vec<&TestServer> = std::iter::once(&first).chain(instances.iter()).collect();
    let mut clients = Vec::new();
    for index in 0..6 {
        clients.push(Arc::new(
            TestClient::new(servers[index % servers.len()]).await,
        ));
    }
    let mut rng = XorShift(0x5eed_1234_abcd_0042);
    for round in 0..6 {
        for client in &clients {
            for _ in 0..4 {
                let live: Vec<RowId> = client.live("person").into_keys().collect();
                match (rng.below(10), live.is_empty()) {
                    (0..=3, _) | (_, true) => {
                        client.insert(
                            "person",
                            json!({"name": format!("p{round}"), "age": rng.below(90)}),
                        );
                    }
                    (4..=8, false) => {
                        let id = live[rng.below(live.len() as u64) as usize];
                        client.update("person", id, json!({"age": rng.below(90)}));
                    }
                    _ => {
                        let id = live[rng.below(live.len() as u64) as usize];
                        client.delete("person", id);
                    }
                }
            }
        }
        // Every client syncs at once, each through its own instance.
        let mut syncs = tokio::task::JoinSet::new();
        for client in &clients {
            let client = client.clone();
            syncs.spawn(async move { client.client.sync().await.map(|_| ()) });
        }
        while let Some(done) = syncs.join_next().await {
            done.unwrap().unwrap();
        }
    }
    // Two quiet passes: the first pushes what is left, the second pulls everyone's last
    // writes.
    for _ in 0..2 {
        for client in &clients {
            client.client.sync().await.unwrap();
        }
    }
    let views: Vec<&TestClient> = clients.iter().map(Arc::as_ref).collect();
    assert_converged(&first, "person", &views).await;
    let expected = first.rows().await;
    assert!(!expected.is_empty());
    for instance in &instances {
        assert_eq!(instance.rows().await, expected, "instances serve one state");
    }
}

fn insert(name: String) -> Change {
    Change {
        table: "person".into(),
        id: RowId::now_v7(),
        op: ChangeOp::Insert,
        base_version: None,
        fields: json!({ "name": name }).as_object().cloned(),
        base_fields: None,
        edited_at_ms: None,
    }
}

async fn post(http: &reqwest::Client, url: &str, request: &SyncRequest) -> SyncResponse {
    http.post(format!("{url}/v1/sync"))
        .json(request)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

const WRITERS: usize = 8;
const BATCHES: usize = 20;
const ROWS_PER_BATCH: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_continuous_reader_never_skips_a_late_commit_of_concurrent_writers() {
    let first = TestServer::start();
    let second = first.another_instance();
    let urls = [first.url(), second.url()];
    let writing = Arc::new(AtomicBool::new(true));

    // The reader pulls page after page from alternating instances, only ever from its
    // own watermark, the way a client does.
    let token = first.token().to_owned();
    let reader = {
        let urls = urls.clone();
        let token = token.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let http = authed_http(&token, None);
            let client_id = uuid::Uuid::now_v7();
            let mut since = 0;
            let mut seen: BTreeMap<RowId, u64> = BTreeMap::new();
            let mut pulls = 0u64;
            loop {
                let still_writing = writing.load(Ordering::SeqCst);
                let request = SyncRequest {
                    slice: None,
                    protocol: PROTOCOL_VERSION,
                    client_id,
                    since,
                    changes: vec![],
                    pull_limit: 7,
                    round: None,
                    batch_id: None,
                    epoch: None,
                };
                let page = post(&http, &urls[(pulls % 2) as usize], &request).await;
                pulls += 1;
                for change in &page.changes {
                    assert!(
                        change.row.version > since,
                        "a page only holds newer changes"
                    );
                    seen.insert(change.id, change.row.version);
                }
                assert!(page.watermark >= since, "the watermark never goes back");
                since = page.watermark;
                if !still_writing && !page.has_more {
                    return (seen, pulls);
                }
            }
        })
    };

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let url = urls[writer % 2].clone();
        let token = token.clone();
        writers.spawn(async move {
            let http = authed_http(&token, None);
            let client_id = uuid::Uuid::now_v7();
            let mut written = BTreeSet::new();
            for batch in 0..BATCHES {
                let changes: Vec<Change> = (0..ROWS_PER_BATCH)
                    .map(|row| insert(format!("w{writer}-b{batch}-r{row}")))
                    .collect();
                let request = SyncRequest {
                    slice: None,
                    protocol: PROTOCOL_VERSION,
                    client_id,
                    since: 0,
                    changes,
                    pull_limit: 0,
                    round: None,
                    batch_id: Some(uuid::Uuid::now_v7()),
                    epoch: None,
                };
                let answer = post(&http, &url, &request).await;
                assert_eq!(answer.acks.len(), ROWS_PER_BATCH);
                written.extend(answer.acks.iter().map(|ack| ack.id));
            }
            written
        });
    }
    let mut written = BTreeSet::new();
    while let Some(done) = writers.join_next().await {
        written.extend(done.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let (seen, pulls) = reader.await.unwrap();

    assert_eq!(written.len(), WRITERS * BATCHES * ROWS_PER_BATCH);
    let missed: Vec<&RowId> = written.iter().filter(|id| !seen.contains_key(id)).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {} of {} rows over {pulls} pulls",
        missed.len(),
        written.len()
    );
    let versions: BTreeSet<u64> = seen.values().copied().collect();
    assert_eq!(versions.len(), seen.len(), "every version is unique");
    assert_eq!(first.rows().await, second.rows().await);
}

/// GETs `/v1/conflicts` on `url` with `token`; returns the status.
async fn conflicts_status(url: &str, token: &str) -> u16 {
    authed_http(token, None)
        .get(format!("{url}/v1/conflicts"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Users, tokens, grants and revocations made with the admin commands while two
/// instances run reach both at once: a user created on the database syncs through one
/// instance and is read through the other, a grant is honoured by both, and a revoked
/// token is refused by both from the next request on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_shared_by_every_instance() {
    let first = TestServer::start();
    let second = first.another_instance();

    let alice = first.create_user("alice");
    let writer = TestClient::as_user(&second, &Credentials::token(alice.clone())).await;
    let id = writer.insert("person", json!({"name": "Alice's"}));
    writer.client.sync().await.unwrap();
    let through_first = first.live_as(&alice, None, "person").await;
    assert_eq!(through_first.len(), 1);
    assert_eq!(through_first[&id]["name"], json!("Alice's"));
    assert!(
        first.live("person").await.is_empty() && second.live("person").await.is_empty(),
        "the tester's own data set holds nothing of alice's"
    );

    for server in [&first, &second] {
        assert_eq!(conflicts_status(&server.url(), first.token()).await, 200);
        let forbidden = authed_http(first.token(), Some("alice"))
            .get(format!("{}/v1/conflicts", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(forbidden.status().as_u16(), 403, "not shared yet");
    }
    first.share("alice", roster_e2e::DEFAULT_USER);
    for server in [&first, &second] {
        let shared = server.live_as(first.token(), Some("alice"), "person").await;
        assert_eq!(shared.keys().collect::<Vec<_>>(), vec![&id]);
    }

    let (token_id, phone) = second.create_token("alice");
    for server in [&first, &second] {
        assert_eq!(conflicts_status(&server.url(), &phone).await, 200);
    }
    first.revoke_token(token_id);
    for server in [&first, &second] {
        assert_eq!(conflicts_status(&server.url(), &phone).await, 401);
        assert_eq!(conflicts_status(&server.url(), &alice).await, 200);
    }
}

/// A bulk load refreshes PostgreSQL's planner statistics of `rows` as it goes, without
/// waiting for autovacuum (up to a minute later): planned from the statistics of a table
/// that was still small, a push's id lookups and each pull page read the whole data set.
/// After a 1,500-row push the catalogue counts the rows (`reltuples`, -1 before any
/// analyze). SQLite plans without statistics; there the test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_refreshes_the_planners_statistics_as_it_goes() {
    let server = TestServer::start();
    let counted = || {
        server.db().with_postgres(|client| {
            let row = client
                .query_one(
                    "SELECT reltuples::BIGINT FROM pg_class WHERE relname = 'rows'",
                    &[],
                )
                .unwrap();
            row.get::<_, i64>(0)
        })
    };
    let Some(before) = counted() else {
        eprintln!("SKIPPED on SQLite: it keeps no planner statistics to refresh");
        return;
    };
    assert!(before < 1_000, "counted {before} rows before the load");
    let device = TestClient::new(&server).await;
    device.insert_numbered_people(1_500);
    device.client.sync().await.unwrap();
    // The analyze runs on a thread of its own once the commit crossed 1,000 writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = counted().unwrap();
    while after < 1_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = counted().unwrap();
    }
    assert!(
        after >= 1_000,
        "the statistics count {after} rows after a 1,500-row push"
    );
}
