//! The sync service rejects bad input with a 4xx JSON error naming what is wrong, changes
//! nothing, and keeps serving. Client-side values full of SQL metacharacters round-trip
//! verbatim and the local search treats them literally.

use std::collections::{BTreeMap, BTreeSet};

use roster_client::ListQuery;
use roster_e2e::{TestClient, TestServer, assert_converged};
use roster_protocol::{
    ApiError, ErrorCode, MAX_CHANGES_PER_REQUEST, MAX_PULL_LIMIT, PROTOCOL_VERSION, RowId,
    ServerRow,
};
use serde_json::{Value, json};

/// `max_body_bytes` of the test server's config.
const MAX_BODY_BYTES: usize = 262_144;

/// One bad request and what the service must answer.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    code: ErrorCode,
    /// Substrings the error message must contain (what it names).
    mentions: Vec<String>,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: ErrorCode,
    mentions: &[&str],
) -> Case {
    Case {
        name,
        body: body.into(),
        status,
        code,
        mentions: mentions.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// A well-formed request body carrying `changes`.
fn request(changes: Value) -> Value {
    json!({
        "protocol": PROTOCOL_VERSION,
        "client_id": uuid::Uuid::now_v7(),
        "since": 0,
        "changes": changes,
        "pull_limit": 100,
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// POSTs `body` to `path` and returns the status and the raw answer.
async fn post(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let response = http
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Decodes an error body, insisting on the documented shape and a non-empty message.
fn api_error(context: &str, body: &[u8]) -> ApiError {
    let raw: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{context}: error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let error: ApiError = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{context}: error body has the wrong shape ({e}): {raw}"));
    assert!(
        !error.error.message.trim().is_empty(),
        "{context}: empty error message"
    );
    error
}

async fn assert_healthy(http: &reqwest::Client, server: &TestServer, context: &str) {
    let response = http
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{context}: /health unreachable: {e}"));
    assert_eq!(response.status().as_u16(), 200, "{context}: /health status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{context}: /health body {body}");
}

/// A server with state: two persons and a task, pushed by a real client.
async fn seeded() -> (TestServer, TestClient, RowId, RowId) {
    let server = TestServer::start();
    let client = TestClient::new(&server).await;
    let jane = client.insert("person", json!({"name": "Jane", "age": 25, "city": "Oslo"}));
    let john = client.insert(
        "person",
        json!({"name": "John", "email": "john@example.com"}),
    );
    client.insert(
        "task",
        json!({"title": "Write tests", "done": false, "priority": 2}),
    );
    let report = client.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 3);
    assert_eq!(server.live("person").await.len(), 2);
    assert_eq!(server.live("task").await.len(), 1);
    (server, client, jane, john)
}

fn version_of(rows: &BTreeMap<(String, RowId), ServerRow>, id: RowId) -> u64 {
    rows[&("person".to_owned(), id)].version
}

#[tokio::test]
async fn bad_sync_requests_are_rejected_whole_and_change_nothing() {
    let (server, client, jane, john) = seeded().await;
    let snapshot = server.rows().await;
    assert_eq!(snapshot.len(), 3);
    let jane_v = version_of(&snapshot, jane);
    let john_v = version_of(&snapshot, john);
    let http = server.http();

    let fresh = RowId::now_v7();
    let fresh_s = fresh.to_string();
    let jane_s = jane.to_string();
    let john_s = john.to_string();
    let valid_insert = json!({"table": "person", "id": fresh, "op": "insert",
                              "fields": {"name": "Newcomer"}});
    let update_jane = |fields: Value| {
        json!({"table": "person", "id": jane, "op": "update", "base_version": jane_v,
               "fields": fields})
    };

    let mut cases = vec![
        case(
            "malformed JSON",
            "{\"protocol\": 1, \"client_id\": oops}",
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case(
            "truncated JSON",
            {
                let full = bytes(&request(json!([valid_insert])));
                full[..full.len() / 2].to_vec()
            },
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case("empty body", "", 400, ErrorCode::MalformedRequest, &[]),
        case(
            "not UTF-8",
            vec![0xff, 0xfe, 0x00, 0x7b],
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case(
            "JSON array instead of an object",
            bytes(&json!([request(json!([valid_insert]))])),
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case(
            "empty object",
            "{}",
            400,
            ErrorCode::MalformedRequest,
            &["protocol"],
        ),
        case(
            "changes is not a list",
            bytes(&request(json!({"table": "person"}))),
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case(
            "unknown op",
            bytes(&request(
                json!([{"table": "person", "id": fresh, "op": "upsert",
                                   "fields": {"name": "X"}}]),
            )),
            400,
            ErrorCode::MalformedRequest,
            &["upsert"],
        ),
        case(
            "negative watermark",
            bytes(
                &json!({"protocol": 1, "client_id": uuid::Uuid::now_v7(), "since": -1,
                          "changes": [valid_insert]}),
            ),
            400,
            ErrorCode::MalformedRequest,
            &[],
        ),
        case(
            "watermark ahead of the server's change log",
            bytes(
                &json!({"protocol": PROTOCOL_VERSION, "client_id": uuid::Uuid::now_v7(),
                          "since": 999_999, "changes": [valid_insert]}),
            ),
            410,
            ErrorCode::ResetRequired,
            &["999999"],
        ),
        case(
            "age as text",
            bytes(&request(json!([update_jane(
                json!({"name": "Jane", "age": "old"})
            )]))),
            422,
            ErrorCode::InvalidValue,
            &["person.age", &jane_s],
        ),
        case(
            "name as number",
            bytes(&request(json!([update_jane(
                json!({"name": 42, "age": 30})
            )]))),
            422,
            ErrorCode::InvalidValue,
            &["person.name", &jane_s],
        ),
        case(
            "age as fraction",
            bytes(&request(json!([update_jane(
                json!({"name": "Jane", "age": 2.5})
            )]))),
            422,
            ErrorCode::InvalidValue,
            &["person.age"],
        ),
        case(
            "required name missing",
            bytes(&request(
                json!([{"table": "person", "id": fresh, "op": "insert",
                                   "fields": {"age": 3}}]),
            )),
            422,
            ErrorCode::InvalidValue,
            &["person.name", &fresh_s],
        ),
        case(
            "required name blank",
            bytes(&request(json!([update_jane(json!({"name": "   "}))]))),
            422,
            ErrorCode::InvalidValue,
            &["person.name"],
        ),
        case(
            "unknown table",
            bytes(&request(
                json!([{"table": "pets", "id": fresh, "op": "insert",
                                   "fields": {"name": "Rex"}}]),
            )),
            422,
            ErrorCode::UnknownTable,
            &["pets", &fresh_s],
        ),
        case(
            "table name with SQL in it",
            bytes(&request(
                json!([{"table": "person\"; DROP TABLE person; --", "id": fresh,
                                   "op": "insert", "fields": {"name": "Rex"}}]),
            )),
            422,
            ErrorCode::UnknownTable,
            &["DROP TABLE person"],
        ),
        case(
            "unknown column",
            bytes(&request(json!([update_jane(
                json!({"name": "Jane", "shoe_size": 9})
            )]))),
            422,
            ErrorCode::UnknownColumn,
            &["shoe_size", "person", &jane_s],
        ),
        case(
            "column of the other table",
            bytes(&request(
                json!([{"table": "person", "id": fresh, "op": "insert",
                                   "fields": {"name": "X", "title": "not a person column"}}]),
            )),
            422,
            ErrorCode::UnknownColumn,
            &["title"],
        ),
        case(
            "row id is not a UUID",
            bytes(&request(
                json!([{"table": "person", "id": "not-a-uuid", "op": "insert",
                                   "fields": {"name": "X"}}]),
            )),
            400,
            ErrorCode::MalformedRequest,
            &["UUID"],
        ),
        case(
            "nil row id",
            bytes(&request(
                json!([{"table": "person", "id": RowId::nil(), "op": "insert",
                                   "fields": {"name": "Nobody"}}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["nil"],
        ),
        case(
            "update without base_version",
            bytes(&request(
                json!([{"table": "person", "id": jane, "op": "update",
                                   "fields": {"name": "Jane", "age": 99}}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["base_version", &jane_s],
        ),
        case(
            "update without fields",
            bytes(&request(
                json!([{"table": "person", "id": jane, "op": "update",
                                   "base_version": jane_v}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["fields", &jane_s],
        ),
        case(
            "delete without base_version",
            bytes(&request(
                json!([{"table": "person", "id": john, "op": "delete"}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["base_version", &john_s],
        ),
        case(
            "delete with fields",
            bytes(&request(
                json!([{"table": "person", "id": john, "op": "delete",
                                   "base_version": john_v, "fields": {"name": "John"}}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["fields", &john_s],
        ),
        case(
            "insert with base_version",
            bytes(&request(
                json!([{"table": "person", "id": fresh, "op": "insert",
                                   "base_version": 1, "fields": {"name": "X"}}]),
            )),
            422,
            ErrorCode::InvalidChange,
            &["base_version", &fresh_s],
        ),
        case(
            "same row twice in one request",
            bytes(&request(json!([
                valid_insert,
                {"table": "person", "id": fresh, "op": "insert", "fields": {"name": "Twin"}},
            ]))),
            422,
            ErrorCode::InvalidChange,
            &["more than once", &fresh_s],
        ),
        case(
            "protocol 99",
            bytes(
                &json!({"protocol": 99, "client_id": uuid::Uuid::now_v7(), "since": 0,
                          "changes": [valid_insert]}),
            ),
            400,
            ErrorCode::UnsupportedProtocol,
            &["99"],
        ),
        case(
            "pull_limit above the maximum",
            bytes(
                &json!({"protocol": PROTOCOL_VERSION, "client_id": uuid::Uuid::now_v7(),
                          "since": 0, "changes": [valid_insert],
                          "pull_limit": MAX_PULL_LIMIT + 1}),
            ),
            413,
            ErrorCode::BatchTooLarge,
            &["pull_limit", &(MAX_PULL_LIMIT + 1).to_string()],
        ),
        case(
            "name of 201 characters",
            bytes(&request(json!([update_jane(
                json!({"name": "n".repeat(201)})
            )]))),
            422,
            ErrorCode::InvalidValue,
            &["person.name", "201"],
        ),
        case(
            "email above the default text limit",
            bytes(&request(json!([update_jane(json!({"name": "Jane",
                                                     "email": "e".repeat(10_001)}))]))),
            422,
            ErrorCode::InvalidValue,
            &["person.email"],
        ),
        case(
            "valid change followed by an invalid one",
            bytes(&request(json!([
                update_jane(json!({"name": "Jane Changed", "age": 26})),
                valid_insert,
                {"table": "person", "id": john, "op": "update", "base_version": john_v,
                 "fields": {"name": "John", "age": "forty"}},
            ]))),
            422,
            ErrorCode::InvalidValue,
            &["#2", &john_s, "person.age"],
        ),
    ];

    // One request per row would exceed the body limit long before 5,001 changes, so the
    // over-long batch uses the compact sequence form of a change that serde accepts for
    // structs: [table, id, op], with a one-letter table. The batch length is checked
    // before any change is looked at, so the expected code is batch_too_large and not
    // unknown_table.
    let too_many = MAX_CHANGES_PER_REQUEST + 1;
    let mut changes = String::with_capacity(too_many * 50);
    for i in 0..too_many {
        if i > 0 {
            changes.push(',');
        }
        changes.push_str(&format!(
            "[\"t\",\"{}\",\"insert\"]",
            RowId::now_v7().simple()
        ));
    }
    let body = format!(
        "{{\"protocol\":{PROTOCOL_VERSION},\"client_id\":\"{}\",\"since\":0,\"changes\":[{changes}]}}",
        uuid::Uuid::now_v7()
    );
    assert!(
        body.len() < MAX_BODY_BYTES,
        "batch body is {} bytes",
        body.len()
    );
    cases.push(case(
        "more than MAX_CHANGES_PER_REQUEST changes",
        body,
        413,
        ErrorCode::BatchTooLarge,
        &[&too_many.to_string(), &MAX_CHANGES_PER_REQUEST.to_string()],
    ));

    let huge = bytes(&request(
        json!([{"table": "person", "id": fresh, "op": "insert",
                                       "fields": {"name": "Big", "email": "x".repeat(300_000)}}]),
    ));
    assert!(huge.len() > MAX_BODY_BYTES);
    cases.push(case(
        "body larger than max_body_bytes",
        huge,
        413,
        ErrorCode::PayloadTooLarge,
        &[],
    ));

    for case in cases {
        let (status, body) = post(&http, &server, "/v1/sync", case.body).await;
        let error = api_error(case.name, &body);
        assert_eq!(
            (status, error.error.code),
            (case.status, case.code),
            "{}: wrong status or code; message: {}",
            case.name,
            error.error.message
        );
        for needle in &case.mentions {
            assert!(
                error
                    .error
                    .message
                    .to_lowercase()
                    .contains(&needle.to_lowercase()),
                "{}: message {:?} does not mention {needle:?}",
                case.name,
                error.error.message
            );
        }
        assert_eq!(
            server.rows().await,
            snapshot,
            "{}: the rejected request changed the server's state",
            case.name
        );
        assert_healthy(&http, &server, case.name).await;
    }

    // Nothing the bad requests carried reached the server, and real clients still sync.
    assert!(!server.live("person").await.contains_key(&fresh));
    client.update("person", jane, json!({"age": 26}));
    let report = client.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 1);
    assert_eq!(report.conflicts_detected, 0);
    assert_eq!(server.live("person").await[&jane]["age"], json!(26));
    let other = TestClient::new(&server).await;
    other.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&client, &other]).await;
    assert_converged(&server, "task", &[&client, &other]).await;
}

#[tokio::test]
async fn unknown_paths_answer_404_with_a_json_error() {
    let (server, _client, _, _) = seeded().await;
    let snapshot = server.rows().await;
    let http = server.http();

    for path in ["/v1/nope", "/v2/sync", "/", "/v1/sync/extra"] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        let error = api_error(path, &body);
        assert_eq!(status, 404, "GET {path}");
        assert_eq!(error.error.code, ErrorCode::NotFound, "GET {path}");
    }
    let (status, body) = post(
        &http,
        &server,
        "/v2/sync",
        bytes(&request(
            json!([{"table": "person", "id": RowId::now_v7(), "op": "insert",
                               "fields": {"name": "Lost"}}]),
        )),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        api_error("POST /v2/sync", &body).error.code,
        ErrorCode::NotFound
    );

    assert_eq!(server.rows().await, snapshot);
    assert_healthy(&http, &server, "after unknown paths").await;
}

#[tokio::test]
async fn wrong_method_answers_with_a_json_error() {
    let (server, _client, _, _) = seeded().await;
    let http = server.http();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/sync"),
        (reqwest::Method::DELETE, "/v1/sync"),
        (reqwest::Method::POST, "/health"),
        (reqwest::Method::PUT, "/v1/schema"),
    ] {
        let response = http
            .request(method.clone(), format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        assert_eq!(status, 405, "{method} {path}");
        api_error(&format!("{method} {path}"), &body);
    }
}

/// Ids of the rows `client`'s local search for `text` returns, checked against its count.
fn search(client: &TestClient, text: &str) -> BTreeSet<RowId> {
    let store = client.client.store();
    let records = store
        .list(
            "person",
            &ListQuery {
                search: Some(text.into()),
                limit: 1_000,
                ..Default::default()
            },
        )
        .unwrap();
    let ids: BTreeSet<RowId> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), records.len());
    assert_eq!(
        store.count("person", Some(text)).unwrap(),
        ids.len() as u64,
        "count and list disagree for {text:?}"
    );
    ids
}

#[tokio::test]
async fn sql_metacharacters_are_stored_verbatim_and_searched_literally() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let bobby = "Robert'); DROP TABLE rows;--";
    let wild = "%_\\";
    let quotes = "O'Hare \"the\" `airport`; --";

    let r_bobby = a.insert(
        "person",
        json!({"name": bobby, "email": wild, "city": quotes}),
    );
    let r_percent = a.insert("person", json!({"name": "100% sure"}));
    let r_underscore = a.insert(
        "person",
        json!({"name": "Plain", "email": "a_b@example.com"}),
    );
    let r_backslash = a.insert("person", json!({"name": "Back\\slash"}));
    let r_plain = a.insert(
        "person",
        json!({"name": "Percy Cent", "city": "Percentville"}),
    );
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 5);

    // The server holds the strings exactly as typed.
    let on_server = server.live("person").await;
    assert_eq!(on_server.len(), 5);
    assert_eq!(on_server[&r_bobby]["name"], json!(bobby));
    assert_eq!(on_server[&r_bobby]["email"], json!(wild));
    assert_eq!(on_server[&r_bobby]["city"], json!(quotes));

    // A second client pulls them and sees exactly the same values.
    let b = TestClient::new(&server).await;
    let report = b.client.sync().await.unwrap();
    assert_eq!(report.downloaded, 5);
    let pulled = b.live("person");
    assert_eq!(pulled[&r_bobby]["name"], json!(bobby));
    assert_eq!(pulled[&r_bobby]["email"], json!(wild));
    assert_eq!(pulled[&r_bobby]["city"], json!(quotes));
    assert_eq!(pulled[&r_backslash]["name"], json!("Back\\slash"));
    assert_converged(&server, "person", &[&a, &b]).await;

    // The local search matches the wildcard characters literally, on both clients.
    for client in [&a, &b] {
        assert_eq!(search(client, "%"), BTreeSet::from([r_bobby, r_percent]));
        assert_eq!(search(client, "_"), BTreeSet::from([r_bobby, r_underscore]));
        assert_eq!(search(client, "\\"), BTreeSet::from([r_bobby, r_backslash]));
        assert_eq!(search(client, wild), BTreeSet::from([r_bobby]));
        assert_eq!(search(client, "%%"), BTreeSet::new());
        assert_eq!(search(client, "'); drop table"), BTreeSet::from([r_bobby]));
        assert_eq!(search(client, "percent"), BTreeSet::from([r_plain]));
        assert_eq!(search(client, "").len(), 5);
    }

    // The metacharacters did nothing to either store or the server: everything still works.
    b.update("person", r_bobby, json!({"age": 11}));
    b.client.sync().await.unwrap();
    a.client.sync().await.unwrap();
    assert_eq!(a.live("person")[&r_bobby]["age"], json!(11));
    assert_eq!(a.live("person")[&r_bobby]["name"], json!(bobby));
    assert_converged(&server, "person", &[&a, &b]).await;
    assert_eq!(server.live("person").await.len(), 5);
}

/// `base_fields` meet the schema like `fields` (columns, types, length limits): a bad
/// base is refused whole with the same codes, so nothing of it reaches the conflict log
/// that `/v1/conflicts` serves.
#[tokio::test]
async fn base_fields_are_validated_like_fields() {
    let (server, _client, jane, _) = seeded().await;
    let snapshot = server.rows().await;
    let http = server.http();
    let jane_s = jane.to_string();
    // A stale base version: were it accepted, this change would be a logged conflict.
    let stale = |base: Value| {
        bytes(&request(
            json!([{"table": "person", "id": jane, "op": "update",
                               "base_version": 0, "fields": {"name": "Mine"},
                               "base_fields": base}]),
        ))
    };
    let cases = [
        case(
            "unknown base column",
            stale(json!({"name": "Jane", "shoe": 44})),
            422,
            ErrorCode::UnknownColumn,
            &["base_fields", "shoe", &jane_s],
        ),
        case(
            "base age as text",
            stale(json!({"name": "Jane", "age": "old"})),
            422,
            ErrorCode::InvalidValue,
            &["base_fields", "person.age"],
        ),
        case(
            "base email above the text limit",
            stale(json!({"name": "Jane", "email": "e".repeat(10_001)})),
            422,
            ErrorCode::InvalidValue,
            &["base_fields", "person.email"],
        ),
        case(
            "base name above its max_len",
            stale(json!({"name": "n".repeat(201)})),
            422,
            ErrorCode::InvalidValue,
            &["base_fields", "person.name"],
        ),
    ];
    for case in cases {
        let (status, body) = post(&http, &server, "/v1/sync", case.body).await;
        let error = api_error(case.name, &body);
        assert_eq!(
            (status, error.error.code),
            (case.status, case.code),
            "{}: {}",
            case.name,
            error.error.message
        );
        for needle in &case.mentions {
            assert!(
                error.error.message.contains(needle.as_str()),
                "{}: message {:?} does not mention {needle:?}",
                case.name,
                error.error.message
            );
        }
    }
    assert_eq!(server.rows().await, snapshot);
    assert!(server.conflict_log().is_empty(), "nothing was logged");
    // A valid base still goes through, and its conflict is logged with it.
    let (status, body) = post(
        &http,
        &server,
        "/v1/sync",
        stale(json!({"name": "Jane", "age": 25, "city": "Oslo"})),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.conflict_log().len(), 1);
}

/// Tiny requests do not fill the disk: 1000 no-op changes, each with `since = 0` and a
/// new batch id, against a data set whose every pull page is large, grow the replay
/// cache by less than 5 MB (a replay keeps only acks and conflicts, and the cache per
/// data set is bounded). Before, each kept its whole pull page.
#[tokio::test]
async fn a_flood_of_no_op_batches_does_not_grow_the_database() {
    let server = TestServer::start();
    let http = server.http();
    // About 40 KB of rows in every pull page from 0.
    let seed: Vec<Value> = (0..40)
        .map(|i| {
            json!({"table": "person", "id": RowId::now_v7(), "op": "insert",
                   "fields": {"name": format!("p{i}"), "city": "c".repeat(1_000)}})
        })
        .collect();
    let (status, _) = post(&http, &server, "/v1/sync", bytes(&request(json!(seed)))).await;
    assert_eq!(status, 200);
    let same = json!([{"table": "person", "id": seed[0]["id"], "op": "insert",
                       "fields": seed[0]["fields"]}]);
    let before = server.db().replay_cache_footprint();
    for _ in 0..1000 {
        let mut body = request(same.clone());
        body["batch_id"] = json!(uuid::Uuid::now_v7());
        body["pull_limit"] = json!(1000);
        let (status, answer) = post(&http, &server, "/v1/sync", bytes(&body)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    let grown = server.db().replay_cache_footprint().saturating_sub(before);
    assert!(grown < 5 * 1024 * 1024, "grew by {grown} bytes");
    // Every answer still pulled the page: the flood was served, not refused.
    assert_eq!(server.live("person").await.len(), 40);
}
