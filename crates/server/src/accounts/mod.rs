//! Accounts: users, their bearer tokens, data sets and who may use them.
//!
//! Every user owns one data set, named like the user, created with it. An owner's data
//! set can be shared with other users (a grant); rows stored before accounts existed
//! belong to the data set [`DEFAULT_DATASET`], which has no owner and is used through
//! grants. Tokens are random 256-bit secrets shown once, when issued; the store keeps only
//! their SHA-256 hash ([`token`]), so a copy of the database does not let anyone in.
//!
//! [`AccountStore`] is the storage trait the server uses. Its rules are written once, in
//! `rules`, over the small SQL operations a backend implements: [`sqlite`] is the
//! embedded one, in the same file as the sync store, and [`postgres`] the one in the same
//! PostgreSQL database as that store (shared by every server instance on it).

pub mod postgres;
pub(crate) mod rules;
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
    /// When it stops working (Unix ms), if ever; from then on it is refused with
    /// `token_expired`.
    pub expires_at_ms: Option<i64>,
    /// When it was last used (Unix ms), to within [`LAST_USED_PRECISION_MS`]; `None`
    /// when never.
    pub last_used_at_ms: Option<i64>,
}

/// A token to store: never its secret, only the secret's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewToken<'a> {
    /// The hash of the secret.
    pub hash: &'a TokenHash,
    /// Free text (e.g. the device).
    pub label: &'a str,
    /// When it stops working (Unix ms); never when `None`.
    pub expires_at_ms: Option<i64>,
}

/// The time a token was last used is written at most this often per token (not on every
/// request): `list-tokens` is accurate to within it.
pub const LAST_USED_PRECISION_MS: i64 = 5 * 60 * 1000;

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A valid token of this user.
    Valid(User),
    /// A known token past its expiry (401 `token_expired`).
    Expired,
    /// Unknown or revoked (401 `unauthorized`).
    Refused,
}

impl TokenCheck {
    /// The user of a valid token.
    pub fn user(self) -> Option<User> {
        match self {
            TokenCheck::Valid(user) => Some(user),
            TokenCheck::Expired | TokenCheck::Refused => None,
        }
    }
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

/// What `delete-user` does with the data set the user owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedData {
    /// Keep it, with its rows and the grants others have on it, owned by no one (like
    /// `default`): an administrator may still share it. Its name stays taken.
    Keep,
    /// Remove it: its rows, conflict log, staged and remembered batches, and every grant
    /// on it.
    Delete,
}

/// What a user's deletion removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeletedUser {
    /// The user that is gone.
    pub user: User,
    /// Its tokens (revoked ones included), all gone with it.
    pub tokens: u64,
    /// The grants it had on other data sets, all gone with it.
    pub grants: u64,
    /// Whether its own data set was removed (`false`: kept, owned by no one).
    pub data_deleted: bool,
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
    /// The data set is not shared with this user (owners are not grantees).
    #[error("data set {dataset:?} is not shared with {user:?}")]
    NotShared {
        /// The data set.
        dataset: String,
        /// The user.
        user: String,
    },
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

    /// Stores a token of `user` (by its hash); returns the token's id.
    fn add_token(&self, user: &str, token: &NewToken<'_>) -> Result<i64, AccountError>;

    /// The user and label of a token, and when it expires, for a rotation.
    fn token_owner(&self, token_id: i64) -> Result<(String, String), AccountError>;

    /// Makes a token expire at `at_ms` unless it expires earlier already.
    fn expire_token(&self, token_id: i64, at_ms: i64) -> Result<(), AccountError>;

    /// Revokes a token: from then on it is refused. Revoking twice is not an error.
    fn revoke_token(&self, token_id: i64) -> Result<(), AccountError>;

    /// What the token with this hash is at `now_ms`: valid (and whose), expired, or
    /// unknown/revoked. Records the use of a valid token, writing at most once per
    /// [`LAST_USED_PRECISION_MS`] per token.
    fn user_by_token(&self, hash: &TokenHash, now_ms: i64) -> Result<TokenCheck, AccountError>;

    /// Every user, by name, with tokens and grants.
    fn users(&self) -> Result<Vec<UserSummary>, AccountError>;

    /// Lets `user` use `dataset` (read and write, like its owner).
    fn grant(&self, dataset: &str, user: &str) -> Result<(), AccountError>;

    /// Takes back a grant: `user` may no longer use `dataset` from its next request on.
    /// Fails with [`AccountError::NotShared`] when there was no such grant.
    fn revoke_grant(&self, dataset: &str, user: &str) -> Result<(), AccountError>;

    /// Deletes a user in one transaction: its tokens and grants go with it (the schema
    /// cascades the delete), and its own data set is kept or removed as `data` says. A
    /// user id is never given to another user afterwards.
    fn delete_user(&self, name: &str, data: OwnedData) -> Result<DeletedUser, AccountError>;

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
    issue_expiring_token(accounts, user, label, None)
}

/// [`issue_token`] for a token that stops working `expires_in_ms` from now (never when
/// `None`).
pub fn issue_expiring_token(
    accounts: &dyn AccountStore,
    user: &str,
    label: &str,
    expires_in_ms: Option<i64>,
) -> Result<IssuedToken, AccountError> {
    let secret = token::generate()?;
    let expires_at_ms = expires_in_ms.map(|ms| now_ms().saturating_add(ms));
    let hash = TokenHash::of(&secret);
    let token = NewToken {
        hash: &hash,
        label,
        expires_at_ms,
    };
    let id = accounts.add_token(user, &token)?;
    Ok(IssuedToken { id, secret })
}

/// Rotates a token: issues a new one for the same user and label, and lets the old one
/// work for `grace_ms` more (or less, if it expires sooner already), so devices can
/// switch over without a gap.
pub fn rotate_token(
    accounts: &dyn AccountStore,
    token_id: i64,
    grace_ms: i64,
) -> Result<IssuedToken, AccountError> {
    let (user, label) = accounts.token_owner(token_id)?;
    let issued = issue_token(accounts, &user, &label)?;
    accounts.expire_token(token_id, now_ms().saturating_add(grace_ms))?;
    Ok(issued)
}

/// What a presented token secret is (see [`AccountStore::user_by_token`]).
pub fn authenticate(accounts: &dyn AccountStore, secret: &str) -> Result<TokenCheck, AccountError> {
    accounts.user_by_token(&TokenHash::of(secret), now_ms())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::store::round::now_ms()
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
