//! The throwaway services start, answer on loopback, and leave nothing behind.

use parley_testkit::services::{Postgres, Redis};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn postgres_accepts_connections_and_is_removed_on_drop() {
    let pg = Postgres {
        durable: false,
        ..Postgres::default()
    }
    .start()
    .expect("PostgreSQL starts");
    assert!(
        pg.url.starts_with("postgres://parley@127.0.0.1:"),
        "{}",
        pg.url
    );
    TcpStream::connect(("127.0.0.1", pg.port)).expect("PostgreSQL listens");
    let (dir, pid) = (pg.dir().to_owned(), pg.pid);
    assert!(dir.join("data").join("PG_VERSION").is_file());
    drop(pg);
    assert!(gone(pid), "the postmaster was reaped");
    assert!(!dir.exists(), "its data directory was removed");
}

#[test]
fn redis_answers_a_ping_and_is_removed_on_drop() {
    let redis = Redis::default().start().expect("Redis starts");
    let mut conn = TcpStream::connect(("127.0.0.1", redis.port)).expect("Redis listens");
    conn.write_all(b"PING\r\n").unwrap();
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"+PONG\r\n");
    let (dir, pid) = (redis.dir().to_owned(), redis.pid);
    drop(redis);
    assert!(gone(pid));
    assert!(!dir.exists());
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let redis = Redis::default().start().expect("Redis starts");
        *pid.lock().unwrap() = Some(redis.pid);
        panic!("the test fails while the server runs");
    });
    assert!(result.is_err());
    let pid = pid.lock().unwrap().expect("it started");
    assert!(
        gone(pid),
        "unwinding dropped the service and stopped its server"
    );
}
