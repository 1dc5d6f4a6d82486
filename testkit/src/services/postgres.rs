//! A throwaway PostgreSQL: `initdb` into a temporary directory, then `postgres` on a free
//! loopback port, run as the `postgres` system user when we are root (it refuses root).

use super::keeper::Start;
use super::{free_port, service_dir, Service, ServiceError, TlsFiles};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to run a throwaway PostgreSQL: user `parley` with trust authentication, database
/// `postgres`, listening on 127.0.0.1 only.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// Whether commits wait for the disk (PostgreSQL's default). A load run keeps it, so a
    /// message costs what a deployment pays; tests turn it off to run faster.
    pub durable: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// Certificates, to accept TLS as well as plain connections.
    pub tls: Option<TlsFiles>,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            durable: true,
            max_connections: 200,
            tls: None,
        }
    }
}

impl Postgres {
    /// Start it and wait until it accepts connections.
    pub fn start(&self) -> Result<Service, ServiceError> {
        let bin = install_dir()?;
        let user = unprivileged_user()?;
        let dir = service_dir("postgres")?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(
                ServiceError::io("hand the data directory to the postgres user"),
            )?;
        }
        let data = dir.path().join("data");
        init(&bin, user, dir.path(), &data)?;
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let mut command = as_user(Command::new(bin.join("postgres")), user, dir.path());
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            // The socket directory is the throwaway one, not the system's.
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("max_connections={}", self.max_connections))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(create(&log)?);
        if !self.durable {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
        }
        if let Some(tls) = &self.tls {
            let key = private_key(tls, user, dir.path())?;
            command.args(["-c", "ssl=on"]).arg("-c");
            command.arg(format!("ssl_cert_file={}", tls.cert.display()));
            command
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        let url = format!("postgres://parley@127.0.0.1:{port}/postgres");
        let start = Start {
            command,
            stop_signal: libc::SIGINT,
            log: log.clone(),
            port,
            tls_url: self.tls.as_ref().map(|_| url.clone()),
            url,
        };
        Service::spawn("PostgreSQL", start, dir, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready to accept connections"))
        })
    }
}

fn init(bin: &Path, user: Option<(u32, u32)>, dir: &Path, data: &Path) -> Result<(), ServiceError> {
    let out = as_user(Command::new(bin.join("initdb")), user, dir)
        .arg("-D")
        .arg(data)
        .args(["-U", "parley", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .map_err(ServiceError::io("run initdb"))?;
    if !out.status.success() {
        return Err(ServiceError::Setup {
            program: "initdb".into(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// PostgreSQL reads only a key its own user owns and nobody else may read: a copy of it.
fn private_key(
    tls: &TlsFiles,
    user: Option<(u32, u32)>,
    dir: &Path,
) -> Result<PathBuf, ServiceError> {
    let key = dir.join("server.key");
    std::fs::copy(&tls.key, &key).map_err(ServiceError::io("copy the TLS key"))?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(ServiceError::io("restrict the TLS key"))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid))
            .map_err(ServiceError::io("hand the TLS key to the postgres user"))?;
    }
    Ok(key)
}

fn create(path: &Path) -> Result<std::fs::File, ServiceError> {
    std::fs::File::create(path).map_err(ServiceError::io(format!("create {}", path.display())))
}

/// Run as `user` from `dir`: a directory root's home would not let it in.
fn as_user(mut cmd: Command, user: Option<(u32, u32)>, dir: &Path) -> Command {
    cmd.current_dir(dir);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// PostgreSQL's server programs: `$PARLEY_POSTGRES_BIN`, else the newest under
/// `/usr/lib/postgresql` (where Debian's packages put them, off `PATH`).
fn install_dir() -> Result<PathBuf, ServiceError> {
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
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        ServiceError::NotInstalled(
            "PostgreSQL's server is not installed (scripts/test.sh installs it; Debian: \
             apt-get install postgresql), or set PARLEY_POSTGRES_BIN to the directory \
             holding initdb and postgres"
                .into(),
        )
    })
}

/// When we are root, the (uid, gid) of the `postgres` system user its package creates.
fn unprivileged_user() -> Result<Option<(u32, u32)>, ServiceError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: getpwnam gets a NUL-terminated name; the record it returns is read at once,
    // before anything else could call it again on this thread.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        return Err(ServiceError::NotInstalled(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as".into(),
        ));
    }
    // SAFETY: non-null, just returned by getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}
