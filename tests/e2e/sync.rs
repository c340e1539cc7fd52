//! End-to-end sync: real server process, real clients with their own SQLite files, real
//! HTTP on 127.0.0.1. Every test asserts the end state on the server and on each client.

use std::sync::Arc;

use roster_client::{ClientError, SyncOptions};
use roster_e2e::{TestClient, TestServer, assert_converged, obj};
use serde_json::json;

/// Inserts, updates and deletes in both tables travel from one client to another, and
/// deletes leave tombstones on the server.
#[tokio::test]
async fn insert_update_delete_round_trip_across_two_tables() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;

    let jane = a.insert("person", json!({"name": "Jane", "age": 25, "city": "Lyon"}));
    let john = a.insert(
        "person",
        json!({"name": "John", "email": "john@example.org"}),
    );
    let task = a.insert(
        "task",
        json!({"title": "Call Jane", "done": false, "estimate": 1.5}),
    );
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 3);
    assert_eq!(report.conflicts_detected, 0);

    let report = b.client.sync().await.unwrap();
    assert_eq!(report.downloaded, 3);
    assert_eq!(b.live("person")[&jane]["city"], json!("Lyon"));
    assert_eq!(b.live("task")[&task]["estimate"], json!(1.5));

    b.update("person", jane, json!({"age": 26}));
    b.update("task", task, json!({"done": true}));
    b.delete("person", john);
    let report = b.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 3);
    let report = a.client.sync().await.unwrap();
    assert_eq!(report.downloaded, 3);

    assert_eq!(a.live("person")[&jane]["age"], json!(26));
    assert!(!a.live("person").contains_key(&john));
    assert_eq!(a.live("task")[&task]["done"], json!(true));
    let rows = server.rows().await;
    let tombstone = &rows[&("person".to_owned(), john)];
    assert!(tombstone.deleted && tombstone.fields.is_none());
    assert_converged(&server, "person", &[&a, &b]).await;
    assert_converged(&server, "task", &[&a, &b]).await;
    assert!(server.conflict_log().is_empty());
}

/// With the server down, edits work, queue as pending and survive a restart of the
/// client; once the server is back one sync pushes them all.
#[tokio::test]
async fn offline_edits_queue_and_push_when_the_server_returns() {
    let mut server = TestServer::start();
    let mut a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let kept = a.insert("person", json!({"name": "Kept"}));
    let gone = a.insert("person", json!({"name": "Gone"}));
    a.client.sync().await.unwrap();

    server.kill();
    let added = a.insert("person", json!({"name": "Added offline", "age": 40}));
    a.update("person", kept, json!({"city": "Oslo"}));
    a.delete("person", gone);
    let local_only = a.insert("person", json!({"name": "Never synced"}));
    a.delete("person", local_only);
    assert_eq!(
        a.pending(),
        3,
        "a row created and deleted offline is no change"
    );
    let error = a.client.sync().await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    assert!(error.is_transient());
    assert_eq!(
        a.pending(),
        3,
        "a failed sync must not drop pending changes"
    );

    a.reopen();
    assert_eq!(a.pending(), 3, "pending changes survive a restart");
    assert_eq!(a.live("person")[&kept]["city"], json!("Oslo"));

    server.restart();
    let report = a.client.sync().await.unwrap();
    assert_eq!(
        report.uploaded, 3,
        "the local-only row is dropped, not sent"
    );
    assert_eq!(a.pending(), 0);
    b.client.sync().await.unwrap();
    let live = server.live("person").await;
    assert_eq!(live.len(), 2);
    assert_eq!(live[&added]["age"], json!(40));
    assert_eq!(live[&kept]["city"], json!("Oslo"));
    assert!(
        !server
            .rows()
            .await
            .contains_key(&("person".to_owned(), local_only))
    );
    assert_converged(&server, "person", &[&a, &b]).await;
}

/// A first sync goes in bounded pages; killing the server part way keeps what was
/// applied, and the next sync resumes from the stored watermark instead of starting over.
/// 10,000 rows in pages of 200: 50 pages, the server killed after 20 of them. (The size
/// is what the property needs; the speed of large syncs is `cargo xtask bench`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_is_paged_and_resumes_after_interruption() {
    const ROWS: u64 = 10_000;
    const PAGE: u64 = 200;
    let mut server = TestServer::start();
    let seeder = TestClient::new(&server).await;
    let rows = (0..ROWS)
        .map(|i| obj(json!({"name": format!("Person {i}"), "age": i % 100, "city": "Paris"})))
        .collect();
    seeder.client.store().insert_many("person", rows).unwrap();
    let report = seeder.client.sync().await.unwrap();
    assert_eq!(report.uploaded, ROWS);
    let batch = SyncOptions::default().push_batch as u64;
    assert!(
        u64::from(report.requests) >= ROWS.div_ceil(batch),
        "pushed in batches of at most {batch}"
    );

    let options = SyncOptions {
        pull_limit: PAGE as u32,
        ..SyncOptions::default()
    };
    let fresh = TestClient::with_options(&server, options.clone()).await;
    let mut seen_before_kill = 0;
    let result = fresh
        .client
        .sync_with_progress(|p| {
            if p.downloaded >= 20 * PAGE && server.is_running() {
                seen_before_kill = p.downloaded;
                server.kill();
            }
        })
        .await;
    assert!(
        matches!(result, Err(ClientError::Unreachable { .. })),
        "{result:?}"
    );
    let applied = fresh.client.store().count("person", None).unwrap();
    // The engine applies a page while it asks for the next, and sends the pull after
    // that on the next page's head, so the pages that arrived before the kill are
    // applied after the last progress report: two pages at most.
    assert!(
        (seen_before_kill..=seen_before_kill + 2 * PAGE).contains(&applied),
        "every applied page is kept: {applied} rows after {seen_before_kill} reported"
    );
    assert!(applied < ROWS);
    let watermark = fresh.client.store().watermark().unwrap();
    assert!(watermark > 0);

    server.restart();
    let report = fresh.client.sync().await.unwrap();
    assert_eq!(
        report.downloaded,
        ROWS - applied,
        "the resumed sync pulls only what is missing"
    );
    assert!(report.requests as u64 >= (ROWS - applied) / PAGE);
    assert_eq!(fresh.client.store().count("person", None).unwrap(), ROWS);
    assert_eq!(fresh.live("person"), server.live("person").await);
    assert_eq!(fresh.pending(), 0);
}

/// Many clients push an update of the same row at the same moment. With server-wins,
/// exactly one write is accepted on that version and every other one comes back as a
/// logged both_updated conflict; nobody's update vanishes without a trace, and all
/// clients end with the winner's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_row_exactly_one_wins_per_version() {
    const WRITERS: usize = 24;
    let server = TestServer::start();
    let seed = TestClient::new(&server).await;
    let id = seed.insert("person", json!({"name": "Jane", "age": 25}));
    seed.client.sync().await.unwrap();
    let base_version = server.rows().await[&("person".to_owned(), id)].version;

    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let writer = TestClient::new(&server).await;
        writer.client.sync().await.unwrap();
        writer.update("person", id, json!({"age": 100 + i}));
        writers.push(Arc::new(writer));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, writer) in writers.iter().enumerate() {
        let writer = writer.clone();
        tasks.spawn(async move { (i, writer.client.sync().await) });
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, report) = joined.unwrap();
        let report = report.unwrap();
        assert_eq!(report.uploaded, 1);
        match report.conflicts_detected {
            0 => winners.push(i),
            1 => losers += 1,
            n => panic!("writer {i} saw {n} conflicts"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one write wins the version");
    assert_eq!(losers, WRITERS - 1);

    let row = &server.rows().await[&("person".to_owned(), id)];
    assert_eq!(row.fields.as_ref().unwrap()["age"], json!(100 + winners[0]));
    assert!(row.version > base_version);
    let log = server.conflict_log();
    assert_eq!(log.len(), WRITERS - 1, "every rejected update is logged");
    assert!(
        log.iter()
            .all(|(table, row_id, kind, resolution)| table == "person"
                && row_id == &id.to_string()
                && kind == "both_updated"
                && resolution == "server_wins")
    );
    seed.client.sync().await.unwrap();
    let mut everyone: Vec<&TestClient> = writers.iter().map(|w| w.as_ref()).collect();
    everyone.push(&seed);
    assert_converged(&server, "person", &everyone).await;
}

/// The same race on a client-wins table: every write is applied, each on its own new
/// version (no two writes share one), the N-1 overwrites are logged as conflicts, and
/// after another round everyone holds the last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_a_client_wins_table_get_distinct_versions() {
    const WRITERS: usize = 16;
    let server = TestServer::start();
    let seed = TestClient::new(&server).await;
    let id = seed.insert("task", json!({"title": "Shared", "priority": 0}));
    seed.client.sync().await.unwrap();

    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let writer = TestClient::new(&server).await;
        writer.client.sync().await.unwrap();
        writer.update("task", id, json!({"priority": i + 1}));
        writers.push(Arc::new(writer));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for writer in &writers {
        let writer = writer.clone();
        tasks.spawn(async move { writer.client.sync().await });
    }
    let mut clean = 0;
    while let Some(joined) = tasks.join_next().await {
        let report = joined.unwrap().unwrap();
        if report.conflicts_detected == 0 {
            clean += 1;
        }
    }
    assert_eq!(clean, 1, "only the first write matches the base version");
    let log = server.conflict_log();
    assert_eq!(log.len(), WRITERS - 1);
    assert!(
        log.iter()
            .all(|(_, _, kind, res)| kind == "both_updated" && res == "client_wins")
    );

    // Versions are change-log positions: WRITERS accepted writes after the insert.
    let row = &server.rows().await[&("task".to_owned(), id)];
    assert_eq!(row.version, 1 + WRITERS as u64);
    for writer in &writers {
        writer.client.sync().await.unwrap();
    }
    seed.client.sync().await.unwrap();
    let mut everyone: Vec<&TestClient> = writers.iter().map(|w| w.as_ref()).collect();
    everyone.push(&seed);
    assert_converged(&server, "task", &everyone).await;
}

/// Edits made while a round is running (here: between its batches) are neither lost nor
/// marked clean: they stay pending and the next round pushes them.
#[tokio::test]
async fn edits_made_during_a_sync_round_stay_pending() {
    let server = TestServer::start();
    let options = SyncOptions {
        push_batch: 1,
        ..SyncOptions::default()
    };
    let a = TestClient::with_options(&server, options).await;
    let first = a.insert("person", json!({"name": "First"}));
    let second = a.insert("person", json!({"name": "Second"}));
    let third = a.insert("person", json!({"name": "Third"}));

    let mut edited = false;
    let report = a
        .client
        .sync_with_progress(|p| {
            if p.requests == 1 && !edited {
                edited = true;
                // `first` was just acknowledged; `third` has not been sent yet.
                a.update("person", first, json!({"age": 1}));
                a.update("person", third, json!({"age": 3}));
            }
        })
        .await
        .unwrap();
    assert!(edited);
    assert_eq!(
        report.uploaded, 2,
        "first and second; third was edited mid-round"
    );
    assert_eq!(a.pending(), 2);
    let live = server.live("person").await;
    assert_eq!(live[&first]["age"], json!(null));
    assert!(live.contains_key(&second));
    assert!(!live.contains_key(&third));

    let report = a.client.sync().await.unwrap();
    assert_eq!(report.uploaded, 2);
    assert_eq!(report.conflicts_detected, 0);
    let live = server.live("person").await;
    assert_eq!(live[&first]["age"], json!(1));
    assert_eq!(live[&third]["age"], json!(3));
    assert_converged(&server, "person", &[&a]).await;
}

/// When the tombstones a client might have missed are purged, the server refuses its old
/// watermark; the client re-initialises (drops clean rows, keeps pending ones, pulls
/// everything) and ends equal to the server.
#[tokio::test]
async fn a_watermark_older_than_the_purge_horizon_reinitialises_the_client() {
    let server = TestServer::start();
    let a = TestClient::new(&server).await;
    let b = TestClient::new(&server).await;
    let stays = a.insert("person", json!({"name": "Stays"}));
    let goes = a.insert("person", json!({"name": "Goes"}));
    a.client.sync().await.unwrap();
    b.client.sync().await.unwrap();
    let mine = b.insert("person", json!({"name": "B's pending row"}));

    a.delete("person", goes);
    a.client.sync().await.unwrap();
    let purged = server.purge_all_tombstones();
    assert!(purged.contains("purged 1 tombstones"), "{purged}");

    let report = b.client.sync().await.unwrap();
    assert!(report.reinitialised);
    let live = b.live("person");
    assert!(live.contains_key(&stays) && live.contains_key(&mine));
    assert!(
        !live.contains_key(&goes),
        "the purged delete still reaches B"
    );
    a.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&a, &b]).await;
}

/// A pull page with more changes waiting names its watermark in the
/// `x-roster-more-after` header, the one the body gives, so a device can ask for the
/// next page before it reads this one; the last page has no such header.
#[tokio::test]
async fn a_page_with_more_to_come_names_its_watermark_in_a_header() {
    let server = TestServer::start();
    let writer = TestClient::new(&server).await;
    let rows = (0..5)
        .map(|i| obj(json!({"name": format!("Person {i}")})))
        .collect();
    writer.client.store().insert_many("person", rows).unwrap();
    writer.client.sync().await.unwrap();

    let raw = reqwest::Client::new();
    let mut since = 0;
    let mut headers = Vec::new();
    loop {
        let pull = json!({
            "protocol": roster_protocol::PROTOCOL_VERSION,
            "client_id": uuid::Uuid::now_v7(),
            "since": since,
            "changes": [],
            "pull_limit": 2,
        });
        let response = raw
            .post(format!("{}{}", server.url(), roster_protocol::SYNC_PATH))
            .bearer_auth(server.token())
            .json(&pull)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let header = response
            .headers()
            .get(roster_protocol::MORE_AFTER_HEADER)
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let page: roster_protocol::SyncResponse = response.json().await.unwrap();
        assert_eq!(
            header,
            page.more_after(),
            "the header says what the body says"
        );
        headers.push(header);
        since = page.watermark;
        if !page.has_more {
            break;
        }
    }
    // Five rows in pages of two: two pages with more to come, then the last one.
    assert_eq!(headers.len(), 3, "{headers:?}");
    assert!(headers[..2].iter().all(Option::is_some), "{headers:?}");
    assert_eq!(headers[2], None);
}

/// Pull answers are compressed for clients that accept it, zstd first, gzip for those
/// that only take gzip, and sent as they are to clients that accept neither; the
/// client itself asks for compression and syncs as before.
#[tokio::test]
async fn pull_answers_are_compressed_when_the_client_accepts_it() {
    let server = TestServer::start();
    let writer = TestClient::new(&server).await;
    let rows = (0..2_000)
        .map(|i| obj(json!({"name": format!("Person {i}"), "email": format!("p{i}@example.org")})))
        .collect();
    writer.client.store().insert_many("person", rows).unwrap();
    writer.client.sync().await.unwrap();

    // A client that does not decompress, to see the bytes on the wire.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .build()
        .unwrap();
    let pull = json!({
        "protocol": roster_protocol::PROTOCOL_VERSION,
        "client_id": uuid::Uuid::now_v7(),
        "since": 0,
        "changes": [],
        "pull_limit": 2000,
    });
    let fetch = |accept: Option<&'static str>| {
        let mut request = raw
            .post(format!("{}{}", server.url(), roster_protocol::SYNC_PATH))
            .bearer_auth(server.token())
            .json(&pull);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT_ENCODING, accept);
        }
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let encoding = response
                .headers()
                .get(reqwest::header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned());
            (encoding, response.bytes().await.unwrap().len())
        }
    };
    let (plain_encoding, plain) = fetch(None).await;
    assert_eq!(plain_encoding, None);
    let (zstd_encoding, zstd) = fetch(Some("gzip, zstd")).await;
    assert_eq!(zstd_encoding.as_deref(), Some("zstd"));
    let (gzip_encoding, gzip) = fetch(Some("gzip")).await;
    assert_eq!(gzip_encoding.as_deref(), Some("gzip"));
    eprintln!("2000-row page: {plain} bytes plain, {zstd} zstd, {gzip} gzip");
    assert!(zstd * 3 < plain, "zstd {zstd} of {plain} bytes");
    assert!(gzip * 3 < plain, "gzip {gzip} of {plain} bytes");

    let reader = TestClient::new(&server).await;
    reader.client.sync().await.unwrap();
    assert_converged(&server, "person", &[&writer, &reader]).await;
    assert_eq!(reader.live("person").len(), 2_000);
}
