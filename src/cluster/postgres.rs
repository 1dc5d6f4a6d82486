//! The shared ledger in PostgreSQL: scope row locks, per-scope numbering, catch-up reads.

use super::{purge_frames, purged_messages, stored_message, Entry, DIRECTORY};
use crate::core::{Change, Emit};
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::NoTls;

/// Serialises schema set-up when several nodes start at once.
const MIGRATION_LOCK: i64 = 0x7061_726c_6579;

fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

/// A connection pool to the cluster's database.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
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
        changes: serde_json::from_str(changes).map_err(|e| err("corrupt entry", e))?,
        emits: match emits {
            Some(text) => serde_json::from_str(text).map_err(|e| err("corrupt entry", e))?,
            None => Vec::new(),
        },
    })
}

fn rows_to_entries(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Entry>, StoreError> {
    rows.into_iter()
        .map(|r| decode_entry(r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

impl Ledger {
    /// Connect with up to `pool_size` connections and create the schema if it is missing.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Ledger, StoreError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| err("database URL", e))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .build()
            .map_err(|e| err("database pool", e))?;
        let ledger = Ledger { pool };
        let client = ledger.client().await?;
        let schema = include_str!("../../migrations/postgres/0001_init.sql");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| err("schema lock", e))?;
        let made = client.batch_execute(schema).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| err("schema lock", e))?;
        made.map_err(|e| err("cannot create the schema", e))?;
        Ok(ledger)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| err("cannot reach the database", e))
    }

    /// Every entry, the directory's first, then each conversation's in order.
    pub async fn load(&self) -> Result<Vec<Entry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT scope, seq, changes, emits FROM entries \
                 ORDER BY scope <> $1, scope, seq",
                &[&DIRECTORY],
            )
            .await
            .map_err(|e| err("cannot load entries", e))?;
        rows_to_entries(rows)
    }

    /// Entries of `scope` after position `after`, in order.
    pub async fn entries(&self, scope: &str, after: u64) -> Result<Vec<Entry>, StoreError> {
        let client = self.client().await?;
        entries_after(&client, scope, after).await
    }

    /// The committed position of each scope given (scopes never written are left out).
    pub async fn positions(&self, scopes: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, seq FROM scopes WHERE id = ANY($1) AND seq > 0",
                &[&scopes],
            )
            .await
            .map_err(|e| err("cannot read positions", e))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Scopes written in the last `seconds`, with their positions.
    pub async fn recently_touched(&self, seconds: f64) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, seq FROM scopes \
                 WHERE touched > now() - make_interval(secs => $1) AND seq > 0",
                &[&seconds],
            )
            .await
            .map_err(|e| err("cannot read positions", e))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Messages `user` sent after `since` (Unix ms), on any node.
    pub async fn sent_since(&self, user: &str, since: i64) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM entries WHERE sender = $1 AND at > $2",
                &[&user, &since],
            )
            .await
            .map_err(|e| err("cannot count sends", e))?;
        Ok(row.get::<_, i64>(0) as u32)
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
        let client = self.client().await?;
        let mut claim = Claim {
            client: Some(client),
            scope: scope.to_owned(),
            seq: 0,
            missed: Vec::new(),
            directory_missed: Vec::new(),
        };
        let c = claim.client.as_ref().expect("just set");
        c.batch_execute("BEGIN")
            .await
            .map_err(|e| err("cannot begin", e))?;
        // The upsert both creates a scope on first use and takes its row lock.
        let row = c
            .query_one(
                "INSERT INTO scopes (id) VALUES ($1) \
                 ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING seq",
                &[&scope],
            )
            .await
            .map_err(|e| err("cannot lock scope", e))?;
        let seq = row.get::<_, i64>(0) as u64;
        claim.seq = seq;
        if seq > after {
            claim.missed = entries_after(c, scope, after).await?;
        }
        if scope != DIRECTORY {
            let dir = c
                .query_opt("SELECT seq FROM scopes WHERE id = $1", &[&DIRECTORY])
                .await
                .map_err(|e| err("cannot read the directory position", e))?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
            if dir > directory_after {
                claim.directory_missed = entries_after(c, DIRECTORY, directory_after).await?;
            }
        }
        Ok(claim)
    }
}

async fn entries_after(client: &Object, scope: &str, after: u64) -> Result<Vec<Entry>, StoreError> {
    let rows = client
        .query(
            "SELECT scope, seq, changes, emits FROM entries \
             WHERE scope = $1 AND seq > $2 ORDER BY seq",
            &[&scope, &(after as i64)],
        )
        .await
        .map_err(|e| err("cannot read entries", e))?;
    rows_to_entries(rows)
}

/// A scope locked across nodes for one decision.
pub struct Claim {
    client: Option<Object>,
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
    /// release the lock; returns the entry as numbered by the database.
    pub async fn commit(mut self, changes: &[Change], emits: &[Emit]) -> Result<u64, StoreError> {
        let client = self.client.take().expect("a claim commits once");
        let row = client
            .query_one(
                "UPDATE scopes SET seq = seq + 1, touched = now() WHERE id = $1 RETURNING seq",
                &[&self.scope],
            )
            .await
            .map_err(|e| err("cannot number entry", e))?;
        let seq: i64 = row.get(0);
        let text = serde_json::to_string(changes).expect("changes serialise");
        let frames = serde_json::to_string(emits).expect("frames serialise");
        let (message, sender, at) = match stored_message(changes) {
            Some((m, s, a)) => (Some(m), Some(s), Some(a)),
            None => (None, None, None),
        };
        client
            .execute(
                "INSERT INTO entries (scope, seq, changes, emits, message, sender, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&self.scope, &seq, &text, &frames, &message, &sender, &at],
            )
            .await
            .map_err(|e| err("cannot write entry", e))?;
        for (message, recalled) in purged_messages(changes) {
            purge(&client, message, recalled).await?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| err("cannot commit", e))?;
        Ok(seq as u64)
    }

    /// Give the lock back without writing anything.
    pub async fn release(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A claim dropped mid-way (an error, a cancelled task) must not return its
        // connection to the pool inside an open transaction.
        if let Some(client) = self.client.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = client.batch_execute("ROLLBACK").await;
                });
            }
        }
    }
}

/// Rewrite the entry that stored `message` without its body, in its changes and frames.
async fn purge(client: &Object, message: &str, recalled: bool) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT scope, seq, changes, emits FROM entries WHERE message = $1",
            &[&message],
        )
        .await
        .map_err(|e| err("cannot find message to purge", e))?;
    for row in rows {
        let (scope, seq, text): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        let mut changes: Vec<Change> =
            serde_json::from_str(&text).map_err(|e| err("corrupt entry", e))?;
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
                    serde_json::from_str(t).map_err(|e| err("corrupt entry", e))?;
                purge_frames(&mut emits, message, recalled);
                Some(serde_json::to_string(&emits).expect("frames serialise"))
            }
            None => None,
        };
        client
            .execute(
                "UPDATE entries SET changes = $3, emits = $4 WHERE scope = $1 AND seq = $2",
                &[&scope, &seq, &text, &frames],
            )
            .await
            .map_err(|e| err("cannot purge", e))?;
    }
    Ok(())
}
