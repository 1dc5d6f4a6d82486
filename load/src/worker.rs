//! The client processes of a run. A run small enough for one process plays its one share
//! in the harness itself; a larger one starts `parley-load worker` processes of itself,
//! hands each its [`ShardSpec`] on stdin, reads its [`Event`]s as JSON lines from its
//! stdout, and starts them all with one `go` line.

use crate::shard;
use crate::spec::ShardSpec;
use crate::stats::Event;
use anyhow::Context;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};

/// How a client process is told to start sending.
enum Go {
    /// The share played in this process.
    Local(oneshot::Sender<()>),
    /// A worker process, by a `go` line on its stdin.
    Remote(ChildStdin),
}

/// The client processes of one run, set up and waiting for the start.
pub struct Clients {
    gos: Vec<Go>,
    /// Worker processes (none when the one share plays in this process).
    children: Vec<Child>,
}

impl Clients {
    /// Start one client process per spec (or, for a single spec, play it here); every
    /// event goes to `events`.
    pub async fn start(
        specs: Vec<ShardSpec>,
        events: mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Clients> {
        let mut clients = Clients {
            gos: Vec::new(),
            children: Vec::new(),
        };
        if let [spec] = &specs[..] {
            let (go, start) = oneshot::channel();
            tokio::spawn(shard::run(spec.clone(), events, start));
            clients.gos.push(Go::Local(go));
            return Ok(clients);
        }
        for spec in &specs {
            let (child, stdin) = start_worker(spec, events.clone()).await?;
            clients.children.push(child);
            clients.gos.push(Go::Remote(stdin));
        }
        Ok(clients)
    }

    /// The process ids whose CPU the load generator costs.
    pub fn pids(&self) -> Vec<u32> {
        match self.children.is_empty() {
            true => vec![std::process::id()],
            false => self.children.iter().filter_map(Child::id).collect(),
        }
    }

    /// Tell every client process to start.
    pub async fn go(&mut self) -> anyhow::Result<()> {
        for go in self.gos.drain(..) {
            match go {
                Go::Local(tx) => {
                    let _ = tx.send(());
                }
                Go::Remote(mut stdin) => {
                    stdin.write_all(b"go\n").await?;
                    stdin.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// Give each worker process a little while to exit.
    pub async fn wait(self) {
        for mut child in self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// Start a worker process for `spec`, forwarding its events to `events`.
async fn start_worker(
    spec: &ShardSpec,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<(Child, ChildStdin)> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a client process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let mut line = serde_json::to_string(spec)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let shard = spec.shard;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut finished = false;
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    finished |= matches!(event, Event::Done { .. } | Event::Failed { .. });
                    let _ = events.send(event);
                }
                Err(e) => {
                    let error = format!("bad line from client process: {e}");
                    let _ = events.send(Event::Failed { shard, error });
                }
            }
        }
        if !finished {
            let error = "client process ended without a result".to_owned();
            let _ = events.send(Event::Failed { shard, error });
        }
    });
    Ok((child, stdin))
}

/// Serve as a client process: read a spec from stdin, report events as JSON lines on
/// stdout, start sending at the `go` line.
pub async fn worker() -> anyhow::Result<()> {
    raise_file_limit();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let spec: ShardSpec = serde_json::from_str(&stdin.next_line().await?.context("no spec")?)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(Some(line)) = stdin.next_line().await {
            if line.trim() == "go" {
                let _ = go_tx.send(());
            }
        }
    });
    tokio::spawn(shard::run(spec, tx, go_rx));
    let mut out = tokio::io::stdout();
    while let Some(event) = rx.recv().await {
        let last = matches!(event, Event::Done { .. } | Event::Failed { .. });
        let mut line = serde_json::to_string(&event)?;
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
        if last {
            break;
        }
    }
    Ok(())
}

/// Raise the open-file soft limit to the hard limit.
pub fn raise_file_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard {
                let _ = rlimit::Resource::NOFILE.set(hard, hard);
            }
            hard
        }
        Err(_) => 1024,
    }
}
