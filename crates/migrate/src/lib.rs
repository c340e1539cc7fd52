//! One versioned-migration runner for every Roster store.
//!
//! A store's migrations are a list of SQL scripts; migration `n` (1-based) is the
//! `n`-th. A [`Ledger`] records how many have run, inside the caller's transaction:
//! [`SqliteUserVersion`] counts them in `PRAGMA user_version` (the server's SQLite file
//! and the client store, whose "store format" is that count), [`PostgresTable`] records
//! each version in a `roster_migrations` table under an advisory lock, so servers
//! starting together migrate once. Both are the bookkeeping the stores used before this
//! crate existed, so databases made by the older hand-written runners open unchanged.
//!
//! Why not `refinery`: it supports our rusqlite (0.40) and the sync `postgres` driver,
//! but keeps its own `refinery_schema_history` table and needs Rust 1.92 (the
//! workspace's floor is 1.85); adopting it would mean back-filling that table for every
//! existing server and device store. This runner is the one loop the three stores
//! shared, written once.

#![warn(missing_docs)]

/// Why running migrations failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError<E: std::error::Error + 'static> {
    /// The database records more migrations than this program knows: it was written by
    /// a newer version.
    #[error("{what} version {found} is newer than this program ({known})")]
    Newer {
        /// What the number counts (`"database schema"`, `"store format"`).
        what: &'static str,
        /// The version the database records.
        found: usize,
        /// The number of migrations this program has.
        known: usize,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] E),
}

/// Where a store records the migrations that ran. Every call happens inside the one
/// transaction the caller commits after [`run`].
pub trait Ledger {
    /// The driver's error.
    type Error: std::error::Error + 'static;
    /// How many migrations have run.
    fn applied(&mut self) -> Result<usize, Self::Error>;
    /// Runs `sql` and records that migration `version` (1-based) has run.
    fn apply(&mut self, version: usize, sql: &str) -> Result<(), Self::Error>;
}

/// Runs the migrations `ledger` has not recorded yet, in order; returns how many ran.
/// `what` names the version in errors and logs.
pub fn run<L: Ledger>(
    ledger: &mut L,
    what: &'static str,
    migrations: &[&str],
) -> Result<usize, MigrateError<L::Error>> {
    let done = ledger.applied()?;
    if done > migrations.len() {
        return Err(MigrateError::Newer {
            what,
            found: done,
            known: migrations.len(),
        });
    }
    for (index, sql) in migrations.iter().enumerate().skip(done) {
        // Some rewrite a table: say so before, as a large database takes a while.
        tracing::info!(migration = index + 1, what, "applying migration");
        ledger.apply(index + 1, sql)?;
        tracing::info!(migration = index + 1, what, "applied migration");
    }
    Ok(migrations.len() - done)
}

/// A SQLite database counting its migrations in `PRAGMA user_version`. Run it on a
/// transaction taken with `BEGIN IMMEDIATE`, so two processes opening one file migrate
/// once.
#[cfg(feature = "rusqlite")]
pub struct SqliteUserVersion<'a>(pub &'a rusqlite::Connection);

#[cfg(feature = "rusqlite")]
impl Ledger for SqliteUserVersion<'_> {
    type Error = rusqlite::Error;

    fn applied(&mut self) -> Result<usize, Self::Error> {
        let done: i64 = self.0.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok(usize::try_from(done).unwrap_or(usize::MAX))
    }

    fn apply(&mut self, version: usize, sql: &str) -> Result<(), Self::Error> {
        self.0.execute_batch(sql)?;
        self.0
            .execute_batch(&format!("PRAGMA user_version = {version}"))
    }
}

/// A PostgreSQL database recording each applied version in `roster_migrations`. The
/// first call takes a transaction-scoped advisory lock (`lock_key`), so instances that
/// start together wait for each other and migrate once.
#[cfg(feature = "postgres")]
pub struct PostgresTable<'a, 'conn> {
    /// The transaction the migrations run in.
    pub tx: &'a mut postgres::Transaction<'conn>,
    /// Key of the advisory lock.
    pub lock_key: i64,
    /// The time recorded with each version (Unix ms).
    pub now_ms: i64,
}

#[cfg(feature = "postgres")]
impl Ledger for PostgresTable<'_, '_> {
    type Error = postgres::Error;

    fn applied(&mut self) -> Result<usize, Self::Error> {
        self.tx
            .execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock_key])?;
        self.tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS roster_migrations (
                 version       INTEGER PRIMARY KEY,
                 applied_at_ms BIGINT  NOT NULL
             )",
        )?;
        let done: i32 = self
            .tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM roster_migrations",
                &[],
            )?
            .get(0);
        Ok(usize::try_from(done).unwrap_or(0))
    }

    fn apply(&mut self, version: usize, sql: &str) -> Result<(), Self::Error> {
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        self.tx.batch_execute(sql)?;
        self.tx.execute(
            "INSERT INTO roster_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[
                &version as &(dyn postgres::types::ToSql + Sync),
                &self.now_ms,
            ],
        )?;
        Ok(())
    }
}

#[cfg(all(test, feature = "rusqlite"))]
mod tests {
    use super::*;

    const STEPS: &[&str] = &[
        "CREATE TABLE a (x INTEGER);",
        "ALTER TABLE a ADD COLUMN y INTEGER;",
        "CREATE TABLE b (z INTEGER);",
    ];

    #[test]
    fn runs_only_what_the_user_version_has_not_counted() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        // A database made by the old hand-written runner: two scripts, user_version 2.
        conn.execute_batch(&format!("{}{}PRAGMA user_version = 2;", STEPS[0], STEPS[1]))
            .unwrap();
        let ran = run(&mut SqliteUserVersion(&conn), "test", STEPS).unwrap();
        assert_eq!(ran, 1);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        conn.execute("INSERT INTO b (z) VALUES (1)", []).unwrap();
        assert_eq!(
            run(&mut SqliteUserVersion(&conn), "test", STEPS).unwrap(),
            0
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 9;").unwrap();
        let err = run(&mut SqliteUserVersion(&conn), "store format", STEPS).unwrap_err();
        assert!(matches!(
            err,
            MigrateError::Newer {
                found: 9,
                known: 3,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "store format version 9 is newer than this program (3)"
        );
    }
}
