//! The key of this device's encrypted store.
//!
//! In order: the passphrase in the file `$ROSTER_PASSPHRASE_FILE` (as for the `roster`
//! CLI; for scripted and test runs); else the raw key written as 64 hex digits in the file
//! `$ROSTER_STORE_KEY_FILE` (the keyring's form of the key, for scripted runs where no
//! keyring answers: the bench times the start a keyring user gets with it, without the
//! passphrase's key derivation); else a random 256-bit key kept in the OS keyring
//! (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows), made at
//! the first start, one per data dir; else, where no keyring answers (or on mobile), the
//! person's passphrase, asked by the unlock screen ([`crate::commands::unlock`]).
//!
//! The app never writes the key to disk in the clear: it lives in the keyring, or only in
//! memory while the app runs (a `$ROSTER_STORE_KEY_FILE` is the caller's own file).

use std::path::Path;

use roster_client::{LocalStore, StoreKey};

use crate::error::AppError;

/// The keyring service name of the app's entries (its bundle identifier).
#[cfg(not(any(target_os = "android", target_os = "ios")))]
const KEYRING_SERVICE: &str = "org.roster.desktop";

/// Where the key comes from this start.
pub enum DeviceKey {
    /// A key at hand (keyring, or passphrase file).
    Ready(StoreKey),
    /// The person must type the passphrase: `AppError` of kind `Locked` says why and
    /// whether the store is still to be created.
    NeedsPassphrase(AppError),
}

/// The key of the stores in `data_dir` (the current one in `store_dir`).
pub fn device_key(data_dir: &Path, store_dir: &Path) -> Result<DeviceKey, AppError> {
    if let Some(file) = std::env::var_os("ROSTER_PASSPHRASE_FILE").filter(|f| !f.is_empty()) {
        return Ok(DeviceKey::Ready(StoreKey::from_passphrase_file(
            Path::new(&file),
        )?));
    }
    if let Some(file) = std::env::var_os("ROSTER_STORE_KEY_FILE").filter(|f| !f.is_empty()) {
        return Ok(DeviceKey::Ready(raw_key_file(Path::new(&file))?));
    }
    keyring_key(data_dir, store_dir)
}

/// The raw key held in `path` as 64 hex digits (surrounding white space ignored).
fn raw_key_file(path: &Path) -> Result<StoreKey, AppError> {
    // The file is the caller's, in the clear already: no zeroing of this copy.
    let text = std::fs::read_to_string(path).map_err(|e| {
        AppError::from(roster_client::ClientError::BadInput(format!(
            "cannot read the store key file {}: {e}",
            path.display()
        )))
    })?;
    Ok(StoreKey::from_hex(&text)?)
}

/// The passphrase screen for `store_dir`, saying `why` the keyring did not serve.
fn ask_passphrase(store_dir: &Path, why: &str) -> Result<DeviceKey, AppError> {
    let exists = store_dir.join(roster_client::DB_FILE).exists();
    let encrypted = LocalStore::is_encrypted(store_dir)?;
    let error = if encrypted {
        AppError::locked(
            "passphrase",
            format!("This device's data is encrypted. {why} Enter its passphrase to open it."),
        )
    } else if exists {
        AppError::locked(
            "new_passphrase",
            format!(
                "{why} Choose a passphrase: this device's data will be encrypted with it, \
                 and it is asked at every start."
            ),
        )
    } else {
        AppError::locked(
            "new_passphrase",
            format!(
                "{why} Choose a passphrase to encrypt this device's data; it is asked at \
                 every start."
            ),
        )
    };
    tracing::warn!(reason = why, "asking for the store passphrase");
    Ok(DeviceKey::NeedsPassphrase(error))
}

#[cfg(not(any(target_os = "android", target_os = "ios")))]
fn keyring_key(data_dir: &Path, store_dir: &Path) -> Result<DeviceKey, AppError> {
    const UNAVAILABLE: &str = "No system keyring is available to keep its key.";
    let account = format!("store-key {}", data_dir.display());
    let entry = match keyring::Entry::new(KEYRING_SERVICE, &account) {
        Ok(entry) => entry,
        Err(error) => {
            tracing::warn!(%error, "no keyring");
            return ask_passphrase(store_dir, UNAVAILABLE);
        }
    };
    match entry.get_password() {
        Ok(hex) => Ok(DeviceKey::Ready(StoreKey::from_hex(&hex)?)),
        Err(keyring::Error::NoEntry) => {
            if LocalStore::is_encrypted(store_dir)? {
                return ask_passphrase(store_dir, "Its key is not in the system keyring.");
            }
            let key = StoreKey::generate()?;
            let hex = key
                .to_hex()
                .ok_or_else(|| AppError::internal("a generated key has no hex form"))?;
            // Read back: only a key the keyring really keeps may encrypt the data.
            let kept = entry.set_password(&hex).and_then(|()| entry.get_password());
            match kept {
                Ok(back) if back == *hex => {
                    tracing::info!("made the store key and kept it in the system keyring");
                    Ok(DeviceKey::Ready(key))
                }
                Ok(_) => ask_passphrase(store_dir, "The system keyring did not keep a key."),
                Err(error) => {
                    tracing::warn!(%error, "cannot keep the store key in the keyring");
                    ask_passphrase(store_dir, UNAVAILABLE)
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the store key from the keyring");
            ask_passphrase(store_dir, UNAVAILABLE)
        }
    }
}

#[cfg(any(target_os = "android", target_os = "ios"))]
fn keyring_key(_data_dir: &Path, store_dir: &Path) -> Result<DeviceKey, AppError> {
    ask_passphrase(store_dir, "This device has no keyring Roster can use.")
}
