//! Encrypting a plain store in place, crash-safely.
//!
//! Steps, with what a crash (SIGKILL, power loss) at each point leaves:
//! 1. Lock the plain file exclusively and move it out of WAL mode, which folds its WAL
//!    into the main file (SQLite does this atomically): the plain store is complete in
//!    one file and no `-wal` is left that could later be read against another file.
//!    Crash: the plain store, usable (the next open sets WAL again).
//! 2. Export it with `sqlcipher_export` into `roster.db.encrypting`, keyed, then fsync
//!    that file and check it opens with the key. Crash: the plain store, untouched; the
//!    half-written temporary file is removed by the next attempt.
//! 3. Rename the temporary file over `roster.db` (atomic), fsync the directory. Crash:
//!    either name points at a complete store, the plain one or the encrypted one.
//!
//! The key is only handed to SQLCipher; nothing here writes it anywhere.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::{ClientError, StoreKey};

/// The first 16 bytes of every plain SQLite file. An encrypted file starts with its
/// random salt instead.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the store file at `path` is a plain (unencrypted) SQLite file.
pub(super) fn is_plain(path: &Path) -> Result<bool, ClientError> {
    let io = |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]).map_err(io)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read == header.len() && &header == PLAIN_HEADER)
}

/// The temporary file the encrypted copy is written to, next to the store.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".encrypting");
    path.with_file_name(name)
}

/// Removes `path` and SQLite's side files of it, if present.
fn remove_with_side_files(path: &Path) -> Result<(), ClientError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ClientError::Io {
                    path: PathBuf::from(name).display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Flushes `path` (a file or a directory) to stable storage.
fn sync_path(path: &Path) -> Result<(), ClientError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| ClientError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Encrypts the plain store at `path` with `key`, in place (see the module doc).
pub(super) fn encrypt_in_place(path: &Path, key: &StoreKey) -> Result<(), ClientError> {
    let shown = path.display().to_string();
    let temporary = temporary_path(path);
    remove_with_side_files(&temporary)?;

    let plain = Connection::open(path)?;
    plain.busy_timeout(std::time::Duration::from_secs(2))?;
    // Held until this function returns: no other process reads or writes the plain file
    // while it is copied and replaced.
    plain.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    let mode: String = plain
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                ClientError::StoreInUse(shown.clone())
            }
            _ => e.into(),
        })?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(ClientError::StoreInUse(shown));
    }
    let user_version: i64 = plain.pragma_query_value(None, "user_version", |r| r.get(0))?;

    let temporary_text = temporary.to_string_lossy().into_owned();
    plain.execute(
        "ATTACH DATABASE ?1 AS encrypted KEY ?2",
        rusqlite::params![temporary_text, key.sqlcipher_text().as_str()],
    )?;
    let exported = plain
        .query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))
        .and_then(|()| plain.pragma_update(Some("encrypted"), "user_version", user_version));
    plain.execute("DETACH DATABASE encrypted", [])?;
    exported?;
    sync_path(&temporary)?;

    // The copy must open with the key and carry the format version before it replaces
    // the original.
    {
        let check = Connection::open(&temporary)?;
        key.apply(&check)?;
        let copied: i64 = check.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if copied != user_version {
            return Err(ClientError::Corrupt(format!(
                "the encrypted copy of {shown} has format {copied}, the store {user_version}"
            )));
        }
    }

    // Windows cannot rename over an open file: there the lock ends just before the
    // rename; elsewhere it is held across it.
    #[cfg(windows)]
    drop(plain);
    std::fs::rename(&temporary, path).map_err(|source| ClientError::Io {
        path: shown.clone(),
        source,
    })?;
    // The rename itself made durable (directories are synced this way on Unix only).
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        sync_path(dir)?;
    }
    #[cfg(not(windows))]
    drop(plain);
    tracing::info!(store = %shown, "encrypted the plain store in place");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;
    use crate::local::test_fixtures::fields;
    use roster_protocol::Schema;

    fn plain_store_with_a_record(dir: &Path) -> roster_protocol::RowId {
        let store =
            LocalStore::create(dir, "http://127.0.0.1:9", &Schema::default_person()).unwrap();
        store
            .insert(
                "person",
                fields(serde_json::json!({"name": "Plaintext Person", "age": 41})),
            )
            .unwrap()
            .id
    }

    #[test]
    fn a_plain_store_opened_with_a_key_is_encrypted_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let id = plain_store_with_a_record(dir.path());
        let path = dir.path().join(crate::DB_FILE);
        assert!(is_plain(&path).unwrap());

        let key = StoreKey::passphrase("open sesame").unwrap();
        let store = LocalStore::open_with_key(dir.path(), Some(&key)).unwrap();
        assert!(!is_plain(&path).unwrap());
        assert_eq!(
            store.get("person", id).unwrap().fields["name"],
            "Plaintext Person"
        );
        assert_eq!(store.status().unwrap().pending, 1);
        drop(store);
        assert!(!temporary_path(&path).exists());

        let locked = LocalStore::open(dir.path()).err().unwrap();
        assert!(matches!(locked, ClientError::StoreLocked(_)), "{locked}");
        let wrong = StoreKey::passphrase("open barley").unwrap();
        let refused = LocalStore::open_with_key(dir.path(), Some(&wrong))
            .err()
            .unwrap();
        assert!(
            matches!(refused, ClientError::WrongStoreKey(_)),
            "{refused}"
        );
        // Neither refusal changed anything.
        let store = LocalStore::open_with_key(dir.path(), Some(&key)).unwrap();
        assert_eq!(store.get("person", id).unwrap().fields["age"], 41);
    }

    #[test]
    fn a_store_created_with_a_raw_key_never_holds_plain_pages() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate().unwrap();
        let store = LocalStore::create_with_key(
            dir.path(),
            "http://127.0.0.1:9",
            &Schema::default_person(),
            Some(&key),
        )
        .unwrap();
        store
            .insert(
                "person",
                fields(serde_json::json!({"name": "Secret Sauce"})),
            )
            .unwrap();
        for name in [crate::DB_FILE, "roster.db-wal"] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
            assert!(!bytes.windows(12).any(|w| w == b"Secret Sauce"), "{name}");
        }
        drop(store);
        assert!(!is_plain(&dir.path().join(crate::DB_FILE)).unwrap());
        let reopened = LocalStore::open_with_key(dir.path(), Some(&key)).unwrap();
        assert_eq!(reopened.status().unwrap().pending, 1);
    }

    #[test]
    fn a_leftover_half_written_copy_is_replaced_by_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let id = plain_store_with_a_record(dir.path());
        let path = dir.path().join(crate::DB_FILE);
        std::fs::write(temporary_path(&path), b"half a file").unwrap();
        let key = StoreKey::generate().unwrap();
        let store = LocalStore::open_with_key(dir.path(), Some(&key)).unwrap();
        assert!(store.get("person", id).is_ok());
    }
}
