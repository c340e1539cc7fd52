//! The account rules, written once for every backend.
//!
//! A backend implements [`AccountBackend`] (run a closure in a write transaction, or on
//! a plain connection) and, on its connection and transaction types, the small SQL
//! operations of [`AccountSql`] and [`AccountTxSql`]. Every decision is here, once:
//! which names are taken, which token is refused or expired, when a token's last use is
//! written, which errors an operation returns, what is logged, and what a user's
//! deletion removes. Every backend then gets [`AccountStore`] from the one blanket impl
//! below; its own files hold only SQL.
//!
//! Invariant: operations that check and then write (`create_user`, `grant`,
//! `revoke_grant`, `delete_user`) run in [`AccountBackend::in_transaction`], which
//! serialises account writers (SQLite `BEGIN IMMEDIATE`, PostgreSQL an advisory lock),
//! so a check cannot go stale before its write.

use super::{
    AccountError, AccountStore, DEFAULT_DATASET, DeletedUser, LAST_USED_PRECISION_MS, NewToken,
    OwnedData, TokenCheck, TokenHash, TokenRecord, User, UserSummary, check_name, now_ms,
};

/// What an SQL operation returns.
pub(crate) type SqlResult<T> = Result<T, AccountError>;

/// A token that is not revoked, as [`AccountSql::token_by_hash`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveToken {
    /// The token's user.
    pub(crate) user: User,
    /// The token's id.
    pub(crate) id: i64,
    /// When it stops working (Unix ms), if ever.
    pub(crate) expires_at_ms: Option<i64>,
    /// When its use was last written (Unix ms), if ever.
    pub(crate) last_used_at_ms: Option<i64>,
}

/// The accounts tables' SQL, one statement each, on a connection or in a transaction.
/// Row counts are what the statement changed.
pub(crate) trait AccountSql {
    /// The id of the user with this name.
    fn user_id(&mut self, name: &str) -> SqlResult<Option<i64>>;
    /// Whether a user or a data set has this name.
    fn name_taken(&mut self, name: &str) -> SqlResult<bool>;
    /// Inserts a user; returns its new id.
    fn insert_user(&mut self, name: &str, at_ms: i64) -> SqlResult<i64>;
    /// Inserts a data set owned by `owner_id`.
    fn insert_owned_dataset(&mut self, name: &str, owner_id: i64, at_ms: i64) -> SqlResult<()>;
    /// Inserts a token of `user_id`, issued at `at_ms`; returns its new id.
    fn insert_token(&mut self, user_id: i64, token: &NewToken<'_>, at_ms: i64) -> SqlResult<i64>;
    /// The user name and label of a token.
    fn token_owner(&mut self, token_id: i64) -> SqlResult<Option<(String, String)>>;
    /// Sets a token's expiry to `at_ms` unless it is earlier already.
    fn expire_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64>;
    /// Marks a token revoked at `at_ms` unless it was revoked already.
    fn revoke_token(&mut self, token_id: i64, at_ms: i64) -> SqlResult<u64>;
    /// The token with this hash, unless unknown or revoked.
    fn token_by_hash(&mut self, hash: &TokenHash) -> SqlResult<Option<ActiveToken>>;
    /// Writes when a token was last used.
    fn set_token_last_used(&mut self, token_id: i64, at_ms: i64) -> SqlResult<()>;
    /// Every user, by name.
    fn users(&mut self) -> SqlResult<Vec<User>>;
    /// The data sets granted to a user, by name.
    fn grants_of(&mut self, user_id: i64) -> SqlResult<Vec<String>>;
    /// A user's tokens, revoked ones included, by id.
    fn tokens_of(&mut self, user_id: i64) -> SqlResult<Vec<TokenRecord>>;
    /// Whether a data set has this name.
    fn dataset_exists(&mut self, name: &str) -> SqlResult<bool>;
    /// Grants a data set to a user (nothing if it is granted already).
    fn insert_grant(&mut self, dataset: &str, user_id: i64, at_ms: i64) -> SqlResult<()>;
    /// Takes a grant back.
    fn delete_grant(&mut self, dataset: &str, user_id: i64) -> SqlResult<u64>;
    /// How many tokens (revoked ones included) and grants a user has.
    fn count_tokens_and_grants(&mut self, user_id: i64) -> SqlResult<(i64, i64)>;
    /// The data sets a user owns.
    fn owned_datasets(&mut self, user_id: i64) -> SqlResult<Vec<String>>;
    /// Deletes a user; its tokens and grants cascade, its data sets lose their owner.
    fn delete_user(&mut self, user_id: i64) -> SqlResult<()>;
    /// Whether a user owns or was granted a data set.
    fn may_use(&mut self, user_id: i64, dataset: &str) -> SqlResult<bool>;
}

/// The statements only a write transaction may run.
pub(crate) trait AccountTxSql: AccountSql {
    /// Removes a data set: everything the store holds for it (rows, conflict log,
    /// batches) and its accounts row (grants on it cascade).
    fn delete_dataset(&mut self, name: &str) -> SqlResult<()>;
}

/// A backend of the accounts: where [`AccountSql`] runs.
pub(crate) trait AccountBackend {
    /// Runs `body` in a transaction that serialises account writers (taken before
    /// anything is read), committing it when `body` returns `Ok`; an error drops it.
    fn in_transaction<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountTxSql) -> SqlResult<R>,
    ) -> SqlResult<R>;

    /// Runs `body` on a plain connection (each statement commits on its own).
    fn on_connection<R>(
        &self,
        body: impl FnOnce(&mut dyn AccountSql) -> SqlResult<R>,
    ) -> SqlResult<R>;
}

/// The id of user `name`, or [`AccountError::NoSuchUser`].
fn existing_user_id(sql: &mut (impl AccountSql + ?Sized), name: &str) -> SqlResult<i64> {
    sql.user_id(name)?
        .ok_or_else(|| AccountError::NoSuchUser(name.to_owned()))
}

/// `Ok` if a statement changed a token, else [`AccountError::NoSuchToken`].
fn token_found(changed: u64, token_id: i64) -> SqlResult<()> {
    if changed == 0 {
        Err(AccountError::NoSuchToken(token_id))
    } else {
        Ok(())
    }
}

impl<B: AccountBackend + Send + Sync + 'static> AccountStore for B {
    fn create_user(&self, name: &str) -> Result<User, AccountError> {
        check_name(name)?;
        let id = self.in_transaction(|sql| {
            if sql.name_taken(name)? || name == DEFAULT_DATASET {
                return Err(AccountError::NameTaken(name.to_owned()));
            }
            let at = now_ms();
            let id = sql.insert_user(name, at)?;
            sql.insert_owned_dataset(name, id, at)?;
            Ok(id)
        })?;
        tracing::info!(user = name, "created user");
        Ok(User {
            id,
            name: name.to_owned(),
        })
    }

    fn add_token(&self, user: &str, token: &NewToken<'_>) -> Result<i64, AccountError> {
        self.on_connection(|sql| {
            let user_id = existing_user_id(sql, user)?;
            sql.insert_token(user_id, token, now_ms())
        })
    }

    fn token_owner(&self, token_id: i64) -> Result<(String, String), AccountError> {
        self.on_connection(|sql| sql.token_owner(token_id))?
            .ok_or(AccountError::NoSuchToken(token_id))
    }

    fn expire_token(&self, token_id: i64, at_ms: i64) -> Result<(), AccountError> {
        let changed = self.on_connection(|sql| sql.expire_token(token_id, at_ms))?;
        token_found(changed, token_id)
    }

    fn revoke_token(&self, token_id: i64) -> Result<(), AccountError> {
        let changed = self.on_connection(|sql| sql.revoke_token(token_id, now_ms()))?;
        token_found(changed, token_id)
    }

    fn user_by_token(&self, hash: &TokenHash, now_ms: i64) -> Result<TokenCheck, AccountError> {
        self.on_connection(|sql| {
            let Some(token) = sql.token_by_hash(hash)? else {
                return Ok(TokenCheck::Refused);
            };
            if token.expires_at_ms.is_some_and(|at| at <= now_ms) {
                return Ok(TokenCheck::Expired);
            }
            // Written coarsely: at most once per LAST_USED_PRECISION_MS per token.
            if token
                .last_used_at_ms
                .is_none_or(|at| at <= now_ms - LAST_USED_PRECISION_MS)
            {
                sql.set_token_last_used(token.id, now_ms)?;
            }
            Ok(TokenCheck::Valid(token.user))
        })
    }

    fn users(&self) -> Result<Vec<UserSummary>, AccountError> {
        self.on_connection(|sql| {
            let users = sql.users()?;
            let mut out = Vec::with_capacity(users.len());
            for user in users {
                out.push(UserSummary {
                    shared_with: sql.grants_of(user.id)?,
                    tokens: sql.tokens_of(user.id)?,
                    user,
                });
            }
            Ok(out)
        })
    }

    fn grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        self.in_transaction(|sql| {
            let user_id = existing_user_id(sql, user)?;
            if !sql.dataset_exists(dataset)? {
                return Err(AccountError::NoSuchDataset(dataset.to_owned()));
            }
            sql.insert_grant(dataset, user_id, now_ms())
        })?;
        tracing::info!(dataset, user, "shared data set");
        Ok(())
    }

    fn revoke_grant(&self, dataset: &str, user: &str) -> Result<(), AccountError> {
        self.in_transaction(|sql| {
            let user_id = existing_user_id(sql, user)?;
            if sql.delete_grant(dataset, user_id)? == 0 {
                return Err(AccountError::NotShared {
                    dataset: dataset.to_owned(),
                    user: user.to_owned(),
                });
            }
            Ok(())
        })?;
        tracing::info!(dataset, user, "unshared data set");
        Ok(())
    }

    fn delete_user(&self, name: &str, data: OwnedData) -> Result<DeletedUser, AccountError> {
        let (id, tokens, grants, owned) = self.in_transaction(|sql| {
            let id = existing_user_id(sql, name)?;
            let (tokens, grants) = sql.count_tokens_and_grants(id)?;
            let owned = sql.owned_datasets(id)?;
            if data == OwnedData::Delete {
                for dataset in &owned {
                    sql.delete_dataset(dataset)?;
                }
            }
            // Tokens and grants go with the user (ON DELETE CASCADE); a kept data set's
            // owner becomes NULL (ON DELETE SET NULL).
            sql.delete_user(id)?;
            Ok((id, tokens, grants, owned))
        })?;
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
        self.on_connection(|sql| sql.may_use(user.id, dataset))
    }
}

/// The rules, run on the SQLite backend in memory (the e2e suites run them on both).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{authenticate, issue_expiring_token, rotate_token};
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn data_sets_are_used_by_owner_and_grantees_only() {
        let store = SqliteStore::open_in_memory().unwrap();
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
