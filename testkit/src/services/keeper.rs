//! A running service and the thread that keeps it.
//!
//! The kernel's parent-death signal fires when the *thread* that started a process ends,
//! not the process: a server started from a short-lived thread (a tokio blocking-pool
//! thread, say) would be killed under a running test. So each server is started by a
//! keeper thread that lives exactly as long as the server, reaps it, and is the one that
//! signals it, so a signal can never reach a reused process id.

use super::{tail, ServiceError, READY_WITHIN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopping server may take to exit before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A PostgreSQL or Redis server this process started; stopped, and its data removed,
/// when dropped.
pub struct Service {
    /// Its process id (PostgreSQL's postmaster).
    pub pid: u32,
    /// How a client reaches it (`postgres://…` or `redis://…`).
    pub url: String,
    /// The same server over TLS, when it was given certificates (`rediss://…` for Redis;
    /// PostgreSQL takes TLS on its one port, so this is `url` again).
    pub tls_url: Option<String>,
    /// The port it listens on.
    pub port: u16,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
    // Removed after the server has exited, by the field order of the drop.
    dir: tempfile::TempDir,
}

/// What the keeper needs to start a server, and where it will be reached.
pub(super) struct Start {
    /// The server's command line.
    pub command: Command,
    /// The signal that shuts the server down cleanly.
    pub stop_signal: i32,
    /// Where the server writes its log.
    pub log: PathBuf,
    /// The port it will listen on.
    pub port: u16,
    /// Its URL.
    pub url: String,
    /// Its URL over TLS, if any.
    pub tls_url: Option<String>,
}

impl Service {
    /// Start `start.command` from a keeper thread and wait until `ready` holds.
    pub(super) fn spawn(
        server: &'static str,
        start: Start,
        dir: tempfile::TempDir,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Service, ServiceError> {
        let Start {
            mut command,
            stop_signal,
            log,
            port,
            url,
            tls_url,
        } = start;
        crate::bound::die_with_parent(&mut command);
        let (started_tx, started) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let keeper = std::thread::spawn(move || match command.spawn() {
            Ok(child) => {
                let _ = started_tx.send(Ok(child.id()));
                keep(child, stop_signal, &stop_rx);
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        });
        let pid = started
            .recv()
            .expect("the keeper reports the start")
            .map_err(ServiceError::io(format!("start {server}")))?;
        let service = Service {
            pid,
            url,
            tls_url,
            port,
            stop: Some(stop),
            keeper: Some(keeper),
            dir,
        };
        service.wait_ready(server, &log, &mut ready)?;
        Ok(service)
    }

    fn wait_ready(
        &self,
        server: &'static str,
        log: &Path,
        ready: &mut impl FnMut() -> bool,
    ) -> Result<(), ServiceError> {
        let deadline = Instant::now() + READY_WITHIN;
        let not_ready = |what: String| ServiceError::NotReady {
            server,
            what,
            tail: tail(log),
        };
        loop {
            if ready() {
                return Ok(());
            }
            if self.keeper.as_ref().is_some_and(|k| k.is_finished()) {
                return Err(not_ready("exited while starting".into()));
            }
            if Instant::now() > deadline {
                return Err(not_ready(format!("was not ready within {READY_WITHIN:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's temporary directory (its data, sockets and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop the server (cleanly, killed if it lingers) and remove its data.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Reap `child` when it exits; when told to stop (or when the [`Service`] is gone), stop
/// it with `stop_signal`, and kill it if it has not exited within [`STOP_WITHIN`].
fn keep(mut child: Child, stop_signal: i32, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(100)) {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
    }
    // SAFETY: kill(2) on our own child, not yet reaped, so its pid is still its own.
    unsafe { libc::kill(child.id() as i32, stop_signal) };
    let deadline = Instant::now() + STOP_WITHIN;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
