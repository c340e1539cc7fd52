//! Bearer token secrets and their hashes.
//!
//! A secret is `rst_` followed by 64 hex digits: 256 bits from the operating system's
//! random source. Only `SHA-256(secret)` is stored. The hash of a high-entropy secret
//! needs no salt or slow KDF: nobody can guess a preimage.

use sha2::{Digest, Sha256};

use super::AccountError;

/// Prefix of every token secret, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "rst_";

/// A token just issued: the secret is shown once and stored nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// Id used to list and revoke it.
    pub id: i64,
    /// The secret the client sends as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Lower-case hex SHA-256 of a token secret: what the account store keeps and looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(hex::encode(Sha256::digest(secret.as_bytes())))
    }

    /// The hash as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Draws a new secret (256 random bits).
pub fn generate() -> Result<String, AccountError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hashed_one_way() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        let hash = TokenHash::of(&a);
        assert_eq!(hash.as_str().len(), 64);
        assert!(!hash.as_str().contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(hash, TokenHash::of(&a));
        assert_ne!(hash, TokenHash::of(&b));
    }
}
