//! The crash test, for any backend: a child process enqueues from many tasks and prints each
//! acknowledged id; it is killed with SIGKILL at a random moment; after reopening, every
//! printed id must be there.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrule_store::{Filter, MessageId, NewMessage, Store, StoreOptions};
use serde_json::json;

const CRASH_URL: &str = "FERRULE_STORE_CRASH_URL";

/// The child half of the crash test: enqueues from many tasks and prints each acked id.
/// It only runs when the parent sets `FERRULE_STORE_CRASH_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the backends' crash tests"]
#[allow(clippy::print_stdout)]
async fn crash_child() {
    let Ok(url) = std::env::var(CRASH_URL) else {
        return;
    };
    let store = ferrule_store::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<MessageId>(1024);
    for task in 0..32 {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let e = store
                    .enqueue(NewMessage::new("crash", json!({ "task": task, "n": n })))
                    .await
                    .unwrap();
                if tx.send(e.id()).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some(id) = rx.recv().await {
        writeln!(out, "ACK {id}").unwrap();
        out.flush().unwrap();
    }
}

/// Three rounds of: start the child on `url`, SIGKILL it after a random 200–1200 ms, reopen
/// and check that every id it printed is stored.
pub(crate) async fn sigkill_loses_no_acked_message(url: &str) {
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash::crash_child", "--nocapture"])
            .env(CRASH_URL, url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(fastrand::u64(200..1200));
        let reader = std::thread::spawn(move || {
            let start = Instant::now();
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ACK ") {
                    acked.push(id.parse::<MessageId>().unwrap());
                }
                if start.elapsed() >= kill_after && acked.len() >= 10 {
                    break;
                }
            }
            acked
        });
        let acked = reader.join().unwrap();
        // Child::kill sends SIGKILL on Unix.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            acked.len() >= 10,
            "round {round}: the child acked too little"
        );
        let store = ferrule_store::open(url, StoreOptions::default())
            .await
            .unwrap();
        let mut missing = Vec::new();
        for id in &acked {
            if store.get(*id).await.unwrap().is_none() {
                missing.push(*id);
            }
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acked ids lost after SIGKILL: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        let unique: HashSet<_> = acked.iter().collect();
        assert_eq!(unique.len(), acked.len());
        let stats = store.stats(Duration::from_secs(60)).await.unwrap();
        assert!(stats.by_status.queued >= acked.len() as u64);
        drop(store);
    }
    let store = ferrule_store::open(url, StoreOptions::default())
        .await
        .unwrap();
    let page = store.list(&Filter::all(), None, 1).await.unwrap();
    assert_eq!(page.messages.len(), 1);
}
