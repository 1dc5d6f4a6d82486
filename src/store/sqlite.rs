//! The embedded durable store: SQLite (bundled, nothing to install) in WAL mode, one
//! writer thread that commits many requests per transaction (group commit).
//!
//! Durability policy: a change is acknowledged only after the transaction holding it has
//! committed. Group commit means a burst of requests shares one transaction and one sync
//! of the write-ahead log, so waiting for the disk costs each request latency (about one
//! disk flush) but not the server's throughput. [`Durability`] says what "committed"
//! survives.
//!
//! Stored form: parley's own tables (see [`super::stored_form`]), not the wire's JSON.
//!
//! Purge policy: when a message is recalled, or an InMail deleted for everyone with its
//! content purged, its body is removed from the stored message row in the same
//! transaction. `secure_delete` makes SQLite overwrite the freed bytes, and the writer
//! truncates the write-ahead log soon after a purge, so the text leaves the files on disk,
//! not just the query results. With a retention period the body is moved to the
//! `retained` table instead and purged from there once the period has passed. Report
//! snapshots are separate rows and are never purged. Backups taken before a purge still
//! hold the text.

use super::data_dir::DataDirLock;
use super::{
    database_mark, stored_changes, stored_form, Chain, Closing, Lately, LatelyAsked, OnDemand,
    Reach, Readback, Store, StoreError,
};
use crate::core::Change;
use futures::future::BoxFuture;
use parley_protocol::Millis;
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Schema migrations in the order they apply; `PRAGMA user_version` counts those applied,
/// so a migration, once released, is never edited, only followed by a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        "0002_tables.sql",
        include_str!("../../migrations/0002_tables.sql"),
    ),
    (
        "0003_lookups.sql",
        include_str!("../../migrations/0003_lookups.sql"),
    ),
    (
        "0004_request_on_message.sql",
        include_str!("../../migrations/0004_request_on_message.sql"),
    ),
];

/// Schema versions this parley reads: its migrations, counted.
pub(super) fn schema_versions() -> usize {
    MIGRATIONS.len()
}

/// Requests the writer takes into one transaction at most, so one huge burst cannot hold
/// every early requester behind a very long transaction.
const MAX_BATCH: usize = 512;

/// The writer's page cache: the pages a burst of commits touches (a leaf of each busy
/// conversation and of each index) stay in memory instead of being read back each
/// transaction. SQLite allocates it as pages are used, so it costs memory only under load.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Pages the write-ahead log grows by before a commit copies it into the database. A
/// checkpoint runs inside the commit that crosses it, so a small figure makes many
/// commits pay for one; about 16 MiB keeps that to one commit in many.
const WAL_CHECKPOINT_PAGES: i64 = 4000;

/// How long connections other than the writer wait for a lock before giving up.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a commit counts as durable.
///
/// Both settings keep the database consistent after any crash; they differ in whether
/// the last acknowledged commits can be lost when the machine itself goes down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous = FULL`: the write-ahead log is flushed to the disk before a commit is
    /// acknowledged, so an acknowledged change survives a process crash, an OS crash and
    /// power loss. Each transaction waits for one disk flush; group commit shares it.
    #[default]
    Fsync,
    /// `synchronous = NORMAL`: a commit is acknowledged once it is in the OS page cache
    /// (the log is flushed only at checkpoints). An acknowledged change survives a crash
    /// or SIGKILL of the server, but an OS crash or power loss may lose the last commits.
    Os,
}

/// How a [`SqliteStore`] is run.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// When a commit counts as durable.
    pub durability: Durability,
    /// Keep recalled and deleted bodies this long for moderation; `None` purges at once.
    pub retention: Option<Duration>,
    /// How often the writer purges expired retained bodies and truncates the write-ahead
    /// log after purges when no commits arrive.
    pub maintenance_interval: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Fsync,
            retention: None,
            maintenance_interval: Duration::from_secs(1),
        }
    }
}

/// Where the writer answers a commit request, handing the changes back.
type Reply = oneshot::Sender<Result<Vec<Change>, StoreError>>;

/// One request's changes for the writer, with the chain it is a link of, if any.
struct Commit {
    changes: Vec<Change>,
    reply: Reply,
    chain: Option<Arc<Chain>>,
}

/// Work for the writer thread.
enum Job {
    Commit(Commit),
    Checkpoint(mpsc::SyncSender<Result<(), StoreError>>),
}

/// SQLite-backed [`Store`] in a data directory.
pub struct SqliteStore {
    path: PathBuf,
    /// Held for the store's life, released after the writer has closed the database.
    _lock: DataDirLock,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    transactions: Arc<AtomicU64>,
    readers: Arc<Readers>,
}

/// Reads at once at most: each runs on a blocking thread with a connection of its own.
const READERS: usize = 4;

/// Connections that only read, reused so their prepared statements are too; at most
/// [`READERS`] reads run at once, so a burst of cold requests cannot open a connection
/// (three files) and a thread each.
struct Readers {
    path: PathBuf,
    idle: parking_lot::Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl Readers {
    /// Run `read` on a reader connection on a blocking thread.
    fn run<T: Send + 'static>(
        self: &Arc<Self>,
        context: String,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let readers = self.clone();
        Box::pin(async move {
            let _permit = readers.permits.acquire().await.map_err(|_| stopped())?;
            let job = readers.clone();
            tokio::task::spawn_blocking(move || job.blocking(&context, read))
                .await
                .map_err(|e| StoreError::unavailable("a read stopped", e))?
        })
    }

    /// Run `read` on a reader connection here (start-up, blocking threads).
    fn blocking<T>(
        &self,
        context: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = match self.idle.lock().pop() {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(|e| err(context, e))?,
        };
        let result = read(&conn).map_err(|e| err(context, e));
        let mut idle = self.idle.lock();
        if idle.len() < READERS {
            idle.push(conn);
        }
        result
    }
}

/// A SQLite error while `context`, by what it means for the caller: a full disk is
/// [`StoreError::Full`], a file that is not (or no longer) a database is
/// [`StoreError::Corrupt`], a read-only database or a refused setting is
/// [`StoreError::Refused`], and I/O failures, locks and everything else are
/// [`StoreError::Unavailable`].
pub(super) fn err(context: impl std::fmt::Display, e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    use rusqlite::Error;
    match &e {
        Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DiskFull => StoreError::full(context, e),
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => StoreError::corrupt(context, e),
            ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::TooBig => StoreError::refused(context, e),
            // CannotOpen, SystemIoFailure, DatabaseBusy, DatabaseLocked, OutOfMemory,
            // FileLockingProtocolFailed, SchemaChanged, interrupted and the rest.
            _ => StoreError::unavailable(context, e),
        },
        // A stored value that does not read back as what was written.
        Error::FromSqlConversionFailure(..)
        | Error::IntegralValueOutOfRange(..)
        | Error::InvalidColumnType(..)
        | Error::Utf8Error(..)
        | Error::QueryReturnedNoRows => StoreError::corrupt(context, e),
        // Used for a file system without WAL support, and a path SQLite cannot take.
        Error::InvalidParameterName(_) | Error::InvalidPath(_) | Error::NulError(_) => {
            StoreError::refused(context, e)
        }
        _ => StoreError::unavailable(context, e),
    }
}

/// The database file in a data directory.
pub fn database_path(data: &Path) -> PathBuf {
    data.join("parley.db")
}

/// The wall clock, in Unix milliseconds, as the tables keep times.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Open the database at `path` for writing (created when missing), once it is known to be
/// parley's or new, in WAL mode with `durability`.
fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    database_mark::refuse_if_empty(path)?;
    let cannot_open = || format!("cannot open database at {}", path.display());
    let data = path.parent().unwrap_or(Path::new("."));
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refused_if_unwritable(data, err(cannot_open(), e)))?;
    database_mark::check(&conn, path)?;
    set_writer_pragmas(&conn, durability)
        .map_err(|e| refused_if_unwritable(data, err(cannot_open(), e)))?;
    Ok(conn)
}

/// The writer's settings: WAL, `durability`, purged bytes overwritten, its cache.
fn set_writer_pragmas(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the file system does not support WAL mode (journal mode is {mode})"
        )));
    }
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Freed bytes are overwritten with zeros, so a purged body leaves the file itself.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
}

/// Apply the migrations not applied yet, each in its own transaction with its version.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| err("cannot read the schema version", e))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::refused(
            format!(
                "the schema version is {applied} but this parley knows {} migrations; \
                 it was written by a newer parley",
                MIGRATIONS.len()
            ),
            "",
        ));
    }
    database_mark::mark(conn).map_err(|e| err("cannot mark the database as parley's", e))?;
    for (n, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(|e| err(name, e))?;
        tx.execute_batch(sql).map_err(|e| err(name, e))?;
        tx.pragma_update(None, "user_version", n + 1)
            .map_err(|e| err(name, e))?;
        tx.commit().map_err(|e| err(name, e))?;
    }
    // A change log of schema 1 is written into the tables as they are now, by the code
    // of now, so it is carried over once every migration is in place; the log goes in
    // the same transaction, so a carry-over that fails is tried again at the next start.
    let context = "carry over the change log of schema 1";
    let has_log: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'changes'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| err(context, e))?;
    if has_log {
        let tx = conn.transaction().map_err(|e| err(context, e))?;
        carry_over_change_log(&tx).map_err(|e| e.within(context))?;
        tx.commit().map_err(|e| err(context, e))?;
    }
    Ok(())
}

/// Move the change log of schema 1 into the tables of schema 2, each change written by
/// the same code as a live commit, then drop the log.
fn carry_over_change_log(tx: &rusqlite::Transaction) -> Result<(), StoreError> {
    let now = now_ms();
    let mut deferred = stored_form::Deferred::default();
    {
        let mut rows = tx
            .prepare("SELECT pos, data FROM changes ORDER BY pos")
            .map_err(|e| err("read the change log", e))?;
        let mut rows = rows.query([]).map_err(|e| err("read the change log", e))?;
        while let Some(row) = rows.next().map_err(|e| err("read the change log", e))? {
            let pos: i64 = row.get(0).map_err(|e| err("read the change log", e))?;
            let data: String = row.get(1).map_err(|e| err("read the change log", e))?;
            let change: Change = serde_json::from_str(&data)
                .map_err(|e| StoreError::corrupt(format!("change {pos} is unreadable"), e))?;
            stored_form::write(tx, &change, None, now, &mut deferred)
                .map_err(|e| err("carry over", e))?;
        }
    }
    deferred.finish(tx).map_err(|e| err("carry over", e))?;
    tx.execute_batch("DROP TABLE changes")
        .map_err(|e| err("drop the change log", e))
}

/// The writer thread's state: the only connection that writes.
struct Writer {
    conn: Connection,
    retention: Option<Duration>,
    interval: Duration,
    last_maintenance: Instant,
    /// Purged text may still sit in old write-ahead log frames until the log is truncated.
    log_holds_purged: bool,
    transactions: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let wait = self
                .interval
                .saturating_sub(self.last_maintenance.elapsed());
            let first = match jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maintain();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut commits = Vec::new();
            let mut checkpoints = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    // Written in order: an earlier link's failure is known by now.
                    Job::Commit(c) if c.chain.as_ref().is_some_and(|ch| ch.broken()) => {
                        let _ = c.reply.send(Err(Chain::broken_error()));
                    }
                    Job::Commit(c) => commits.push(c),
                    Job::Checkpoint(reply) => checkpoints.push(reply),
                }
                // Everything already waiting rides in the same transaction.
                if commits.len() < MAX_BATCH {
                    next = jobs.try_recv().ok();
                }
            }
            if !commits.is_empty() {
                let result = self.write_batch(&commits);
                if let Err(e) = &result {
                    tracing::error!(error = %e, requests = commits.len(), "commit failed");
                }
                for Commit {
                    changes,
                    reply,
                    chain,
                } in commits
                {
                    if let (Err(_), Some(chain)) = (&result, chain) {
                        chain.break_off();
                    }
                    let _ = reply.send(result.clone().map(|()| changes));
                }
            }
            for reply in checkpoints {
                let _ = reply.send(self.checkpoint());
            }
            if self.last_maintenance.elapsed() >= self.interval {
                self.maintain();
            }
        }
    }

    fn write_batch(&mut self, batch: &[Commit]) -> Result<(), StoreError> {
        let purge_after = self.retention.map(|r| now_ms() + r.as_millis() as i64);
        let tx = self.conn.transaction().map_err(|e| err("begin", e))?;
        let mut purged = false;
        let now = now_ms();
        let mut deferred = stored_form::Deferred::default();
        for Commit { changes, .. } in batch {
            for change in changes {
                let written = stored_form::write(&tx, change, purge_after, now, &mut deferred)
                    .map_err(|e| err("write", e))?;
                purged |= written.purged;
            }
        }
        deferred.finish(&tx).map_err(|e| err("write", e))?;
        let expired = expire_retained(&tx).map_err(|e| err("expire", e))?;
        tx.commit().map_err(|e| err("commit", e))?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        // With retention the body is still wanted, so the log need not be truncated yet.
        self.log_holds_purged |= purged || expired > 0;
        Ok(())
    }

    /// Purge expired retained bodies, then truncate the log if it may hold purged text.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        match expire_retained(&self.conn) {
            Ok(n) => self.log_holds_purged |= n > 0,
            Err(e) => tracing::warn!(error = %e, "cannot purge expired retained content"),
        }
        if self.log_holds_purged {
            if let Err(e) = self.checkpoint() {
                // Usually a long reader (a backup); the next tick tries again.
                tracing::debug!(error = %e, "checkpoint deferred");
            }
        }
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let expired = expire_retained(&self.conn).map_err(|e| err("expire", e))?;
        self.log_holds_purged |= expired > 0;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| err("checkpoint", e))?;
        if busy != 0 {
            return Err(StoreError::unavailable(
                "checkpoint",
                "a reader is still using the write-ahead log",
            ));
        }
        self.log_holds_purged = false;
        Ok(())
    }
}

/// Delete retained bodies whose period has passed; returns how many.
fn expire_retained(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM retained WHERE purge_after <= ?1")?
        .execute(params![now_ms()])
}

/// A connection that only reads, for loading and backups; the writer keeps its own.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // Read-write without create: a missing file is an error, and a WAL database whose
    // shared-memory file is gone (server stopped) can still be opened.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(READER_BUSY_TIMEOUT)?;
    Ok(conn)
}

impl SqliteStore {
    /// Open (creating if needed) the database in the data directory `data`, apply the
    /// migrations and start the writer.
    pub fn open(data: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let lock = DataDirLock::acquire(data)?;
        let path = database_path(data);
        let cannot_open = || format!("cannot open database at {}", path.display());
        let mut conn = open_writer(&path, options.durability)?;
        migrate(&mut conn).map_err(|e| e.within(cannot_open()))?;
        // A real write proves now, not at the first request, that the directory is
        // writable and not full.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('opened_at', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![now_ms().to_string()],
        )
        .map_err(|e| err(format!("{} (cannot write)", cannot_open()), e))?;
        let transactions = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            retention: options.retention,
            interval: options.maintenance_interval,
            last_maintenance: Instant::now(),
            // The previous run may have stopped before truncating after a purge.
            log_holds_purged: true,
            transactions: transactions.clone(),
        };
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("parley-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("cannot start the database writer", &e))?;
        let readers = Arc::new(Readers {
            path: path.clone(),
            idle: parking_lot::Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(READERS),
        });
        Ok(SqliteStore {
            path,
            _lock: lock,
            jobs: Some(tx),
            writer: Some(handle),
            transactions,
            readers,
        })
    }

    /// Write `changes` straight into the database of `data` (created when missing), in one
    /// transaction, through the same stored form as a live commit, without waiting for the
    /// disk: for seeding a large history to measure against, never while a server runs.
    pub fn seed(data: &Path, changes: &[Change]) -> Result<(), StoreError> {
        let _lock = DataDirLock::acquire(data)?;
        let path = database_path(data);
        let cannot_open = || format!("cannot open database at {}", path.display());
        let mut conn = open_writer(&path, Durability::Os)?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(|e| err(cannot_open(), e))?;
        migrate(&mut conn).map_err(|e| e.within(cannot_open()))?;
        let tx = conn.transaction().map_err(|e| err("begin", e))?;
        let now = now_ms();
        let mut deferred = stored_form::Deferred::default();
        for change in changes {
            stored_form::write(&tx, change, None, now, &mut deferred)
                .map_err(|e| err("seed", e))?;
        }
        deferred.finish(&tx).map_err(|e| err("seed", e))?;
        tx.commit().map_err(|e| err("commit", e))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write transactions committed so far; under concurrent load group commit makes this
    /// far smaller than the number of commits.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Purge expired retained bodies, copy the write-ahead log into the database file and
    /// truncate the log to zero bytes. Blocks until the writer has done it, so async code
    /// should call it from a blocking task.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let (reply, done) = mpsc::sync_channel(1);
        self.send(Job::Checkpoint(reply))?;
        done.recv().map_err(|_| stopped())?
    }

    /// The body kept for moderation of a recalled or deleted message, while its retention
    /// period lasts.
    pub fn retained_body(&self, message: &str) -> Result<Option<String>, StoreError> {
        let conn = open_reader(&self.path).map_err(|e| err("retained", e))?;
        let body = conn.query_row(
            "SELECT body FROM retained WHERE message = ?1 AND purge_after > ?2",
            params![message, now_ms()],
            |r| r.get(0),
        );
        match body {
            Ok(body) => Ok(body),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(err("retained", e)),
        }
    }

    /// Hand `changes` to the writer now, not when the future is first polled, so commit
    /// order is call order.
    fn queue(
        &self,
        changes: Vec<Change>,
        chain: Option<Arc<Chain>>,
    ) -> BoxFuture<'static, Result<Vec<Change>, StoreError>> {
        let (reply, done) = oneshot::channel();
        let sent = self.send(Job::Commit(Commit {
            changes,
            reply,
            chain: chain.clone(),
        }));
        if let (Err(_), Some(chain)) = (&sent, &chain) {
            chain.break_off();
        }
        Box::pin(async move {
            sent?;
            done.await.map_err(|_| stopped())?
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(stopped)
    }
}

fn stopped() -> StoreError {
    StoreError::unavailable("the database writer has stopped", "")
}

/// A database that cannot be opened in a data directory where no file can be created is a
/// setup problem, not an outage: `e` becomes [`StoreError::Refused`] with the reason.
fn refused_if_unwritable(data: &Path, e: StoreError) -> StoreError {
    if !matches!(e, StoreError::Unavailable { .. }) {
        return e;
    }
    let probe = data.join(".parley-write-probe");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            e
        }
        Err(io) if io.kind() == std::io::ErrorKind::AlreadyExists => e,
        Err(io) => match StoreError::io("", &io) {
            StoreError::Refused { .. } => {
                StoreError::refused(e.context(), format!("{}; {io}", e.detail()))
            }
            _ => e,
        },
    }
}

impl Drop for SqliteStore {
    /// Close the channel and wait for the writer, so the database is closed cleanly.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store for SqliteStore {
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<'static, Result<Vec<Change>, StoreError>> {
        if changes.is_empty() {
            return Box::pin(async { Ok(changes) });
        }
        self.queue(changes, None)
    }

    fn orders_chains(&self) -> bool {
        true
    }

    fn commit_chained(
        &self,
        changes: Vec<Change>,
        chain: &Arc<Chain>,
    ) -> BoxFuture<'static, Result<Vec<Change>, StoreError>> {
        if changes.is_empty() {
            return Box::pin(async { Ok(changes) });
        }
        self.queue(changes, Some(chain.clone()))
    }

    fn load_each(&self, each: &mut dyn FnMut(Change)) -> Result<(), StoreError> {
        let conn = open_reader(&self.path).map_err(|e| err("load", e))?;
        stored_changes::load(&conn, each).map_err(|e| err("load", e))
    }

    fn on_demand(&self) -> Option<&dyn OnDemand> {
        Some(self)
    }
}

impl OnDemand for SqliteStore {
    fn start_up(&self, each: &mut dyn FnMut(Change)) -> Result<(), StoreError> {
        self.readers.blocking("read the directory", |conn| {
            stored_changes::start_up(conn, each)
        })
    }

    fn conversation(
        &self,
        id: &str,
        reach: Option<Reach>,
    ) -> BoxFuture<'static, Result<Option<Readback>, StoreError>> {
        let id = id.to_owned();
        let context = format!("read conversation {id}");
        self.readers
            .run(context, move |conn| stored_changes::one(conn, &id, reach))
    }

    fn conversations_of(&self, user: &str) -> BoxFuture<'static, Result<Vec<String>, StoreError>> {
        let user = user.to_owned();
        let context = format!("read the conversations of {user}");
        self.readers.run(context, move |conn| {
            stored_changes::conversations_of(conn, &user)
        })
    }

    fn closing(
        &self,
        id: &str,
        sent_from: Millis,
        sent_until: Millis,
    ) -> BoxFuture<'static, Result<Closing, StoreError>> {
        let id = id.to_owned();
        let context = format!("read the recall windows of {id}");
        self.readers.run(context, move |conn| {
            stored_changes::closing(conn, &id, sent_from, sent_until)
        })
    }

    fn lately(&self, asked: LatelyAsked) -> Result<Lately, StoreError> {
        self.readers
            .blocking("read the windows still open", |conn| {
                stored_changes::lately(conn, asked)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::{
        ConversationKind, ConversationView, MessageKind, MessageState, MessageView, ReportTarget,
        ReportView,
    };

    /// Positions for test messages: unique, rising in the order the fixtures are made.
    static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

    /// The users and the conversation every test writes into.
    fn setup() -> Vec<Change> {
        let mut changes: Vec<Change> = ["a", "b", "c"]
            .map(|u| Change::UserCreated { user: u.into() })
            .into();
        changes.push(Change::ConversationCreated {
            conversation: ConversationView {
                id: "c".into(),
                kind: ConversationKind::Group,
                participants: vec!["a".into(), "b".into(), "c".into()],
                title: Some("t".into()),
            },
            at: 1,
        });
        changes
    }

    /// What the tables hold about messages, in position order (users and the
    /// conversation left out).
    fn history(store: &SqliteStore) -> Vec<Change> {
        let mut all = store.load().unwrap();
        all.retain(|c| c.conversation().is_some() && !setup().contains(c));
        all
    }

    fn view(id: &str, body: &str) -> MessageView {
        MessageView {
            id: id.into(),
            conversation: "c".into(),
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
            sender: "a".into(),
            // Recent: request ids are remembered for a day after sending.
            sent_at: now_ms(),
            kind: MessageKind::Message,
            state: MessageState::Visible,
            body: Some(body.into()),
            reply_to: None,
            to: None,
            cc: vec![],
            recall_until: None,
            delete_until: None,
        }
    }

    fn stored(id: &str, body: &str) -> Change {
        Change::MessageStored {
            message: view(id, body),
            // Quotes, escapes and non-ASCII must survive the JSON rewrite of a purge.
            client_id: format!("r-{id} \"ü😀\\n\u{1}"),
            offline: None,
        }
    }

    fn recalled(id: &str) -> Change {
        Change::Recalled {
            conversation: "c".into(),
            message: id.into(),
            at: 2,
        }
    }

    fn open(dir: &Path) -> SqliteStore {
        set_up(SqliteStore::open(dir, SqliteOptions::default()).unwrap())
    }

    /// `store` with the users and conversation of [`setup`] committed.
    fn set_up(store: SqliteStore) -> SqliteStore {
        futures::executor::block_on(store.commit(setup())).unwrap();
        store
    }

    /// Whether any file in `dir` (database, log, shared memory) holds `needle`.
    fn files_contain(dir: &Path, needle: &str) -> bool {
        std::fs::read_dir(dir).unwrap().any(|f| {
            let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    }

    fn body_of(change: &Change) -> Option<&str> {
        match change {
            Change::MessageStored { message, .. } => message.body.as_deref(),
            _ => panic!("not a stored message: {change:?}"),
        }
    }

    #[tokio::test]
    async fn lately_finds_the_first_open_window_and_the_latest_sends_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let base = now_ms();
        // Sent a second apart: a by "a" at base+0..=9, then "b" at base+10..=14.
        let messages = (0..15).map(|i| {
            let mut change = stored(&format!("late{i}"), "x");
            if let Change::MessageStored { message, .. } = &mut change {
                message.sent_at = base + i * 1_000;
                message.sender = if i < 10 { "a" } else { "b" }.into();
            }
            change
        });
        store.commit(messages.collect()).await.unwrap();
        let lately = store
            .lately(LatelyAsked {
                recall_since: base + 4_500,
                throttle_since: base + 8_000,
                sends_per_user: 2,
            })
            .unwrap();
        assert_eq!(lately.first_sent, [("c".to_owned(), base + 5_000)]);
        let mut sends = lately.sends;
        sends.sort();
        assert_eq!(
            sends,
            [
                ("a".to_owned(), vec![base + 8_000, base + 9_000]),
                ("b".to_owned(), vec![base + 13_000, base + 14_000]),
            ]
        );
        let quiet = store
            .lately(LatelyAsked {
                recall_since: base + 20_000,
                throttle_since: base + 20_000,
                sends_per_user: 2,
            })
            .unwrap();
        assert_eq!(quiet, Lately::default(), "nothing was sent since");
    }

    #[tokio::test]
    async fn commits_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut changes: Vec<Change> = (0..50).map(|i| stored(&format!("m{i}"), "x")).collect();
        changes.push(Change::ReadUpTo {
            conversation: "c".into(),
            user: "b".into(),
            seq: 7,
        });
        changes.push(Change::Block {
            blocker: "a".into(),
            blocked: "b".into(),
            on: true,
        });
        let commits: Vec<_> = changes
            .iter()
            .map(|c| store.commit(vec![c.clone()]))
            .collect();
        for c in commits {
            c.await.unwrap();
        }
        // The directory comes first, then the conversation with its messages and state
        // changes in position order.
        let mut expected = setup();
        let block = changes.pop().unwrap();
        expected.insert(3, block);
        expected.extend(changes);
        assert_eq!(store.load().unwrap(), expected);
        drop(store);
        let again = SqliteStore::open(
            dir.path(),
            SqliteOptions {
                durability: Durability::Os,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(again.load().unwrap(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        let before = store.transactions();
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .commit(vec![stored(&format!("m{i}"), "x")])
                        .await
                        .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let transactions = store.transactions() - before;
        assert_eq!(history(&store).len(), 400);
        assert!(
            transactions < 400 / 2,
            "{transactions} transactions for 400 concurrent commits"
        );
    }

    #[test]
    fn migrations_apply_once_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        drop(open(dir.path()));
        let conn = Connection::open(database_path(dir.path())).unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[tokio::test]
    async fn a_change_log_of_schema_one_is_carried_over_into_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (
            stored("old-1", "kept text"),
            stored("old-2", "recalled text"),
        );
        let mut log = setup();
        log.extend([
            first.clone(),
            second,
            recalled("old-2"),
            Change::ReadUpTo {
                conversation: "c".into(),
                user: "b".into(),
                seq: match &first {
                    Change::MessageStored { message, .. } => message.seq,
                    _ => unreachable!(),
                },
            },
            Change::Block {
                blocker: "c".into(),
                blocked: "a".into(),
                on: true,
            },
        ]);
        {
            let conn = Connection::open(database_path(dir.path())).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for change in &log {
                // Schema one purged a recalled body by rewriting its row without it.
                let mut change = change.clone();
                if let Change::MessageStored { message, .. } = &mut change {
                    if message.id == "old-2" {
                        message.body = None;
                    }
                }
                let data = serde_json::to_string(&change).unwrap();
                let kind: serde_json::Value = serde_json::from_str(&data).unwrap();
                conn.execute(
                    "INSERT INTO changes (kind, conversation, data) VALUES (?1, ?2, ?3)",
                    params![kind["kind"].as_str(), change.conversation(), data],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let conn = Connection::open(database_path(dir.path())).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'changes'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the old log is gone");
        let history = history(&store);
        assert_eq!(history.len(), 4, "{history:?}");
        assert_eq!(history[0], first);
        assert_eq!(
            body_of(&history[1]),
            None,
            "the recalled body is not carried over"
        );
        assert_eq!(history[2], recalled("old-2"));
        assert!(matches!(history[3], Change::ReadUpTo { .. }));
        assert!(store.load().unwrap().contains(&Change::Block {
            blocker: "c".into(),
            blocked: "a".into(),
            on: true,
        }));
        drop(store);
        assert!(files_contain(dir.path(), "kept text"));
    }

    #[tokio::test]
    async fn a_message_for_an_unknown_conversation_is_refused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let Change::MessageStored {
            mut message,
            client_id,
            ..
        } = stored("stray", "nowhere to go")
        else {
            unreachable!()
        };
        message.conversation = "no-such-conversation".into();
        let e = store
            .commit(vec![Change::MessageStored {
                message,
                client_id,
                offline: None,
            }])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown conversation"), "{e}");
        assert!(history(&store).is_empty(), "nothing of the batch is stored");
    }

    #[test]
    fn a_database_from_a_newer_parley_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let conn = Connection::open(database_path(dir.path())).unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
            .unwrap();
        drop(conn);
        let e = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap_err();
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        assert!(!e.retryable());
        assert!(e.to_string().contains("newer parley"), "{e}");
    }

    #[tokio::test]
    async fn recalled_text_leaves_the_database_files() {
        let secret = "the-unmistakable-recalled-text-4711";
        recalled_text_leaves_the_files(secret, secret).await;
    }

    #[tokio::test]
    async fn a_long_recalled_text_leaves_the_database_files() {
        // Longer than a page: the text sits in overflow pages, which the purge frees.
        let secret = "a-long-recalled-text-ends-here-1234";
        let body = format!("{}{secret}", "lorem ipsum ".repeat(700));
        recalled_text_leaves_the_files(&body, secret).await;
    }

    async fn recalled_text_leaves_the_files(body: &str, secret: &str) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let kept = "a-neighbouring-message-that-stays-0815";
        let first = stored("m1", body);
        store.commit(vec![first.clone()]).await.unwrap();
        store.commit(vec![stored("m2", kept)]).await.unwrap();
        store.checkpoint().unwrap();
        assert!(
            files_contain(dir.path(), secret),
            "control: the text is stored"
        );
        store.commit(vec![recalled("m1")]).await.unwrap();
        store.checkpoint().unwrap();
        assert!(
            !files_contain(dir.path(), secret),
            "purged from the files, write-ahead log included"
        );
        assert!(files_contain(dir.path(), kept));
        let log = history(&store);
        let Change::MessageStored {
            mut message,
            client_id,
            ..
        } = first
        else {
            unreachable!()
        };
        message.body = None;
        let purged = Change::MessageStored {
            message,
            client_id,
            offline: None,
        };
        assert_eq!(log[0], purged, "everything but the body is kept");
        assert_eq!(body_of(&log[1]), Some(kept));
        assert_eq!(log[2], recalled("m1"));
    }

    #[tokio::test]
    async fn the_writer_truncates_the_log_after_a_purge_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = set_up(
            SqliteStore::open(
                dir.path(),
                SqliteOptions {
                    maintenance_interval: Duration::from_millis(100),
                    ..SqliteOptions::default()
                },
            )
            .unwrap(),
        );
        let secret = "purged-without-an-explicit-checkpoint-3141";
        let body = format!("{}{secret}", "lorem ipsum ".repeat(700));
        store.commit(vec![stored("m1", &body)]).await.unwrap();
        store.commit(vec![recalled("m1")]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while files_contain(dir.path(), secret) {
            assert!(Instant::now() < deadline, "the log still holds the text");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn inmail_delete_purges_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .commit(vec![stored("gone", "purge-me-9931")])
            .await
            .unwrap();
        store
            .commit(vec![stored("kept", "cc-keeps-this-2231")])
            .await
            .unwrap();
        let delete = |message: &str, purge| Change::InmailDeleted {
            conversation: "c".into(),
            message: message.into(),
            purge,
        };
        store
            .commit(vec![delete("gone", true), delete("kept", false)])
            .await
            .unwrap();
        store.checkpoint().unwrap();
        assert!(!files_contain(dir.path(), "purge-me-9931"));
        assert!(files_contain(dir.path(), "cc-keeps-this-2231"));
    }

    #[tokio::test]
    async fn a_recall_in_the_same_batch_as_the_message_still_purges() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let both = store.commit(vec![stored("m1", "same-batch-text-5150"), recalled("m1")]);
        both.await.unwrap();
        store.checkpoint().unwrap();
        assert!(!files_contain(dir.path(), "same-batch-text-5150"));
        assert_eq!(body_of(&history(&store)[0]), None);
    }

    #[tokio::test]
    async fn report_snapshots_survive_the_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let evidence = "reported-then-recalled-text-6060";
        store.commit(vec![stored("m1", evidence)]).await.unwrap();
        let report = Change::Reported {
            report: ReportView {
                id: "r1".into(),
                reporter: "b".into(),
                target: ReportTarget::Message {
                    conversation: "c".into(),
                    message: "m1".into(),
                },
                reason: "spam".into(),
                at: 3,
                snapshot: Some(view("m1", evidence)),
            },
        };
        store.commit(vec![report.clone()]).await.unwrap();
        store.commit(vec![recalled("m1")]).await.unwrap();
        store.checkpoint().unwrap();
        let all = store.load().unwrap();
        assert!(
            all.contains(&report),
            "the report and its snapshot are kept"
        );
        assert_eq!(body_of(&history(&store)[0]), None);
    }

    #[tokio::test]
    async fn with_retention_the_body_is_kept_until_it_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = set_up(
            SqliteStore::open(
                dir.path(),
                SqliteOptions {
                    retention: Some(Duration::from_secs(3)),
                    maintenance_interval: Duration::from_millis(100),
                    ..SqliteOptions::default()
                },
            )
            .unwrap(),
        );
        let text = "kept-for-moderation-for-a-while-7272";
        store.commit(vec![stored("m1", text)]).await.unwrap();
        store.commit(vec![recalled("m1")]).await.unwrap();
        store.checkpoint().unwrap();
        assert_eq!(body_of(&history(&store)[0]), None, "gone from the table");
        assert_eq!(store.retained_body("m1").unwrap().as_deref(), Some(text));
        assert!(files_contain(dir.path(), text), "retained in the files");
        // No commit and no explicit checkpoint: the writer's own tick purges it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while files_contain(dir.path(), text) {
            assert!(Instant::now() < deadline, "retained text never purged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.retained_body("m1").unwrap(), None);
    }

    #[test]
    fn a_read_only_data_directory_is_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores directory permissions; a path below a regular file fails for
        // everyone, so it stands in for the read-only directory there.
        let probe = locked.join("probe");
        let data = if std::fs::write(&probe, "").is_ok() {
            std::fs::remove_file(&probe).unwrap();
            let file = dir.path().join("file");
            std::fs::write(&file, "").unwrap();
            file.join("sub")
        } else {
            locked.clone()
        };
        let e = SqliteStore::open(&data, SqliteOptions::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot open database at")
                || text.contains("cannot create data directory"),
            "{e}"
        );
        assert!(text.contains(&data.display().to_string()), "{e}");
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(database_path(dir.path()), vec![0x42u8; 8192]).unwrap();
        let e = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("is not a parley database: file is not a database"),
            "{e}"
        );
        assert!(e.to_string().contains("not a database"), "{e}");
    }

    #[tokio::test]
    async fn backup_is_a_consistent_copy_while_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        for i in 0..100 {
            store
                .commit(vec![stored(&format!("m{i}"), "kept")])
                .await
                .unwrap();
        }
        let writing = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 100..600 {
                    store
                        .commit(vec![stored(&format!("m{i}"), "more")])
                        .await
                        .unwrap();
                }
            })
        };
        // Not into the live directory, which a backup refuses.
        let elsewhere = tempfile::tempdir().unwrap();
        let copy = elsewhere.path().join("backup.db");
        let (data, to) = (dir.path().to_owned(), copy.clone());
        tokio::task::spawn_blocking(move || super::super::backup::backup(&data, &to, false))
            .await
            .unwrap()
            .unwrap();
        writing.await.unwrap();

        let restored = tempfile::tempdir().unwrap();
        std::fs::copy(&copy, database_path(restored.path())).unwrap();
        let reopened = open(restored.path());
        let copied = reopened.load().unwrap();
        let all = store.load().unwrap();
        assert!(copied.len() >= 100, "{} changes copied", copied.len());
        assert_eq!(
            copied[..],
            all[..copied.len()],
            "a prefix of the log, in order"
        );
        assert!(!elsewhere.path().join("backup.db.partial").exists());
    }

    #[test]
    fn backup_without_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("copy.db");
        let e = super::super::backup::backup(dir.path(), &to, false).unwrap_err();
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        assert!(e.to_string().contains("no database at"), "{e}");
    }

    fn sqlite_failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_errors_map_to_what_they_mean() {
        use rusqlite::ffi;
        let cases = [
            (sqlite_failure(ffi::SQLITE_FULL), "full"),
            (sqlite_failure(ffi::SQLITE_IOERR_WRITE), "unavailable"),
            (sqlite_failure(ffi::SQLITE_IOERR_FSYNC), "unavailable"),
            (sqlite_failure(ffi::SQLITE_CANTOPEN), "unavailable"),
            (sqlite_failure(ffi::SQLITE_BUSY), "unavailable"),
            (sqlite_failure(ffi::SQLITE_LOCKED), "unavailable"),
            (sqlite_failure(ffi::SQLITE_NOMEM), "unavailable"),
            (sqlite_failure(ffi::SQLITE_NOTADB), "corrupt"),
            (sqlite_failure(ffi::SQLITE_CORRUPT), "corrupt"),
            (sqlite_failure(ffi::SQLITE_READONLY), "refused"),
            (sqlite_failure(ffi::SQLITE_PERM), "refused"),
            (rusqlite::Error::QueryReturnedNoRows, "corrupt"),
            (
                rusqlite::Error::InvalidParameterName("no WAL here".into()),
                "refused",
            ),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let mapped = err("insert", e);
            assert_eq!(mapped.code(), code, "{mapped:?}");
            assert_eq!(
                mapped.retryable(),
                code == "full" || code == "unavailable",
                "{mapped:?}"
            );
            assert_eq!(mapped.context(), "insert");
            assert_eq!(mapped.detail(), shown);
            assert!(mapped.to_string().ends_with(&format!("insert: {shown}")));
        }
    }

    #[test]
    fn a_stopped_writer_is_unavailable() {
        let e = stopped();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(e.retryable());
        assert_eq!(
            e.to_string(),
            "storage unavailable: the database writer has stopped"
        );
    }

    /// A small tmpfs mounted over a temporary directory, unmounted when dropped; `None`
    /// when this process may not mount (not root, or in a container that forbids it).
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(Tmpfs { dir })
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Write `dir/filler` until the file system is full, then small files until even those
    /// fail; returns the filler's path.
    fn fill(dir: &Path) -> PathBuf {
        use std::io::Write;
        let filler = dir.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        for i in 0..64 {
            if std::fs::write(dir.join(format!("filler-{i}")), [0u8; 512]).is_err() {
                break;
            }
        }
        filler
    }

    #[tokio::test]
    async fn a_full_disk_is_full_and_commits_resume_once_space_is_freed() {
        let Some(disk) = Tmpfs::mount("4m") else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let data = disk.path().join("data");
        let store = open(&data);
        store.commit(vec![stored("m0", "before")]).await.unwrap();
        let filler = fill(disk.path());
        let body = "x".repeat(32 * 1024);
        let mut refused = None;
        for i in 1..=64 {
            if let Err(e) = store.commit(vec![stored(&format!("m{i}"), &body)]).await {
                refused = Some((i, e));
                break;
            }
        }
        let (at, e) = refused.expect("a commit fails once the disk is full");
        assert!(matches!(e, StoreError::Full { .. }), "{e:?}");
        assert!(e.retryable());
        assert_eq!(e.code(), "full");
        assert!(e.to_string().starts_with("storage full: "), "{e}");

        std::fs::remove_file(filler).unwrap();
        store
            .commit(vec![stored(&format!("m{at}"), &body)])
            .await
            .expect("commits resume once space is freed");
        let ids: Vec<String> = store
            .load()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Change::MessageStored { message, .. } => Some(message.id.clone()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (0..=at).map(|i| format!("m{i}")).collect();
        assert_eq!(ids, expected, "the refused commit left nothing behind");
        drop(store);
    }
}
