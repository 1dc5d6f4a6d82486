//! Throwaway PostgreSQL and Redis servers on loopback, from the system's packages, for
//! the cluster tests and the load harness's cluster runs.
//!
//! Each runs on a free 127.0.0.1 port with its data in a fresh temporary directory. It is
//! stopped and its data removed when its [`Service`] is dropped (a panicking test drops
//! it too), and killed by the kernel if the process that started it dies first.

mod keeper;
mod postgres;
mod redis;

pub use keeper::Service;
pub use postgres::Postgres;
pub use redis::Redis;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The server's programs are not installed.
    #[error("{0}")]
    NotInstalled(String),
    /// A system call or program around the server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A set-up program ran and failed.
    #[error("{program} failed: {output}")]
    Setup {
        /// The program.
        program: String,
        /// What it wrote.
        output: String,
    },
    /// The server exited, or did not become ready in time.
    #[error("{server} {what}; its log ends with:\n{tail}")]
    NotReady {
        /// The server.
        server: &'static str,
        /// What happened.
        what: String,
        /// The last lines of its log.
        tail: String,
    },
}

impl ServiceError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
        let what = what.into();
        move |source| ServiceError::Io { what, source }
    }
}

/// A certificate and key a service presents on its TLS port (PEM files, the key readable
/// by whoever runs the service: a PostgreSQL key is copied and handed to its user).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// How long a service may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> Result<u16, ServiceError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(ServiceError::io("find a free port"))
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A fresh temporary directory for `purpose` (a server's data, or files it is given),
/// named after this process so that a later run removes it if this one never does: a
/// service kept for a whole test binary, in a static, is never dropped.
pub fn service_dir(purpose: &str) -> Result<tempfile::TempDir, ServiceError> {
    sweep_stale();
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-{purpose}-", std::process::id()))
        .tempdir()
        .map_err(ServiceError::io("make a temporary directory"))
}

/// What every [`service_dir`] is named with, before the process id.
const DIR_PREFIX: &str = "parley-service-";

/// Remove the service directories of processes that are gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
