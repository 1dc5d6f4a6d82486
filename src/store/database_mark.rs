//! parley's mark on its SQLite databases, and the refusal of files that do not carry it.
//!
//! A server pointed at the wrong file must not make it its own: an empty `parley.db` (a
//! truncated copy, a failed restore) would start as an empty server and hide every message
//! the directory held, and another application's database would get parley's tables added
//! to it. So every parley database carries SQLite's `application_id` header field set to
//! [`APPLICATION_ID`], and a file is opened only if it has that mark, is a new database with
//! no tables, or is a parley database written before the mark existed (schema version
//! counted, parley's own `meta` and `retained` tables present), which is then marked.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// `application_id` of every parley database: "prly" in ASCII.
pub const APPLICATION_ID: i32 = 0x7072_6c79;

/// Tables that every parley database has had since its first schema.
const ALWAYS_THERE: [&str; 2] = ["meta", "retained"];

/// Refuse a database file that exists but is empty: SQLite would take it for a new
/// database. A file whose write-ahead log holds pages is not empty to SQLite.
pub fn refuse_if_empty(path: &Path) -> Result<(), StoreError> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if len(path) == Some(0) && len(Path::new(&wal)).unwrap_or(0) == 0 {
        return Err(StoreError::corrupt(
            format!("{} is empty (0 bytes)", path.display()),
            "a parley database never is; restore it from a backup (`parley restore`), \
             or if this data directory is new, delete the empty file",
        ));
    }
    Ok(())
}

/// Check that the database open on `conn` at `path` is parley's or new, before anything
/// writes to it.
pub fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let context = || format!("{} is not a parley database", path.display());
    let read = |e: rusqlite::Error| StoreError::corrupt(context(), e);
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(read)?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(StoreError::refused(
            context(),
            format!("it belongs to another application (SQLite application_id {id:#010x})"),
        ));
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(read)?;
    if tables.is_empty() {
        return Ok(());
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(read)?;
    let ours = ALWAYS_THERE.iter().all(|t| tables.iter().any(|n| n == t));
    if version >= 1 && ours {
        return Ok(());
    }
    Err(StoreError::refused(
        context(),
        format!(
            "it has tables ({}) but no parley mark; point --data at a directory of its own",
            tables.join(", ")
        ),
    ))
}

/// Put the mark on a database that [`check`] accepted, if it is not there yet.
pub fn mark(conn: &Connection) -> rusqlite::Result<()> {
    let id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if id != APPLICATION_ID {
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> (Connection, std::path::PathBuf) {
        let path = dir.join("x.db");
        (Connection::open(&path).unwrap(), path)
    }

    #[test]
    fn a_new_database_is_accepted_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = db(dir.path());
        check(&conn, &path).unwrap();
        mark(&conn).unwrap();
        let id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
    }

    #[test]
    fn another_applications_database_is_refused_by_its_mark_or_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = db(dir.path());
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .unwrap();
        let e = check(&conn, &path).unwrap_err();
        assert!(e.to_string().contains("invoices"), "{e}");
        conn.pragma_update(None, "application_id", 0x4750_4b47)
            .unwrap();
        let e = check(&conn, &path).unwrap_err();
        assert!(e.to_string().contains("another application"), "{e}");
    }

    #[test]
    fn a_parley_database_from_before_the_mark_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = db(dir.path());
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT); CREATE TABLE retained (message TEXT); \
             PRAGMA user_version = 4;",
        )
        .unwrap();
        check(&conn, &path).unwrap();
    }

    #[test]
    fn an_empty_file_is_refused_unless_its_log_holds_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        refuse_if_empty(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        let e = refuse_if_empty(&path).unwrap_err();
        assert!(e.to_string().contains("0 bytes"), "{e}");
        std::fs::write(dir.path().join("parley.db-wal"), b"pages").unwrap();
        refuse_if_empty(&path).unwrap();
    }
}
