//! [`AccountStore`] for the PostgreSQL store, in the same database as the rows, so every
//! server instance on that database sees the same users, tokens and grants.
//!
//! Same semantics as [`super::sqlite`]. The account tables come with the store's
//! migrations (`roster_migrations`); data sets known to accounts live in
//! `account_datasets`, apart from the store's per-data-set change counters (`datasets`).

use postgres::GenericClient;

use super::{
    AccountError, AccountStore, DEFAULT_DATASET, TokenHash, TokenRecord, User, UserSummary,
    check_name,
};
use crate::store::postgres::PostgresStore;

/// The accounts tables; run by the store's migration runner as one versioned migration.
pub const MIGRATION: &str = r#"
    CREATE TABLE users (
        id            BIGSERIAL PRIMARY KEY,
        name          TEXT   NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE account_datasets (
        name          TEXT   PRIMARY KEY,
        owner_id      BIGINT REFERENCES users(id),
        created_at_ms BIGINT NOT NULL
    );
    INSERT INTO account_datasets (name, owner_id, created_at_ms) VALUES ('default', NULL, 0);
    CREATE TABLE grants (
        dataset       TEXT   NOT NULL REFERENCES account_datasets(name),
        user_id       BIGINT NOT NULL REFERENCES users(id),
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (dataset, user_id)
    );
    CREATE TABLE tokens (
        id            BIGSERIAL PRIMARY KEY,
        user_id       BIGINT NOT NULL REFERENCES users(id),
        hash          TEXT   NOT NULL UNIQUE,
        label         TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );
    CREATE INDEX tokens_by_user ON tokens (user_id);
"#;

/// Key of the advisory lock that serialises account changes of concurrent instances
/// (the counterpart of SQLite's `BEGIN IMMEDIATE`).
const ACCOUNTS_LOCK: i64 = 0x526f_7374_6572_0001;

impl From<postgres::Error> for AccountError {
    fn from(e: postgres::Error) -> Self {
        AccountError::Database(e.to_string())
    }
}

fn now_ms() -> i64 {
    crate::store::round::now_ms()
}

fn user_id(client: &mut impl GenericClient, name: &str) -> Result<i64, AccountError> {
    client
        .query_opt("SELECT id FROM users WHERE name = $1", &[&name])?
        .map(|r| r.get(0))
        .ok_or_else(|| AccountError::NoSuchUser(name.to_owned()))
}

impl PostgresStore {
    fn account_conn(&self) -> Result<crate::store::postgres::Connection, AccountError> {
        self.conn()
            .map_err(|e| AccountError::Database(e.to_string()))
    }
}

impl AccountStore for PostgresStore {
    fn create_user(&self, name: &str) -> Result<User, AccountError> {
        check_name(name)?;
        let mut conn = self.account_conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])?;
        let taken: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)
                     OR EXISTS (SELECT 1 FROM account_datasets WHERE name = $1)",
                &[&name],
            )?
            .get(0);
        if taken || name == DEFAULT_DATASET {
            return Err(AccountError::NameTaken(name.to_owned()));
        }
        let at = now_ms();
        let id: i64 = tx
            .query_one(
                "INSERT INTO users (name, created_at_ms) VALUES ($1, $2) RETURNING id",
                &[&name, &at],
            )?
            .get(0);
        tx.execute(
            "INSERT INTO account_datasets (name, owner_id, created_at_ms) VALUES ($1, $2, $3)",
            &[&name, &id, &at],
        )?;
        tx.commit()?;
        tracing::info!(user = name, "created user");
        Ok(User {
            id,
            name: name.to_owned(),
        })
    }

    fn add_token(&self, user: &str, hash: &TokenHash, label: &str) -> Result<i64, AccountError> {
        let mut conn = self.account_conn()?;
        let user_id = user_id(&mut *conn, user)?;
        let id: i64 = conn
            .query_one(
                "INSERT INTO tokens (user_id, hash, label, created_at_ms)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&user_id, &hash.as_str(), &label, &now_ms()],
            )?
            .get(0);
        Ok(id)
    }

    fn revoke_token(&self, token_id: i64) -> Result<(), AccountError> {
        let mut conn = self.account_conn()?;
        let found = conn.execute(
            "UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1",
            &[&token_id, &now_ms()],
        )?;
        if found == 0 {
            return Err(AccountError::NoSuchToken(token_id));
        }
        Ok(())
    }

    fn user_by_token(&self, hash: &TokenHash) -> Result<Option<User>, AccountError> {
        let mut conn = self.account_conn()?;
        let user = conn
            .query_opt(
                "SELECT users.id, users.name FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.hash = $1 AND tokens.revoked_at_ms IS NULL",
                &[&hash.as_str()],
            )?
            .map(|r| User {
                id: r.get(0),
                name: r.get(1),
            });
        Ok(user)
    }

    fn users(&self) -> Result<Vec<UserSummary>, AccountError> {
        let mut conn = self.account_conn()?;
        let users: Vec<User> = conn
            .query("SELECT id, name FROM users ORDER BY name", &[])?
            .into_iter()
            .map(|r| User {
                id: r.get(0),
                name: r.get(1),
            })
            .collect();
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let shared_with = conn
                .query(
                    "SELECT dataset FROM grants WHERE user_id = $1 ORDER BY dataset",
                    &[&user.id],
                )?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
            let tokens = conn
                .query(
                    "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL FROM tokens
                     WHERE user_id = $1 ORDER BY id",
                    &[&user.id],
                )?
                .into_iter()
                .map(|r| TokenRecord {
                    id: r.get(0),
                    label: r.get(1),
                    created_at_ms: r.get(2),
                    revoked: r.get(3),
                })
                .collect();
            out.push(UserSummary {
                user,
                shared_with,
                tokens,
            });
        }
        Ok(out)
    }

    fn grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        let mut conn = self.account_conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])?;
        let user_id = user_id(&mut tx, user)?;
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = $1)",
                &[&dataset],
            )?
            .get(0);
        if !exists {
            return Err(AccountError::NoSuchDataset(dataset.to_owned()));
        }
        tx.execute(
            "INSERT INTO grants (dataset, user_id, created_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&dataset, &user_id, &now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(dataset, user, "shared data set");
        Ok(())
    }

    fn may_use(&self, user: &User, dataset: &str) -> Result<bool, AccountError> {
        let mut conn = self.account_conn()?;
        let allowed: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = $1 AND owner_id = $2)
                     OR EXISTS (SELECT 1 FROM grants WHERE dataset = $1 AND user_id = $2)",
                &[&dataset, &user.id],
            )?
            .get(0);
        Ok(allowed)
    }
}
