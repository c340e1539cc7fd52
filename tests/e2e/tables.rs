//! The Azure Mobile Apps table protocol (`/tables`, ZUMO-API-VERSION 2.0.0) end to end,
//! against the real server binary: an AMA-style client and a Roster device share rows;
//! optimistic concurrency (412 / 409 with the server's item) goes through Roster's
//! conflict handling and log; bad queries and writes get a 4xx saying why; and an
//! incremental puller (`updatedAt ge`) misses nothing while four writers write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use roster_e2e::{TestClient, TestServer};
use serde_json::{Value, json};

/// An HTTP client speaking as an AMA app: `ZUMO-API-VERSION` and `X-ZUMO-AUTH` on every
/// request.
fn ama_http(token: &str) -> reqwest::Client {
    roster_client::install_tls_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("zumo-api-version", "2.0.0".parse().unwrap());
    headers.insert("x-zumo-auth", token.parse().unwrap());
    headers.insert(
        "x-zumo-installation-id",
        "0b9f4a7e-1111-4a22-8c33-123456789abc".parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Status, `ETag` header and JSON body of a response.
async fn answer(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, etag, body)
}

/// `url` with the query parameters `pairs`, percent-encoded.
fn with_query<V: AsRef<str>>(url: &str, pairs: &[(&str, V)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(url, pairs.iter().map(|(k, v)| (*k, v.as_ref()))).unwrap()
}

fn quoted(version: &Value) -> String {
    format!("\"{}\"", version.as_str().unwrap())
}

#[tokio::test]
async fn an_ama_client_and_a_roster_device_share_rows_and_conflicts() {
    let server = TestServer::start();
    let ama = ama_http(server.token());
    let base = format!("{}/tables", server.url());

    // Insert: 201 with the item, its system columns and its ETag.
    let (status, etag, jane) = answer(
        ama.post(format!("{base}/person"))
            .json(&json!({"name": "Jane", "age": 25}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{jane}");
    let id = jane["id"].as_str().unwrap().to_owned();
    assert_eq!(etag.as_deref(), Some(quoted(&jane["version"]).as_str()));
    assert_eq!(jane["deleted"], json!(false));
    assert_eq!(jane["createdAt"], jane["updatedAt"]);
    assert_eq!(
        (jane["email"].clone(), jane["age"].clone()),
        (Value::Null, json!(25))
    );

    // A Roster device pulls it through /v1/sync and edits it.
    let device = TestClient::new(&server).await;
    device.client.sync().await.unwrap();
    let row_id: roster_protocol::RowId = id.parse().unwrap();
    assert_eq!(device.live("person")[&row_id]["name"], json!("Jane"));
    device.update("person", row_id, json!({"age": 32}));
    device.client.sync().await.unwrap();

    // The AMA client sees the device's edit under a newer version.
    let (status, _, seen) =
        answer(ama.get(format!("{base}/person/{id}")).send().await.unwrap()).await;
    assert_eq!((status, seen["age"].clone()), (StatusCode::OK, json!(32)));
    assert_ne!(seen["version"], jane["version"]);
    assert!(seen["updatedAt"].as_str() >= jane["updatedAt"].as_str());

    // A PATCH on the stale version: 412 with the server's item and ETag; the table is
    // server-wins, so nothing changes and the conflict is logged with its kind.
    let (status, etag, current) = answer(
        ama.patch(format!("{base}/person/{id}"))
            .header("if-match", quoted(&jane["version"]))
            .json(&json!({"age": 30}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{current}");
    assert_eq!(current["age"], json!(32));
    assert_eq!(etag.as_deref(), Some(quoted(&current["version"]).as_str()));
    let logged = server.conflict_log();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        (
            logged[0].1.as_str(),
            logged[0].2.as_str(),
            logged[0].3.as_str()
        ),
        (id.as_str(), "both_updated", "server_wins")
    );

    // The AMA client resolves it the AMA way: again on the server's version. 200.
    let (status, _, updated) = answer(
        ama.patch(format!("{base}/person/{id}"))
            .header("if-match", quoted(&current["version"]))
            .json(&json!({"age": 30, "city": "Oslo", "version": "ignored"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (updated["age"].clone(), updated["city"].clone()),
        (json!(30), json!("Oslo"))
    );
    assert_eq!(
        updated["name"],
        json!("Jane"),
        "a PATCH keeps the other columns"
    );

    // A duplicate insert: 409 with the server's item, logged.
    let (status, _, existing) = answer(
        ama.post(format!("{base}/person"))
            .json(&json!({"id": id, "name": "Someone else"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(existing["name"], json!("Jane"));
    assert_eq!(server.conflict_log()[1].2, "client_inserted_existing");

    // On the client-wins table a stale PATCH stands (200) and is still logged.
    let (_, _, task) = answer(
        ama.post(format!("{base}/task"))
            .json(&json!({"title": "Write", "done": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    ama.patch(format!("{base}/task/{task_id}"))
        .json(&json!({"priority": 1}))
        .send()
        .await
        .unwrap();
    let (status, _, task_now) = answer(
        ama.patch(format!("{base}/task/{task_id}"))
            .header("if-match", quoted(&task["version"]))
            .json(&json!({"done": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (task_now["done"].clone(), task_now["priority"].clone()),
        (json!(true), json!(1))
    );
    let last = server.conflict_log().pop().unwrap();
    assert_eq!(
        (last.2.as_str(), last.3.as_str()),
        ("both_updated", "client_wins")
    );

    // Delete: a stale If-Match is 412; the current one soft-deletes (200, deleted: true).
    let stale = ama
        .delete(format!("{base}/person/{id}"))
        .header("if-match", quoted(&current["version"]))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let (status, _, gone) = answer(
        ama.delete(format!("{base}/person/{id}"))
            .header("if-match", quoted(&updated["version"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, gone["deleted"].clone()),
        (StatusCode::OK, json!(true))
    );
    let read = ama.get(format!("{base}/person/{id}")).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let (_, _, listed) = answer(
        ama.get(with_query(
            &format!("{base}/person"),
            &[("__includeDeleted", "true")],
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(listed[0]["deleted"], json!(true));
    let (_, _, live) = answer(ama.get(format!("{base}/person")).send().await.unwrap()).await;
    assert_eq!(live, json!([]));
    device.client.sync().await.unwrap();
    assert!(
        device.live("person").is_empty(),
        "the device sees the delete"
    );

    // Undelete brings it back with the values sent; the device sees it again.
    let (status, _, back) = answer(
        ama.post(format!("{base}/person/{id}"))
            .json(&json!({"name": "Jane", "age": 31}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, back["deleted"].clone()),
        (StatusCode::OK, json!(false)),
        "{back}"
    );
    device.client.sync().await.unwrap();
    assert_eq!(device.live("person")[&row_id]["age"], json!(31));
    let without_nulls = |mut fields: roster_protocol::Fields| {
        fields.retain(|_, v| !v.is_null());
        fields
    };
    assert_eq!(
        without_nulls(device.live("person")[&row_id].clone()),
        without_nulls(server.live("person").await[&row_id].clone())
    );
}

/// Who sends a bad request of [`bad_queries_and_writes_get_a_4xx_saying_why`].
#[derive(Clone, Copy)]
enum Sender {
    /// An AMA app: API version header and token.
    Ama,
    /// A Roster HTTP client: a token but no `ZUMO-API-VERSION`.
    NoApiVersion,
    /// The API version header but no token.
    NoToken,
}
use Sender::{Ama, NoApiVersion, NoToken};

/// A bad request and its answer: sender, method, path under `/tables`, query, raw JSON
/// body, then the status and words the answer must carry.
type BadRequest = (
    Sender,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_queries_and_writes_get_a_4xx_saying_why() {
    let server = TestServer::start();
    let ama = ama_http(server.token());
    let base = format!("{}/tables", server.url());
    let (_, _, jane) = answer(
        ama.post(format!("{base}/person"))
            .json(&json!({"name": "Jane"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = jane["id"].as_str().unwrap();
    // One bad request per line: who sends it, the method, the path under /tables (`{id}`
    // is Jane's), the query, the raw JSON body, and the status and words of the answer.
    #[rustfmt::skip]
    let cases: &[BadRequest] = &[
        (Ama, "GET", "person", &[("$filter", "age gt")], None, 400, "$filter cannot be read at character 7"),
        (Ama, "GET", "person", &[("$filter", "shoe eq 1")], None, 400, "unknown column \"shoe\""),
        (Ama, "GET", "person", &[("$filter", "age eq 'ten'")], None, 400, "age cannot be compared with text"),
        (Ama, "GET", "person", &[("$filter", "startswith(name, 'J')")], None, 400, "startswith() is not supported"),
        (Ama, "GET", "person", &[("$top", "many")], None, 400, "$top must be a whole number"),
        (Ama, "PATCH", "person/{id}", &[], Some(r#"{"version": "1"}"#), 400, "the PATCH changes no column"),
        (Ama, "PATCH", "person/{id}", &[], Some(r#"{"shoe": 42}"#), 422, "unknown column \"shoe\""),
        (Ama, "POST", "person", &[], Some(r#"{"name": 7}"#), 422, "expected text, got the number 7"),
        (Ama, "POST", "person", &[], Some(r#"{"id": "item-1", "name": "A"}"#), 400, "is not a UUID"),
        (Ama, "POST", "person", &[], Some("[1]"), 400, "must be a JSON object"),
        (Ama, "GET", "nosuch", &[], None, 404, "no table \"nosuch\""),
        (NoApiVersion, "GET", "person", &[], None, 400, "ZUMO-API-VERSION header is missing"),
        (NoToken, "GET", "person", &[], None, 401, "bearer token is required"),
    ];
    let no_token = reqwest::Client::new();
    for &(sender, method, path, query, body, status, words) in cases {
        let url = with_query(&format!("{base}/{}", path.replace("{id}", id)), query);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = match sender {
            Ama => ama.request(method, url.clone()),
            NoApiVersion => server.http().request(method, url.clone()),
            NoToken => no_token
                .request(method, url.clone())
                .header("zumo-api-version", "2.0.0"),
        };
        if let Some(body) = body {
            request = request
                .body(body)
                .header("content-type", "application/json");
        }
        let (got, _, answer) = answer(request.send().await.unwrap()).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got.as_u16(), status, "{url}: {answer}");
        assert!(message.contains(words), "{url}: {message}");
    }
    // Nothing of it was written.
    let live = server.live("person").await;
    assert_eq!(live.len(), 1);
    assert_eq!(live.values().next().unwrap()["name"], json!("Jane"));
}

/// One AMA-style incremental pull pass: `updatedAt ge` the newest `updatedAt` seen,
/// ordered by `updatedAt`, the boundary re-read (no `$skip`), deduplicated by id and
/// version. Returns how many new (id, version) pairs it recorded.
async fn pull_pass(
    ama: &reqwest::Client,
    url: &str,
    since: &mut String,
    seen: &mut BTreeMap<String, (u64, bool)>,
) -> usize {
    const PAGE: usize = 25;
    let mut top = PAGE;
    let mut recorded = 0;
    loop {
        let page: Vec<Value> = ama
            .get(with_query(
                url,
                &[
                    ("$filter", format!("updatedAt ge datetimeoffset'{since}'")),
                    ("$orderby", "updatedAt".to_owned()),
                    ("$top", top.to_string()),
                    ("__includeDeleted", "true".to_owned()),
                ],
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in &page {
            let id = item["id"].as_str().unwrap().to_owned();
            let version: u64 = item["version"].as_str().unwrap().parse().unwrap();
            let deleted = item["deleted"].as_bool().unwrap();
            let known = seen.get(&id).map(|(v, _)| *v);
            assert!(
                known.is_none_or(|v| v <= version),
                "a version went backwards"
            );
            if known != Some(version) {
                seen.insert(id, (version, deleted));
                recorded += 1;
            }
        }
        let full = page.len() == top;
        if let Some(last) = page.last() {
            let last = last["updatedAt"].as_str().unwrap();
            if last != since.as_str() {
                *since = last.to_owned();
                top = PAGE;
            } else if full {
                // A whole page within one millisecond: read a larger page from there.
                top *= 2;
            }
        }
        if !full {
            return recorded;
        }
    }
}

#[tokio::test]
async fn an_updated_at_puller_misses_nothing_while_four_writers_write() {
    let server = TestServer::start();
    let url = format!("{}/tables/task", server.url());
    let puller = ama_http(server.token());
    let mut since = "1970-01-01T00:00:00.000Z".to_owned();
    let mut seen = BTreeMap::new();
    // The newest write came from an instance whose clock runs an hour ahead, and the
    // puller has seen it: every later write must still sort at or after it.
    let ahead: Value = puller
        .post(&url)
        .json(&json!({"title": "from a fast clock"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.db().execute(&format!(
        "UPDATE rows SET updated_at_ms = updated_at_ms + 3600000 WHERE id = '{}'",
        ahead["id"].as_str().unwrap()
    ));
    pull_pass(&puller, &url, &mut since, &mut seen).await;
    assert!(since.as_str() > ahead["updatedAt"].as_str().unwrap());
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let ama = ama_http(server.token());
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<(String, String)> = Vec::new();
            for step in 0..45u32 {
                let pick = (step as usize * 7 + writer) % (mine.len().max(1));
                let response = match step % 5 {
                    0..=2 => {
                        ama.post(&url)
                            .json(&json!({"title": format!("w{writer} s{step}")}))
                            .send()
                            .await
                    }
                    3 if !mine.is_empty() => {
                        let (id, version) = &mine[pick];
                        ama.patch(format!("{url}/{id}"))
                            .header("if-match", format!("\"{version}\""))
                            .json(&json!({"priority": step}))
                            .send()
                            .await
                    }
                    4 if mine.len() > 3 => {
                        let (id, version) = mine.remove(pick);
                        let response = ama
                            .delete(format!("{url}/{id}"))
                            .header("if-match", format!("\"{version}\""))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), StatusCode::OK);
                        continue;
                    }
                    _ => continue,
                };
                let response = response.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let item: Value = response.json().await.unwrap();
                let entry = (
                    item["id"].as_str().unwrap().to_owned(),
                    item["version"].as_str().unwrap().to_owned(),
                );
                match mine.iter_mut().find(|(id, _)| *id == entry.0) {
                    Some(known) => *known = entry,
                    None => mine.push(entry),
                }
            }
        }));
    }
    let done = writing.clone();
    let all_written = tokio::spawn(async move {
        for writer in writers {
            writer.await.unwrap();
        }
        done.store(false, Ordering::SeqCst);
    });

    let mut passes_during_writes = 0;
    while writing.load(Ordering::SeqCst) {
        pull_pass(&puller, &url, &mut since, &mut seen).await;
        passes_during_writes += 1;
    }
    all_written.await.unwrap();
    pull_pass(&puller, &url, &mut since, &mut seen).await;
    assert!(
        passes_during_writes > 1,
        "the puller ran while the writers wrote"
    );

    // The puller ends equal to the server: every row, at its last version and state.
    let server_rows: BTreeMap<String, (u64, bool)> = server
        .rows()
        .await
        .into_iter()
        .filter(|((table, _), _)| table == "task")
        .map(|((_, id), row)| (id.to_string(), (row.version, row.deleted)))
        .collect();
    assert!(server_rows.len() > 4 * 27, "{} rows", server_rows.len());
    assert!(server_rows.values().any(|(_, deleted)| *deleted));
    assert_eq!(seen, server_rows);
}
