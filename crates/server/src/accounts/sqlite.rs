//! [`AccountStore`] for the embedded SQLite store, in the same database file as the rows.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{
    AccountError, AccountStore, DEFAULT_DATASET, TokenHash, TokenRecord, User, UserSummary,
    check_name,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
                 OR EXISTS (SELECT 1 FROM datasets WHERE name = ?1)",
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
            "INSERT INTO datasets (name, owner_id, created_at_ms) VALUES (?1, ?2, ?3)",
            params![name, id, at],
        )?;
        tx.commit()?;
        tracing::info!(user = name, "created user");
        Ok(User {
            id,
            name: name.to_owned(),
        })
    }

    fn add_token(&self, user: &str, hash: &TokenHash, label: &str) -> Result<i64, AccountError> {
        let conn = self.pool.get()?;
        let user_id = user_id(&conn, user)?;
        conn.execute(
            "INSERT INTO tokens (user_id, hash, label, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, hash.as_str(), label, now_ms()],
        )?;
        Ok(conn.last_insert_rowid())
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

    fn user_by_token(&self, hash: &TokenHash) -> Result<Option<User>, AccountError> {
        let conn = self.pool.get()?;
        let user = conn
            .prepare_cached(
                "SELECT users.id, users.name FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.hash = ?1 AND tokens.revoked_at_ms IS NULL",
            )?
            .query_row([hash.as_str()], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .optional()?;
        Ok(user)
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
                    "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL FROM tokens
                     WHERE user_id = ?1 ORDER BY id",
                )?
                .query_map([user.id], |r| {
                    Ok(TokenRecord {
                        id: r.get(0)?,
                        label: r.get(1)?,
                        created_at_ms: r.get(2)?,
                        revoked: r.get(3)?,
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
            "SELECT EXISTS (SELECT 1 FROM datasets WHERE name = ?1)",
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

    fn may_use(&self, user: &User, dataset: &str) -> Result<bool, AccountError> {
        let conn = self.pool.get()?;
        let allowed = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM datasets WHERE name = ?1 AND owner_id = ?2)
                     OR EXISTS (SELECT 1 FROM grants WHERE dataset = ?1 AND user_id = ?2)",
            )?
            .query_row(params![dataset, user.id], |r| r.get(0))?;
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{authenticate, issue_token};

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
        let user = authenticate(&store, &token.secret).unwrap().unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(authenticate(&store, "rst_nope").unwrap(), None);
        store.revoke_token(token.id).unwrap();
        assert_eq!(authenticate(&store, &token.secret).unwrap(), None);
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
}
