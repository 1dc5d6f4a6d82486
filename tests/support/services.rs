//! PostgreSQL and Redis for the cluster tests: real servers from the system's packages,
//! started once per test binary on free loopback ports with throwaway data directories,
//! and killed by the kernel when the test process ends (parent-death signal).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The two servers of one test binary.
pub struct Services {
    /// Port PostgreSQL listens on at 127.0.0.1 (user `parley`, trust authentication).
    pub postgres_port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// `rediss://127.0.0.1:PORT`: the same Redis over TLS.
    pub rediss_url: String,
    /// The certificate PostgreSQL and Redis's TLS port present (self-signed for 127.0.0.1
    /// and localhost), as a PEM file a client can trust: PostgreSQL accepts TLS and plain
    /// connections alike.
    pub service_ca: PathBuf,
}

static SERVICES: OnceLock<Services> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

/// Start PostgreSQL and Redis, once.
pub fn services() -> &'static Services {
    SERVICES.get_or_init(start)
}

/// A new empty database on the shared PostgreSQL: its URL.
pub async fn fresh_database() -> String {
    let s = services();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!(
        "host=127.0.0.1 port={} user=parley dbname=postgres",
        s.postgres_port
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create a test database");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("PostgreSQL did not come up: {e}"),
        }
    }
    format!("postgres://parley@127.0.0.1:{}/{name}", s.postgres_port)
}

/// A broker channel no other test uses.
pub fn fresh_channel() -> String {
    format!(
        "parley-test-{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The directory of PostgreSQL's server programs (the newest installed).
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARLEY_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL's server is not installed: run scripts/test.sh, which installs it, \
         or set PARLEY_POSTGRES_BIN",
    )
}

/// When running as root, PostgreSQL's programs run as this (uid, gid) instead: it refuses root.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id runs");
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres system user exists (installed with PostgreSQL)");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id runs");
    let gid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("gid");
    Some((uid, gid))
}

/// A command that runs as `who` and is killed when the thread that spawned it ends.
fn command(program: &Path, who: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setgid, setuid, prctl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = who {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Set after the identity change, which would clear it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

fn start() -> Services {
    let (tx, rx) = std::sync::mpsc::channel();
    // The servers are children of a thread that lives as long as the process, so the
    // parent-death signal fires only when the whole test binary is gone.
    std::thread::spawn(move || {
        // The thread keeps the children: nothing waits for them, the kernel ends them.
        let (services, _children) = spawn_services();
        tx.send(services).expect("the test waits");
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("services start")
}

/// Remove the services directories of test processes that are gone. A process cannot
/// remove its own: its servers run until the kernel ends them, after the process exits.
fn sweep_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("parley-services-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn spawn_services() -> (Services, [std::process::Child; 2]) {
    sweep_stale_roots();
    let root = std::env::temp_dir().join(format!("parley-services-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("make the services directory");
    let who = unprivileged();
    if let Some((uid, gid)) = who {
        let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        unsafe { libc::chown(c.as_ptr(), uid, gid) };
    }

    let bin = postgres_bin();
    let data = root.join("pg");
    let init = command(&bin.join("initdb"), who)
        .arg("-D")
        .arg(&data)
        .args(["-U", "parley", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("initdb runs");
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let service_ca = root.join("server.crt");
    let key = root.join("server.key");
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a test certificate");
    std::fs::write(&service_ca, made.cert.pem()).expect("write the certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
    // PostgreSQL reads only a key its own user owns and nobody else may read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).expect("hand the key to postgres");
    }
    let postgres_port = free_port();
    let postgres = command(&bin.join("postgres"), who)
        .arg("-D")
        .arg(&data)
        .args(["-p", &postgres_port.to_string()])
        .arg("-k")
        .arg(&root)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "max_connections=300", "-c", "ssl=on"])
        .arg("-c")
        .arg(format!("ssl_cert_file={}", service_ca.display()))
        .arg("-c")
        .arg(format!("ssl_key_file={}", key.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");

    let redis_port = free_port();
    let rediss_port = free_port();
    let redis = command(Path::new("redis-server"), None)
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--tls-port",
            &rediss_port.to_string(),
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&service_ca)
        .arg("--tls-key-file")
        .arg(&key)
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", rediss_port)).is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let services = Services {
        postgres_port,
        redis_url: format!("redis://127.0.0.1:{redis_port}"),
        rediss_url: format!("rediss://127.0.0.1:{rediss_port}"),
        service_ca,
    };
    (services, [postgres, redis])
}
