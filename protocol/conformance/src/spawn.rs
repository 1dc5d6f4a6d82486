//! Starting a `parley` server for a run: short windows so the waiting scenarios are quick.

use parley_testkit::{launch, LaunchError, Launched};
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

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
    server: Launched,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The secret it was started with.
    pub secret: Vec<u8>,
    _data: tempfile::TempDir,
}

pub use parley_testkit::find_parley;

/// Start `bin serve` on a free loopback port with a fresh data directory and a random
/// secret, and wait for its `listening on ADDR` line.
pub async fn spawn(bin: &Path) -> Result<Spawned, LaunchError> {
    let data = tempfile::tempdir().map_err(|source| LaunchError::Log {
        path: std::env::temp_dir(),
        source,
    })?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data.path().join("store"))
        .args(["--secret", &secret])
        .args(FAST_WINDOWS);
    let server = launch(cmd, &data.path().join("server.log"), STARTUP).await?;
    Ok(Spawned {
        url: format!("ws://{}", server.addr),
        server,
        secret: secret.into_bytes(),
        _data: data,
    })
}

impl Spawned {
    /// Stop the server and remove its data.
    pub async fn stop(mut self) {
        let _ = self.server.child.kill().await;
    }
}
