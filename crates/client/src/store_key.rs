//! The key of an encrypted device store (SQLCipher).
//!
//! A store is opened with an optional [`StoreKey`]: either a random 256-bit key (the app
//! keeps one in the OS keyring; used as SQLCipher's raw key, no key derivation) or a
//! passphrase (SQLCipher derives the key from it with its own KDF, PBKDF2-HMAC-SHA512
//! with a per-file salt). Key material lives in zeroed-on-drop buffers, is never logged
//! (the `Debug` form hides it) and is never written to disk by this crate.

use std::path::Path;

use zeroize::Zeroizing;

use crate::ClientError;

/// Length of a raw store key in bytes (256 bits).
pub const RAW_KEY_LEN: usize = 32;

/// The secret that opens an encrypted store.
#[derive(Clone)]
pub enum StoreKey {
    /// A random 256-bit key, used as is.
    Raw(Zeroizing<[u8; RAW_KEY_LEN]>),
    /// A passphrase a person types or keeps in a file; the key is derived from it.
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKey::Raw(_) => f.write_str("StoreKey::Raw(..)"),
            StoreKey::Passphrase(_) => f.write_str("StoreKey::Passphrase(..)"),
        }
    }
}

impl StoreKey {
    /// A fresh random 256-bit key from the operating system's generator.
    pub fn generate() -> Result<Self, ClientError> {
        let mut bytes = Zeroizing::new([0u8; RAW_KEY_LEN]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| ClientError::Task(format!("no random numbers for a store key: {e}")))?;
        Ok(StoreKey::Raw(bytes))
    }

    /// A passphrase key. An empty passphrase is refused.
    pub fn passphrase(passphrase: impl Into<String>) -> Result<Self, ClientError> {
        let passphrase = Zeroizing::new(passphrase.into());
        if passphrase.is_empty() {
            return Err(ClientError::BadInput("the passphrase is empty".into()));
        }
        Ok(StoreKey::Passphrase(passphrase))
    }

    /// The passphrase held in `path`: the file's text, without one trailing line end
    /// (`\n` or `\r\n`), so `echo secret > file` works. An empty or unreadable file is
    /// refused with its path ([`ClientError::BadInput`]).
    pub fn from_passphrase_file(path: &Path) -> Result<Self, ClientError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            ClientError::BadInput(format!(
                "cannot read the passphrase file {}: {e}",
                path.display()
            ))
        })?);
        let line = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if line.is_empty() {
            return Err(ClientError::BadInput(format!(
                "the passphrase file {} is empty",
                path.display()
            )));
        }
        Self::passphrase(line)
    }

    /// The raw key written as 64 lowercase hex digits (how the app stores it in the
    /// keyring); `None` for a passphrase.
    pub fn to_hex(&self) -> Option<Zeroizing<String>> {
        match self {
            StoreKey::Raw(bytes) => {
                let mut out = Zeroizing::new(String::with_capacity(RAW_KEY_LEN * 2));
                for byte in bytes.iter() {
                    out.push(char::from(HEX[usize::from(byte >> 4)]));
                    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
                }
                Some(out)
            }
            StoreKey::Passphrase(_) => None,
        }
    }

    /// A raw key from 64 hex digits (as [`StoreKey::to_hex`] writes them).
    pub fn from_hex(text: &str) -> Result<Self, ClientError> {
        let text = text.trim().as_bytes();
        if text.len() != RAW_KEY_LEN * 2 {
            return Err(ClientError::BadInput(format!(
                "a store key has {} hex digits, this one {}",
                RAW_KEY_LEN * 2,
                text.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; RAW_KEY_LEN]);
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(StoreKey::Raw(bytes))
    }

    /// The key as SQLCipher's `PRAGMA key` / `ATTACH ... KEY` text: `x'<hex>'` for a raw
    /// key (used without derivation), the passphrase itself otherwise.
    pub(crate) fn sqlcipher_text(&self) -> Zeroizing<String> {
        match self.to_hex() {
            Some(hex) => Zeroizing::new(format!("x'{}'", hex.as_str())),
            None => match self {
                StoreKey::Passphrase(p) => p.clone(),
                StoreKey::Raw(_) => Zeroizing::new(String::new()),
            },
        }
    }

    /// Keys `conn` (before its first read).
    pub(crate) fn apply(&self, conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
        conn.pragma_update(None, "key", self.sqlcipher_text().as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Result<u8, ClientError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ClientError::BadInput(
            "a store key holds only hex digits".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_hex_and_differs_each_time() {
        let a = StoreKey::generate().unwrap();
        let b = StoreKey::generate().unwrap();
        let hex = a.to_hex().unwrap();
        assert_eq!(hex.len(), 64);
        assert_ne!(hex.as_str(), b.to_hex().unwrap().as_str());
        let back = StoreKey::from_hex(&hex).unwrap();
        assert_eq!(back.to_hex().unwrap().as_str(), hex.as_str());
    }

    #[test]
    fn malformed_hex_keys_are_refused() {
        assert!(StoreKey::from_hex("abc").is_err());
        assert!(StoreKey::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn a_passphrase_file_loses_one_line_end_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "correct horse\r\n").unwrap();
        let StoreKey::Passphrase(p) = StoreKey::from_passphrase_file(&path).unwrap() else {
            panic!("a passphrase file gives a passphrase key");
        };
        assert_eq!(p.as_str(), "correct horse");
        std::fs::write(&path, "\n").unwrap();
        let err = StoreKey::from_passphrase_file(&path).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = StoreKey::passphrase("hunter2").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
    }
}
