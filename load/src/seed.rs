//! `parley-load seed`: a realistic history written straight into a data directory, so
//! large-history figures take minutes, not hours of traffic through the wire.
//!
//! The history is made of the very changes the server commits and goes through the
//! server's own stored form. Most conversations are small direct ones, a few groups are
//! very large (conversation sizes follow a Zipf-like law); among the messages are read
//! receipts, recalls and delete-for-me tombstones. It all lies in the past year and ends
//! a day ago, so no recall window is still open. A seeded run is deterministic.

use anyhow::Context;
use parley::core::{ids, Change};
use parley::store::SqliteStore;
use parley_protocol::{
    ConnectionState, ConversationKind, ConversationView, MessageKind, MessageState, MessageView,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Changes per transaction.
const BATCH: usize = 50_000;
/// Share of conversations that are groups.
const GROUP_SHARE: f64 = 0.05;
/// How much more often the busiest conversations are chosen (Zipf exponent).
const SKEW: f64 = 0.9;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What to seed.
#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    /// The data directory to write into (as `parley serve --data`); created when missing.
    #[arg(long)]
    pub data: PathBuf,
    /// Messages in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Conversations (about 5% of them groups of 3 to 50).
    #[arg(long, default_value_t = 50_000)]
    pub conversations: u32,
    /// Random seed: the same seed writes the same history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One seeded conversation, as far as the generator must follow it.
struct Seeded {
    id: String,
    members: Vec<u32>,
    /// Last position (messages and state changes share it).
    pos: u64,
    /// Read position per member, in `members` order.
    read: Vec<u64>,
    /// Last message id, for recalls and tombstones.
    last: Option<(String, u64, u32)>,
}

fn user(n: u32) -> String {
    format!("u{n}")
}

/// Write the history; prints what it wrote and how long it took.
pub fn run(args: SeedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.users >= 3, "--users must be at least 3");
    anyhow::ensure!(
        args.conversations >= 1,
        "--conversations must be at least 1"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut out: Vec<Change> = (0..args.users)
        .map(|u| Change::UserCreated { user: user(u) })
        .collect();
    let (mut conversations, relations) = open_conversations(&args, &mut rng, &mut out);
    flush(&args, &mut out)?;
    let weights = cumulative_weights(conversations.len());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let (first, last) = (now - 366 * DAY_MS, now - DAY_MS);
    let step = ((last - first) / args.messages.max(1) as i64).max(1);
    for n in 0..args.messages {
        let total = *weights.last().expect("one conversation at least");
        let pick = rng.random_range(0.0..total);
        let c = &mut conversations[weights
            .partition_point(|w| *w <= pick)
            .min(weights.len() - 1)];
        message(c, n, first + n as i64 * step, &mut rng, &mut out);
        if out.len() >= BATCH {
            flush(&args, &mut out)?;
        }
    }
    flush(&args, &mut out)?;
    println!(
        "seeded {} messages in {} conversations among {} users ({} connections) into {} in {:.1} s",
        args.messages,
        conversations.len(),
        args.users,
        relations,
        args.data.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Make the conversations (and the connections direct messages and groups need).
fn open_conversations(
    args: &SeedArgs,
    rng: &mut StdRng,
    out: &mut Vec<Change>,
) -> (Vec<Seeded>, usize) {
    let mut connected: HashSet<(u32, u32)> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut conversations = Vec::with_capacity(args.conversations as usize);
    let mut connect = |a: u32, b: u32, out: &mut Vec<Change>| {
        let pair = (a.min(b), a.max(b));
        if a != b && connected.insert(pair) {
            out.push(Change::Relation {
                from: user(pair.0),
                to: user(pair.1),
                state: ConnectionState::Connected,
            });
        }
    };
    for i in 0..args.conversations {
        let group = rng.random_bool(GROUP_SHARE);
        let creator = rng.random_range(0..args.users);
        let (kind, id, members) = if group {
            let size = rng.random_range(3..=50u32.min(args.users));
            let mut members = vec![creator];
            while members.len() < size as usize {
                let m = rng.random_range(0..args.users);
                if !members.contains(&m) {
                    members.push(m);
                }
            }
            let id = ids::group(&user(creator), &format!("seed-{i}"));
            (ConversationKind::Group, id, members)
        } else {
            let other = (creator + rng.random_range(1..args.users)) % args.users;
            let id = ids::direct(&user(creator), &user(other));
            (ConversationKind::Direct, id, vec![creator, other])
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        for m in &members[1..] {
            connect(members[0], *m, out);
        }
        out.push(Change::ConversationCreated {
            conversation: ConversationView {
                id: id.clone(),
                kind,
                participants: members.iter().map(|m| user(*m)).collect(),
                title: group.then(|| format!("group {i}")),
            },
            at: 0,
        });
        let read = vec![0; members.len()];
        conversations.push(Seeded {
            id,
            members,
            pos: 0,
            read,
            last: None,
        });
    }
    (conversations, connected.len())
}

/// Cumulative Zipf-like weights: conversation `i` is chosen in proportion to 1/(i+1)^SKEW.
fn cumulative_weights(n: usize) -> Vec<f64> {
    let mut total = 0.0;
    (0..n)
        .map(|i| {
            total += 1.0 / ((i + 1) as f64).powf(SKEW);
            total
        })
        .collect()
}

/// One message, and now and then a read receipt, a recall or a tombstone after it.
fn message(c: &mut Seeded, n: u64, at: i64, rng: &mut StdRng, out: &mut Vec<Change>) {
    let from = rng.random_range(0..c.members.len());
    c.pos += 1;
    let seq = c.pos;
    let id = format!("m-{}", uuid::Uuid::from_u128(rng.random::<u128>()).simple());
    let body: String = format!("seeded message {n:>12} ")
        .chars()
        .chain("lorem ipsum dolor sit amet consectetur adipiscing elit sed do".chars())
        .take(64)
        .collect();
    out.push(Change::MessageStored {
        message: MessageView {
            id: id.clone(),
            conversation: c.id.clone(),
            seq,
            sender: user(c.members[from]),
            sent_at: at,
            kind: MessageKind::Message,
            state: MessageState::Visible,
            body: Some(body),
            reply_to: None,
            to: None,
            cc: vec![],
            recall_until: None,
            delete_until: None,
        },
        client_id: format!("seed-{n}"),
        offline: None,
    });
    c.last = Some((id, seq, c.members[from]));
    let roll: f64 = rng.random();
    if roll < 0.01 {
        recall(c, at, out);
    } else if roll < 0.015 {
        tombstone(c, rng, out);
    } else if roll < 0.5 {
        receipt(c, rng, out);
    }
}

fn receipt(c: &mut Seeded, rng: &mut StdRng, out: &mut Vec<Change>) {
    let reader = rng.random_range(0..c.members.len());
    let Some((_, seq, sender)) = &c.last else {
        return;
    };
    if c.members[reader] == *sender || c.read[reader] >= *seq {
        return;
    }
    c.read[reader] = *seq;
    c.pos += 1;
    out.push(Change::ReadUpTo {
        conversation: c.id.clone(),
        user: user(c.members[reader]),
        seq: *seq,
    });
}

fn recall(c: &mut Seeded, at: i64, out: &mut Vec<Change>) {
    let Some((id, _, _)) = c.last.take() else {
        return;
    };
    c.pos += 1;
    out.push(Change::Recalled {
        conversation: c.id.clone(),
        message: id,
        at: at + 1_000,
    });
}

fn tombstone(c: &mut Seeded, rng: &mut StdRng, out: &mut Vec<Change>) {
    let Some((id, _, _)) = &c.last else { return };
    let who = rng.random_range(0..c.members.len());
    c.pos += 1;
    out.push(Change::DeletedForMe {
        conversation: c.id.clone(),
        user: user(c.members[who]),
        message: id.clone(),
    });
}

fn flush(args: &SeedArgs, out: &mut Vec<Change>) -> anyhow::Result<()> {
    SqliteStore::seed(&args.data, out)
        .with_context(|| format!("cannot seed {}", args.data.display()))?;
    out.clear();
    Ok(())
}
