//! The advisory lock that keeps `restore` off an SQLite database a server is serving.
//!
//! Every serving process (`roster-server serve`, an embedded server) holds a shared
//! `flock` on `DB.lock`, beside the database file, for its lifetime; several may share
//! it. `roster-server restore` takes it exclusively without waiting: while any server
//! holds it the restore is refused and changes nothing, and a server started during a
//! restore is refused until the restore is over. The kernel drops the lock when its
//! holder exits, however it exits, so a crashed server leaves no stale lock. The lock
//! is advisory and taken only on Unix (`flock(2)`); elsewhere nothing is locked.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Why the lock on a database could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DbLockError {
    /// Another process holds the lock in a way that excludes this one.
    #[error("{db} is in use by {holder}")]
    InUse {
        /// The database file.
        db: String,
        /// Who holds it, in words.
        holder: &'static str,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
}

/// The lock file of the SQLite database `db`: `DB.lock` beside it.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Takes the lock a serving process holds (shared with other servers). Refused while a
/// restore holds it.
pub fn hold_for_serving(db: &Path) -> Result<DbLock, DbLockError> {
    take(
        db,
        false,
        "a restore (`roster-server restore`); start the server after it",
    )
}

/// Takes the lock a restore needs (no server may hold it). Refused while any server on
/// `db` runs.
pub fn hold_for_restore(db: &Path) -> Result<DbLock, DbLockError> {
    take(
        db,
        true,
        "a running roster-server (or another restore); stop it first",
    )
}

fn take(db: &Path, exclusive: bool, holder: &'static str) -> Result<DbLock, DbLockError> {
    let path = lock_path(db);
    let io = |source| DbLockError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    if try_flock(&file, exclusive).map_err(io)? {
        Ok(DbLock { _file: file })
    } else {
        Err(DbLockError::InUse {
            db: db.display().to_string(),
            holder,
        })
    }
}

/// Locks `file` without waiting; `false` when another holder excludes it.
#[cfg(unix)]
fn try_flock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    let operation = match exclusive {
        true => FlockOperation::NonBlockingLockExclusive,
        false => FlockOperation::NonBlockingLockShared,
    };
    match flock(file, operation) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// No advisory lock on this platform: every lock is granted.
#[cfg(not(unix))]
fn try_flock(_file: &File, _exclusive: bool) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn servers_share_the_lock_and_a_restore_needs_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("roster.db");
        let one = hold_for_serving(&db).unwrap();
        let two = hold_for_serving(&db).unwrap();
        assert!(matches!(
            hold_for_restore(&db),
            Err(DbLockError::InUse { .. })
        ));
        drop(one);
        assert!(hold_for_restore(&db).is_err(), "one server still serves");
        drop(two);
        let restoring = hold_for_restore(&db).unwrap();
        assert!(matches!(
            hold_for_serving(&db),
            Err(DbLockError::InUse { .. })
        ));
        drop(restoring);
        hold_for_serving(&db).unwrap();
    }
}
