//! UI-facing calls on N local rows through `LocalStore`: one page of the list sorted by
//! name, one page of a search (sorted by name), the search's count, and a one-row edit.
//! The store is marked as synced first, as after a first sync: the first sorted page
//! then builds the sort column's index (timed on its own). Without that index (older
//! clients) the same list calls are repeated with a bench-made index, as an experiment.

use std::time::{Duration, Instant};

use anyhow::Result;
use roster_client::ListQuery;
use roster_client::LocalStore;
use roster_protocol::{Fields, Schema};
use serde_json::Value;

use super::{Ctx, discard, label};
use crate::data::{RowGen, SEARCH_TERM};
use crate::report::Entry;
use crate::stats::Latency;

/// The SQL `LocalStore::list` runs for a page sorted by name (from records.rs), for
/// `EXPLAIN QUERY PLAN`.
const SORTED_PAGE_SQL: &str = r#"SELECT id, "name", "email", "phone", "age", "city", "notes"
    FROM "person" WHERE ?1 IS NULL ORDER BY "name" COLLATE NOCASE ASC, id ASC LIMIT 50 OFFSET 0"#;

fn time_reps<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Latency, T)> {
    // The first call warms SQLite's page cache and the statement cache.
    let mut last = f()?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        last = f()?;
        samples.push(t.elapsed());
    }
    Ok((Latency::of(&samples), last))
}

fn query_plan(store: &LocalStore) -> Result<String> {
    let conn = rusqlite::Connection::open_with_flags(
        store.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {SORTED_PAGE_SQL}"))?;
    let steps: Vec<String> = stmt
        .query_map([Option::<String>::None], |r| r.get::<_, String>(3))?
        .collect::<Result<_, _>>()?;
    Ok(steps.join("; "))
}

struct Figures {
    sorted: Latency,
    search: Latency,
    count: Latency,
    matches: u64,
}

fn measure(store: &LocalStore, reps: usize) -> Result<Figures> {
    let sorted = ListQuery {
        sort: Some("name".into()),
        limit: 50,
        ..ListQuery::default()
    };
    let search = ListQuery {
        search: Some(SEARCH_TERM.into()),
        ..sorted.clone()
    };
    let (sorted, page) = time_reps(reps, || Ok(store.list("person", &sorted)?))?;
    anyhow::ensure!(page.len() == 50, "sorted page has {} rows", page.len());
    let (search, page) = time_reps(reps, || Ok(store.list("person", &search)?))?;
    anyhow::ensure!(!page.is_empty(), "the search found nothing");
    let (count, matches) = time_reps(reps, || Ok(store.count("person", Some(SEARCH_TERM))?))?;
    Ok(Figures {
        sorted,
        search,
        count,
        matches,
    })
}

pub fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.query_rows;
    let reps = ctx.sizes.query_reps;
    let dir = ctx.dir("queries")?;
    let store = LocalStore::create(&dir, "http://127.0.0.1:9", &Schema::default_person())?;
    let ids = store.insert_many("person", RowGen::new(900).fields(usize::try_from(n)?))?;
    // The state after a first sync: the first sorted page builds the sort column's index.
    roster_client::bench_internals::mark_synced(&store)?;
    let first_sorted = ListQuery {
        sort: Some("name".into()),
        limit: 50,
        ..ListQuery::default()
    };
    let started = Instant::now();
    store.list("person", &first_sorted)?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    ctx.record(
        Entry::new(
            "queries",
            format!(
                "first list page sorted by name after a sync, {} rows",
                label(n)
            ),
            1,
        )
        .metric("ms", first_ms)
        .note("once per column: builds the index (name COLLATE NOCASE, id)"),
    );
    let plan = query_plan(&store)?;
    let indexed = !plan.contains("TEMP B-TREE");
    let figures = measure(&store, reps)?;
    let rows = label(n);
    let index_note = if indexed {
        format!("an index serves the sort ({plan})")
    } else {
        format!("no index on name: full scan + sort of all rows ({plan})")
    };
    ctx.record(
        Entry::new(
            "queries",
            format!("list page (50) sorted by name, {rows} rows"),
            1,
        )
        .metric("p50_ms", figures.sorted.p50_ms)
        .metric("p99_ms", figures.sorted.p99_ms)
        .note(index_note),
    );
    ctx.record(
        Entry::new(
            "queries",
            format!("search '{SEARCH_TERM}' page (50) sorted by name, {rows} rows"),
            1,
        )
        .metric("p50_ms", figures.search.p50_ms)
        .metric("p99_ms", figures.search.p99_ms)
        .metric("matches", figures.matches as f64)
        .note("LIKE '%term%' on every text column: always a full scan"),
    );
    ctx.record(
        Entry::new("queries", format!("count of that search, {rows} rows"), 1)
            .metric("p50_ms", figures.count.p50_ms)
            .metric("p99_ms", figures.count.p99_ms),
    );

    let mut samples = Vec::with_capacity(200);
    let step = (ids.len() / 200).max(1);
    for (i, id) in ids.iter().step_by(step).take(200).enumerate() {
        let mut patch = Fields::new();
        patch.insert("age".into(), Value::from(20 + (i % 50) as i64));
        let t = Instant::now();
        store.update("person", *id, patch)?;
        samples.push(t.elapsed());
    }
    let lat = Latency::of(&samples);
    ctx.record(
        Entry::new(
            "queries",
            "edit one row (LocalStore::update)",
            samples.len() as u64,
        )
        .metric("p50_ms", lat.p50_ms)
        .metric("p99_ms", lat.p99_ms)
        .note("one durable transaction per edit (fsync of the WAL)"),
    );

    if !indexed {
        let conn = rusqlite::Connection::open(store.path())?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            r#"CREATE INDEX bench_person_name ON "person" ("name" COLLATE NOCASE, id)"#,
        )?;
        drop(conn);
        let with_index = measure(&store, reps)?;
        ctx.record(
            Entry::new(
                "queries",
                format!("EXPERIMENT list page sorted by name + index, {rows} rows"),
                1,
            )
            .metric("p50_ms", with_index.sorted.p50_ms)
            .metric("p99_ms", with_index.sorted.p99_ms)
            .note(format!(
                "bench-only index person(name COLLATE NOCASE, id) on the bench's store: {}",
                query_plan(&store)?
            )),
        );
        ctx.record(
            Entry::new(
                "queries",
                format!("EXPERIMENT search page sorted by name + index, {rows} rows"),
                1,
            )
            .metric("p50_ms", with_index.search.p50_ms)
            .metric("p99_ms", with_index.search.p99_ms),
        );
    }
    drop(store);
    discard(&dir);
    Ok(())
}
