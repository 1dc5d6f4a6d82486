//! A throwaway Redis that keeps nothing on disk.

use super::keeper::Start;
use super::{free_port, service_dir, Service, ServiceError, TlsFiles};
use std::process::{Command, Stdio};

/// How to run a throwaway Redis on 127.0.0.1.
#[derive(Debug, Clone, Default)]
pub struct Redis {
    /// Certificates, to listen on a second port with TLS (clients are not asked for one).
    pub tls: Option<TlsFiles>,
}

impl Redis {
    /// Start it and wait until its ports accept connections.
    pub fn start(&self) -> Result<Service, ServiceError> {
        let dir = service_dir("redis")?;
        let port = free_port()?;
        let log = dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut tls_port = None;
        if let Some(tls) = &self.tls {
            let p = free_port()?;
            command.args(["--tls-port", &p.to_string(), "--tls-auth-clients", "no"]);
            command.arg("--tls-cert-file").arg(&tls.cert);
            command.arg("--tls-key-file").arg(&tls.key);
            tls_port = Some(p);
        }
        let start = Start {
            command,
            stop_signal: libc::SIGTERM,
            log,
            port,
            url: format!("redis://127.0.0.1:{port}"),
            tls_url: tls_port.map(|p| format!("rediss://127.0.0.1:{p}")),
        };
        let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        Service::spawn("Redis", start, dir, || {
            listening(port) && tls_port.is_none_or(listening)
        })
        .map_err(|e| match e {
            ServiceError::Io { what, source } if source.kind() == std::io::ErrorKind::NotFound => {
                ServiceError::NotInstalled(format!(
                    "{what}: redis-server is not installed (scripts/test.sh installs it; \
                     Debian: apt-get install redis-server)"
                ))
            }
            other => other,
        })
    }
}
