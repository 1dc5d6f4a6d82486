//! One client process's share of a run: it sets its groups up, waits for the start,
//! plays the scenario for the run's length, and reports each second and its totals.

use crate::args::Scenario;
use crate::check::Tally;
use crate::scenario::{connect, fanout, recall_race};
use crate::setup::{self, Opened};
use crate::spec::ShardSpec;
use crate::stamp;
use crate::stats::{Event, Shared};
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Run this process's share; every event goes to `events`; sending starts when `go` fires.
pub async fn run(spec: ShardSpec, events: mpsc::UnboundedSender<Event>, go: oneshot::Receiver<()>) {
    let shard = spec.shard;
    if let Err(e) = drive(spec, &events, go).await {
        let _ = events.send(Event::Failed {
            shard,
            error: format!("{e:#}"),
        });
    }
}

async fn drive(
    spec: ShardSpec,
    events: &mpsc::UnboundedSender<Event>,
    go: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let spec = Arc::new(spec);
    let shared = Arc::new(Shared::default());
    // Start the process clock before any body is stamped with it.
    let _ = stamp::now_us();
    let opened = setup::open_all(&spec, &shared, events).await?;
    let _ = events.send(Event::Ready {
        shard: spec.shard,
        connected: shared.connected.load(Ordering::Relaxed),
        failed: shared.connect_failed.load(Ordering::Relaxed),
    });
    go.await.context("the run was called off")?;

    let start = Instant::now();
    let ticker = tokio::spawn(ticks(spec.shard, shared.clone(), events.clone(), start));
    let played = play(opened, &spec, &shared, start).await;
    ticker.abort();
    let (window_delivered, found) = played?;
    let mut result = shared.result(spec.duration_ms, window_delivered);
    result.lost += found.lost;
    result.duplicated += found.duplicated;
    result.reordered += found.reordered;
    let _ = events.send(Event::Done {
        shard: spec.shard,
        result: Box::new(result),
    });
    Ok(())
}

/// Play the scenario from `start`: the deliveries made while sending, and what the
/// checks found once drained.
async fn play(
    opened: Vec<Opened>,
    spec: &Arc<ShardSpec>,
    shared: &Arc<Shared>,
    start: Instant,
) -> anyhow::Result<(u64, Tally)> {
    let send_until = start + Duration::from_millis(spec.duration_ms);
    Ok(match spec.scenario {
        Scenario::Connect => {
            connect::play(opened, shared, send_until).await;
            (0, Tally::default())
        }
        Scenario::Fanout | Scenario::Dm => fanout::play(opened, spec, shared, start).await?,
        Scenario::RecallRace => {
            let delivered = recall_race::play(opened, spec, shared, start, send_until).await?;
            (delivered, Tally::default())
        }
    })
}

/// Report one second at a time.
async fn ticks(
    shard: usize,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    start: Instant,
) {
    let (mut sent, mut delivered) = (0, 0);
    for index in 0.. {
        tokio::time::sleep_until((start + Duration::from_secs(index + 1)).into()).await;
        let now_sent = shared.sent.load(Ordering::Relaxed);
        let now_delivered = shared.delivered.load(Ordering::Relaxed);
        let tick = Event::Tick {
            shard,
            index,
            sent: now_sent - sent,
            delivered: now_delivered - delivered,
            latency: shared.take_interval(),
        };
        (sent, delivered) = (now_sent, now_delivered);
        if events.send(tick).is_err() {
            return;
        }
    }
}
