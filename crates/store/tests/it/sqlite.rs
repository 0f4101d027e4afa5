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
crate::run_conformance_tests!(crate::sqlite::Sqlite);
crate::audit_conformance_tests!(crate::sqlite::Sqlite);
crate::alert_conformance_tests!(crate::sqlite::Sqlite);
crate::pause_conformance_tests!(crate::sqlite::Sqlite);
crate::shared_breaker_conformance_tests!(crate::sqlite::Sqlite);
crate::shared_limit_conformance_tests!(crate::sqlite::Sqlite);
crate::chat_conformance_tests!(crate::sqlite::Sqlite);
crate::rollup_conformance_tests!(crate::sqlite::Sqlite);
crate::schedule_conformance_tests!(crate::sqlite::Sqlite);
crate::search_conformance_tests!(crate::sqlite::Sqlite);

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

/// A lock let go a moment after the store was asked to open (as when a just-forked child of
/// the process that closed the store still shares the lock file until its `exec`) is waited
/// for, not reported as a running owner.
#[tokio::test]
async fn a_lock_released_a_moment_later_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let lock_path = dir.path().join("s.db.lock");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    held.try_lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
    });
    let started = std::time::Instant::now();
    SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .expect("the lock is taken once it is let go");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    release.join().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_run_repeats_no_step_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("runs.db").display());
    crate::crash::sigkill_mid_run_repeats_no_step(&url).await;
}

/// A tmpfs of `size_mib` MiB on `dir`, unmounted on drop; `Err` says why it cannot be mounted
/// (not root, no `mount`).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[allow(clippy::print_stderr)]
fn skipped(why: &str) {
    eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_storage_full_and_loses_nothing_acked() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(dir.path().join("fs"), 8) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let path = fs.0.join("store.db");
    let store = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap();
    let filler = fs.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for size in [chunk.len(), 4096, 512] {
        while let Ok(1..) = file.write(&chunk[..size]) {}
    }
    // Room for some of the writes below and not all: the disk fills up under them.
    let len = file.metadata().unwrap().len();
    file.set_len(len - 256 * 1024).unwrap();
    drop(file);

    // Concurrent writers, so that batches hold several jobs when the disk refuses one.
    let text = "x".repeat(2048);
    let mut tasks = Vec::new();
    for n in 0..200 {
        let store = store.clone();
        let text = text.clone();
        tasks.push(tokio::spawn(async move {
            store
                .enqueue(NewMessage::new("d", json!({"n": n, "text": text})))
                .await
        }));
    }
    let mut acked = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(enqueued) => acked.push(enqueued.id()),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
                assert!(e.is_transient());
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the full disk refused a write");
    assert!(!acked.is_empty(), "the space left took some writes");

    std::fs::remove_file(&filler).unwrap();
    acked.push(
        store
            .enqueue(NewMessage::new("d", json!({"after": true})))
            .await
            .unwrap()
            .id(),
    );
    drop(store);
    let store = SqliteStore::open(SqliteOptions::new(&path, options()))
        .await
        .unwrap();
    for id in acked {
        let detail = store.get(id).await.unwrap();
        assert_eq!(detail.unwrap().message.status, Status::Queued, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn run_transition_latency() {
    crate::runs::print_transition_latency::<Sqlite>("sqlite").await;
}
