//! PostgreSQL and Redis for the cluster tests: one of each per test binary, started from
//! `parley-testkit` on first use, with TLS on a self-signed certificate for 127.0.0.1.
//! They are kept in a static, so the kernel ends them when the test binary exits, and
//! the next run removes their directories.

use parley_testkit::services::{service_dir, Postgres, Redis, Service, TlsFiles};
use std::path::PathBuf;
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
    _kept: [Service; 2],
    _certificates: tempfile::TempDir,
}

static SERVICES: OnceLock<Services> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

/// Start PostgreSQL and Redis, once.
pub fn services() -> &'static Services {
    SERVICES.get_or_init(start)
}

fn start() -> Services {
    let certificates = service_dir("certificates").expect("a directory for the certificate");
    let tls = TlsFiles {
        cert: certificates.path().join("server.crt"),
        key: certificates.path().join("server.key"),
    };
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a test certificate");
    std::fs::write(&tls.cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&tls.key, made.signing_key.serialize_pem()).expect("write the key");
    let postgres = Postgres {
        durable: false,
        max_connections: 300,
        tls: Some(tls.clone()),
    }
    .start()
    .unwrap_or_else(|e| panic!("{e}"));
    let redis = Redis {
        tls: Some(tls.clone()),
    }
    .start()
    .unwrap_or_else(|e| panic!("{e}"));
    Services {
        postgres_port: postgres.port,
        redis_url: redis.url.clone(),
        rediss_url: redis.tls_url.clone().expect("Redis was given certificates"),
        service_ca: tls.cert,
        _kept: [postgres, redis],
        _certificates: certificates,
    }
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
