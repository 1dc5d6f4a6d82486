//! TLS on the main port: `wss://` sessions and `https://` requests with a test certificate,
//! no plain HTTP on that port, the certificate read again on SIGHUP without dropping a
//! session, and unusable certificate files refused at start naming the file.

mod support;

use futures::SinkExt;
use rustls::pki_types::{CertificateDer, ServerName};
use std::time::Duration;
use support::tls::{self_signed as test_cert, TestCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "tls-secret";

fn write_cert(dir: &std::path::Path, cert: &TestCert) -> (String, String) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    (c.display().to_string(), k.display().to_string())
}

/// A TLS connection to `addr` that trusts `trusted` alone.
async fn tls_to(
    addr: &str,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    support::tls::trusting(trusted).connect(name, tcp).await
}

#[tokio::test]
async fn wss_and_https_with_a_test_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = test_cert();
    let (cert, key) = write_cert(dir.path(), &first);
    let data = dir.path().join("data");
    let args = ["--tls-cert", &cert, "--tls-key", &key];
    let (child, addr) = support::spawn_binary(&data, SECRET, &args).await;

    // https://: a plain request over TLS.
    let mut https = tls_to(&addr, &first.der).await.expect("TLS handshake");
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    https.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    // wss://: a session.
    let token = parley::auth::mint(SECRET.as_bytes(), "alice", false, Duration::from_secs(600));
    let url = format!("wss://localhost/ws?token={token}");
    let stream = tls_to(&addr, &first.der).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("upgrade over TLS");
    assert_eq!(support::next_json(&mut ws).await["type"], "hello");

    // No plain HTTP on a TLS port.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(support::PATIENCE, plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "answered plain HTTP"
    );

    // A renewed certificate and SIGHUP: new handshakes get it, the session stays.
    let second = test_cert();
    write_cert(dir.path(), &second);
    assert!(
        tls_to(&addr, &second.der).await.is_err(),
        "the new certificate is not served yet"
    );
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while tls_to(&addr, &second.der).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not taken up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tls_to(&addr, &first.der).await.is_err(),
        "the old certificate is still served"
    );
    ws.send(Message::Text(
        r#"{"id":"after-reload","type":"sync"}"#.into(),
    ))
    .await
    .unwrap();
    let answer = loop {
        let f = support::next_json(&mut ws).await;
        if f["id"] == "after-reload" {
            break f;
        }
    };
    assert_eq!(answer["type"], "ack", "{answer}");

    // The health probe asks over TLS, trusting the certificate in the server's file.
    let probe = move |tls: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
        cmd.args(["probe", "--listen", &addr]);
        if tls {
            cmd.args(["--tls-cert", &cert]);
        }
        cmd.output().unwrap()
    };
    let (with, without) = tokio::task::spawn_blocking(move || (probe(true), probe(false)))
        .await
        .unwrap();
    assert!(with.status.success(), "{with:?}");
    assert_eq!(String::from_utf8_lossy(&with.stdout).trim(), "ready");
    assert_eq!(
        without.status.code(),
        Some(1),
        "plain HTTP to a TLS port: {without:?}"
    );
}

#[tokio::test]
async fn unusable_certificate_files_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert();
    let other = test_cert();
    let (cert_path, _) = write_cert(dir.path(), &cert);
    let wrong_key = dir.path().join("other-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let missing = dir.path().join("missing.pem").display().to_string();
    let wrong_key = wrong_key.display().to_string();
    for (c, k, says) in [
        (
            cert_path.as_str(),
            missing.as_str(),
            format!("cannot read a private key from {missing}"),
        ),
        (
            cert_path.as_str(),
            wrong_key.as_str(),
            format!("the key in {wrong_key} cannot serve the certificate in {cert_path}"),
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--secret",
                SECRET,
                "--data",
            ])
            .arg(dir.path().join("data"))
            .args(["--tls-cert", c, "--tls-key", k])
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {k}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&says), "{stderr}");
    }
}
