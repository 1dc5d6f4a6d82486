//! A history written by `parley-load seed` is the server's own: a real server started on
//! it serves the inbox and every page of history, recalled messages as markers.

mod support;

use serde_json::json;

const SECRET: &str = "seeded-secret";

#[tokio::test]
async fn a_seeded_history_is_served_like_one_sent_through_the_wire() {
    let seeder =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_parley")).with_file_name("parley-load");
    assert!(
        seeder.exists(),
        "build the workspace's binaries first (scripts/test.sh does): {}",
        seeder.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&seeder)
        .args([
            "seed",
            "--messages",
            "3000",
            "--users",
            "20",
            "--conversations",
            "30",
        ])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_server, addr) = support::spawn_binary(dir.path(), SECRET, &["--store", "sqlite"]).await;
    let (mut seen, mut recalled) = (0, 0);
    for n in 0..20 {
        let mut c = support::connect_at(&addr, SECRET, &format!("u{n}")).await;
        let sync = c.ok(json!({"type": "sync"})).await;
        for entry in sync["inbox"].as_array().unwrap() {
            let messages = support::all_messages(&mut c, &entry["conversation"]["id"]).await;
            assert!(
                messages
                    .windows(2)
                    .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
                "history in order"
            );
            for m in &messages {
                match m["state"].as_str().unwrap() {
                    "visible" => assert_eq!(m["body"].as_str().unwrap().chars().count(), 64),
                    "recalled" => {
                        assert!(m.get("body").is_none(), "{m}");
                        recalled += 1;
                    }
                    _ => assert!(m.get("body").is_none(), "{m}"),
                }
            }
            seen += messages.len();
        }
    }
    // Each message is seen by every participant of its conversation, so at least once.
    assert!(
        seen >= 3000,
        "{seen} message views for 3,000 seeded messages"
    );
    assert!(recalled > 0, "recalls are among the seeded changes");
}
