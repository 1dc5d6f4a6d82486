//! The data directory's lock: one process at a time writes a data directory.
//!
//! Two servers on one directory would each number messages from the same `seq` and
//! acknowledge the same numbers for different messages, so whoever opens a directory holds
//! an OS file lock on `parley.lock` in it for as long as it runs. The lock is the kernel's
//! (`flock` on Unix, `LockFileEx` on Windows): a killed process lets go of it with its last
//! file descriptor, so there is never a stale lock to clean up by hand. The file also holds
//! the holder's pid, only to name it in the refusal.

use super::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a data directory.
pub fn lock_path(data: &Path) -> PathBuf {
    data.join("parley.lock")
}

/// A data directory held by this process until the value is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    // Only held: closing the file releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Lock the data directory `data` (created when missing), or refuse with the pid of the
    /// process that holds it.
    pub fn acquire(data: &Path) -> Result<DataDirLock, StoreError> {
        std::fs::create_dir_all(data).map_err(|e| {
            StoreError::io(
                format!("cannot create data directory {}", data.display()),
                &e,
            )
        })?;
        let path = lock_path(data);
        let cannot = |e: std::io::Error| {
            StoreError::io(
                format!("cannot lock the data directory at {}", path.display()),
                &e,
            )
        };
        // Not truncated on open: until the lock is ours, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(data, &mut file)),
            Err(TryLockError::Error(e)) => return Err(cannot(e)),
        }
        file.set_len(0).map_err(cannot)?;
        file.rewind().map_err(cannot)?;
        writeln!(file, "{}", std::process::id()).map_err(cannot)?;
        Ok(DataDirLock { _file: file })
    }

    /// Refuse if a running process holds the data directory `data`: for commands that must
    /// not touch a live directory (restoring into it, writing a backup into it).
    pub fn refuse_if_held(data: &Path) -> Result<(), StoreError> {
        let Ok(mut file) = File::open(lock_path(data)) else {
            // No lock file: no parley has ever run there.
            return Ok(());
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => Err(in_use(data, &mut file)),
            Err(TryLockError::Error(e)) => Err(StoreError::io(
                format!("cannot check the lock of {}", data.display()),
                &e,
            )),
        }
    }
}

/// The refusal for a data directory another process holds, naming its pid.
fn in_use(data: &Path, file: &mut File) -> StoreError {
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    let holder = match pid.trim() {
        "" => "another process".to_owned(),
        pid => format!("another process (pid {pid})"),
    };
    StoreError::refused(
        format!("the data directory {} is in use", data.display()),
        format!(
            "{holder} holds its lock; stop it first, or give each server its own --data \
             (two servers on one directory would number messages twice)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let e = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Refused { .. }), "{e}");
        let pid = format!("pid {}", std::process::id());
        assert!(e.to_string().contains(&pid), "{e}");
        assert!(DataDirLock::refuse_if_held(dir.path()).is_err());
        drop(first);
        DataDirLock::refuse_if_held(dir.path()).unwrap();
        let _again = DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_directory_no_parley_ran_in_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        DataDirLock::refuse_if_held(dir.path()).unwrap();
        assert!(!lock_path(dir.path()).exists());
    }
}
