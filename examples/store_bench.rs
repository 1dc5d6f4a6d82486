//! Acknowledged commits per second through the `Store` trait, as the hub drives it: many
//! concurrent tasks, each committing one stored message at a time and waiting for the
//! acknowledgement before the next.
//!
//! ```text
//! cargo run --release --example store_bench -- --durability fsync --clients 64 --commits 20000
//! ```

use clap::Parser;
use parley::core::Change;
use parley::store::{Durability, MemoryStore, SqliteOptions, SqliteStore, Store};
use parley_protocol::{MessageKind, MessageState, MessageView};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which store to measure.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    /// SQLite, `synchronous = FULL`.
    Fsync,
    /// SQLite, `synchronous = NORMAL`.
    Os,
    /// The in-memory store.
    Memory,
}

#[derive(Parser)]
struct Args {
    /// Store and durability to measure.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Kind,
    /// Concurrent committers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Commits in all.
    #[arg(long, default_value_t = 20_000)]
    commits: usize,
    /// Characters per message body.
    #[arg(long, default_value_t = 200)]
    body: usize,
    /// Data directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The conversation client `client` writes into, with its two users.
fn conversation(client: usize) -> Vec<Change> {
    let users = [format!("user-{client}"), format!("peer-{client}")];
    let mut changes: Vec<Change> = users
        .iter()
        .map(|u| Change::UserCreated { user: u.clone() })
        .collect();
    changes.push(Change::ConversationCreated {
        conversation: parley_protocol::ConversationView {
            id: format!("c-{client}"),
            kind: parley_protocol::ConversationKind::Direct,
            participants: users.to_vec(),
            title: None,
        },
        at: 1_700_000_000_000,
    });
    changes
}

fn message(client: usize, n: usize, body: &str) -> Change {
    Change::MessageStored {
        message: MessageView {
            id: format!("m-{client}-{n}"),
            conversation: format!("c-{client}"),
            seq: n as u64 + 1,
            sender: format!("user-{client}"),
            // Now, as a live send: its request id is kept like one.
            sent_at: now_ms() + n as i64,
            kind: MessageKind::Message,
            state: MessageState::Visible,
            body: Some(body.to_owned()),
            reply_to: None,
            to: None,
            cc: vec![],
            recall_until: Some(now_ms() + 120_000 + n as i64),
            delete_until: None,
        },
        client_id: format!("req-{client}-{n}"),
        offline: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().join("data"));
    let mut sqlite = None;
    let store: Arc<dyn Store> = match args.durability {
        Kind::Memory => Arc::new(MemoryStore::default()),
        Kind::Fsync | Kind::Os => {
            let durability = match args.durability {
                Kind::Os => Durability::Os,
                _ => Durability::Fsync,
            };
            let options = SqliteOptions {
                durability,
                ..SqliteOptions::default()
            };
            let store = Arc::new(SqliteStore::open(&dir, options)?);
            sqlite = Some(store.clone());
            store
        }
    };
    for client in 0..args.clients {
        store.commit(conversation(client)).await?;
    }
    let before = sqlite.as_ref().map_or(0, |s| s.transactions());
    let body = "x".repeat(args.body);
    let per_client = args.commits.div_ceil(args.clients.max(1));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let store = store.clone();
            let body = body.clone();
            let count = per_client.min(args.commits.saturating_sub(client * per_client));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for n in 0..count {
                    let t = Instant::now();
                    store.commit(vec![message(client, n, &body)]).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.commits);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let acked = latencies.len();
    let transactions = sqlite.as_ref().map(|s| s.transactions() - before);
    let grouping = transactions.map_or(String::new(), |t| {
        format!(
            " transactions={t} commits_per_transaction={:.1}",
            acked as f64 / t.max(1) as f64
        )
    });
    println!(
        "store={} clients={} commits={acked} elapsed={:.2}s acked_commits_per_s={:.0} \
         p50={:.2}ms p99={:.2}ms{grouping}",
        match args.durability {
            Kind::Fsync => "sqlite-fsync",
            Kind::Os => "sqlite-os",
            Kind::Memory => "memory",
        },
        args.clients,
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    );
    Ok(())
}
