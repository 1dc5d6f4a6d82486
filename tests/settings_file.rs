//! `parley serve --config FILE` through the binary: a typo or a bad value names the file and
//! the key, the environment can name the file, and `--print-config` hides URL passwords.

mod support;

use std::process::{Command, Output};

fn parley(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command.args(args).env_remove("PARLEY_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn settings(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `parley serve --config PATH --print-config`.
fn print_config(path: &std::path::Path) -> Output {
    parley(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_key_names_the_file_and_the_key() {
    let (_dir, path) = settings("listen = \"127.0.0.1:0\"\nmax_body_char = 100\n");
    let out = print_config(&path);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains(path.to_str().unwrap()), "{said}");
    assert!(said.contains("unknown setting `max_body_char`"), "{said}");
}

#[test]
fn a_bad_value_names_the_file_the_key_and_what_the_setting_is() {
    let (_dir, path) = settings("max_body_chars = \"lots\"\n");
    let out = print_config(&path);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains(&format!("{}: setting `max_body_chars`", path.display())),
        "{said}"
    );
    assert!(said.contains("invalid value 'lots'"), "{said}");
    assert!(said.contains("Longest message body"), "{said}");
    assert!(
        !said.contains("--max-body-chars"),
        "said as the file's key, not the flag: {said}"
    );

    let (_dir, path) = settings("recall_window = \"soon\"\n");
    let out = print_config(&path);
    assert!(
        stderr(&out).contains("setting `recall_window`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_file_can_be_named_by_parley_config_and_flags_win_over_it() {
    let (_dir, path) = settings("listen = \"127.0.0.1:9123\"\nmax_body_chars = 100\n");
    let out = parley(
        &["serve", "--print-config", "--max-body-chars", "200"],
        &[("PARLEY_CONFIG", &path)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("listen = \"127.0.0.1:9123\""), "{printed}");
    assert!(printed.contains("max_body_chars = 200"), "{printed}");
}

#[test]
fn print_config_hides_the_passwords_in_urls() {
    let (_dir, path) = settings(
        "store = \"postgres\"\n\
         database_url = \"postgres://parley:s3cret@db.internal/parley\"\n\
         broker_url = \"redis://:hunter2@cache.internal/0\"\n",
    );
    let out = print_config(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("database_url = \"postgres://parley:REDACTED@db.internal/parley\""),
        "{printed}"
    );
    assert!(
        printed.contains("broker_url = \"redis://:REDACTED@cache.internal/0\""),
        "{printed}"
    );
    assert!(
        !printed.contains("s3cret") && !printed.contains("hunter2"),
        "{printed}"
    );
}

/// Lines of a server's standard error until one containing `until`: those before it, and
/// that one.
async fn log_until(logs: &mut parley_testkit::LogLines, until: &str) -> (Vec<String>, String) {
    let mut before = Vec::new();
    let found = tokio::time::timeout(support::PATIENCE, async {
        while let Some(line) = logs.next_line().await.unwrap() {
            if line.contains(until) {
                return line;
            }
            before.push(line);
        }
        panic!("the log ended before `{until}`");
    })
    .await;
    match found {
        Ok(line) => (before, line),
        Err(_) => panic!("no `{until}` in the log; before: {before:?}"),
    }
}

fn hang_up(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn sighup_reads_the_log_filter_again_and_names_settings_that_need_a_restart() {
    let (dir, path) = settings("log = \"warn\"\nmax_body_chars = 4000\n");
    let config = path.display().to_string();
    let args = ["--secret", "hup", "--store", "memory", "--config", &config];
    let (child, addr, mut logs) = support::spawn_watched(&dir.path().join("data"), &args).await;

    // At `warn`, a session opens without a log line; after the file says `info` and
    // SIGHUP, the next one is logged, and the session open all along stays.
    let mut ann = support::connect_at(&addr, "hup", "ann").await;
    std::fs::write(&path, "log = \"info\"\nmax_body_chars = 10\n").unwrap();
    hang_up(&child);
    let (before, _) = log_until(&mut logs, "log filter now in use").await;
    assert!(
        !before.iter().any(|l| l.contains("session opened")),
        "logged at warn: {before:?}"
    );
    let (_, later) = log_until(&mut logs, "take effect at the next start").await;
    assert!(later.contains("max_body_chars"), "{later}");
    support::connect_at(&addr, "hup", "bob").await;
    log_until(&mut logs, "session opened").await;
    ann.ok(serde_json::json!({"type": "lookup", "id": "l", "user": "bob"}))
        .await;

    // A filter that is not one leaves the one in use.
    std::fs::write(&path, "log = \"parley=loud\"\nmax_body_chars = 10\n").unwrap();
    hang_up(&child);
    log_until(&mut logs, "log filter kept").await;
    support::connect_at(&addr, "hup", "cy").await;
    log_until(&mut logs, "session opened").await;
}
