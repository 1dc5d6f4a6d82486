//! `parley-load browse`: users coming back to a long history (a seeded one, say). Each
//! user connects, syncs (its inbox), opens one page of history in its latest conversation
//! and syncs again with positions: up to date in every conversation but that one, where
//! it starts some changes back, as a device that missed them would. Every request is timed from send to answer, and the server's memory
//! is read before and after, so the figures show what the history costs a server that
//! must hold only its working set.

use crate::stats::{self, Hist, Percentiles};
use anyhow::{bail, Context};
use parley_protocol::{AckResult, Op, Request, ServerFrame};
use parley_testkit::Session;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to browse.
#[derive(clap::Args, Debug, Clone)]
pub struct BrowseArgs {
    /// The server, as `host:port` on loopback.
    #[arg(long)]
    pub target: std::net::SocketAddr,
    /// The secret the server signs tokens with.
    #[arg(long)]
    pub secret: String,
    /// Users `u0` … `u{N-1}` (the names `parley-load seed` gives), each browsing once.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Users browsing at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Messages in the history page.
    #[arg(long, default_value_t = 50)]
    pub page: u32,
    /// How far back the second sync starts, in positions.
    #[arg(long, default_value_t = 100)]
    pub missed: u64,
    /// The server's process id, to read its memory before and after.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Latencies of each kind of request.
#[derive(Default)]
struct Timings {
    inbox: Option<Hist>,
    history: Option<Hist>,
    missed: Option<Hist>,
}

/// What a browse run measured.
#[derive(Serialize)]
struct Report {
    users: u32,
    failed_users: u32,
    /// `sync` without positions: the inbox, notifications and relations.
    inbox_sync: Percentiles,
    /// One page of `history` in the latest conversation.
    history_page: Percentiles,
    /// `sync` with positions: `missed` back in that conversation, current elsewhere.
    missed_sync: Percentiles,
    /// Changes the missed syncs returned, on average.
    missed_changes_mean: f64,
    rss_before_bytes: Option<u64>,
    rss_after_bytes: Option<u64>,
    seconds: f64,
}

/// Run the scenario and print its report (JSON) on stdout.
pub async fn run(args: BrowseArgs) -> anyhow::Result<()> {
    if !args.target.ip().is_loopback() {
        bail!("browse targets loopback addresses only");
    }
    let rss_before = args.pid.and_then(rss);
    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let timings = Arc::new(Mutex::new(Timings::default()));
    let changes = Arc::new(Mutex::new((0u64, 0u64)));
    let failed = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (args, next, timings) = (args.clone(), next.clone(), timings.clone());
        let (changes, failed) = (changes.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.users {
                    return;
                }
                match browse(&args, &format!("u{n}")).await {
                    Ok(user) => user.record(&timings, &changes),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("u{n}: {e:#}");
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let t = std::mem::take(&mut *timings.lock().unwrap());
    let (sum, count) = *changes.lock().unwrap();
    let of = |h: &Option<Hist>| h.as_ref().map(Percentiles::of).unwrap_or_default();
    let report = Report {
        users: args.users,
        failed_users: failed.load(Ordering::Relaxed),
        inbox_sync: of(&t.inbox),
        history_page: of(&t.history),
        missed_sync: of(&t.missed),
        missed_changes_mean: sum as f64 / count.max(1) as f64,
        rss_before_bytes: rss_before,
        rss_after_bytes: args.pid.and_then(rss),
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// One user's three requests.
struct Browsed {
    inbox: Duration,
    history: Option<Duration>,
    missed: Option<(Duration, u64)>,
}

impl Browsed {
    fn record(&self, timings: &Mutex<Timings>, changes: &Mutex<(u64, u64)>) {
        let mut t = timings.lock().unwrap();
        let add = |h: &mut Option<Hist>, d: Duration| {
            h.get_or_insert_with(stats::hist)
                .saturating_record(d.as_micros() as u64)
        };
        add(&mut t.inbox, self.inbox);
        if let Some(d) = self.history {
            add(&mut t.history, d);
        }
        if let Some((d, n)) = self.missed {
            add(&mut t.missed, d);
            let mut c = changes.lock().unwrap();
            *c = (c.0 + n, c.1 + 1);
        }
    }
}

async fn browse(args: &BrowseArgs, user: &str) -> anyhow::Result<Browsed> {
    let token = parley::auth::mint(
        args.secret.as_bytes(),
        user,
        false,
        Duration::from_secs(600),
    );
    let url = format!("ws://{}/ws?token={token}", args.target);
    let mut ws = Session::open(&url).await.context("connect")?;
    let (inbox, answer) = ask(&mut ws, Op::Sync { positions: None }).await?;
    let AckResult::Sync { inbox: rows, .. } = answer else {
        bail!("sync answered {answer:?}");
    };
    let mut browsed = Browsed {
        inbox,
        history: None,
        missed: None,
    };
    if let Some(latest) = rows.first() {
        let conversation = latest.conversation.id.clone();
        let history = Op::History {
            conversation: conversation.clone(),
            before: None,
            limit: Some(args.page),
        };
        browsed.history = Some(ask(&mut ws, history).await?.0);
        // A device up to date everywhere but `missed` positions back in this one.
        let mut positions: BTreeMap<String, u64> = rows
            .iter()
            .map(|r| {
                (
                    r.conversation.id.clone(),
                    r.last_message.as_ref().map_or(0, |m| m.seq),
                )
            })
            .collect();
        let last = positions.get(&conversation).copied().unwrap_or(0);
        positions.insert(conversation, last.saturating_sub(args.missed));
        let (took, answer) = ask(
            &mut ws,
            Op::Sync {
                positions: Some(positions),
            },
        )
        .await?;
        let AckResult::Sync { updates, .. } = answer else {
            bail!("sync answered {answer:?}");
        };
        let frames = updates.iter().map(|u| u.frames.len() as u64).sum();
        browsed.missed = Some((took, frames));
    }
    ws.close(tokio::time::Instant::now() + Duration::from_secs(2))
        .await;
    Ok(browsed)
}

/// Send `op` and wait for its answer, skipping other frames; how long it took.
async fn ask(ws: &mut Session, op: Op) -> anyhow::Result<(Duration, AckResult)> {
    let id = uuid::Uuid::new_v4().to_string();
    let request = serde_json::to_value(Request { id, op })?;
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = ws.request(&request, deadline).await?;
    let took = sent.elapsed();
    match serde_json::from_value::<ServerFrame>(answer)? {
        ServerFrame::Ack { result, .. } => Ok((took, result)),
        ServerFrame::Error { code, message, .. } => bail!("{code:?}: {message}"),
        other => bail!("answered by a {} frame", other.kind()),
    }
}

fn rss(pid: u32) -> Option<u64> {
    crate::sampling::kb_field(pid, "status", "VmRSS:")
}
