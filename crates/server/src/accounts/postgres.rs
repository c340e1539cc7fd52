//! The accounts of the PostgreSQL store, in the same database as the rows, so every
//! server instance on that database sees the same users, tokens and grants: its tables'
//! migrations and SQL (`AccountBackend`); the rules are in `super::rules`. The account
//! tables come with the store's migrations (`roster_migrations`); data sets known to
//! accounts live in `account_datasets`, apart from the store's per-data-set change
//! counters (`dataset_counters`).

use postgres::types::Type;
use postgres::{GenericClient, Transaction};

use super::rules::{AccountBackend, AccountSql, AccountTxSql, ActiveToken, SqlResult};
use super::{AccountError, NewToken, TokenHash, TokenRecord, User};
use crate::store::postgres::{Conn, PostgresStore, Statements};

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

impl PostgresStore {
    fn account_conn(&self) -> Result<crate::store::postgres::Connection, AccountError> {
        self.conn()
            .map_err(|e| AccountError::Database(e.to_string()))
    }
}

impl AccountBackend for PostgresStore {
    // Autocommit: each statement is a transaction of its own.
    fn on_connection<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountSql) -> SqlResult<R>,
    ) -> SqlResult<R> {
        let mut conn = self.account_conn()?;
        let Conn { client, statements } = &mut *conn;
        body(&mut PgSql(client, statements))
    }

    fn in_transaction<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountTxSql) -> SqlResult<R>,
    ) -> SqlResult<R> {
        let mut conn = self.account_conn()?;
        let Conn { client, statements } = &mut *conn;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ACCOUNTS_LOCK])?;
        let value = body(&mut PgSql(&mut tx, statements))?;
        tx.commit()?;
        Ok(value)
    }
}

/// The accounts SQL on a PostgreSQL connection, or (`C` = `Transaction`) in a
/// transaction, with the connection's prepared statements (for the checks every request
/// makes).
struct PgSql<'a, C>(&'a mut C, &'a mut Statements);

impl<C: GenericClient> AccountSql for PgSql<'_, C> {
    fn user_id(&mut self, name: &str) -> SqlResult<Option<i64>> {
        Ok(self
            .0
            .query_opt("SELECT id FROM users WHERE name = $1", &[&name])?
            .map(|r| r.get(0)))
    }

    fn name_taken(&mut self, name: &str) -> SqlResult<bool> {
        Ok(self
            .0
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)
                     OR EXISTS (SELECT 1 FROM account_datasets WHERE name = $1)",
                &[&name],
            )?
            .get(0))
    }

    fn insert_user(&mut self, name: &str, at_ms: i64) -> SqlResult<i64> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO users (name, created_at_ms) VALUES ($1, $2) RETURNING id",
                &[&name, &at_ms],
            )?
            .get(0))
    }

    fn insert_owned_dataset(&mut self, name: &str, owner_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0.execute(
            "INSERT INTO account_datasets (name, owner_id, created_at_ms) VALUES ($1, $2, $3)",
            &[&name, &owner_id, &at_ms],
        )?;
        Ok(())
    }

    fn insert_token(&mut self, user_id: i64, token: &NewToken<'_>, at_ms: i64) -> SqlResult<i64> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO tokens (user_id, hash, label, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    &user_id,
                    &token.hash.as_str(),
                    &token.label,
                    &at_ms,
                    &token.expires_at_ms,
                ],
            )?
            .get(0))
    }

    fn token_owner(&mut self, token_id: i64) -> SqlResult<Option<(String, String)>> {
        Ok(self
            .0
            .query_opt(
                "SELECT users.name, tokens.label FROM tokens JOIN users ON users.id = tokens.user_id
                 WHERE tokens.id = $1",
                &[&token_id],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn expire_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "UPDATE tokens SET expires_at_ms = LEAST(COALESCE(expires_at_ms, $2), $2)
             WHERE id = $1",
            &[&token_id, &at_ms],
        )?)
    }

    fn revoke_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1",
            &[&token_id, &at_ms],
        )?)
    }

    fn token_by_hash(&mut self, hash: &TokenHash) -> SqlResult<Option<ActiveToken>> {
        let lookup = self.1.get(
            self.0,
            "SELECT users.id, users.name, tokens.id, tokens.expires_at_ms,
                    tokens.last_used_at_ms
             FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.hash = $1 AND tokens.revoked_at_ms IS NULL",
            &[Type::TEXT],
        )?;
        Ok(self
            .0
            .query_opt(&lookup, &[&hash.as_str()])?
            .map(|r| ActiveToken {
                user: User {
                    id: r.get(0),
                    name: r.get(1),
                },
                id: r.get(2),
                expires_at_ms: r.get(3),
                last_used_at_ms: r.get(4),
            }))
    }

    fn set_token_last_used(&mut self, token_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0.execute(
            "UPDATE tokens SET last_used_at_ms = $2 WHERE id = $1",
            &[&token_id, &at_ms],
        )?;
        Ok(())
    }

    fn users(&mut self) -> SqlResult<Vec<User>> {
        Ok(self
            .0
            .query("SELECT id, name FROM users ORDER BY name", &[])?
            .into_iter()
            .map(|r| User {
                id: r.get(0),
                name: r.get(1),
            })
            .collect())
    }

    fn grants_of(&mut self, user_id: i64) -> SqlResult<Vec<String>> {
        Ok(self
            .0
            .query(
                "SELECT dataset FROM grants WHERE user_id = $1 ORDER BY dataset",
                &[&user_id],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn tokens_of(&mut self, user_id: i64) -> SqlResult<Vec<TokenRecord>> {
        Ok(self
            .0
            .query(
                "SELECT id, label, created_at_ms, revoked_at_ms IS NOT NULL, expires_at_ms,
                        last_used_at_ms
                 FROM tokens WHERE user_id = $1 ORDER BY id",
                &[&user_id],
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
            .collect())
    }

    fn dataset_exists(&mut self, name: &str) -> SqlResult<bool> {
        Ok(self
            .0
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = $1)",
                &[&name],
            )?
            .get(0))
    }

    fn insert_grant(&mut self, dataset: &str, user_id: i64, at_ms: i64) -> SqlResult<()> {
        self.0.execute(
            "INSERT INTO grants (dataset, user_id, created_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&dataset, &user_id, &at_ms],
        )?;
        Ok(())
    }

    fn delete_grant(&mut self, dataset: &str, user_id: i64) -> SqlResult<u64> {
        Ok(self.0.execute(
            "DELETE FROM grants WHERE dataset = $1 AND user_id = $2",
            &[&dataset, &user_id],
        )?)
    }

    fn count_tokens_and_grants(&mut self, user_id: i64) -> SqlResult<(i64, i64)> {
        let row = self.0.query_one(
            "SELECT (SELECT COUNT(*) FROM tokens WHERE user_id = $1),
                    (SELECT COUNT(*) FROM grants WHERE user_id = $1)",
            &[&user_id],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    fn owned_datasets(&mut self, user_id: i64) -> SqlResult<Vec<String>> {
        Ok(self
            .0
            .query(
                "SELECT name FROM account_datasets WHERE owner_id = $1",
                &[&user_id],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn delete_user(&mut self, user_id: i64) -> SqlResult<()> {
        self.0
            .execute("DELETE FROM users WHERE id = $1", &[&user_id])?;
        Ok(())
    }

    fn may_use(&mut self, user_id: i64, dataset: &str) -> SqlResult<bool> {
        let check = self.1.get(
            self.0,
            "SELECT EXISTS (SELECT 1 FROM account_datasets WHERE name = $1 AND owner_id = $2)
                 OR EXISTS (SELECT 1 FROM grants WHERE dataset = $1 AND user_id = $2)",
            &[Type::TEXT, Type::INT8],
        )?;
        Ok(self.0.query_one(&check, &[&dataset, &user_id])?.get(0))
    }
}

impl AccountTxSql for PgSql<'_, Transaction<'_>> {
    fn delete_dataset(&mut self, name: &str) -> SqlResult<()> {
        crate::store::postgres::delete_dataset(self.0, self.1, name)
            .map_err(|e| AccountError::Database(e.to_string()))?;
        self.0
            .execute("DELETE FROM account_datasets WHERE name = $1", &[&name])?;
        Ok(())
    }
}
