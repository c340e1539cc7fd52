//! [`AccountStore`] for the PostgreSQL store, in the same database as the rows, so every
//! server instance on that database sees the same users, tokens and grants.
//!
//! Same semantics as [`super::sqlite`]. The account tables come with the store's
//! migrations (`roster_migrations`); data sets known to accounts live in
//! `account_datasets`, apart from the store's per-data-set change counters (`datasets`).

use postgres::GenericClient;

use super::{
    AccountError, AccountStore, DEFAULT_DATASET, DeletedUser, LAST_USED_PRECISION_MS, OwnedData,
    TokenCheck, TokenHash, TokenRecord, User, UserSummary, check_name, now_ms,
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

/// Deletes cascade: tokens and grants go with their user or data set, and a data set
/// outlives its owner (owner set to NULL). Ids come from sequences and are never reused.
pub const MIGRATION_CASCADE: &str = r#"
    ALTER TABLE tokens DROP CONSTRAINT tokens_user_id_fkey,
        ADD CONSTRAINT tokens_user_id_fkey FOREIGN KEY (user_id)
            REFERENCES users(id) ON DELETE CASCADE;
    ALTER TABLE grants DROP CONSTRAINT grants_user_id_fkey,
        ADD CONSTRAINT grants_user_id_fkey FOREIGN KEY (user_id)
            REFERENCES users(id) ON DELETE CASCADE;
    ALTER TABLE grants DROP CONSTRAINT grants_dataset_fkey,
        ADD CONSTRAINT grants_dataset_fkey FOREIGN KEY (dataset)
            REFERENCES account_datasets(name) ON DELETE CASCADE;
    ALTER TABLE account_datasets DROP CONSTRAINT account_datasets_owner_id_fkey,
        ADD CONSTRAINT account_datasets_owner_id_fkey FOREIGN KEY (owner_id)
            REFERENCES users(id) ON DELETE SET NULL;
    CREATE INDEX grants_by_user ON grants (user_id);
"#;

/// Tokens may expire, and record (coarsely) when they were last used.
pub const MIGRATION_TOKENS: &str = r#"
    ALTER TABLE tokens ADD COLUMN expires_at_ms BIGINT;
    ALTER TABLE tokens ADD COLUMN last_used_at_ms BIGINT;
"#;

/// Key of the advisory lock that serialises account changes of concurrent instances
/// (the counterpart of SQLite's `BEGIN IMMEDIATE`).
const ACCOUNTS_LOCK: i64 = 0x526f_7374_6572_0001;

impl From<postgres::Error> for AccountError {
    fn from(e: postgres::Error) -> Self {
        AccountError::Database(e.to_string())
    }
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

    fn add_token(
        &self,
        user: &str,
        hash: &TokenHash,
        label: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<i64, AccountError> {
        let mut conn = self.account_conn()?;
        let user_id = user_id(&mut *conn, user)?;
        let id: i64 = conn
            .query_one(
                "INSERT INTO tokens (user_id, hash, label, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&user_id, &hash.as_str(), &label, &now_ms(), &expires_at_ms],
            )?
            .get(0);
        Ok(id)
    }

    fn token_owner(&self, token_id: i64) -> Result<(String, String), AccountError> {
        let mut conn = self.account_conn()?;
        conn.query_opt(
            "SELECT users.name, tokens.label FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.id = $1",
            &[&token_id],
        )?
        .map(|r| (r.get(0), r.get(1)))
        .ok_or(AccountError::NoSuchToken(token_id))
    }

    fn expire_token(&self, token_id: i64, at_ms: i64) -> Result<(), AccountError> {
        let mut conn = self.account_conn()?;
        let found = conn.execute(
            "UPDATE tokens SET expires_at_ms = LEAST(COALESCE(expires_at_ms, $2), $2)
             WHERE id = $1",
            &[&token_id, &at_ms],
        )?;
        if found == 0 {
            return Err(AccountError::NoSuchToken(token_id));
        }
        Ok(())
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

    fn user_by_token(&self, hash: &TokenHash, now_ms: i64) -> Result<TokenCheck, AccountError> {
        let mut conn = self.account_conn()?;
        let Some(row) = conn.query_opt(
            "SELECT users.id, users.name, tokens.id, tokens.expires_at_ms,
                    tokens.last_used_at_ms
             FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.hash = $1 AND tokens.revoked_at_ms IS NULL",
            &[&hash.as_str()],
        )?
        else {
            return Ok(TokenCheck::Refused);
        };
        let (token_id, expires_at_ms, last_used_at_ms): (i64, Option<i64>, Option<i64>) =
            (row.get(2), row.get(3), row.get(4));
        if expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Ok(TokenCheck::Expired);
        }
        if last_used_at_ms.is_none_or(|at| at <= now_ms - LAST_USED_PRECISION_MS) {
            conn.execute(
                "UPDATE tokens SET last_used_at_ms = $2 WHERE id = $1",
                &[&token_id, &now_ms],
            )?;
        }
        Ok(TokenCheck::Valid(User {
            id: row.get(0),
            name: row.get(1),
        }))
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
                    "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL, expires_at_ms,
                            last_used_at_ms
                     FROM tokens WHERE user_id = $1 ORDER BY id",
                    &[&user.id],
                )?
                .into_iter()
                .map(|r| TokenRecord {
                    id: r.get(0),
                    label: r.get(1),
                    created_at_ms: r.get(2),
                    revoked: r.get(3),
                    expires_at_ms: r.get(4),
                    last_used_at_ms: r.get(5),
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

    fn revoke_grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        let mut conn = self.account_conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])?;
        let user_id = user_id(&mut tx, user)?;
        let removed = tx.execute(
            "DELETE FROM grants WHERE dataset = $1 AND user_id = $2",
            &[&dataset, &user_id],
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
        let mut conn = self.account_conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])?;
        let id = user_id(&mut tx, name)?;
        let tokens: i64 = tx
            .query_one("SELECT COUNT(*) FROM tokens WHERE user_id = $1", &[&id])?
            .get(0);
        let grants: i64 = tx
            .query_one("SELECT COUNT(*) FROM grants WHERE user_id = $1", &[&id])?
            .get(0);
        let owned: Vec<String> = tx
            .query(
                "SELECT name FROM account_datasets WHERE owner_id = $1",
                &[&id],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if data == OwnedData::Delete {
            for dataset in &owned {
                crate::store::postgres::delete_dataset(&mut tx, dataset)
                    .map_err(|e| AccountError::Database(e.to_string()))?;
                tx.execute("DELETE FROM account_datasets WHERE name = $1", &[dataset])?;
            }
        }
        // Tokens and grants go with the user (ON DELETE CASCADE); a kept data set's
        // owner becomes NULL (ON DELETE SET NULL).
        tx.execute("DELETE FROM users WHERE id = $1", &[&id])?;
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
