//! The accounts of the embedded SQLite store, in the same database file as the rows:
//! its tables' migrations and SQL (`AccountBackend`); the rules are in `super::rules`.

use std::ops::Deref;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::rules::{AccountBackend, AccountSql, AccountTxSql, ActiveToken, SqlResult};
use super::{AccountError, NewToken, TokenHash, TokenRecord, User};
use crate::store::sqlite::SqliteStore;

/// The accounts tables; run by the store's migration runner (`PRAGMA user_version`).
pub const MIGRATION: &str = r#"
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        name          TEXT    NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE datasets (
        name          TEXT    PRIMARY KEY,
        owner_id      INTEGER REFERENCES users(id),
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO datasets (name, owner_id, created_at_ms) VALUES ('default', NULL, 0);
    CREATE TABLE grants (
        dataset       TEXT    NOT NULL REFERENCES datasets(name),
        user_id       INTEGER NOT NULL REFERENCES users(id),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (dataset, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE tokens (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id),
        hash          TEXT    NOT NULL UNIQUE,
        label         TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE INDEX tokens_by_user ON tokens(user_id);
"#;

/// User ids are never reused and deletes cascade: `users` gets `AUTOINCREMENT` (its
/// counter starts above every id a token still names, so a token of a user deleted by
/// hand can never match a new user), tokens and grants go with their user or data set,
/// and a data set outlives its owner (owner set to NULL). Tables are rebuilt (SQLite
/// cannot alter constraints); tokens and grants whose user no longer exists are dropped.
pub const MIGRATION_CASCADE: &str = r#"
    CREATE TABLE users_new (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT    NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );
    INSERT INTO users_new (id, name, created_at_ms) SELECT id, name, created_at_ms FROM users;
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'users_new', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'users_new');
    UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE(
        (SELECT MAX(id) FROM (SELECT MAX(id) AS id FROM users
                              UNION ALL SELECT MAX(user_id) FROM tokens
                              UNION ALL SELECT MAX(user_id) FROM grants
                              UNION ALL SELECT MAX(owner_id) FROM datasets)), 0))
        WHERE name = 'users_new';
    CREATE TABLE datasets_new (
        name          TEXT    PRIMARY KEY,
        owner_id      INTEGER REFERENCES users_new(id) ON DELETE SET NULL,
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO datasets_new (name, owner_id, created_at_ms)
        SELECT name, (SELECT id FROM users_new WHERE id = owner_id), created_at_ms
        FROM datasets;
    CREATE TABLE grants_new (
        dataset       TEXT    NOT NULL REFERENCES datasets_new(name) ON DELETE CASCADE,
        user_id       INTEGER NOT NULL REFERENCES users_new(id) ON DELETE CASCADE,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (dataset, user_id)
    ) WITHOUT ROWID;
    INSERT INTO grants_new (dataset, user_id, created_at_ms)
        SELECT dataset, user_id, created_at_ms FROM grants
        WHERE user_id IN (SELECT id FROM users_new)
          AND dataset IN (SELECT name FROM datasets_new);
    CREATE TABLE tokens_new (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users_new(id) ON DELETE CASCADE,
        hash          TEXT    NOT NULL UNIQUE,
        label         TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    INSERT INTO tokens_new (id, user_id, hash, label, created_at_ms, revoked_at_ms)
        SELECT id, user_id, hash, label, created_at_ms, revoked_at_ms FROM tokens
        WHERE user_id IN (SELECT id FROM users_new);
    DROP TABLE tokens;
    DROP TABLE grants;
    DROP TABLE datasets;
    DROP TABLE users;
    ALTER TABLE users_new RENAME TO users;
    ALTER TABLE datasets_new RENAME TO datasets;
    ALTER TABLE grants_new RENAME TO grants;
    ALTER TABLE tokens_new RENAME TO tokens;
    CREATE INDEX tokens_by_user ON tokens(user_id);
    CREATE INDEX grants_by_user ON grants(user_id);
"#;

/// Tokens may expire, and record (coarsely) when they were last used.
pub const MIGRATION_TOKENS: &str = r#"
    ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
    ALTER TABLE tokens ADD COLUMN last_used_at_ms INTEGER;
"#;

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        AccountError::Database(e.to_string())
    }
}

impl From<r2d2::Error> for AccountError {
    fn from(e: r2d2::Error) -> Self {
        AccountError::Database(e.to_string())
    }
}

impl AccountBackend for SqliteStore {
    // Hot paths (`token_by_hash`, `may_use`) cache their statements per pooled connection.
    fn on_connection<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountSql) -> SqlResult<R>,
    ) -> SqlResult<R> {
        let conn = self.pool.get()?;
        body(&mut SqliteSql(&conn))
    }

    fn in_transaction<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountTxSql) -> SqlResult<R>,
    ) -> SqlResult<R> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = body(&mut SqliteSql(&tx))?;
        tx.commit()?;
        Ok(value)
    }
}

/// The accounts SQL on a pooled SQLite connection, or (`C` = `Transaction`) in a
/// transaction.
struct SqliteSql<'a, C>(&'a C);

impl<C: Deref<Target = Connection>> AccountSql for SqliteSql<'_, C> {
    fn user_id(&mut self, name: &str) -> SqlResult<Option<i64>> {
        Ok(self
            .0
            .query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
            .optional()?)
    }

    fn name_taken(&mut self, name: &str) -> SqlResult<bool> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)
                 OR EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?)
    }

    fn insert_user(&mut self, name: &str, at_ms: i64) -> SqlResult<i64> {
        self.0.execute(
            "INSERT INTO users (name, created_at_ms) VALUES (?1, ?2)",
            params![name, at_ms],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    fn insert_owned_dataset(&mut self, name: &str, owner_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0.execute(
            "INSERT INTO account_datasets (name, owner_id, created_at_ms) VALUES (?1, ?2, ?3)",
            params![name, owner_id, at_ms],
        )?;
        Ok(())
    }

    fn insert_token(&mut self, user_id: i64, token: &NewToken<'_>, at_ms: i64) -> SqlResult<i64> {
        self.0.execute(
            "INSERT INTO tokens (user_id, hash, label, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                user_id,
                token.hash.as_str(),
                token.label,
                at_ms,
                token.expires_at_ms
            ],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    fn token_owner(&mut self, token_id: i64) -> SqlResult<Option<(String, String)>> {
        Ok(self
            .0
            .query_row(
                "SELECT users.name, tokens.label FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.id = ?1",
                [token_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn expire_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "UPDATE tokens SET expires_at_ms = MIN(COALESCE(expires_at_ms, ?2), ?2) WHERE id = ?1",
            params![token_id, at_ms],
        )? as u64)
    }

    fn revoke_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1",
            params![token_id, at_ms],
        )? as u64)
    }

    fn token_by_hash(&mut self, hash: &TokenHash) -> SqlResult<Option<ActiveToken>> {
        // Runs on every request: the statement is cached.
        Ok(self
            .0
            .prepare_cached(
                "SELECT users.id, users.name, tokens.id, tokens.expires_at_ms,
                        tokens.last_used_at_ms
                 FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.hash = ?1 AND tokens.revoked_at_ms IS NULL",
            )?
            .query_row([hash.as_str()], |r| {
                Ok(ActiveToken {
                    user: User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    },
                    id: r.get(2)?,
                    expires_at_ms: r.get(3)?,
                    last_used_at_ms: r.get(4)?,
                })
            })
            .optional()?)
    }

    fn set_token_last_used(&mut self, token_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0
            .prepare_cached("UPDATE tokens SET last_used_at_ms = ?2 WHERE id = ?1")?
            .execute(params![token_id, at_ms])?;
        Ok(())
    }

    fn users(&mut self) -> SqlResult<Vec<User>> {
        Ok(self
            .0
            .prepare("SELECT id, name FROM users ORDER BY name")?
            .query_map([], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn grants_of(&mut self, user_id: i64) -> SqlResult<Vec<String>> {
        Ok(self
            .0
            .prepare("SELECT dataset FROM grants WHERE user_id = ?1 ORDER BY dataset")?
            .query_map([user_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    fn tokens_of(&mut self, user_id: i64) -> SqlResult<Vec<TokenRecord>> {
        Ok(self
            .0
            .prepare(
                "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL, expires_at_ms,
                        last_used_at_ms
                 FROM tokens WHERE user_id = ?1 ORDER BY id",
            )?
            .query_map([user_id], |r| {
                Ok(TokenRecord {
                    id: r.get(0)?,
                    label: r.get(1)?,
                    created_at_ms: r.get(2)?,
                    revoked: r.get(3)?,
                    expires_at_ms: r.get(4)?,
                    last_used_at_ms: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn dataset_exists(&mut self, name: &str) -> SqlResult<bool> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?)
    }

    fn insert_grant(&mut self, dataset: &str, user_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0.execute(
            "INSERT INTO grants (dataset, user_id, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![dataset, user_id, at_ms],
        )?;
        Ok(())
    }

    fn delete_grant(&mut self, dataset: &str, user_id: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "DELETE FROM grants WHERE dataset = ?1 AND user_id = ?2",
            params![dataset, user_id],
        )? as u64)
    }

    fn count_tokens_and_grants(&mut self, user_id: i64) -> SqlResult<(i64, i64)> {
        Ok(self.0.query_row(
            "SELECT (SELECT COUNT(*) FROM tokens WHERE user_id = ?1),
                    (SELECT COUNT(*) FROM grants WHERE user_id = ?1)",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn owned_datasets(&mut self, user_id: i64) -> SqlResult<Vec<String>> {
        Ok(self
            .0
            .prepare("SELECT name FROM account_datasets WHERE owner_id = ?1")?
            .query_map([user_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    fn delete_user(&mut self, user_id: i64) -> SqlResult<()> {
        self.0
            .execute("DELETE FROM users WHERE id = ?1", [user_id])?;
        Ok(())
    }

    fn may_use(&mut self, user_id: i64, dataset: &str) -> SqlResult<bool> {
        // Runs on every request: the statement is cached.
        Ok(self
            .0
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1 AND owner_id = ?2)
                     OR EXISTS (SELECT 1 FROM grants WHERE dataset = ?1 AND user_id = ?2)",
            )?
            .query_row(params![dataset, user_id], |r| r.get(0))?)
    }
}

impl AccountTxSql for SqliteSql<'_, Transaction<'_>> {
    fn delete_dataset(&mut self, name: &str) -> SqlResult<()> {
        crate::store::sqlite::delete_dataset(self.0, name)
            .map_err(|e| AccountError::Database(e.to_string()))?;
        self.0
            .execute("DELETE FROM account_datasets WHERE name = ?1", [name])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{AccountStore, OwnedData, TokenCheck, authenticate, issue_token};

    #[test]
    fn tokens_authenticate_until_revoked_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        store.create_user("alice").unwrap();
        let token = issue_token(&store, "alice", "laptop").unwrap();
        let user = authenticate(&store, &token.secret).unwrap().user().unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(
            authenticate(&store, "rst_nope").unwrap(),
            TokenCheck::Refused
        );
        store.revoke_token(token.id).unwrap();
        assert_eq!(
            authenticate(&store, &token.secret).unwrap(),
            TokenCheck::Refused
        );
        assert!(matches!(
            store.revoke_token(999),
            Err(AccountError::NoSuchToken(999))
        ));
        drop(store);
        let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        let stored: String = conn
            .query_row("SELECT hash FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, TokenHash::of(&token.secret).as_str());
        assert_ne!(stored, token.secret);
    }

    #[test]
    fn a_deleted_users_tokens_and_grants_go_and_its_id_is_never_reused() {
        let store = SqliteStore::open_in_memory().unwrap();
        let alice = store.create_user("alice").unwrap();
        let bob = store.create_user("bob").unwrap();
        let token = issue_token(&store, "alice", "laptop").unwrap();
        store.grant("bob", "alice").unwrap();
        store.grant("alice", "bob").unwrap();
        let gone = store.delete_user("alice", OwnedData::Keep).unwrap();
        assert_eq!((gone.tokens, gone.grants, gone.data_deleted), (1, 1, false));
        assert_eq!(
            authenticate(&store, &token.secret).unwrap(),
            TokenCheck::Refused
        );
        // The kept data set still has bob's grant, and its name stays taken.
        assert!(store.may_use(&bob, "alice").unwrap());
        assert!(matches!(
            store.create_user("alice"),
            Err(AccountError::NameTaken(_))
        ));
        let carol = store.create_user("carol").unwrap();
        assert!(carol.id > bob.id && carol.id != alice.id);
        assert!(matches!(
            store.delete_user("alice", OwnedData::Keep),
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[test]
    fn a_user_deleted_by_hand_leaves_its_id_unused() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice").unwrap();
        let dave = store.create_user("dave").unwrap();
        let token = issue_token(&store, "dave", "old").unwrap();
        {
            // What an operator did with the sqlite3 shell (foreign keys off by default).
            let conn = store.pool.get().unwrap();
            conn.execute_batch(
                "PRAGMA foreign_keys = OFF;
                 DELETE FROM users WHERE name = 'dave';
                 PRAGMA foreign_keys = ON;",
            )
            .unwrap();
        }
        let erin = store.create_user("erin").unwrap();
        assert_ne!(erin.id, dave.id, "the id of the deleted user is not reused");
        assert_eq!(
            authenticate(&store, &token.secret).unwrap(),
            TokenCheck::Refused
        );
    }

    #[test]
    fn a_database_of_the_old_runner_keeps_its_users_and_drops_orphan_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // Made by the hand-written runner of before: six migrations, user_version 6,
            // and a token whose user was deleted by hand.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &crate::store::sqlite::migrations::MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 6;
                 PRAGMA foreign_keys = OFF;
                 INSERT INTO users (id, name, created_at_ms) VALUES (1, 'alice', 0), (2, 'bob', 0);
                 INSERT INTO datasets (name, owner_id, created_at_ms) VALUES ('alice', 1, 0), ('bob', 2, 0);
                 INSERT INTO tokens (user_id, hash, label, created_at_ms) VALUES (1, 'h1', '', 0), (2, 'h2', '', 0), (3, 'h3', '', 0);
                 INSERT INTO grants (dataset, user_id, created_at_ms) VALUES ('alice', 2, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let names: Vec<(i64, String)> = store
            .users()
            .unwrap()
            .into_iter()
            .map(|u| (u.user.id, u.user.name))
            .collect();
        assert_eq!(names, vec![(1, "alice".into()), (2, "bob".into())]);
        let conn = store.pool.get().unwrap();
        let tokens: i64 = conn
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tokens, 2, "the orphan token is gone");
        drop(conn);
        let bob = store.users().unwrap()[1].user.clone();
        assert!(store.may_use(&bob, "alice").unwrap());
        // The orphan token named user 3: the next user is 4, never 3.
        assert_eq!(store.create_user("carol").unwrap().id, 4);
    }
}
