//! `parley serve --config FILE` through the binary: a typo or a bad value names the file and
//! the key, the environment can name the file, and `--print-config` hides URL passwords.

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
