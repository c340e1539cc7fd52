//! [`AccountStore`] for the embedded SQLite store, in the same database file as the rows.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{
    AccountError, AccountStore, DEFAULT_DATASET, DeletedUser, LAST_USED_PRECISION_MS, OwnedData,
    TokenCheck, TokenHash, TokenRecord, User, UserSummary, check_name, now_ms,
};
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

fn user_id(conn: &rusqlite::Connection, name: &str) -> Result<i64, AccountError> {
    conn.query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| AccountError::NoSuchUser(name.to_owned()))
}

impl AccountStore for SqliteStore {
    fn create_user(&self, name: &str) -> Result<User, AccountError> {
        check_name(name)?;
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)
                 OR EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if taken || name == DEFAULT_DATASET {
            return Err(AccountError::NameTaken(name.to_owned()));
        }
        let at = now_ms();
        tx.execute(
            "INSERT INTO users (name, created_at_ms) VALUES (?1, ?2)",
            params![name, at],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO account_datasets (name, owner_id, created_at_ms) VALUES (?1, ?2, ?3)",
            params![name, id, at],
        )?;
        tx.commit()?;
        tracing::info!(user = name, "created user");
        Ok(User {
            id,
            name: name.to_owned(),
        })
    }

    fn add_token(
        &self,
        user: &str,
        hash: &TokenHash,
        label: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<i64, AccountError> {
        let conn = self.pool.get()?;
        let user_id = user_id(&conn, user)?;
        conn.execute(
            "INSERT INTO tokens (user_id, hash, label, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, hash.as_str(), label, now_ms(), expires_at_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn token_owner(&self, token_id: i64) -> Result<(String, String), AccountError> {
        let conn = self.pool.get()?;
        conn.query_row(
            "SELECT users.name, tokens.label FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.id = ?1",
            [token_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(AccountError::NoSuchToken(token_id))
    }

    fn expire_token(&self, token_id: i64, at_ms: i64) -> Result<(), AccountError> {
        let conn = self.pool.get()?;
        let found = conn.execute(
            "UPDATE tokens SET expires_at_ms = MIN(COALESCE(expires_at_ms, ?2), ?2) WHERE id = ?1",
            params![token_id, at_ms],
        )?;
        if found == 0 {
            return Err(AccountError::NoSuchToken(token_id));
        }
        Ok(())
    }

    fn revoke_token(&self, token_id: i64) -> Result<(), AccountError> {
        let conn = self.pool.get()?;
        let found = conn.execute(
            "UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1",
            params![token_id, now_ms()],
        )?;
        if found == 0 {
            return Err(AccountError::NoSuchToken(token_id));
        }
        Ok(())
    }

    fn user_by_token(&self, hash: &TokenHash, now_ms: i64) -> Result<TokenCheck, AccountError> {
        let conn = self.pool.get()?;
        let found = conn
            .prepare_cached(
                "SELECT users.id, users.name, tokens.id, tokens.expires_at_ms,
                        tokens.last_used_at_ms
                 FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.hash = ?1 AND tokens.revoked_at_ms IS NULL",
            )?
            .query_row([hash.as_str()], |r| {
                Ok((
                    User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()?;
        let Some((user, token_id, expires_at_ms, last_used_at_ms)) = found else {
            return Ok(TokenCheck::Refused);
        };
        if expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Ok(TokenCheck::Expired);
        }
        if last_used_at_ms.is_none_or(|at| at <= now_ms - LAST_USED_PRECISION_MS) {
            conn.prepare_cached("UPDATE tokens SET last_used_at_ms = ?2 WHERE id = ?1")?
                .execute(params![token_id, now_ms])?;
        }
        Ok(TokenCheck::Valid(user))
    }

    fn users(&self) -> Result<Vec<UserSummary>, AccountError> {
        let conn = self.pool.get()?;
        let users: Vec<User> = conn
            .prepare("SELECT id, name FROM users ORDER BY name")?
            .query_map([], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let shared_with = conn
                .prepare("SELECT dataset FROM grants WHERE user_id = ?1 ORDER BY dataset")?
                .query_map([user.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let tokens = conn
                .prepare(
                    "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL, expires_at_ms,
                            last_used_at_ms
                     FROM tokens WHERE user_id = ?1 ORDER BY id",
                )?
                .query_map([user.id], |r| {
                    Ok(TokenRecord {
                        id: r.get(0)?,
                        label: r.get(1)?,
                        created_at_ms: r.get(2)?,
                        revoked: r.get(3)?,
                        expires_at_ms: r.get(4)?,
                        last_used_at_ms: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            out.push(UserSummary {
                user,
                shared_with,
                tokens,
            });
        }
        Ok(out)
    }

    fn grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let user_id = user_id(&tx, user)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1)",
            [dataset],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(AccountError::NoSuchDataset(dataset.to_owned()));
        }
        tx.execute(
            "INSERT INTO grants (dataset, user_id, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![dataset, user_id, now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(dataset, user, "shared data set");
        Ok(())
    }

    fn revoke_grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let user_id = user_id(&tx, user)?;
        let removed = tx.execute(
            "DELETE FROM grants WHERE dataset = ?1 AND user_id = ?2",
            params![dataset, user_id],
        )?;
        if removed == 0 {
            return Err(AccountError::NotShared {
                dataset: dataset.to_owned(),
                user: user.to_owned(),
            });
        }
        tx.commit()?;
        tracing::info!(dataset, user, "unshared data set");
        Ok(())
    }

    fn delete_user(&self, name: &str, data: OwnedData) -> Result<DeletedUser, AccountError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = user_id(&tx, name)?;
        let count = |sql: &str| tx.query_row(sql, [id], |r| r.get::<_, i64>(0));
        let tokens = count("SELECT COUNT(*) FROM tokens WHERE user_id = ?1")?;
        let grants = count("SELECT COUNT(*) FROM grants WHERE user_id = ?1")?;
        let owned: Vec<String> = tx
            .prepare("SELECT name FROM account_datasets WHERE owner_id = ?1")?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if data == OwnedData::Delete {
            for dataset in &owned {
                crate::store::sqlite::delete_dataset(&tx, dataset)
                    .map_err(|e| AccountError::Database(e.to_string()))?;
                tx.execute("DELETE FROM account_datasets WHERE name = ?1", [dataset])?;
            }
        }
        // Tokens and grants go with the user (ON DELETE CASCADE); a kept data set's
        // owner becomes NULL (ON DELETE SET NULL).
        tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
        tx.commit()?;
        tracing::info!(user = name, tokens, grants, ?data, "deleted user");
        Ok(DeletedUser {
            user: User {
                id,
                name: name.to_owned(),
            },
            tokens: u64::try_from(tokens).unwrap_or(0),
            grants: u64::try_from(grants).unwrap_or(0),
            data_deleted: data == OwnedData::Delete && !owned.is_empty(),
        })
    }

    fn may_use(&self, user: &User, dataset: &str) -> Result<bool, AccountError> {
        let conn = self.pool.get()?;
        let allowed = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = ?1 AND owner_id = ?2)
                     OR EXISTS (SELECT 1 FROM grants WHERE dataset = ?1 AND user_id = ?2)",
            )?
            .query_row(params![dataset, user.id], |r| r.get(0))?;
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{
        OwnedData, authenticate, issue_expiring_token, issue_token, rotate_token,
    };

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn tokens_authenticate_until_revoked_and_only_hashes_are_stored() {
        let (dir, store) = open();
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
    fn data_sets_are_used_by_owner_and_grantees_only() {
        let (_dir, store) = open();
        let alice = store.create_user("alice").unwrap();
        let bob = store.create_user("bob").unwrap();
        assert!(store.may_use(&alice, "alice").unwrap());
        assert!(!store.may_use(&bob, "alice").unwrap());
        assert!(!store.may_use(&bob, "nobody").unwrap());
        assert!(!store.may_use(&bob, DEFAULT_DATASET).unwrap());
        store.grant("alice", "bob").unwrap();
        store.grant("alice", "bob").unwrap();
        assert!(store.may_use(&bob, "alice").unwrap());
        assert!(matches!(
            store.grant("nobody", "bob"),
            Err(AccountError::NoSuchDataset(_))
        ));
        assert!(matches!(
            store.grant("alice", "carol"),
            Err(AccountError::NoSuchUser(_))
        ));
        assert!(matches!(
            store.create_user("alice"),
            Err(AccountError::NameTaken(_))
        ));
        assert!(matches!(
            store.create_user(DEFAULT_DATASET),
            Err(AccountError::NameTaken(_))
        ));
        let users = store.users().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].shared_with, vec!["alice".to_owned()]);
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
    fn unshare_takes_a_grant_back() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice").unwrap();
        let bob = store.create_user("bob").unwrap();
        store.grant("alice", "bob").unwrap();
        store.revoke_grant("alice", "bob").unwrap();
        assert!(!store.may_use(&bob, "alice").unwrap());
        assert!(matches!(
            store.revoke_grant("alice", "bob"),
            Err(AccountError::NotShared { .. })
        ));
        assert!(matches!(
            store.revoke_grant("alice", "nobody"),
            Err(AccountError::NoSuchUser(_))
        ));
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

    #[test]
    fn expired_and_rotated_tokens_and_last_use() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice").unwrap();
        let hour = 3_600_000;
        let token = issue_expiring_token(&store, "alice", "phone", Some(hour)).unwrap();
        let hash = TokenHash::of(&token.secret);
        let now = now_ms();
        assert!(matches!(
            store.user_by_token(&hash, now).unwrap(),
            TokenCheck::Valid(_)
        ));
        assert_eq!(
            store.user_by_token(&hash, now + hour + 1).unwrap(),
            TokenCheck::Expired
        );
        let used = |store: &SqliteStore| store.users().unwrap()[0].tokens[0].last_used_at_ms;
        assert_eq!(used(&store), Some(now));
        // Used again soon after: nothing is written.
        store.user_by_token(&hash, now + 1000).unwrap();
        assert_eq!(used(&store), Some(now));
        store
            .user_by_token(&hash, now + LAST_USED_PRECISION_MS + 1)
            .unwrap();
        assert_eq!(used(&store), Some(now + LAST_USED_PRECISION_MS + 1));

        let new = rotate_token(&store, token.id, 0).unwrap();
        assert_eq!(
            authenticate(&store, &token.secret).unwrap(),
            TokenCheck::Expired
        );
        assert_eq!(
            authenticate(&store, &new.secret)
                .unwrap()
                .user()
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(store.users().unwrap()[0].tokens[1].label, "phone");
    }
}
