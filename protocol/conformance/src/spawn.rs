//! Starting a `parley` server for a run: short windows so the waiting scenarios are quick.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Flags that shorten every window the scenarios wait out.
pub const FAST_WINDOWS: [&str; 8] = [
    "--recall-window",
    "2s",
    "--inmail-delete-window",
    "3s",
    "--recall-throttle-messages",
    "5",
    "--recall-throttle-window",
    "3s",
];

/// How long the server may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(30);

/// A running server owned by the runner; killed when dropped.
pub struct Spawned {
    child: Child,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The secret it was started with.
    pub secret: Vec<u8>,
    _data: tempfile::TempDir,
}

/// The `parley` binary: `$PARLEY_BIN`, else next to this executable (or one directory up,
/// where cargo puts binaries when this runs as a test from `deps/`).
pub fn find_parley() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("PARLEY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let name = format!("parley{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join(&name), dir.join("..").join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no `{name}` next to {}; build it (cargo build -p parley) or set PARLEY_BIN",
                exe.display()
            )
        })
}

/// Start `bin serve` on a free loopback port with a fresh data directory and a random
/// secret, and wait for its `listening on ADDR` line.
pub async fn spawn(bin: &Path) -> Result<Spawned, String> {
    let data = tempfile::tempdir().map_err(|e| format!("cannot make a data directory: {e}"))?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let log = data.path().join("server.log");
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create the server log: {e}"))?;
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data.path().join("store"))
        .args(["--secret", &secret])
        .args(FAST_WINDOWS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(STARTUP, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                return Some(addr.trim().to_owned());
            }
        }
        None
    })
    .await;
    let Ok(Some(addr)) = found else {
        let _ = child.kill().await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{} did not print `listening on ADDR`; its log ends with:\n{}",
            bin.display(),
            tail.join("\n")
        ));
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        child,
        url: format!("ws://{addr}"),
        secret: secret.into_bytes(),
        _data: data,
    })
}

impl Spawned {
    /// Stop the server and remove its data.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
