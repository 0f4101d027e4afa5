//! The crash tests, for any backend: a child process enqueues from many tasks and prints each
//! acknowledged id, or starts runs and walks them step by step; it is killed with SIGKILL at a
//! random moment; after reopening, every printed id must be there, and every run must show
//! each step's result exactly when its message was delivered, with its next step queued.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrule_store::{
    Advance, AttemptReport, Filter, MessageId, NewMessage, NewRun, RunChange, RunFilter, RunId,
    RunStatus, Status, Store, StoreError, StoreOptions,
};
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

/// Runs this binary's ignored test `child` with `env` set to `url`, kills it with SIGKILL after
/// a random 200–1200 ms, once it printed at least 10 lines starting with `prefix` (or after
/// 30 s), and answers the rest of every such line it printed. The output is read to its end,
/// which comes with the kill, so a child that stops printing is still killed on time.
async fn run_child_and_kill(
    child: &str,
    env: &str,
    url: &str,
    prefix: &'static str,
) -> Vec<String> {
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", child, "--nocapture"])
        .env(env, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    let printed = Arc::new(AtomicUsize::new(0));
    let reader = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(prefix) {
                    lines.push(rest.to_owned());
                    printed.store(lines.len(), Ordering::Relaxed);
                }
            }
            lines
        })
    };
    let kill_after = Duration::from_millis(fastrand::u64(200..1200));
    let start = Instant::now();
    while (start.elapsed() < kill_after || printed.load(Ordering::Relaxed) < 10)
        && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Child::kill sends SIGKILL on Unix.
    process.kill().unwrap();
    process.wait().unwrap();
    reader.join().unwrap()
}

/// Three rounds of: start the child on `url`, SIGKILL it after a random 200–1200 ms, reopen
/// and check that every id it printed is stored.
pub(crate) async fn sigkill_loses_no_acked_message(url: &str) {
    for round in 0..3 {
        let acked: Vec<MessageId> =
            run_child_and_kill("crash::crash_child", CRASH_URL, url, "ACK ")
                .await
                .iter()
                .map(|id| id.parse().unwrap())
                .collect();
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

const RUN_CRASH_URL: &str = "FERRULE_STORE_RUN_CRASH_URL";

/// Steps per run in the run crash test: `s0`, `s1`, … each one message.
const STEPS: usize = 4;

/// The lease the run crash test's workers take: short, so that the messages a killed child
/// held are due again soon after.
const RUN_LEASE: Duration = Duration::from_millis(300);

/// Claims due messages and moves each one's run on by one step, the step's result (a context
/// key) and the next step's message going in with the message's end; answers how many.
async fn advance_due<S: Store>(store: &S, owner: &str) -> usize {
    let claimed = store.claim_due(owner, 8, RUN_LEASE).await.unwrap();
    for c in &claimed {
        let step = c.message.run.clone().expect("a run's message");
        let i: usize = step.step[1..].parse().unwrap();
        let mut change = RunChange::new().merge(json!({ &step.step: true }));
        change = if i + 1 < STEPS {
            let next = format!("s{}", i + 1);
            change
                .state(next.clone())
                .step(next.clone())
                .enqueue(next, NewMessage::new("step", json!({ "step": i + 1 })))
        } else {
            change.status(RunStatus::Completed).state("completed")
        };
        let run = store.get_run(step.run).await.unwrap().unwrap().run;
        match store
            .complete_and_advance(
                &c.lease,
                AttemptReport::success(),
                Advance::new(step.run, run.version, change),
            )
            .await
        {
            // A lease that ran out while this worker was slow: its new holder moves on.
            Ok(_) | Err(StoreError::LeaseLost { .. }) => {}
            Err(e) => panic!("advancing {}: {e}", step.run),
        }
    }
    claimed.len()
}

/// The child half of the run crash test: starts runs and walks them step by step from many
/// tasks, printing each run it started; only runs when the parent sets
/// `FERRULE_STORE_RUN_CRASH_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the backends' crash tests"]
#[allow(clippy::print_stdout)]
async fn run_crash_child() {
    let Ok(url) = std::env::var(RUN_CRASH_URL) else {
        return;
    };
    let store = ferrule_store::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RunId>(1024);
    let tag = fastrand::u64(..);
    for task in 0..8 {
        let (store, tx) = (store.clone(), tx.clone());
        tokio::spawn(async move {
            for n in 0..25 {
                let started = store
                    .start_run(
                        NewRun::new("crash", format!("{tag}-{task}-{n}"), "s0", json!({})),
                        RunChange::new()
                            .step("s0")
                            .enqueue("s0", NewMessage::new("step", json!({ "step": 0 }))),
                    )
                    .await
                    .unwrap();
                if tx.send(started.run().id).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    for worker in 0..8 {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                if advance_due(&store, &format!("child-{worker}")).await == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some(id) = rx.recv().await {
        writeln!(out, "RUN {id}").unwrap();
        out.flush().unwrap();
    }
    // Every run started: keep walking them until killed.
    std::future::pending::<()>().await;
}

/// Checks what a kill left of every run: each step's result is in the context exactly when
/// its message was delivered, each step has one message, the version counts the changes,
/// and an unfinished run has exactly one pending message, for its next step.
async fn check_runs<S: Store>(store: &S, round: usize) -> usize {
    let mut cursor = None;
    let mut seen = 0;
    loop {
        let page = store
            .list_runs(&RunFilter::all(), cursor.as_ref(), 1000)
            .await
            .unwrap();
        for run in &page.runs {
            let d = store.get_run(run.id).await.unwrap().unwrap();
            let delivered: Vec<&str> = d
                .messages
                .iter()
                .filter(|m| m.status == Status::Delivered)
                .map(|m| m.step.as_str())
                .collect();
            let steps: HashSet<&str> = d.messages.iter().map(|m| m.step.as_str()).collect();
            assert_eq!(
                steps.len(),
                d.messages.len(),
                "round {round}: a step ran twice: {d:?}"
            );
            for i in 0..STEPS {
                let step = format!("s{i}");
                assert_eq!(
                    d.run.context.get(&step).is_some(),
                    delivered.contains(&step.as_str()),
                    "round {round}: step {step}'s result and its message's end disagree: {d:?}"
                );
            }
            assert_eq!(
                d.run.version,
                1 + delivered.len() as u64,
                "round {round}: {d:?}"
            );
            let pending: Vec<&str> = d
                .messages
                .iter()
                .filter(|m| m.status.is_pending())
                .map(|m| m.step.as_str())
                .collect();
            if delivered.len() == STEPS {
                assert_eq!(d.run.status, RunStatus::Completed, "round {round}: {d:?}");
                assert!(pending.is_empty(), "round {round}: {d:?}");
            } else {
                let next = format!("s{}", delivered.len());
                assert_eq!(pending, [next.as_str()], "round {round}: {d:?}");
            }
        }
        seen += page.runs.len();
        match page.next {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

/// Three rounds of: start the child on `url`, SIGKILL it after a random 200–1200 ms, reopen
/// and check every run (see [`check_runs`]) and that every run the child was told about is
/// stored; then walk every run to its end and check that each step ran exactly once.
pub(crate) async fn sigkill_mid_run_repeats_no_step(url: &str) {
    let mut acked = Vec::new();
    for round in 0..3 {
        let runs: Vec<RunId> =
            run_child_and_kill("crash::run_crash_child", RUN_CRASH_URL, url, "RUN ")
                .await
                .iter()
                .map(|id| id.parse().unwrap())
                .collect();
        assert!(
            runs.len() >= 10,
            "round {round}: the child started too little"
        );
        acked.extend(runs);
        let store = ferrule_store::open(url, StoreOptions::default())
            .await
            .unwrap();
        for id in &acked {
            assert!(
                store.get_run(*id).await.unwrap().is_some(),
                "round {round}: run {id} lost"
            );
        }
        check_runs(&store, round).await;
        drop(store);
    }
    // Walk everything to the end, after the killed child's leases ran out.
    tokio::time::sleep(RUN_LEASE + Duration::from_millis(100)).await;
    let store = ferrule_store::open(url, StoreOptions::default())
        .await
        .unwrap();
    store.recover_expired_leases().await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(
                async move { while advance_due(&store, &format!("parent-{w}")).await > 0 {} },
            )
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let total = check_runs(&store, 3).await;
    let completed = store
        .list_runs(&RunFilter::all().status(RunStatus::Completed), None, 1000)
        .await
        .unwrap();
    assert_eq!(completed.runs.len(), total, "every run walked to its end");
    assert!(total >= acked.len());
}
