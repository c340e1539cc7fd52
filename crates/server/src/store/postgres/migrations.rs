//! The PostgreSQL store's schema migrations, recorded in `roster_migrations` by the
//! shared runner ([`roster_migrate`]) under an advisory lock, so instances starting
//! together migrate once; databases made by the older hand-written runner, which kept
//! the same table, open unchanged.

use postgres::Client;

use crate::store::StoreError;
use crate::store::round::now_ms;

/// Versioned schema migrations; `roster_migrations` records which versions have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        dataset       TEXT   PRIMARY KEY,
        last_seq      BIGINT NOT NULL DEFAULT 0,
        purge_horizon BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE rows (
        dataset       TEXT    NOT NULL,
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       BIGINT  NOT NULL,
        deleted       BOOLEAN NOT NULL DEFAULT FALSE,
        data          TEXT,
        updated_at_ms BIGINT  NOT NULL,
        updated_by    TEXT    NOT NULL,
        edited_at_ms  BIGINT,
        PRIMARY KEY (dataset, tbl, id)
    );
    CREATE UNIQUE INDEX rows_by_version ON rows (dataset, version);
    CREATE INDEX tombstones_by_age ON rows (dataset, updated_at_ms) WHERE deleted;
    CREATE TABLE conflict_log (
        seq                BIGSERIAL PRIMARY KEY,
        dataset            TEXT   NOT NULL,
        at_ms              BIGINT NOT NULL,
        client_id          TEXT   NOT NULL,
        server_client_id   TEXT,
        tbl                TEXT   NOT NULL,
        row_id             TEXT   NOT NULL,
        kind               TEXT   NOT NULL,
        resolution         TEXT   NOT NULL,
        client_row         TEXT,
        server_row         TEXT,
        base_row           TEXT,
        outcome            TEXT,
        conflicting_fields TEXT
    );
    CREATE INDEX conflict_log_by_dataset ON conflict_log (dataset, seq);
    CREATE TABLE staged_changes (
        dataset       TEXT   NOT NULL,
        round_id      TEXT   NOT NULL,
        ord           BIGINT NOT NULL,
        client_id     TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL,
        change        TEXT   NOT NULL,
        PRIMARY KEY (dataset, round_id, ord)
    );
    CREATE INDEX staged_changes_by_age ON staged_changes (created_at_ms);
    CREATE TABLE applied_batches (
        dataset   TEXT   NOT NULL,
        client_id TEXT   NOT NULL,
        batch_id  TEXT   NOT NULL,
        at_ms     BIGINT NOT NULL,
        response  TEXT   NOT NULL,
        PRIMARY KEY (dataset, client_id, batch_id)
    );
    CREATE INDEX applied_batches_by_age ON applied_batches (at_ms);
"#,
    crate::accounts::postgres::MIGRATION,
    // The replay cache is bounded per data set by count and bytes, oldest first.
    r#"
    ALTER TABLE applied_batches ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
    UPDATE applied_batches SET bytes = OCTET_LENGTH(response);
    CREATE INDEX applied_batches_by_dataset_age ON applied_batches (dataset, at_ms);
"#,
    crate::accounts::postgres::MIGRATION_CASCADE,
    crate::accounts::postgres::MIGRATION_TOKENS,
    // `datasets` held only the per-data-set counters; the name now says so, and no longer
    // clashes with the accounts' table of data sets (`account_datasets` on both backends).
    "ALTER TABLE datasets RENAME TO dataset_counters;",
    // The server's epoch (a new random number after each restore from a backup; below
    // 2^53) and, per data set, the newest version the restored database held.
    "CREATE TABLE server_epoch (
         id    INTEGER PRIMARY KEY CHECK (id = 1),
         epoch BIGINT  NOT NULL
     );
     INSERT INTO server_epoch (id, epoch)
         VALUES (1, floor(random() * 9007199254740990)::BIGINT + 1);
     ALTER TABLE dataset_counters ADD COLUMN restored_at BIGINT NOT NULL DEFAULT 0;",
    // The table protocol (`/tables`): when a row was created, and its incremental pull
    // (`updatedAt ge T`, ordered by updatedAt) read by index instead of sorting the table.
    r#"
    ALTER TABLE rows ADD COLUMN created_at_ms BIGINT;
    CREATE INDEX rows_by_update ON rows (dataset, tbl, updated_at_ms);
"#,
    // Every schema the servers have served, by version (store/postgres/schema_versions.rs).
    r#"
    CREATE TABLE schema_versions (
        version       BIGINT PRIMARY KEY,
        schema        TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
"#,
    // `/tables` pulls ordered by updatedAt then id (what Roster's own AMA client asks):
    // a unique index in that order serves them without sorting every row after the
    // boundary (the rows sharing a millisecond of a large batch were sorted per page).
    r#"
    CREATE UNIQUE INDEX rows_by_update_id ON rows (dataset, tbl, updated_at_ms, id);
    DROP INDEX rows_by_update;
    "#,
    // Partial sync's moves log: a write that changed a row's subscription columns or
    // deleted it, with the values it left (store/round.rs `left_values`); a slice's pull
    // reads its evictions from here. `moves_from`: older watermarks predate the log.
    r#"
    CREATE TABLE slice_moves (
        dataset TEXT   NOT NULL,
        tbl     TEXT   NOT NULL,
        id      TEXT   NOT NULL,
        version BIGINT NOT NULL,
        data    TEXT   NOT NULL,
        at_ms   BIGINT NOT NULL,
        PRIMARY KEY (dataset, version)
    );
    CREATE INDEX slice_moves_by_age ON slice_moves (dataset, at_ms);
    ALTER TABLE dataset_counters ADD COLUMN moves_from BIGINT NOT NULL DEFAULT 0;
    UPDATE dataset_counters SET moves_from = last_seq;
"#,
    // Row keys compare byte by byte, as SQLite's do. Under the cluster's collation every
    // comparison in the three indexes of `rows` went through `strcoll`, and under a
    // linguistic one (en_US.UTF-8 and the like, which skip hyphens) ids sorted unlike
    // SQLite's (`/tables` pages by updatedAt, then id). Rebuilds those indexes.
    // Remembered answers compress with lz4 where the server was built with it (pglz
    // showed in a push's profile); elsewhere they keep the default.
    r#"
    ALTER TABLE rows ALTER COLUMN dataset TYPE TEXT COLLATE "C",
                     ALTER COLUMN tbl TYPE TEXT COLLATE "C",
                     ALTER COLUMN id TYPE TEXT COLLATE "C";
    DO $$ BEGIN
        ALTER TABLE applied_batches ALTER COLUMN response SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported THEN NULL;
    END $$;
"#,
    // No planner statistics for the columns no query compares: a row's JSON (filters
    // read `data->>'column'`, whose statistics come from the slice indexes' expressions)
    // and its writer. Computing them was a third of each `ANALYZE rows` (150 ms → 96 ms
    // for 100k rows), which runs each time the table doubles (`AnalyzeWhenGrown`).
    "ALTER TABLE rows ALTER COLUMN data SET STATISTICS 0,
                     ALTER COLUMN updated_by SET STATISTICS 0;",
];

/// Key of the advisory lock that serialises migrations of concurrently starting servers.
pub(crate) const MIGRATION_LOCK: i64 = 0x526f_7374_6572; // "Roster"

/// Runs pending migrations in one transaction.
pub(crate) fn migrate(conn: &mut Client) -> Result<(), StoreError> {
    let mut tx = conn.transaction()?;
    roster_migrate::run(
        &mut roster_migrate::PostgresTable {
            tx: &mut tx,
            lock_key: MIGRATION_LOCK,
            now_ms: now_ms(),
        },
        "database schema",
        MIGRATIONS,
    )?;
    tx.commit()?;
    Ok(())
}
