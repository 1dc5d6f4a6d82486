//! The SQLite store under a live server: recalled and InMail-deleted text leaves the
//! database files (write-ahead log included), while kept messages stay.

mod support;

use parley::config::Config;
use parley::store::{SqliteOptions, SqliteStore};
use std::path::Path;
use std::sync::Arc;
use support::{on_message, TestServer};

/// Whether any file in `dir` holds `needle`, byte for byte.
fn files_contain(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|f| {
        let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

async fn start(data: &Path) -> (TestServer, Arc<SqliteStore>) {
    let mut config = Config::with_secret(b"storage-secret".to_vec());
    config.limits.requests_per_second = 0;
    config.connections_per_ip_per_second = 0;
    let store = Arc::new(SqliteStore::open(data, SqliteOptions::default()).unwrap());
    let running = parley::server::spawn_with_store(&config, store.clone())
        .await
        .unwrap();
    let server = TestServer {
        running,
        secret: config.secret,
    };
    (server, store)
}

async fn checkpoint(store: &Arc<SqliteStore>) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.checkpoint())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn recalled_and_inmail_deleted_text_leaves_the_database_files() {
    let data = tempfile::tempdir().unwrap();
    let (server, store) = start(data.path()).await;
    let (mut alice, mut bob) = server.connected_pair("alice", "bob").await;
    let mut carol = server.connect("carol").await;

    let recalled = "recall-me-before-bob-reads-7f3a9c";
    let deleted = "an-inmail-sent-by-mistake-51d2e8";
    let kept = "this-message-stays-in-the-file-0b44";
    let m = alice.dm("bob", recalled).await;
    let i = alice.inmail("carol", &[], deleted).await;
    alice.dm("bob", kept).await;
    bob.expect("message").await;
    carol.expect("message").await;

    checkpoint(&store).await;
    for text in [recalled, deleted, kept] {
        assert!(
            files_contain(data.path(), text),
            "control: {text} is stored"
        );
    }

    alice.ok(on_message("recall", &m)).await;
    alice.ok(on_message("delete_inmail", &i)).await;
    checkpoint(&store).await;
    let names: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"parley.db".to_owned()), "{names:?}");
    assert!(
        !files_contain(data.path(), recalled),
        "recalled text in {names:?}"
    );
    assert!(
        !files_contain(data.path(), deleted),
        "deleted text in {names:?}"
    );
    assert!(files_contain(data.path(), kept), "kept text is still there");
    server.running.stop().await;
}
