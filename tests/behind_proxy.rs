//! The nginx example in `docs/nginx.conf`, run as it is (its ports, names and certificate
//! paths replaced): a `wss://` session through it, TLS ended by nginx, its upgrade passed
//! through, and the client's address taken from `X-Forwarded-For` by a parley that trusts
//! the proxy. Skipped with a message where nginx is not installed.

mod support;

use rustls::pki_types::ServerName;
use std::time::Duration;

const SECRET: &str = "proxy-secret";

/// The nginx binary, where the system has one.
fn nginx() -> Option<std::path::PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx running `docs/nginx.conf` towards parley at `upstream`, listening on `port`;
/// stopped on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(bin: &std::path::Path, dir: &std::path::Path, port: u16, upstream: &str) -> Nginx {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf")).unwrap();
    let made = support::tls::self_signed();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &made.cert_pem).unwrap();
    std::fs::write(&key, &made.key_pem).unwrap();
    std::fs::write(dir.join("ca.der"), &made.der).unwrap();
    let site = example
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("server_name chat.example.com;", "server_name localhost;")
        .replace(
            "/etc/ssl/chat.example.com/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/ssl/chat.example.com/privkey.pem",
            &key.display().to_string(),
        )
        .replace("server 127.0.0.1:8080;", &format!("server {upstream};"));
    assert!(
        site.contains(&format!("127.0.0.1:{port} ssl")) && site.contains(upstream),
        "the example's lines changed: {site}"
    );
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
         fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n{site}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    Nginx(child)
}

/// A TLS connection to nginx that trusts the test certificate alone, retried while nginx
/// is still starting.
async fn tls_to(
    port: u16,
    dir: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let der = rustls::pki_types::CertificateDer::from(std::fs::read(dir.join("ca.der")).unwrap());
    let connector = support::tls::trusting(&der);
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        // From another loopback address than the proxy's own, so the forwarded one shows.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.7:0".parse().unwrap()).unwrap();
        if let Ok(tcp) = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
        {
            let name = ServerName::try_from("localhost").unwrap();
            if let Ok(tls) = connector.connect(name, tcp).await {
                return tls;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_wss_session_through_the_nginx_example_with_the_forwarded_address() {
    let Some(bin) = nginx() else {
        eprintln!("skipped: nginx is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = ["--secret", SECRET, "--trusted-proxies", "127.0.0.1"];
    let (mut parley, upstream, mut logs) =
        support::spawn_watched(&dir.path().join("data"), &args).await;
    let port = free_port();
    let _nginx = start_nginx(&bin, dir.path(), port, &upstream);

    let token = parley::auth::mint(SECRET.as_bytes(), "alice", false, Duration::from_secs(600));
    let url = format!("wss://localhost:{port}/ws?token={token}");
    let stream = tls_to(port, dir.path()).await;
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("upgrade through nginx");
    let hello = support::next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user"], "alice");

    // parley's session-open line names the client nginx forwarded, and nginx as `via`.
    let opened = tokio::time::timeout(support::PATIENCE, async {
        while let Some(line) = logs.next_line().await.unwrap() {
            if line.contains("session opened") {
                return line;
            }
        }
        panic!("parley's log ended");
    })
    .await
    .expect("a session-open line");
    assert!(opened.contains("127.0.0.7"), "{opened}");
    assert!(opened.contains("via=127.0.0.1"), "{opened}");
    ws.close(None).await.unwrap();
    let _ = parley.start_kill();
}
