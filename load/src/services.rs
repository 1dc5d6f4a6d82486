//! PostgreSQL and Redis for a cluster run: real servers from the system's packages, each on
//! a free loopback port with throwaway data, stopped when the run ends (and killed with the
//! harness if it dies first).

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A PostgreSQL or Redis server this harness started.
pub struct Service {
    // Dropped before the directory, so the server is killed before its data is removed.
    child: Child,
    /// Its process id (PostgreSQL's postmaster).
    pub pid: u32,
    /// How the nodes reach it.
    pub url: String,
    /// The signal that shuts it down cleanly.
    stop_signal: i32,
    _dir: tempfile::TempDir,
}

/// A command whose process is killed when the harness dies, even by SIGKILL: a run that
/// is interrupted leaves no server behind.
pub fn bound(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec,
    // after any change of user (which would clear it).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.kill_on_drop(true);
    cmd
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// PostgreSQL's server programs: `$PARLEY_POSTGRES_BIN`, else the newest under
/// `/usr/lib/postgresql` (where Debian's packages put them, off `PATH`).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PARLEY_POSTGRES_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL's server is not installed (Debian: apt-get install postgresql), \
             or set PARLEY_POSTGRES_BIN to the directory holding initdb and postgres"
        ),
    }
}

/// PostgreSQL refuses to run as root: when we are root, the (uid, gid) of the `postgres`
/// system user its package creates.
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: getpwnam gets a NUL-terminated name; the record it returns is read at once,
    // before anything else could call it again on this thread.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        bail!("PostgreSQL refuses to run as root and there is no `postgres` user to run it as");
    }
    // SAFETY: non-null, just returned by getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Run as `user` from `dir`: a directory root's home would not let it in.
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>, dir: &Path) {
    cmd.current_dir(dir);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Wait until `ready` holds, failing early if `child` exits.
async fn wait_until(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited ({status}) while starting; its log:\n{}",
                tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!("{what} did not come up in 30 s; its log:\n{}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start a throwaway PostgreSQL on 127.0.0.1: user `parley`, trust authentication, the
/// `postgres` database. Durability is PostgreSQL's default (fsync, synchronous commit),
/// so its cost per message is what a real deployment pays.
pub async fn postgres() -> anyhow::Result<Service> {
    let bin = postgres_bin()?;
    let user = postgres_user()?;
    let dir = tempfile::Builder::new().prefix("parley-pg-").tempdir()?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .context("hand the data directory to the postgres user")?;
    }
    let data = dir.path().join("data");
    let mut init = Command::new(bin.join("initdb"));
    as_user(&mut init, user, dir.path());
    let out = init
        .arg("-D")
        .arg(&data)
        .args(["-U", "parley", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = free_port()?;
    let log = dir.path().join("postgres.log");
    let mut cmd = bound(bin.join("postgres"));
    as_user(&mut cmd, user, dir.path());
    let mut child = cmd
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        // The socket directory is the throwaway one, not the system's.
        .arg("-k")
        .arg(dir.path())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start postgres")?;
    let pid = child.id().context("postgres exited at once")?;
    wait_until("PostgreSQL", &mut child, &log, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready to accept connections"))
    })
    .await?;
    Ok(Service {
        child,
        pid,
        url: format!("postgres://parley@127.0.0.1:{port}/postgres"),
        stop_signal: libc::SIGINT,
        _dir: dir,
    })
}

/// Start a throwaway Redis on 127.0.0.1 that keeps nothing on disk.
pub async fn redis() -> anyhow::Result<Service> {
    let dir = tempfile::Builder::new().prefix("parley-redis-").tempdir()?;
    let port = free_port()?;
    let log = dir.path().join("redis.log");
    let mut child = bound("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (Debian: apt-get install redis-server)")?;
    let pid = child.id().context("redis-server exited at once")?;
    wait_until("Redis", &mut child, &log, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await?;
    Ok(Service {
        child,
        pid,
        url: format!("redis://127.0.0.1:{port}"),
        stop_signal: libc::SIGTERM,
        _dir: dir,
    })
}

impl Service {
    /// Shut down cleanly, or kill after a few seconds; the data goes with it.
    pub async fn stop(mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(self.pid as i32, self.stop_signal);
            }
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}
