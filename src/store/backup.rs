//! Backups of a data directory and restoring one, safe against the paths operators mistype.
//!
//! A backup is SQLite's online copy of `parley.db`, taken while the server runs, with the
//! token secret of the directory in its `meta` table (unless left out), so a directory
//! restored on a new host accepts the tokens the old one issued. A restore checks the file
//! (parley's mark, a readable schema, SQLite's own check) and refuses a live directory. Both
//! write beside their target and rename into place, so a failure leaves no half-written
//! file under the target's name, and both write only over regular files: a device, a
//! symlink or a directory at the target is refused, never replaced.

use super::data_dir::DataDirLock;
use super::sqlite::{database_path, err, open_reader, schema_versions};
use super::{database_mark, StoreError};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `meta` key under which a backup carries the token secret.
const SECRET_KEY: &str = "token_secret";

/// What a backup holds besides the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The data directory's token secret is in the copy.
    pub secret: bool,
}

/// Copy the database of the data directory `data` consistently to the file `to`, with the
/// directory's token secret if `with_secret` and there is one. The server may be running
/// and keeps committing meanwhile.
pub fn backup(data: &Path, to: &Path, with_secret: bool) -> Result<Copied, StoreError> {
    let path = database_path(data);
    if !path.is_file() {
        return Err(StoreError::refused(
            format!("no database at {}", path.display()),
            "",
        ));
    }
    let context = || format!("cannot back up to {}", to.display());
    refuse_unless_plain_file(to).map_err(|e| e.within(context()))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        DataDirLock::refuse_if_held(dir).map_err(|e| {
            e.within(format!(
                "{}: a backup is not written into a live data directory",
                context()
            ))
        })?;
    }
    let secret = if with_secret {
        crate::auth::stored_secret(data).map_err(|e| StoreError::io(context(), &e))?
    } else {
        None
    };
    let source = open_reader(&path)
        .map_err(|e| err(format!("cannot open database at {}", path.display()), e))?;
    let partial = beside(to, ".partial");
    write_into_place(&partial, to, |dest| {
        copy_pages(&source, dest).map_err(|e| e.within(context()))?;
        if let Some(secret) = &secret {
            dest.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![SECRET_KEY, secret],
            )
            .map_err(|e| err(context(), e))?;
        }
        Ok(())
    })
    .map_err(|e| e.within(context()))?;
    Ok(Copied {
        secret: secret.is_some(),
    })
}

/// What a restore did besides putting the database in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup carried a token secret, now the directory's.
    pub secret: bool,
    /// Where the database that was in the directory was moved, with `--replace`.
    pub moved_aside: Option<PathBuf>,
}

/// Put the backup `from` in place as the database of the data directory `data`, which no
/// server may be running on. A directory that already holds a database is refused unless
/// `replace`, and then its database is moved aside, not deleted.
pub fn restore(from: &Path, data: &Path, replace: bool) -> Result<Restored, StoreError> {
    let context = || format!("cannot restore {} into {}", from.display(), data.display());
    if !from.is_file() {
        return Err(StoreError::refused(context(), "the backup is not a file"));
    }
    // Held until the restore is done, so a server started meanwhile is refused.
    let _lock = DataDirLock::acquire(data).map_err(|e| e.within(context()))?;
    let target = database_path(data);
    let existing = target.exists();
    if existing && !replace {
        return Err(StoreError::refused(
            context(),
            format!(
                "{} already holds a database; pass --replace to move it aside and restore",
                data.display()
            ),
        ));
    }
    refuse_unless_plain_file(&target).map_err(|e| e.within(context()))?;
    let partial = beside(&target, ".restoring");
    let _ = std::fs::remove_file(&partial);
    if let Err(e) = std::fs::copy(from, &partial) {
        // A full disk, say: nothing half-copied is left behind.
        remove_database_files(&partial);
        return Err(StoreError::io(context(), &e));
    }
    let secret = match take_secret_after_checking(&partial) {
        Ok(secret) => secret,
        Err(e) => {
            remove_database_files(&partial);
            return Err(e.within(context()));
        }
    };
    let moved_aside = if existing {
        Some(move_aside(&target).map_err(|e| e.within(context()))?)
    } else {
        None
    };
    remove_database_files(&target);
    if let Err(e) = std::fs::rename(&partial, &target) {
        remove_database_files(&partial);
        let mut detail = e.to_string();
        if let Some(aside) = &moved_aside {
            detail.push_str(&format!(
                "; the database that was there is at {}",
                aside.display()
            ));
        }
        return Err(StoreError::unavailable(context(), detail));
    }
    sync_dir(data);
    if let Some(secret) = &secret {
        crate::auth::replace_secret(data, secret).map_err(|e| StoreError::io(context(), &e))?;
    }
    Ok(Restored {
        secret: secret.is_some(),
        moved_aside,
    })
}

/// Check the copy at `path` is a whole parley database this parley can read, and take the
/// token secret out of it (the directory keeps it in its own file): the secret, if any.
fn take_secret_after_checking(path: &Path) -> Result<Option<String>, StoreError> {
    let what = || format!("the backup {}", path.display());
    let conn = open_reader(path).map_err(|e| err(what(), e))?;
    database_mark::check(&conn, path)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| err(what(), e))?;
    if verdict != "ok" {
        return Err(StoreError::corrupt(
            what(),
            format!("quick_check: {verdict}"),
        ));
    }
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| err(what(), e))?;
    if version == 0 || version > schema_versions() {
        return Err(StoreError::refused(
            what(),
            format!(
                "its schema version is {version}; this parley reads 1 to {}",
                schema_versions()
            ),
        ));
    }
    let secret: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![SECRET_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| err(what(), e))?;
    conn.execute("DELETE FROM meta WHERE key = ?1", params![SECRET_KEY])
        .map_err(|e| err(what(), e))?;
    conn.close().map_err(|(_, e)| err(what(), e))?;
    Ok(secret)
}

/// Refuse `path` unless nothing is there or it is a regular file (a symlink is refused
/// even when it points at one: renaming over it would replace the link, not its target).
fn refuse_unless_plain_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => {
            let kind = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "a device or other special file"
            };
            Err(StoreError::refused(
                format!("{} is {kind}", path.display()),
                "only a new path or a regular file is written",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(
            format!("cannot inspect {}", path.display()),
            &e,
        )),
    }
}

/// Fill a new database at `partial` with `fill`, flush it, and rename it over `to` (which
/// is checked again just before: it may have changed while the copy was made).
fn write_into_place(
    partial: &Path,
    to: &Path,
    fill: impl FnOnce(&mut Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    remove_database_files(partial);
    let result = (|| {
        // Readable by its owner only: a backup holds every message and the token secret,
        // which signs tokens for anyone, admins included.
        create_private(partial).map_err(|e| StoreError::io("create the copy", &e))?;
        let mut dest = Connection::open(partial).map_err(|e| err("create the copy", e))?;
        fill(&mut dest)?;
        dest.close().map_err(|(_, e)| err("close the copy", e))?;
        let io = |e: std::io::Error| StoreError::io("", &e);
        std::fs::File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        refuse_unless_plain_file(to)?;
        std::fs::rename(partial, to).map_err(io)
    })();
    if result.is_err() {
        remove_database_files(partial);
    }
    if let Some(dir) = to.parent() {
        sync_dir(dir);
    }
    result
}

/// Create an empty file at `path` that only its owner can read and write.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// Copy every page of `source` into `dest`.
fn copy_pages(source: &Connection, dest: &mut Connection) -> Result<(), StoreError> {
    let backup = Backup::new(source, dest).map_err(|e| err("", e))?;
    // One step copies every page inside one read transaction: in WAL mode that does not
    // block the writer, and a change committed meanwhile cannot make the copy start over,
    // as it would between smaller steps.
    for _ in 0..100 {
        match backup.step(-1).map_err(|e| err("", e))? {
            StepResult::Done => return Ok(()),
            StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(50)),
            other => {
                return Err(StoreError::unavailable("", format!("gave up: {other:?}")));
            }
        }
    }
    Err(StoreError::unavailable("", "the database stayed locked"))
}

/// Move the database at `path` (with its write-ahead log, which may hold committed pages)
/// to a name of its own beside it; returns that name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = super::sqlite::now_ms();
    let aside = beside(path, &format!(".replaced-{stamp}"));
    let io =
        |e: std::io::Error| StoreError::io(format!("cannot move {} aside", path.display()), &e);
    std::fs::rename(path, &aside).map_err(io)?;
    let wal = beside(path, "-wal");
    if wal.exists() {
        std::fs::rename(&wal, beside(&aside, "-wal")).map_err(io)?;
    }
    Ok(aside)
}

/// Remove a database file and the log and shared-memory files SQLite keeps beside it.
fn remove_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(beside(path, suffix));
    }
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Flush a directory, so a rename in it survives a power loss; best effort, since not
/// every platform can open a directory.
fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
