//! Servers under load: starting parley or the baseline on a free loopback port, stopping
//! them, and reading a server's CPU time and resident memory from `/proc`.

use crate::shard::{Scenario, Target};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server this harness started.
pub struct Launched {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Token secret (parley).
    pub secret: String,
    dir: tempfile::TempDir,
}

/// The parley binary: `$PARLEY_BIN`, else the one built beside this harness.
fn parley_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PARLEY_BIN") {
        return Ok(bin.into());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("parley");
    if !bin.exists() {
        bail!(
            "no parley binary at {}: build it (cargo build --release -p parley) or set PARLEY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Start the server `target` for `scenario` on 127.0.0.1, port 0.
pub async fn start(target: Target, scenario: Scenario) -> anyhow::Result<Launched> {
    let dir = tempfile::Builder::new().prefix("parley-load-").tempdir()?;
    let secret = crate::wire::random_secret();
    let mut cmd = match target {
        Target::Parley => {
            let bin = parley_bin()?;
            let help = Command::new(&bin)
                .args(["serve", "--help"])
                .output()
                .await?;
            let help = String::from_utf8_lossy(&help.stdout);
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .args(["--listen", "127.0.0.1:0"])
                .arg("--data")
                .arg(dir.path().join("data"))
                .args(["--secret", &secret])
                // The harness is one client address hammering the server: take the
                // per-user and per-address abuse limits out of the measurement.
                .args(["--requests-per-second", "0"])
                .args(["--connections-per-ip-per-second", "0"]);
            if help.contains("--store") {
                cmd.args(["--store", "memory"]);
            }
            if scenario == Scenario::RecallRace {
                // Every round recalls in the same conversation: lift the daily allowance
                // and the anti-spam throttle so every race is a real one.
                cmd.args(["--recall-per-conversation", "1000000"])
                    .args(["--recall-throttle-window", "0s"]);
            }
            cmd.env("RUST_LOG", "warn");
            cmd
        }
        Target::Baseline => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["baseline-server", "--listen", "127.0.0.1:0"]);
            cmd
        }
    };
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server")?;
    let pid = child.id().context("server exited at once")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let addr = match first {
        Ok(Ok(Some(line))) => line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("unexpected first line from the server: {line}"))?,
        _ => {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            bail!("the server did not say where it listens; its log:\n{log}");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Launched {
        child,
        addr,
        pid,
        secret,
        dir,
    })
}

impl Launched {
    /// Stop with SIGTERM, then SIGKILL if it lingers; returns the end of its log when it
    /// had died before.
    pub async fn stop(mut self) -> Option<String> {
        let died = self.child.try_wait().ok().flatten().is_some();
        if !died {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        died.then(|| tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

/// CPU time and resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in bytes.
    pub rss: u64,
}

/// Read a process's CPU time and RSS; `None` once it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_s: (utime + stime) as f64 / ticks,
        rss: rss_kb * 1024,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(s.cpu_s >= 0.0);
    }
}
