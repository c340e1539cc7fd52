//! Which storage backend the servers under test use, and one fresh database per server.

use std::path::Path;

/// The server storage backend the tests run against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file per server (the default).
    Sqlite,
    /// One fresh database per server on the PostgreSQL reached through this admin URL.
    Postgres {
        /// Admin connection URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
        admin_url: String,
    },
}

impl Backend {
    /// The backend chosen by `ROSTER_TEST_BACKEND` (`sqlite`, the default, or
    /// `postgres`, which needs `ROSTER_TEST_PG_URL`).
    pub fn from_env() -> Self {
        match std::env::var("ROSTER_TEST_BACKEND").as_deref() {
            Ok("postgres") => Backend::Postgres {
                admin_url: std::env::var("ROSTER_TEST_PG_URL").expect(
                    "ROSTER_TEST_BACKEND=postgres needs ROSTER_TEST_PG_URL (an admin URL); \
                     `cargo xtask test` starts PostgreSQL and sets both",
                ),
            },
            Ok("sqlite") | Err(_) => Backend::Sqlite,
            Ok(other) => panic!("unknown ROSTER_TEST_BACKEND {other:?} (sqlite or postgres)"),
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres { .. })
    }
}

/// A stored row as ((dataset, table, id), (version, deleted, data)).
pub type StoredRow = ((String, String, String), (i64, bool, Option<String>));

/// A server's own database; a PostgreSQL one is dropped when this is.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    postgres: Option<(String, String)>,
    /// A tablespace made for this database alone, dropped after it.
    tablespace: Option<String>,
}

/// Runs `work` with a fresh synchronous PostgreSQL connection on its own thread (the
/// synchronous client must not run inside the tests' async runtime).
fn with_postgres<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
        work(&mut client)
    })
    .join()
    .unwrap()
}

impl TestDatabase {
    /// A fresh database for a server whose files live in `dir`.
    pub fn create(dir: &Path) -> Self {
        match Backend::from_env() {
            Backend::Sqlite => Self {
                url: dir.join("server.db").to_str().unwrap().to_owned(),
                postgres: None,
                tablespace: None,
            },
            Backend::Postgres { admin_url } => Self::postgres_at(&admin_url),
        }
    }

    /// A fresh PostgreSQL database on the cluster `admin_url` connects to (e.g. a
    /// cluster a test runs itself), dropped after.
    pub fn postgres_at(admin_url: &str) -> Self {
        let name = format!("roster_test_{}", uuid::Uuid::now_v7().simple());
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a PostgreSQL URL ends with /DATABASE");
        let url = format!("{base}/{name}");
        let create = format!("CREATE DATABASE {name}");
        with_postgres(admin_url, move |client| client.batch_execute(&create)).unwrap();
        Self {
            url,
            postgres: Some((admin_url.to_owned(), name)),
            tablespace: None,
        }
    }

    /// A fresh database whose data lives in the directory `dir`: the SQLite file there,
    /// or on PostgreSQL a database moved to a new tablespace at `dir` (which the
    /// cluster's user must be able to reach and own).
    pub fn create_in(dir: &Path) -> Self {
        let mut db = Self::create(dir);
        if let Some((admin_url, name)) = db.postgres.clone() {
            let tablespace = format!("{name}_space");
            // Separate statements: neither may run inside a transaction block.
            let create = format!(
                "CREATE TABLESPACE {tablespace} LOCATION '{}'",
                dir.display()
            );
            let alter = format!("ALTER DATABASE {name} SET TABLESPACE {tablespace}");
            with_postgres(&admin_url, move |client| {
                client.batch_execute(&create)?;
                client.batch_execute(&alter)
            })
            .unwrap();
            db.tablespace = Some(tablespace);
        }
        db
    }

    /// What the server's `--db` takes: the SQLite file path or the PostgreSQL URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every conflict logged (of every data set, or only of `dataset`), as (table, row
    /// id, kind, resolution), oldest first.
    pub fn conflict_log(&self, dataset: Option<&str>) -> Vec<(String, String, String, String)> {
        const ALL: &str = "SELECT tbl, row_id, kind, resolution FROM conflict_log ORDER BY seq";
        if self.postgres.is_some() {
            let dataset = dataset.map(str::to_owned);
            return with_postgres(&self.url, move |client| {
                let rows = match &dataset {
                    Some(dataset) => client.query(
                        "SELECT tbl, row_id, kind, resolution FROM conflict_log
                         WHERE dataset = $1 ORDER BY seq",
                        &[dataset],
                    ),
                    None => client.query(ALL, &[]),
                };
                rows.unwrap()
                    .into_iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect()
            });
        }
        let conn = self.sqlite();
        let (query, params): (&str, Vec<&str>) = match dataset {
            Some(dataset) => (
                "SELECT tbl, row_id, kind, resolution FROM conflict_log
                 WHERE dataset = ?1 ORDER BY seq",
                vec![dataset],
            ),
            None => (ALL, Vec::new()),
        };
        let mut stmt = conn.prepare(query).unwrap();
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// Waits until the database holds a row, e.g. the first batch of a push, checking
    /// every 5 ms while other futures of the task (the push) go on; panics after `limit`.
    pub async fn wait_for_a_stored_row(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while tokio::task::block_in_place(|| self.stored_rows().is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no batch reached the server"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every stored row of every data set as ((dataset, table, id), (version, deleted,
    /// data)), read from the database.
    pub fn stored_rows(&self) -> Vec<StoredRow> {
        const QUERY: &str = "SELECT dataset, tbl, id, version, deleted, data FROM rows";
        if self.postgres.is_some() {
            return with_postgres(&self.url, |client| {
                client
                    .query(QUERY, &[])
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        (
                            (r.get(0), r.get(1), r.get(2)),
                            (r.get(3), r.get(4), r.get(5)),
                        )
                    })
                    .collect()
            });
        }
        let conn = self.sqlite();
        let mut stmt = conn.prepare(QUERY).unwrap();
        stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The stored token hashes, in the order the tokens were issued.
    pub fn token_hashes(&self) -> Vec<String> {
        const QUERY: &str = "SELECT hash FROM tokens ORDER BY id";
        if self.postgres.is_some() {
            return with_postgres(&self.url, |client| {
                client
                    .query(QUERY, &[])
                    .unwrap()
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect()
            });
        }
        let conn = self.sqlite();
        let mut stmt = conn.prepare(QUERY).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Bytes the replay cache can occupy: on SQLite the whole database (page count times
    /// page size, as a reader sees it through the WAL: a strict upper bound), on
    /// PostgreSQL `pg_total_relation_size` of `applied_batches` (table, TOAST, indexes).
    pub fn replay_cache_footprint(&self) -> u64 {
        if self.postgres.is_some() {
            return with_postgres(&self.url, |client| {
                let bytes: i64 = client
                    .query_one("SELECT pg_total_relation_size('applied_batches')", &[])
                    .unwrap()
                    .get(0);
                u64::try_from(bytes).unwrap()
            });
        }
        let conn = self.sqlite();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        u64::try_from(pages * size).unwrap()
    }

    /// Runs one SQL statement on the database, as another writer would (for example one
    /// whose clock runs ahead).
    pub fn execute(&self, sql: &str) {
        if self.postgres.is_some() {
            let sql = sql.to_owned();
            with_postgres(&self.url, move |client| client.batch_execute(&sql).unwrap());
            return;
        }
        let conn = rusqlite::Connection::open(&self.url).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(sql).unwrap();
    }

    /// A read-only connection to the SQLite file.
    fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(&self.url, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    }

    /// Runs `work` with a synchronous connection to this PostgreSQL database, or `None`
    /// on SQLite.
    pub fn with_postgres<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
    ) -> Option<T> {
        self.postgres
            .as_ref()
            .map(|_| with_postgres(&self.url, work))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let drop_tablespace = self
                .tablespace
                .take()
                .map(|tablespace| format!("DROP TABLESPACE IF EXISTS {tablespace}"));
            let _ = std::thread::spawn(move || {
                if let Ok(mut client) = postgres::Client::connect(&admin_url, postgres::NoTls) {
                    let _ = client.batch_execute(&drop);
                    if let Some(drop_tablespace) = drop_tablespace {
                        let _ = client.batch_execute(&drop_tablespace);
                    }
                }
            })
            .join();
        }
    }
}
