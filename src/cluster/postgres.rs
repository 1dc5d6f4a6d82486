//! The shared ledger in PostgreSQL: scope row locks, per-scope numbering, catch-up reads.
//!
//! A send is two round trips: the claim (begin, lock the scope, read what this node missed)
//! and the commit (number and append the entry, commit), each a pipeline of prepared
//! statements. Pipelined statements still run one after another on the server, each with
//! its own snapshot, so a read queued behind the lock sees everything committed before
//! the lock was granted.

use super::{purge_frames, purged_messages, stored_message, Entry, DIRECTORY};
use crate::core::{Change, Emit};
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures::future::join3;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// Serialises schema set-up when several nodes start at once.
const MIGRATION_LOCK: i64 = 0x7061_726c_6579;

/// How long a node's start waits for a lock on the ledger (the schema's, the mark's) before
/// it gives up with an error naming what it waited for.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The deadlines of a node's work with PostgreSQL. A database that stops answering (a
/// paused or partitioned server) leaves a TCP connection open that would wait for ever;
/// past these, the request in hand gets a retryable error and a log line instead.
#[derive(Debug, Clone, Copy)]
pub struct LedgerOptions {
    /// Connections to PostgreSQL the node keeps.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long one piece of a request's work (a claim, a commit, a read) may take.
    pub request_timeout: Duration,
    /// How long a request waits for a free connection when every one is busy.
    pub pool_wait: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            pool_wait: Duration::from_secs(5),
        }
    }
}

/// Locks an existing scope without writing a new row version, unlike an upsert.
const LOCK_SCOPE: &str = "SELECT seq FROM scopes WHERE id = $1 FOR UPDATE";
/// Creates a scope on first use and takes its row lock.
const CREATE_SCOPE: &str = "INSERT INTO scopes (id) VALUES ($1) \
     ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING seq";
const ENTRIES_AFTER: &str = "SELECT scope, seq, changes, emits FROM entries \
     WHERE scope = $1 AND seq > $2 ORDER BY seq";
/// A conversation's missed entries and the directory's, in one statement.
const CATCH_UP: &str = "SELECT scope, seq, changes, emits FROM entries \
     WHERE scope = $1 AND seq > $2 \
     UNION ALL SELECT scope, seq, changes, emits FROM entries \
     WHERE scope = $3 AND seq > $4 ORDER BY 1, 2";
/// Numbers the entry under the row lock and stores it. `touched` is refreshed at most once
/// a second: an update that leaves every indexed column alone is a heap-only update,
/// which skips both indexes of `scopes`; the poll's window allows for the second.
const APPEND: &str = "WITH numbered AS (\
       UPDATE scopes SET seq = seq + 1, touched = CASE \
         WHEN touched < now() - interval '1 second' THEN now() ELSE touched END \
       WHERE id = $1 RETURNING seq) \
     INSERT INTO entries (scope, seq, changes, emits, message, sender, at, reports) \
     VALUES ($1, (SELECT seq FROM numbered), $2, $3, $4, $5, $6, $7) RETURNING seq";
/// A new conversation's participants, for [`Ledger::conversations_of`].
const ADD_MEMBERS: &str = "INSERT INTO members (user_id, scope) \
     SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING";
/// The last entry of a scope numbered before a node's mark (see [`Ledger::mark`]).
const BEFORE_MARK: &str = "SELECT seq FROM entries WHERE scope = $1 AND id < $2 \
     ORDER BY seq DESC LIMIT 1";
/// Transaction control through prepared statements too: nothing to parse per send.
const BEGIN: &str = "BEGIN";
const COMMIT: &str = "COMMIT";
/// Records a ticket's redemption; no row comes back if some node redeemed it before. Rows
/// of tickets expired for a while go in the same statement: kept past their expiry by a
/// margin, since a node whose clock runs behind the database's still honours a ticket a
/// little longer.
const REDEEM_TICKET: &str = "WITH swept AS (\
       DELETE FROM redeemed_tickets WHERE expires < now() - interval '5 minutes') \
     INSERT INTO redeemed_tickets (jti, expires) VALUES ($1, to_timestamp($2)) \
     ON CONFLICT (jti) DO NOTHING RETURNING jti";
const FIND_STORED: &str = "SELECT scope, seq, changes, emits FROM entries WHERE message = $1";
const REWRITE: &str = "UPDATE entries SET changes = $3, emits = $4 WHERE scope = $1 AND seq = $2";

/// A PostgreSQL error while `context`, by its SQLSTATE: disk full (53100) is
/// [`StoreError::Full`]; data or index corruption (XX001, XX002) is
/// [`StoreError::Corrupt`]; refused credentials, a missing database, missing privileges or
/// a read-only server (classes 28 and 3D, 42501, 25006) are [`StoreError::Refused`];
/// connection loss, shutdown, resource shortage, serialization failures, lock timeouts,
/// I/O errors and errors without a code (a closed connection) are
/// [`StoreError::Unavailable`].
fn err(context: &str, e: tokio_postgres::Error) -> StoreError {
    let Some(state) = e.code() else {
        // tokio-postgres says "error performing TLS handshake" and keeps why in its source.
        let mut said = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            said = format!("{said}: {cause}");
            source = cause.source();
        }
        return StoreError::unavailable(context, said);
    };
    let code = state.code();
    // `Display` of a database error says only "db error": the server's message says what.
    let detail = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {code})", db.message()),
        None => format!("{e} (SQLSTATE {code})"),
    };
    match code {
        "53100" => StoreError::full(context, detail),
        "XX001" | "XX002" => StoreError::corrupt(context, detail),
        "42501" | "25006" => StoreError::refused(context, detail),
        _ if code.starts_with("28") || code.starts_with("3D") => {
            StoreError::refused(context, detail)
        }
        _ => StoreError::unavailable(context, detail),
    }
}

/// The schema version the migrations below bring a ledger to.
const SCHEMA_VERSION: i32 = 3;

/// The schema version of the ledger `client` is connected to (0: none, or the first).
async fn schema_version(client: &Object) -> Result<i32, StoreError> {
    let context = "cannot read the schema version";
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| err(context, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|e| err(context, e))?;
    Ok(row.get(0))
}

/// A stored entry that does not decode.
fn corrupt(context: &str, e: serde_json::Error) -> StoreError {
    StoreError::corrupt(context, e)
}

/// A connection pool to the cluster's database.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    /// See [`LedgerOptions::request_timeout`].
    deadline: Duration,
}

/// `work` (what a node is doing, `context`) given at most `deadline`.
async fn bounded<T>(
    deadline: Duration,
    context: &str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, work).await {
        Ok(done) => done,
        Err(_) => Err(StoreError::unavailable(
            context,
            format!(
                "the database did not answer within {}",
                humantime::format_duration(deadline)
            ),
        )),
    }
}

/// Give back a connection that may be inside a transaction: rolled back, then returned to
/// the pool; a connection whose rollback is not answered in time is closed instead, so the
/// pool never hands out one in an unknown state.
async fn roll_back(client: Object, deadline: Duration) {
    let rolled = tokio::time::timeout(deadline, client.batch_execute("ROLLBACK")).await;
    if !matches!(rolled, Ok(Ok(()))) {
        drop(Object::take(client));
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

fn decode_entry(
    scope: String,
    seq: i64,
    changes: &str,
    emits: Option<&str>,
) -> Result<Entry, StoreError> {
    Ok(Entry {
        scope,
        seq: seq as u64,
        changes: serde_json::from_str(changes).map_err(|e| corrupt("corrupt entry", e))?,
        emits: match emits {
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt("corrupt entry", e))?,
            None => Vec::new(),
        },
    })
}

fn rows_to_entries(rows: Vec<Row>) -> Result<Vec<Entry>, StoreError> {
    rows.into_iter()
        .map(|r| decode_entry(r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// `sql` prepared on this connection, once: later calls hit the connection's cache.
async fn prepared(client: &Object, sql: &str, context: &str) -> Result<Statement, StoreError> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| err(context, e))
}

/// Run `sql` as a prepared statement.
async fn query(
    client: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &str,
) -> Result<Vec<Row>, StoreError> {
    let statement = prepared(client, sql, context).await?;
    client
        .query(&statement, params)
        .await
        .map_err(|e| err(context, e))
}

impl Ledger {
    /// Connect as `options` say and create the schema if it is missing.
    pub async fn connect(url: &str, options: LedgerOptions) -> Result<Ledger, StoreError> {
        let tls = super::database_tls::database_tls(url)?;
        let mut config = tokio_postgres::Config::from_str(&tls.url)
            .map_err(|e| StoreError::refused("database URL", e))?;
        if let Some(mode) = tls.mode {
            config.ssl_mode(mode);
        }
        // Every prepared statement here is a key lookup whose best plan does not depend on
        // the values; left to choose, PostgreSQL plans the catch-up read afresh on every
        // claim (its generic estimate of `seq > $2` is a third of the scope), which costs
        // more than running it.
        let plan = match config.get_options() {
            Some(given) => format!("{given} -c plan_cache_mode=force_generic_plan"),
            None => "-c plan_cache_mode=force_generic_plan".to_owned(),
        };
        config.options(plan);
        config.connect_timeout(options.connect_timeout);
        let manager = Manager::from_config(
            config,
            tls.connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.request_timeout))
            .build()
            .map_err(|e| StoreError::refused("database pool", e))?;
        let ledger = Ledger {
            pool,
            deadline: options.request_timeout,
        };
        let client = ledger.client().await?;
        // A ledger already at this schema is not touched: even DDL that finds everything in
        // place takes locks, and would wait behind any writer's transaction.
        if schema_version(&client).await? >= SCHEMA_VERSION {
            return Ok(ledger);
        }
        let schema = [
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_on_demand.sql"),
            include_str!("../../migrations/postgres/0003_tickets.sql"),
        ]
        .concat();
        // Bounded like the mark: a transaction that holds the ledger's tables (or another
        // node's migration) stalled for ever makes the start fail saying so, not hang.
        client
            .batch_execute(&format!("SET lock_timeout = '{}s'", LOCK_TIMEOUT.as_secs()))
            .await
            .map_err(|e| err("cannot set the lock timeout", e))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| {
                err(
                    "cannot create the schema (another node's migration did not end)",
                    e,
                )
            })?;
        let made = client.batch_execute(&schema).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| err("schema lock", e))?;
        made.map_err(|e| {
            err(
                "cannot create the schema (a transaction holds the ledger's tables)",
                e,
            )
        })?;
        client
            .batch_execute("RESET lock_timeout")
            .await
            .map_err(|e| err("cannot reset the lock timeout", e))?;
        Ok(ledger)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e)
            | deadpool_postgres::PoolError::PostCreateHook(
                deadpool_postgres::HookError::Backend(e),
            ) => err("cannot reach the database", e),
            deadpool_postgres::PoolError::Timeout(_) => StoreError::unavailable(
                "cannot reach the database",
                "no connection free or made in time",
            ),
            other => StoreError::unavailable("cannot reach the database", other),
        })
    }

    /// How long one piece of a request's work may take (see [`LedgerOptions`]).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Whether the database answers now, within the request deadline (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(self.deadline, "cannot reach the database", async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| err("cannot reach the database", e))?;
            Ok(())
        })
        .await
    }

    /// What a node reads at start: every directory entry, and the entries of other
    /// scopes that file a report (every node lists every report), each scope in order.
    /// No conversation is read: a node reads one when it first needs it.
    pub async fn start_up(&self) -> Result<Vec<Entry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT scope, seq, changes, emits FROM entries \
                 WHERE scope = $1 OR reports ORDER BY scope <> $1, scope, seq",
                &[&DIRECTORY],
            )
            .await
            .map_err(|e| err("cannot read the directory", e))?;
        rows_to_entries(rows)
    }

    /// Mark this node's start in the ledger: the number the next entry written gets.
    /// An entry numbered before it was committed before the mark was taken (the table
    /// lock waits for every write in progress), so this node, not yet serving, owes
    /// nobody its frames; one numbered since is delivered to its sessions.
    pub async fn mark(&self) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| err("cannot mark the start", e))?;
        let lock = format!(
            "SET LOCAL lock_timeout = '{}s'; LOCK TABLE entries IN SHARE MODE",
            LOCK_TIMEOUT.as_secs()
        );
        tx.batch_execute(&lock)
            .await
            .map_err(|e| err("cannot mark the start (writes in progress did not end)", e))?;
        let row = tx
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END \
                 FROM entries_id_seq",
                &[],
            )
            .await
            .map_err(|e| err("cannot mark the start", e))?;
        tx.commit()
            .await
            .map_err(|e| err("cannot mark the start", e))?;
        Ok(row.get(0))
    }

    /// The position of `scope` as of `mark` (see [`Ledger::mark`]): this node delivers
    /// only the entries after it.
    pub async fn position_at(&self, scope: &str, mark: i64) -> Result<u64, StoreError> {
        bounded(self.deadline, "cannot read a position", async {
            let client = self.client().await?;
            let rows = query(
                &client,
                BEFORE_MARK,
                &[&scope, &mark],
                "cannot read a position",
            )
            .await?;
            Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
        .await
    }

    /// The conversations `user` takes part in.
    pub async fn conversations_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        bounded(self.deadline, "cannot read a user's conversations", async {
            let client = self.client().await?;
            let rows = query(
                &client,
                "SELECT scope FROM members WHERE user_id = $1 ORDER BY scope",
                &[&user],
                "cannot read a user's conversations",
            )
            .await?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    /// Entries of `scope` after position `after`, in order.
    pub async fn entries(&self, scope: &str, after: u64) -> Result<Vec<Entry>, StoreError> {
        bounded(self.deadline, "cannot read entries", async {
            let client = self.client().await?;
            let rows = query(
                &client,
                ENTRIES_AFTER,
                &[&scope, &(after as i64)],
                "cannot read entries",
            )
            .await?;
            rows_to_entries(rows)
        })
        .await
    }

    /// The committed position of each scope given (scopes never written are left out).
    pub async fn positions(&self, scopes: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        bounded(self.deadline, "cannot read positions", async {
            let client = self.client().await?;
            let rows = query(
                &client,
                "SELECT id, seq FROM scopes WHERE id = ANY($1) AND seq > 0",
                &[&scopes],
                "cannot read positions",
            )
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
        .await
    }

    /// Scopes written in the last `seconds`, with their positions.
    pub async fn recently_touched(&self, seconds: f64) -> Result<Vec<(String, u64)>, StoreError> {
        bounded(self.deadline, "cannot read recent writes", async {
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(StoreError::refused(
                    format!("not a window in seconds: {seconds}"),
                    "",
                ));
            }
            let client = self.client().await?;
            // A simple query is planned with `now()` known, so the index on `touched` is used
            // however many scopes there are; a generic plan could not know the cut-off.
            let messages = client
                .simple_query(&format!(
                    "SELECT id, seq FROM scopes \
                     WHERE touched > now() - make_interval(secs => {seconds}) AND seq > 0"
                ))
                .await
                .map_err(|e| err("cannot read positions", e))?;
            messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
                    _ => None,
                })
                .map(
                    |row| match (row.get(0), row.get(1).and_then(|s| s.parse().ok())) {
                        (Some(id), Some(seq)) => Ok((id.to_owned(), seq)),
                        _ => Err(StoreError::corrupt("corrupt scope position", "")),
                    },
                )
                .collect()
        })
        .await
    }

    /// Record that the ticket `jti` (valid until `expires`, Unix seconds) was redeemed:
    /// `true` the first time any node asks, `false` after.
    pub async fn redeem_ticket(&self, jti: &str, expires: u64) -> Result<bool, StoreError> {
        let context = "cannot record a ticket";
        bounded(self.deadline, context, async {
            let client = self.client().await?;
            let expires = expires as f64;
            let rows = query(&client, REDEEM_TICKET, &[&jti, &expires], context).await?;
            Ok(!rows.is_empty())
        })
        .await
    }

    /// Messages `user` sent after `since` (Unix ms), on any node.
    pub async fn sent_since(&self, user: &str, since: i64) -> Result<u32, StoreError> {
        bounded(self.deadline, "cannot count sends", async {
            let client = self.client().await?;
            let rows = query(
                &client,
                "SELECT count(*) FROM entries WHERE sender = $1 AND at > $2",
                &[&user, &since],
                "cannot count sends",
            )
            .await?;
            let count = rows.first().map_or(0, |r| r.get::<_, i64>(0));
            Ok(count as u32)
        })
        .await
    }

    /// Lock `scope` for a decision across every node, and read what this node has not
    /// applied yet: the scope's entries after `after` and the directory's after
    /// `directory_after`. The lock is held until the claim is committed or released.
    pub async fn claim(
        &self,
        scope: &str,
        after: u64,
        directory_after: u64,
    ) -> Result<Claim, StoreError> {
        // A claim cut short by the deadline is dropped with its connection: its `Drop`
        // rolls the transaction back (or closes the connection).
        let deadline = self.deadline;
        bounded(deadline, "cannot lock scope", async {
            self.claim_within(scope, after, directory_after).await
        })
        .await
    }

    async fn claim_within(
        &self,
        scope: &str,
        after: u64,
        directory_after: u64,
    ) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        let lock = prepared(&client, LOCK_SCOPE, "cannot lock scope").await?;
        let conversation = scope != DIRECTORY;
        let read_sql = if conversation {
            CATCH_UP
        } else {
            ENTRIES_AFTER
        };
        let read = prepared(&client, read_sql, "cannot read entries").await?;
        let begin = prepared(&client, BEGIN, "cannot begin").await?;
        let mut claim = Claim {
            client: Some(client),
            deadline: self.deadline,
            scope: scope.to_owned(),
            seq: 0,
            missed: Vec::new(),
            directory_missed: Vec::new(),
        };
        let c = claim.client.as_ref().expect("just set");
        let after = after as i64;
        let directory_after = directory_after as i64;
        let catch_up: Vec<&(dyn ToSql + Sync)> = if conversation {
            vec![&scope, &after, &DIRECTORY, &directory_after]
        } else {
            vec![&scope, &after]
        };
        // One round trip: the three are sent together and run in this order.
        let (begun, locked, read_rows) = join3(
            c.execute(&begin, &[]),
            c.query_opt(&lock, &[&scope]),
            c.query(&read, &catch_up),
        )
        .await;
        // In the order they ran: a failure aborts the transaction, and what follows it
        // only reports that.
        begun.map_err(|e| err("cannot begin", e))?;
        let locked = locked.map_err(|e| err("cannot lock scope", e))?;
        let mut rows = read_rows.map_err(|e| err("cannot read entries", e))?;
        match locked {
            Some(row) => claim.seq = row.get::<_, i64>(0) as u64,
            None => {
                // A scope's first claim: the read above ran without the lock, so another
                // node may have created and written the scope since.
                let row = query(c, CREATE_SCOPE, &[&scope], "cannot lock scope").await?;
                claim.seq = row.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
                rows = query(c, read_sql, &catch_up, "cannot read entries").await?;
            }
        }
        for entry in rows_to_entries(rows)? {
            if entry.scope == scope {
                claim.missed.push(entry);
            } else {
                claim.directory_missed.push(entry);
            }
        }
        Ok(claim)
    }
}

/// A scope locked across nodes for one decision.
pub struct Claim {
    /// Inside its transaction until committed; a claim dropped with it rolls it back.
    client: Option<Object>,
    deadline: Duration,
    scope: String,
    /// The scope's position when it was locked: the entry committed next is `seq + 1`.
    pub seq: u64,
    /// Entries of the scope other nodes committed that this node had not applied.
    pub missed: Vec<Entry>,
    /// Directory entries this node had not applied.
    pub directory_missed: Vec<Entry>,
}

impl Claim {
    /// Append the decision as the scope's next entry, purge what it removes, commit and
    /// release the lock; returns the entry as numbered by the database. A commit the
    /// database does not answer in time is an error although it may have been stored:
    /// the next claim of the scope reads it back like any missed entry, and a retry of
    /// the request finds its id there.
    pub async fn commit(mut self, changes: &[Change], emits: &[Emit]) -> Result<u64, StoreError> {
        let deadline = self.deadline;
        let seq = bounded(deadline, "cannot commit", self.write(changes, emits)).await?;
        // Committed: the connection goes back to the pool as it is.
        drop(self.client.take());
        Ok(seq)
    }

    /// The commit's statements; on an error the claim still holds its connection, and
    /// its `Drop` rolls back.
    async fn write(&self, changes: &[Change], emits: &[Emit]) -> Result<u64, StoreError> {
        let client = self.client.as_ref().expect("a claim commits once");
        let append = prepared(client, APPEND, "cannot write entry").await?;
        let commit = prepared(client, COMMIT, "cannot commit").await?;
        let text = serde_json::to_string(changes).expect("changes serialise");
        let frames = serde_json::to_string(emits).expect("frames serialise");
        let (message, sender, at) = match stored_message(changes) {
            Some((m, s, a)) => (Some(m), Some(s), Some(a)),
            None => (None, None, None),
        };
        let reports = changes.iter().any(|c| matches!(c, Change::Reported { .. }));
        let params: [&(dyn ToSql + Sync); 7] = [
            &self.scope,
            &text,
            &frames,
            &message,
            &sender,
            &at,
            &reports,
        ];
        let members = created_members(changes);
        let mut purges = purged_messages(changes).peekable();
        if purges.peek().is_none() && members.is_empty() {
            // One round trip. Should the append fail, the transaction is aborted and the
            // pipelined COMMIT only rolls it back.
            let (appended, committed) = futures::join!(
                client.query_one(&append, &params),
                client.batch_execute("COMMIT")
            );
            let seq: i64 = appended.map_err(|e| err("cannot write entry", e))?.get(0);
            committed.map_err(|e| err("cannot commit", e))?;
            return Ok(seq as u64);
        }
        let seq: i64 = client
            .query_one(&append, &params)
            .await
            .map_err(|e| err("cannot write entry", e))?
            .get(0);
        if !members.is_empty() {
            query(
                client,
                ADD_MEMBERS,
                &[&members, &self.scope],
                "cannot write members",
            )
            .await?;
        }
        for (message, recalled) in purges {
            purge(client, message, recalled).await?;
        }
        client
            .execute(&commit, &[])
            .await
            .map_err(|e| err("cannot commit", e))?;
        Ok(seq as u64)
    }

    /// Give the lock back without writing anything.
    pub async fn release(mut self) {
        if let Some(client) = self.client.take() {
            roll_back(client, self.deadline).await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A claim dropped mid-way (an error, a cancelled task) must not return its
        // connection to the pool inside an open transaction.
        if let Some(client) = self.client.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(roll_back(client, self.deadline));
            }
        }
    }
}

/// The participants of a conversation the changes create (none when they create none).
fn created_members(changes: &[Change]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::ConversationCreated { conversation, .. } => Some(&conversation.participants),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Rewrite the entry that stored `message` without its body, in its changes and frames.
async fn purge(client: &Object, message: &str, recalled: bool) -> Result<(), StoreError> {
    let rows = query(
        client,
        FIND_STORED,
        &[&message],
        "cannot find message to purge",
    )
    .await?;
    for row in rows {
        let (scope, seq, text): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        let mut changes: Vec<Change> =
            serde_json::from_str(&text).map_err(|e| corrupt("corrupt entry", e))?;
        for change in &mut changes {
            if let Change::MessageStored { message: m, .. } = change {
                if m.id == message {
                    m.body = None;
                }
            }
        }
        let text = serde_json::to_string(&changes).expect("changes serialise");
        let frames = match row.get::<_, Option<&str>>(3) {
            Some(t) => {
                let mut emits: Vec<Emit> =
                    serde_json::from_str(t).map_err(|e| corrupt("corrupt entry", e))?;
                purge_frames(&mut emits, message, recalled);
                Some(serde_json::to_string(&emits).expect("frames serialise"))
            }
            None => None,
        };
        query(
            client,
            REWRITE,
            &[&scope, &seq, &text, &frames],
            "cannot purge",
        )
        .await?;
    }
    Ok(())
}
