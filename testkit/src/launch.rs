//! Starting a server and learning where it listens. parley (and the load harness's
//! baselines) print `listening on ADDR` on standard output once bound, so a caller can
//! ask for port 0 and run many servers side by side; standard error goes to a log file,
//! whose end is what a failed start shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// Why a server was not started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No binary to start.
    #[error("cannot find the parley binary: {0}")]
    NoBinary(String),
    /// The log file could not be made.
    #[error("cannot create the server log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The process did not say where it listens in time (or ended first).
    #[error(
        "{program} did not print `listening on ADDR` within {within:?}; its log ends with:\n{tail}"
    )]
    Silent {
        /// The program.
        program: String,
        /// How long it was given.
        within: Duration,
        /// The last lines of its log.
        tail: String,
    },
}

/// A server process that said where it listens; killed when dropped.
pub struct Launched {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Where its standard error goes (none when the caller reads it: see [`launch_watched`]).
    pub log: Option<PathBuf>,
}

/// The lines a server writes on standard error, for a caller that watches them.
pub type LogLines = tokio::io::Lines<BufReader<ChildStderr>>;

/// Start `cmd` with its standard error in `log`, and wait at most `within` for its
/// `listening on ADDR` line. Later output is drained, so a chatty server never blocks
/// on a full pipe.
pub async fn launch(
    mut cmd: Command,
    log: &Path,
    within: Duration,
) -> Result<Launched, LaunchError> {
    let file = std::fs::File::create(log).map_err(|source| LaunchError::Log {
        path: log.to_owned(),
        source,
    })?;
    cmd.stderr(file);
    let mut server = start(cmd, within, || log_tail(log, 20)).await?;
    server.log = Some(log.to_owned());
    Ok(server)
}

/// Like [`launch`], but the server's standard error is handed to the caller, line by line,
/// for a test that watches what the server logs.
pub async fn launch_watched(
    mut cmd: Command,
    within: Duration,
) -> Result<(Launched, LogLines), LaunchError> {
    cmd.stderr(Stdio::piped());
    let mut server = start(cmd, within, String::new).await?;
    let stderr = server.child.stderr.take().expect("stderr is piped");
    Ok((server, BufReader::new(stderr).lines()))
}

/// Spawn `cmd` (its standard error already directed) and read where it listens; `tail`
/// says what the log ends with when it does not say.
async fn start(
    mut cmd: Command,
    within: Duration,
    tail: impl FnOnce() -> String,
) -> Result<Launched, LaunchError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LaunchError::Start {
            program: program.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let said = tokio::time::timeout(within, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let addr = line.trim().strip_prefix("listening on ");
            if let Some(addr) = addr.and_then(|a| a.trim().parse().ok()) {
                return Some(addr);
            }
        }
        None
    })
    .await;
    let Ok(Some(addr)) = said else {
        let _ = child.kill().await;
        return Err(LaunchError::Silent {
            program,
            within,
            tail: tail(),
        });
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Launched {
        child,
        addr,
        pid,
        log: None,
    })
}

impl Launched {
    /// The last `lines` lines of the server's log (empty when the caller reads it).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map_or_else(String::new, |log| log_tail(log, lines))
    }
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn the_address_is_read_from_the_listening_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let script = "echo starting; echo 'listening on 127.0.0.1:4567'; sleep 30";
        let up = launch(shell(script), &log, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(up.addr, "127.0.0.1:4567".parse().unwrap());
    }

    #[tokio::test]
    async fn a_watched_server_hands_its_log_lines_over() {
        let script = "echo 'listening on 127.0.0.1:4568'; echo 'session opened' >&2; sleep 30";
        let (up, mut log) = launch_watched(shell(script), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(up.addr.port(), 4568);
        let line = log.next_line().await.unwrap();
        assert_eq!(line.as_deref(), Some("session opened"));
    }

    #[tokio::test]
    async fn a_server_that_never_says_shows_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let script = "echo 'error: the port is taken' >&2; exit 1";
        let refused = launch(shell(script), &log, Duration::from_secs(10))
            .await
            .err()
            .expect("no listening line");
        let said = refused.to_string();
        assert!(said.contains("the port is taken"), "{said}");
    }
}
