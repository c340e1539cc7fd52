//! The SQLite store's schema migrations, counted in `PRAGMA user_version` by the
//! shared runner ([`roster_migrate`]); files made by the older hand-written runner,
//! which counted the same way, open unchanged.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Versioned schema migrations; `PRAGMA user_version` records how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE rows (
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT    NOT NULL,
        PRIMARY KEY (tbl, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX rows_by_version ON rows(version);
    CREATE INDEX tombstones_by_age ON rows(updated_at_ms) WHERE deleted = 1;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('purge_horizon', 0);
    CREATE TABLE conflict_log (
        seq         INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        client_id   TEXT    NOT NULL,
        tbl         TEXT    NOT NULL,
        row_id      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        resolution  TEXT    NOT NULL,
        client_row  TEXT,
        server_row  TEXT,
        outcome     TEXT
    );
    CREATE INDEX conflict_log_by_row ON conflict_log(tbl, row_id);
"#,
    r#"
    ALTER TABLE rows ADD COLUMN edited_at_ms INTEGER;
    ALTER TABLE conflict_log ADD COLUMN server_client_id TEXT;
    ALTER TABLE conflict_log ADD COLUMN base_row TEXT;
    ALTER TABLE conflict_log ADD COLUMN conflicting_fields TEXT;
    CREATE TABLE staged_changes (
        round_id      TEXT    NOT NULL,
        ord           INTEGER NOT NULL,
        client_id     TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        change        TEXT    NOT NULL,
        PRIMARY KEY (round_id, ord)
    ) WITHOUT ROWID;
    CREATE INDEX staged_changes_by_age ON staged_changes(created_at_ms);
"#,
    r#"
    CREATE TABLE applied_batches (
        batch_id  TEXT    NOT NULL,
        client_id TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL,
        response  TEXT    NOT NULL,
        PRIMARY KEY (client_id, batch_id)
    ) WITHOUT ROWID;
    CREATE INDEX applied_batches_by_age ON applied_batches(at_ms);
"#,
    // Data sets: every row, conflict, staged change and remembered answer belongs to one.
    // Rows stored before this migration go to the data set `default` (see accounts).
    r#"
    CREATE TABLE rows_scoped (
        dataset       TEXT    NOT NULL,
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT    NOT NULL,
        edited_at_ms  INTEGER,
        PRIMARY KEY (dataset, tbl, id)
    ) WITHOUT ROWID;
    INSERT INTO rows_scoped (dataset, tbl, id, version, deleted, data, updated_at_ms,
        updated_by, edited_at_ms)
        SELECT 'default', tbl, id, version, deleted, data, updated_at_ms, updated_by,
               edited_at_ms FROM rows;
    DROP TABLE rows;
    ALTER TABLE rows_scoped RENAME TO rows;
    CREATE UNIQUE INDEX rows_by_version ON rows(version);
    CREATE INDEX rows_by_dataset_version ON rows(dataset, version);
    CREATE INDEX tombstones_by_age ON rows(updated_at_ms) WHERE deleted = 1;

    ALTER TABLE conflict_log ADD COLUMN dataset TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX conflict_log_by_dataset ON conflict_log(dataset, seq);

    CREATE TABLE staged_scoped (
        dataset       TEXT    NOT NULL,
        round_id      TEXT    NOT NULL,
        ord           INTEGER NOT NULL,
        client_id     TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        change        TEXT    NOT NULL,
        PRIMARY KEY (dataset, round_id, ord)
    ) WITHOUT ROWID;
    INSERT INTO staged_scoped SELECT 'default', round_id, ord, client_id, created_at_ms, change
        FROM staged_changes;
    DROP TABLE staged_changes;
    ALTER TABLE staged_scoped RENAME TO staged_changes;
    CREATE INDEX staged_changes_by_age ON staged_changes(created_at_ms);

    CREATE TABLE applied_scoped (
        dataset   TEXT    NOT NULL,
        batch_id  TEXT    NOT NULL,
        client_id TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL,
        response  TEXT    NOT NULL,
        PRIMARY KEY (dataset, client_id, batch_id)
    ) WITHOUT ROWID;
    INSERT INTO applied_scoped SELECT 'default', batch_id, client_id, at_ms, response
        FROM applied_batches;
    DROP TABLE applied_batches;
    ALTER TABLE applied_scoped RENAME TO applied_batches;
    CREATE INDEX applied_batches_by_age ON applied_batches(at_ms);
"#,
    crate::accounts::sqlite::MIGRATION,
    // One version index instead of two: pulls read by (dataset, version), and versions,
    // drawn from one counter under the write lock, stay unique per data set by index.
    // The global unique index cost every write a third B-tree insert.
    r#"
    DROP INDEX rows_by_version;
    DROP INDEX rows_by_dataset_version;
    CREATE UNIQUE INDEX rows_by_dataset_version ON rows(dataset, version);
"#,
    // The replay cache is bounded per data set by count and bytes, oldest first.
    r#"
    ALTER TABLE applied_batches ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE applied_batches SET bytes = LENGTH(CAST(response AS BLOB));
    CREATE INDEX applied_batches_by_dataset_age ON applied_batches(dataset, at_ms);
"#,
    crate::accounts::sqlite::MIGRATION_CASCADE,
    crate::accounts::sqlite::MIGRATION_TOKENS,
    // The same name for the accounts' table of data sets on both backends; SQLite rewrites
    // the foreign keys that point at it.
    "ALTER TABLE datasets RENAME TO account_datasets;",
    // The server's epoch (a new random number after each restore from a backup; below
    // 2^53) and the newest version the restored database held (0: never restored).
    "INSERT OR IGNORE INTO meta (key, value) VALUES
         ('epoch', abs(random() % 9007199254740991) + 1), ('restored_at', 0);",
    // The table protocol (`/tables`): when a row was created, and its incremental pull
    // (`updatedAt ge T`, ordered by updatedAt) read by index instead of sorting the table.
    r#"
    ALTER TABLE rows ADD COLUMN created_at_ms INTEGER;
    CREATE INDEX rows_by_update ON rows(dataset, tbl, updated_at_ms);
"#,
    // Every schema the server has served, by version (store/sqlite/schema_versions.rs).
    r#"
    CREATE TABLE schema_versions (
        version       INTEGER PRIMARY KEY,
        schema        TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
"#,
    // `/tables` pulls ordered by updatedAt then id (what Roster's own AMA client asks):
    // a unique index in that order serves them without sorting every row after the
    // boundary (the rows sharing a millisecond of a large batch were sorted per page).
    r#"
    CREATE UNIQUE INDEX rows_by_update_id ON rows(dataset, tbl, updated_at_ms, id);
    DROP INDEX rows_by_update;
    "#,
    // Partial sync's moves log: a write that changed a row's subscription columns or
    // deleted it, with the values it left (store/round.rs `left_values`); a slice's pull
    // reads its evictions from here. `moves_from`: older watermarks predate the log.
    r#"
    CREATE TABLE slice_moves (
        dataset TEXT    NOT NULL,
        tbl     TEXT    NOT NULL,
        id      TEXT    NOT NULL,
        version INTEGER NOT NULL,
        data    TEXT    NOT NULL,
        at_ms   INTEGER NOT NULL,
        PRIMARY KEY (dataset, version)
    ) WITHOUT ROWID;
    CREATE INDEX slice_moves_by_age ON slice_moves(at_ms);
    INSERT OR IGNORE INTO meta (key, value)
        SELECT 'moves_from', value FROM meta WHERE key = 'last_seq';
"#,
    // The replay cache's bound is read from an index that covers it. `bytes` sits after
    // the remembered answer in the table's records, so the bound read through the table
    // walked every answer's overflow pages: up to 8 MiB per request, 16 % of a push's
    // server time.
    r#"
    DROP INDEX applied_batches_by_dataset_age;
    CREATE INDEX applied_batches_by_dataset_age
        ON applied_batches(dataset, at_ms, batch_id, bytes);
"#,
    // Rows stored in version order: the table's key is `(dataset, version)`, and the row
    // key `(dataset, tbl, id)` a unique index. A pull scans a version range, which now
    // reads the rows themselves in order; through the version index it was a second
    // B-tree descent per row, about half of a pull's server CPU. A lookup by key, rarer
    // (a write's conflict check, `/tables`), takes that second descent instead. Slice
    // indexes go with the old table; the server makes them again at start
    // (`ensure_slice_indexes`).
    r#"
    CREATE TABLE rows_in_version_order (
        dataset       TEXT    NOT NULL,
        tbl           TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT    NOT NULL,
        edited_at_ms  INTEGER,
        created_at_ms INTEGER,
        PRIMARY KEY (dataset, version)
    ) WITHOUT ROWID;
    INSERT INTO rows_in_version_order (dataset, tbl, id, version, deleted, data,
        updated_at_ms, updated_by, edited_at_ms, created_at_ms)
        SELECT dataset, tbl, id, version, deleted, data, updated_at_ms, updated_by,
               edited_at_ms, created_at_ms FROM rows ORDER BY dataset, version;
    DROP TABLE rows;
    ALTER TABLE rows_in_version_order RENAME TO rows;
    CREATE UNIQUE INDEX rows_by_key ON rows(dataset, tbl, id);
    CREATE INDEX tombstones_by_age ON rows(updated_at_ms) WHERE deleted = 1;
    CREATE UNIQUE INDEX rows_by_update_id ON rows(dataset, tbl, updated_at_ms, id);
"#,
];

/// Runs pending migrations in one `BEGIN IMMEDIATE` transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    roster_migrate::run(
        &mut roster_migrate::SqliteUserVersion(&tx),
        "database schema",
        MIGRATIONS,
    )?;
    tx.commit()?;
    Ok(())
}
