//! Accounts: users, their bearer tokens, data sets and who may use them.
//!
//! Every user owns one data set, named like the user, created with it. An owner's data
//! set can be shared with other users (a grant); rows stored before accounts existed
//! belong to the data set [`DEFAULT_DATASET`], which has no owner and is used through
//! grants. Tokens are random 256-bit secrets shown once, when issued; the store keeps only
//! their SHA-256 hash ([`token`]), so a copy of the database does not let anyone in.
//!
//! [`AccountStore`] is the small storage trait a backend implements; [`sqlite`] is the
//! embedded one, in the same file as the sync store, and [`postgres`] the one in the same
//! PostgreSQL database as that store (shared by every server instance on it).

pub mod postgres;
pub mod sqlite;
pub mod token;

pub use token::{IssuedToken, TokenHash};

/// The data set that rows stored before accounts existed belong to. It has no owner;
/// an administrator shares it with the users who should see them.
pub const DEFAULT_DATASET: &str = "default";

/// A user of the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// Stable numeric id.
    pub id: i64,
    /// Unique name; also the name of the user's own data set.
    pub name: String,
}

impl User {
    /// The data set this user owns and works on unless a request names another.
    pub fn own_dataset(&self) -> &str {
        &self.name
    }
}

/// One issued token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    /// Id used to revoke it.
    pub id: i64,
    /// Free text given when it was issued (e.g. the device).
    pub label: String,
    /// When it was issued (Unix ms).
    pub created_at_ms: i64,
    /// Whether it was revoked; a revoked token is refused.
    pub revoked: bool,
}

/// A user with its tokens and the data sets shared with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserSummary {
    /// The user.
    pub user: User,
    /// Data sets other than its own that it may use.
    pub shared_with: Vec<String>,
    /// Its tokens, revoked ones included.
    pub tokens: Vec<TokenRecord>,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A user or data set with this name exists already.
    #[error("the name {0:?} is taken (by a user or a data set)")]
    NameTaken(String),
    /// The name is not usable: 1 to 64 of `a-z A-Z 0-9 _ . -`, starting with a letter
    /// or digit.
    #[error(
        "invalid name {0:?}: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    /// No user has this name.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// No data set has this name.
    #[error("no data set named {0:?}")]
    NoSuchDataset(String),
    /// No token has this id.
    #[error("no token with id {0}")]
    NoSuchToken(i64),
    /// The operating system's random source failed.
    #[error("cannot draw a random token: {0}")]
    Random(String),
    /// The database failed or is busy.
    #[error("account database error: {0}")]
    Database(String),
}

/// Checks a user or data set name.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.to_owned()))
    }
}

/// Storage of accounts. Methods block. Secrets never reach it: tokens are passed as
/// their [`TokenHash`].
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user and its own data set (same name). Fails with
    /// [`AccountError::NameTaken`] if a user or data set has that name.
    fn create_user(&self, name: &str) -> Result<User, AccountError>;

    /// Stores a token of `user` by its hash; returns the token's id.
    fn add_token(&self, user: &str, hash: &TokenHash, label: &str) -> Result<i64, AccountError>;

    /// Revokes a token: from then on it is refused. Revoking twice is not an error.
    fn revoke_token(&self, token_id: i64) -> Result<(), AccountError>;

    /// The user a token belongs to, or `None` when the hash is unknown or revoked.
    fn user_by_token(&self, hash: &TokenHash) -> Result<Option<User>, AccountError>;

    /// Every user, by name, with tokens and grants.
    fn users(&self) -> Result<Vec<UserSummary>, AccountError>;

    /// Lets `user` use `dataset` (read and write, like its owner).
    fn grant(&self, dataset: &str, user: &str) -> Result<(), AccountError>;

    /// Whether `user` owns `dataset` or was granted it. `false` for a data set that
    /// does not exist.
    fn may_use(&self, user: &User, dataset: &str) -> Result<bool, AccountError>;
}

/// Issues a new token for `user`: draws the secret, stores only its hash and returns the
/// secret (shown once) with the token's id.
pub fn issue_token(
    accounts: &dyn AccountStore,
    user: &str,
    label: &str,
) -> Result<IssuedToken, AccountError> {
    let secret = token::generate()?;
    let id = accounts.add_token(user, &TokenHash::of(&secret), label)?;
    Ok(IssuedToken { id, secret })
}

/// The user a presented token secret belongs to, if it is known and not revoked.
pub fn authenticate(
    accounts: &dyn AccountStore,
    secret: &str,
) -> Result<Option<User>, AccountError> {
    accounts.user_by_token(&TokenHash::of(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["alice", "Bob-2", "team.sales", "a", "0x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
