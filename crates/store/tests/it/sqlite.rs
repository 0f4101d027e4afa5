//! The SQLite backend: conformance suite, bad input, the process lock and the crash test.

use std::time::Duration;

use ferrule_policy::ManualClock;
use ferrule_store::{
    AttemptReport, ErrorKind, NewMessage, SqliteOptions, SqliteStore, Status, Store, StoreError,
    StoreOptions,
};
use serde_json::json;

use crate::conformance::{Backend, Fixture};

pub(crate) struct Sqlite;

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn open(options: StoreOptions, clock: ManualClock) -> Fixture<SqliteStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"), options))
            .await
            .unwrap();
        Fixture {
            store,
            clock,
            _keep: Box::new(dir),
        }
    }
}

crate::conformance_tests!(crate::sqlite::Sqlite);

fn options() -> StoreOptions {
    StoreOptions::with_clock(ManualClock::new().shared())
}

#[tokio::test]
async fn second_open_of_same_file_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let first = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap();
    let err = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    assert!(err.to_string().contains("s.db.lock"), "{err}");
    drop(first);
    // Dropping the last handle closes the database and frees the lock.
    SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap();
}

#[tokio::test]
async fn unwritable_path_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("s.db");
    let err = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Open, "{err}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

#[tokio::test]
async fn corrupt_file_is_a_corrupt_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let err = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[tokio::test]
async fn bad_urls_are_typed_errors() {
    for url in ["sqlite://", "sqlite://:memory:", "redis://x"] {
        let err = ferrule_store::open(url, options()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(
        SqliteStore::open(SqliteOptions::new(&path, options()))
            .await
            .unwrap(),
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE store_meta SET value = '999' WHERE key = 'ferrule.schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn reopening_releases_the_previous_owners_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let clock = ManualClock::new();
    let store = SqliteStore::open(SqliteOptions::new(
        &path,
        StoreOptions::with_clock(clock.shared()),
    ))
    .await
    .unwrap();
    let id = store
        .enqueue(NewMessage::new("d", json!(1)))
        .await
        .unwrap()
        .id();
    let claimed = store
        .claim_due("w", 1, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    drop(store);
    let store = SqliteStore::open(SqliteOptions::new(
        &path,
        StoreOptions::with_clock(clock.shared()),
    ))
    .await
    .unwrap();
    assert_eq!(store.recovered_at_open(), 1);
    let m = store.get(id).await.unwrap().unwrap().message;
    assert_eq!(m.status, Status::Retrying);
    let again = store
        .claim_due("w2", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    store
        .complete(&again[0].lease, AttemptReport::success())
        .await
        .unwrap();
}

#[tokio::test]
async fn store_options_are_validated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        read_connections: 0,
        ..options()
    };
    let err = SqliteStore::open(SqliteOptions::new(dir.path().join("s.db"), opts))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read_connections"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_sigkill_loses_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crate::crash::sigkill_loses_no_acked_message(&url).await;
}
