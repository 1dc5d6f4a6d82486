//! Setting up one client process's groups: connect every session, wait for its greeting
//! and, for parley, make each group's users a conversation (connected first, then a group
//! or a direct conversation, muted unless asked otherwise).

use crate::args::{Scenario, Target};
use crate::client::{self, SetupSession};
use crate::spec::ShardSpec;
use crate::stats::{bump, note, Event, Shared};
use anyhow::Context;
use parley_protocol::{Op, Request};
use parley_testkit::Session;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// A group's open sessions, in slot order.
pub struct Opened {
    /// Conversation (parley) or room (baseline).
    pub key: String,
    /// The sessions.
    pub sessions: Vec<client::Ws>,
    /// The node of each session.
    pub nodes: Vec<usize>,
}

/// Set up every group of `spec`, in group order, reporting how many sessions are connected
/// every half second. For `connect`, a group that fails is left out (its sessions count as
/// failed); for the other scenarios it fails the set-up.
pub async fn open_all(
    spec: &Arc<ShardSpec>,
    shared: &Arc<Shared>,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Vec<Opened>> {
    let progress = {
        let (shared, events, shard) = (shared.clone(), events.clone(), spec.shard);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let connected = shared.connected.load(Ordering::Relaxed);
                if events.send(Event::Setup { shard, connected }).is_err() {
                    return;
                }
            }
        })
    };
    let opened = open_groups(spec, shared).await;
    progress.abort();
    opened
}

async fn open_groups(spec: &Arc<ShardSpec>, shared: &Arc<Shared>) -> anyhow::Result<Vec<Opened>> {
    let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let mut setups = tokio::task::JoinSet::new();
    for g in spec.first_group..spec.first_group + spec.groups {
        let (spec, shared, gate) = (spec.clone(), shared.clone(), gate.clone());
        setups.spawn(async move { (g, open_group(&spec, &shared, &gate, g).await) });
    }
    let mut opened = Vec::new();
    while let Some(done) = setups.join_next().await {
        let (g, result) = done.context("setup task")?;
        match result {
            Ok(group) => opened.push((g, group)),
            Err(e) if spec.scenario == Scenario::Connect => {
                note(&format!("group {g}: {e:#}"));
            }
            Err(e) => return Err(e.context(format!("setting up group {g}"))),
        }
    }
    opened.sort_by_key(|(g, _)| *g);
    Ok(opened.into_iter().map(|(_, group)| group).collect())
}

/// Open one session and wait for its greeting.
async fn open_session(
    spec: &ShardSpec,
    shared: &Shared,
    gate: &Semaphore,
    group: usize,
    slot: usize,
) -> anyhow::Result<SetupSession> {
    let _permit = gate.acquire().await?;
    let url = spec.session_url(group, slot);
    let index = group * spec.sessions_per_group() + slot;
    let source = client::source_addr(index + spec.shard, spec.sources);
    let started = Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(60), async {
        let mut session = Session::new(client::dial(&url, source).await?);
        client::greeting(&mut session).await?;
        anyhow::Ok(session)
    })
    .await
    .context("connect timed out")
    .and_then(|r| r);
    match opened {
        Ok(ws) => {
            shared.connect_latency(started.elapsed().as_micros() as u64);
            bump(&shared.connected);
            Ok(ws)
        }
        Err(e) => {
            bump(&shared.connect_failed);
            shared.error("connect_failed");
            Err(e)
        }
    }
}

/// Connect a group's sessions and, for parley, make its members a conversation.
async fn open_group(
    spec: &ShardSpec,
    shared: &Shared,
    gate: &Semaphore,
    g: usize,
) -> anyhow::Result<Opened> {
    let per_group = spec.sessions_per_group();
    let mut sessions = Vec::with_capacity(per_group);
    for slot in 0..per_group {
        sessions.push(open_session(spec, shared, gate, g, slot).await?);
    }
    let key = match spec.target {
        Target::Baseline => format!("{}-g{g}", spec.tag),
        Target::Parley if spec.scenario == Scenario::Connect => String::new(),
        Target::Parley => converse(spec, g, &mut sessions).await?,
    };
    let nodes = (0..per_group).map(|slot| spec.node(g, slot)).collect();
    Ok(Opened {
        key,
        sessions: sessions.into_iter().map(Session::into_socket).collect(),
        nodes,
    })
}

/// Connect the group's users to its first and open their conversation: a group for
/// `fanout`, a direct conversation for pairs. Returns the conversation id.
async fn converse(
    spec: &ShardSpec,
    g: usize,
    sessions: &mut [SetupSession],
) -> anyhow::Result<String> {
    let spu = spec.sessions_per_user;
    let first = spec.user(g, 0);
    let others: Vec<String> = (1..spec.members).map(|m| spec.user(g, m)).collect();
    for (i, other) in others.iter().enumerate() {
        let connect = Op::Connect {
            user: other.clone(),
        };
        client::request(&mut sessions[0], &request(format!("c{i}"), connect)).await?;
        let accept = Op::Accept {
            user: first.clone(),
        };
        client::request(&mut sessions[(i + 1) * spu], &request("a0", accept)).await?;
    }
    let opening = if spec.members == 2 {
        let send = Op::Send {
            conversation: None,
            to: Some(others[0].clone()),
            body: "opening".to_owned(),
            reply_to: None,
        };
        request("open", send)
    } else {
        let group = Op::CreateGroup {
            members: others,
            title: None,
        };
        request("group", group)
    };
    let conversation = client::request(&mut sessions[0], &opening)
        .await?
        .conversation
        .context("the server named no conversation")?;
    if !spec.unmuted && spec.scenario != Scenario::RecallRace {
        let mute = request(
            "mute",
            Op::Mute {
                conversation: conversation.clone(),
                muted: true,
            },
        );
        for m in 0..spec.members {
            client::request(&mut sessions[m * spu], &mute).await?;
        }
    }
    Ok(conversation)
}

/// A parley request.
fn request(id: impl Into<String>, op: Op) -> Request {
    Request { id: id.into(), op }
}
