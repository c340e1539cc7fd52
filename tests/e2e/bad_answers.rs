//! A broken or hostile sync server, played by a small axum server inside the test on
//! 127.0.0.1: its answers must end the round with a clear protocol error, leave local data
//! as it was and never make the client loop.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::AppendHeaders;
use axum::routing::post;
use roster_client::{ClientError, Credentials, SyncClient};
use roster_protocol::{Fields, RowId, Schema, ServerChange, ServerRow, SyncRequest, SyncResponse};
use serde_json::json;

/// What the fake server answers to every `POST /v1/sync`, given the request.
type Answer = fn(&SyncRequest) -> SyncResponse;

/// The `x-roster-more-after` header the fake server sends with an answer, if any.
type MoreAfter = fn(&SyncRequest) -> Option<u64>;

/// A fake sync server: `answer` for every sync request, counting them and keeping
/// each request's `since`.
struct FakeServer {
    url: String,
    requests: Arc<AtomicU32>,
    sinces: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(answer: Answer) -> Self {
        Self::start_with_header(answer, |_| None).await
    }

    async fn start_with_header(answer: Answer, more_after: MoreAfter) -> Self {
        let requests = Arc::new(AtomicU32::new(0));
        let sinces = Arc::new(Mutex::new(Vec::new()));
        type Shared = (Arc<AtomicU32>, Arc<Mutex<Vec<u64>>>, Answer, MoreAfter);
        let app = axum::Router::new()
            .route(
                roster_protocol::SYNC_PATH,
                post(
                    |State((count, sinces, answer, more_after)): State<Shared>,
                     Json(request): Json<SyncRequest>| async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        sinces.lock().unwrap().push(request.since);
                        let header = more_after(&request)
                            .map(|w| [(roster_protocol::MORE_AFTER_HEADER, w.to_string())]);
                        (
                            AppendHeaders(header.into_iter().flatten()),
                            Json(answer(&request)),
                        )
                    },
                ),
            )
            .with_state((requests.clone(), sinces.clone(), answer, more_after));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            requests,
            sinces,
            task,
        }
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The `since` of every request so far, in arrival order.
    fn sinces(&self) -> Vec<u64> {
        self.sinces.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer acknowledging nothing, pulling `changes`.
fn page(watermark: u64, has_more: bool, changes: Vec<ServerChange>) -> SyncResponse {
    SyncResponse {
        evicted: Vec::new(),
        acks: Vec::new(),
        conflicts: Vec::new(),
        changes,
        watermark,
        has_more,
        newest: watermark + 1,
        staged: false,
        schema_version: 0,
        rollback: None,
        epoch: 0,
        rebase: None,
    }
}

fn person(id: RowId, fields: serde_json::Value) -> ServerChange {
    let fields: Fields = fields.as_object().cloned().unwrap();
    ServerChange {
        table: "person".into(),
        id,
        row: ServerRow {
            version: 1,
            deleted: false,
            fields: Some(fields),
        },
    }
}

/// A client of `server` (person schema, no server call to create it) with one pending
/// local row.
async fn client_with_a_pending_row(server: &FakeServer) -> (tempfile::TempDir, SyncClient, RowId) {
    let dir = tempfile::tempdir().unwrap();
    let client = SyncClient::init(
        dir.path(),
        &server.url,
        &Credentials::token("t"),
        Some(Schema::default_person()),
    )
    .await
    .unwrap();
    let mine = client
        .store()
        .insert(
            "person",
            json!({"name": "Mine"}).as_object().cloned().unwrap(),
        )
        .unwrap()
        .id;
    (dir, client, mine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_changes_announced_without_a_new_watermark_fail_the_round_at_once() {
    let server = FakeServer::start(|request| page(request.since, true, Vec::new())).await;
    let (_dir, client, mine) = client_with_a_pending_row(&server).await;
    let error = client.sync().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Protocol(m) if m.contains("watermark")),
        "{error}"
    );
    assert_eq!(server.requests(), 1, "no second request after no progress");
    let status = client.store().status().unwrap();
    assert_eq!((status.pending, status.watermark), (1, 0));
    assert!(
        client
            .store()
            .get("person", mine)
            .unwrap()
            .pending
            .is_some()
    );
}

/// A server whose `x-roster-more-after` header says 99 while its body says 3: the pull
/// the client sent ahead from 99 is dropped, the page after 3 is asked for, and the
/// round ends with exactly the server's rows and its watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_sent_ahead_that_the_answer_contradicts_is_dropped_and_the_page_asked_again() {
    const FIRST: RowId = RowId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0011);
    const SECOND: RowId = RowId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0012);
    let server = FakeServer::start_with_header(
        |request| match request.since {
            0 => page(3, true, vec![person(FIRST, json!({"name": "First"}))]),
            3 => page(5, false, vec![person(SECOND, json!({"name": "Second"}))]),
            // The pull sent ahead from the header's watermark: a page that must never
            // be applied.
            _ => page(100, false, vec![person(BAD_ID, json!({"name": "Never"}))]),
        },
        |request| (request.since == 0).then_some(99),
    )
    .await;
    let (_dir, client, _mine) = client_with_a_pending_row(&server).await;
    let report = client.sync().await.unwrap();
    assert_eq!((report.downloaded, report.watermark), (2, 5));
    let store = client.store();
    assert_eq!(
        store.get("person", FIRST).unwrap().fields["name"],
        json!("First")
    );
    assert_eq!(
        store.get("person", SECOND).unwrap().fields["name"],
        json!("Second")
    );
    assert!(
        store.get("person", BAD_ID).is_err(),
        "the dropped page is not applied"
    );
    let status = store.status().unwrap();
    // This server acknowledges nothing: the local row stays pending.
    assert_eq!((status.pending, status.watermark), (1, 5));
    let sinces = server.sinces();
    assert!(
        sinces.starts_with(&[0]) && sinces.contains(&3),
        "the page after 3 was asked for: {sinces:?}"
    );
}

/// The first pulled row is valid, the second breaks the schema in one column: the round
/// fails naming table, row and column, and neither row nor the watermark is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_row_that_breaks_the_schema_is_refused_naming_it_and_nothing_is_stored() {
    // One case per line: the bad row's values and the column the error must name.
    let cases: [(Answer, &str); 4] = [
        (|_| bad_page(json!({"name": "Ok", "shoe": 44})), "shoe"),
        (|_| bad_page(json!({"name": 12345})), "name"),
        (|_| bad_page(json!({"name": "Ok", "age": "old"})), "age"),
        (|_| bad_page(json!({"email": "x@example.org"})), "name"),
    ];
    for (answer, column) in cases {
        let server = FakeServer::start(answer).await;
        let (_dir, client, mine) = client_with_a_pending_row(&server).await;
        let error = client.sync().await.unwrap_err();
        let ClientError::Protocol(message) = &error else {
            panic!("{column}: expected a protocol error, got {error}");
        };
        for part in ["person", &BAD_ID.to_string(), column] {
            assert!(message.contains(part), "{message:?} should name {part:?}");
        }
        let store = client.store();
        assert_eq!(
            store.count("person", None).unwrap(),
            1,
            "{column}: only mine"
        );
        assert!(
            store.get("person", GOOD_ID).is_err(),
            "{column}: good row not stored"
        );
        let status = store.status().unwrap();
        assert_eq!((status.pending, status.watermark), (1, 0), "{column}");
        assert_eq!(
            store.get("person", mine).unwrap().fields["name"],
            json!("Mine")
        );
    }
}

const GOOD_ID: RowId = RowId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const BAD_ID: RowId = RowId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);

/// A page holding a valid row and then `bad`.
fn bad_page(bad: serde_json::Value) -> SyncResponse {
    page(
        2,
        false,
        vec![
            person(GOOD_ID, json!({"name": "Good"})),
            person(BAD_ID, bad),
        ],
    )
}
