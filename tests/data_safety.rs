//! The data directory is safe against the operator's mistakes, through the real binary: a
//! second server on a live directory is refused, empty and foreign databases are refused
//! untouched, and backups and restores write only where they should and carry the token
//! secret.

mod support;

use serde_json::json;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Run the `parley` binary with `args` to its end.
async fn parley(args: &[&std::ffi::OsStr]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("parley exits by itself")
        .expect("parley runs")
}

/// Run `parley serve` on `data`, expecting it to refuse to start: its error output.
async fn refused_to_serve(data: &Path) -> String {
    let out = parley(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--secret".as_ref(),
        "s".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ])
    .await;
    assert!(!out.status.success(), "serve started on {}", data.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_second_server_on_a_live_data_directory_is_refused_naming_the_first() {
    let data = tempfile::tempdir().unwrap();
    let (mut first, addr) = support::spawn_binary(data.path(), "s", &[]).await;
    let pid = first.id().expect("running");
    let error = refused_to_serve(data.path()).await;
    assert!(error.contains("is in use"), "{error}");
    assert!(error.contains(&format!("pid {pid}")), "{error}");
    // The first one is untouched and still serves.
    let (status, _) = support::http_get(&addr, "/readyz").await;
    assert_eq!(status, 200);

    // A killed server leaves no stale lock behind: the kernel releases it.
    first.kill().await.unwrap();
    let (_second, addr) = support::spawn_binary(data.path(), "s", &[]).await;
    assert_eq!(support::http_get(&addr, "/readyz").await.0, 200);
}

#[tokio::test]
async fn an_empty_or_foreign_database_is_refused_and_left_as_it_was() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("parley.db"), b"").unwrap();
    let error = refused_to_serve(empty.path()).await;
    assert!(error.contains("is empty (0 bytes)"), "{error}");
    assert_eq!(
        std::fs::metadata(empty.path().join("parley.db"))
            .unwrap()
            .len(),
        0
    );

    let foreign = tempfile::tempdir().unwrap();
    let path = foreign.path().join("parley.db");
    let tables = |path: &Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut q = conn.prepare("SELECT name FROM sqlite_schema").unwrap();
        let names = q.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
            .unwrap();
    }
    let error = refused_to_serve(foreign.path()).await;
    assert!(error.contains("is not a parley database"), "{error}");
    assert!(error.contains("invoices"), "{error}");
    assert_eq!(tables(&path), ["invoices"], "no parley tables added");

    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", 0x4750_4b47)
            .unwrap();
    }
    let error = refused_to_serve(foreign.path()).await;
    assert!(error.contains("another application"), "{error}");
    assert_eq!(tables(&path), ["invoices"]);
}

#[tokio::test]
async fn backups_write_only_new_paths_or_regular_files_outside_live_directories() {
    let data = tempfile::tempdir().unwrap();
    let (_server, _addr) = support::spawn_binary(data.path(), "s", &[]).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let backup = |to: &Path| {
        let to = to.to_owned();
        let data = data.path().to_owned();
        async move {
            parley(&[
                "backup".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
                "--to".as_ref(),
                to.as_os_str(),
            ])
            .await
        }
    };

    // A symlink, even to a regular file: the link would be replaced, the file kept stale.
    let kept = elsewhere.path().join("kept.txt");
    std::fs::write(&kept, "not a backup").unwrap();
    let link = elsewhere.path().join("link.db");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    let out = backup(&link).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("is a symbolic link"), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "not a backup");

    // A device.
    let out = backup(Path::new("/dev/null")).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("device"), "{}", text(&out));
    use std::os::unix::fs::FileTypeExt;
    let null = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        null.file_type().is_char_device(),
        "/dev/null is still a device"
    );

    // A directory, and a file inside the live data directory.
    let out = backup(elsewhere.path()).await;
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
    let out = backup(&data.path().join("copy.db")).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("live data directory"), "{}", text(&out));
    assert!(!data.path().join("copy.db").exists());

    // A new path, then the same path again (a regular file now): both written.
    let to = elsewhere.path().join("parley-backup.db");
    for _ in 0..2 {
        let out = backup(&to).await;
        assert!(out.status.success(), "{}", text(&out));
        // The server was given its secret, so the directory keeps none to copy.
        assert!(
            text(&out).contains("without a token secret"),
            "{}",
            text(&out)
        );
    }
    assert!(!elsewhere.path().join("parley-backup.db.partial").exists());
}

#[tokio::test]
async fn a_restored_directory_has_the_history_and_accepts_the_old_tokens() {
    let data = tempfile::tempdir().unwrap();
    // No --secret: the server makes one and keeps it in its data directory.
    let (mut server, addr) = support::spawn_serving(data.path(), &[]).await;
    let secret = std::fs::read_to_string(data.path().join("secret")).unwrap();
    let (mut ann, mut ben) = (
        support::connect_at(&addr, &secret, "ann").await,
        support::connect_at(&addr, &secret, "ben").await,
    );
    support::connect_users(&mut ann, &mut ben).await;
    let sent = ann.dm("ben", "kept across the restore").await;
    let conversation = sent["conversation"].clone();

    let saved = tempfile::tempdir().unwrap();
    let file = saved.path().join("backup.db");
    let out = parley(&[
        "backup".as_ref(),
        "--data".as_ref(),
        data.path().as_os_str(),
        "--to".as_ref(),
        file.as_os_str(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("with the token secret"),
        "{}",
        text(&out)
    );
    // It holds the secret that signs any token: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "backup mode {mode:o}");

    let restore = |into: &Path, replace: bool| {
        let (from, into) = (file.clone(), into.to_owned());
        async move {
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "restore".as_ref(),
                "--from".as_ref(),
                from.as_os_str(),
                "--data".as_ref(),
                into.as_os_str(),
            ];
            if replace {
                args.push("--replace".as_ref());
            }
            parley(&args).await
        }
    };
    // Never into a live directory, even with --replace.
    let out = restore(data.path(), true).await;
    assert!(!out.status.success());
    let pid = server.id().unwrap();
    assert!(text(&out).contains(&format!("pid {pid}")), "{}", text(&out));

    // A new host: a new directory, the backup restored into it, the old token accepted.
    let host = tempfile::tempdir().unwrap();
    let into = host.path().join("data");
    let out = restore(&into, false).await;
    assert!(out.status.success(), "{}", text(&out));
    server.kill().await.unwrap();
    let (mut restored, addr) = support::spawn_serving(&into, &[]).await;
    let token_of_old = parley::auth::mint(secret.as_bytes(), "ben", false, Duration::from_secs(60));
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token_of_old}"))
        .await
        .unwrap()
        .0;
    let mut ben = support::Client::open(ws).await;
    let bodies: Vec<_> = ben
        .messages(&conversation)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("kept across the restore")]);
    ben.close().await;
    restored.kill().await.unwrap();

    // A directory holding a database is replaced only when asked, and its database kept.
    let out = restore(&into, false).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("--replace"), "{}", text(&out));
    let out = restore(&into, true).await;
    assert!(out.status.success(), "{}", text(&out));
    let aside = std::fs::read_dir(&into)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("parley.db.replaced-")
        });
    assert!(aside, "the replaced database is kept beside");
}

#[tokio::test]
async fn a_backup_that_is_not_a_parley_database_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.db");
    std::fs::write(&bogus, "this is not SQLite at all, just some text").unwrap();
    let into = dir.path().join("data");
    let out = parley(&[
        "restore".as_ref(),
        "--from".as_ref(),
        bogus.as_os_str(),
        "--data".as_ref(),
        into.as_os_str(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a parley database"),
        "{}",
        text(&out)
    );
    assert!(!into.join("parley.db").exists());
}

#[tokio::test]
async fn parley_token_signs_only_with_the_servers_secret_and_refuses_bad_users_and_ttls() {
    let data = tempfile::tempdir().unwrap();
    let token = |args: &[&str]| {
        let mut all: Vec<std::ffi::OsString> = vec!["token".into()];
        all.extend(args.iter().map(std::ffi::OsString::from));
        all.extend(["--data".into(), data.path().as_os_str().to_owned()]);
        async move {
            let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
            parley(&refs).await
        }
    };
    // A directory no server ran in has no secret: nothing is minted, nothing is made up.
    let out = token(&["alice"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no secret to sign with"),
        "{}",
        text(&out)
    );
    assert!(!data.path().join("secret").exists());

    for bad in ["", " alice", "al\u{7}ice"] {
        let out = token(&[bad, "--secret", "s"]).await;
        assert!(!out.status.success(), "{bad:?} minted");
        assert!(text(&out).contains("cannot mint"), "{}", text(&out));
    }
    let out = token(&["alice", "--secret", "s", "--ttl", "400d"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("--ttl"), "{}", text(&out));

    // Once a server has made its secret, the token minted from the directory is its own.
    let (_server, addr) = support::spawn_serving(data.path(), &[]).await;
    let out = token(&["alice"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let minted = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={minted}"))
        .await
        .unwrap()
        .0;
    let mut alice = support::Client::open(ws).await;
    alice.ok(json!({"type": "sync"})).await;
}
