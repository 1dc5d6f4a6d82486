//! What an image or a service manager relies on: `parley probe` as the health check, the
//! hardened systemd unit in `docs/`, and the Dockerfile where a container engine runs.

mod support;

use std::process::Command;

fn parley() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parley"))
}

#[tokio::test]
async fn probe_exits_zero_only_when_the_server_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = support::spawn_binary(dir.path(), "probe-secret", &[]).await;
    let asked = tokio::task::spawn_blocking(move || {
        parley()
            .args(["probe", "--listen", &addr])
            .output()
            .unwrap()
    });
    let out = asked.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ready");

    // Nobody listening: a clear line and exit 1, within the timeout.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().to_string();
    drop(free);
    let out = parley()
        .args(["probe", "--listen", &nobody, "--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("no answer from {nobody}")), "{said}");
}

#[tokio::test]
async fn probe_of_a_wildcard_listener_asks_loopback_and_reports_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = support::spawn_binary(dir.path(), "probe-secret", &[]).await;
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let wildcard = format!("0.0.0.0:{port}");
    let out = tokio::task::spawn_blocking(move || {
        parley()
            .args(["probe", "--listen", &wildcard, "--path", "/nope"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("/nope answered 404"), "{said}");
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/parley.service"))
        .unwrap();
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=parley",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // `verify` checks that ExecStart names a program that exists: this build's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/parley", env!("CARGO_BIN_EXE_parley")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn the_image_builds_and_reports_healthy_where_a_container_engine_runs() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    for needle in [
        "FROM scratch",
        "USER 10001",
        "VOLUME /data",
        "HEALTHCHECK",
        "probe",
    ] {
        assert!(dockerfile.contains(needle), "the Dockerfile lacks {needle}");
    }
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    if !engine.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped the image build: no container engine runs here");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let built = Command::new("docker")
        .args(["build", "-q", "-t", "parley-test", root])
        .status()
        .unwrap();
    assert!(built.success(), "docker build failed");
    let ran = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/parley",
            "parley-test",
            "--version",
        ])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
}
