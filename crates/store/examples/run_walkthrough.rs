//! A run of the review route, end to end, on a SQLite store: what the route engine does at each
//! step, and what the store answers. `cargo run -p ferrule-store --example run_walkthrough
//! [sqlite://path.db]` (a temporary database by default).

#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::time::{Duration, SystemTime};

use ferrule_store::{
    Advance, AttemptReport, NewMessage, NewRun, NewWait, RunChange, RunConflict, RunStatus, Store,
    StoreError, StoreOptions, WaitOutcome,
};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ferrule-walkthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("runs.db").display()));
    let store = ferrule_store::open(&url, StoreOptions::default()).await?;
    let lease = Duration::from_secs(30);

    // A pull-request e-mail arrives: start the run, its card and its wait in one transaction.
    let token = "q3VfU1kz0TgqG8Wf2cX1Zw"; // 128 random bits in base64url, made by the engine
    let start = || {
        store.start_run(
            NewRun::new(
                "pr-review",
                "<pr-42@github.com>",
                "received",
                json!({"pr": 42, "title": "Fix the flaky test"}),
            ),
            RunChange::new()
                .state("processed")
                .step("card")
                .enqueue(
                    "card",
                    NewMessage::new("telegram:ops", json!({"text": "PR #42: approve?"})),
                )
                .open_wait(
                    NewWait::new(
                        token,
                        "approval",
                        SystemTime::now() + Duration::from_secs(3600),
                    )
                    .allowed(json!([1001])),
                ),
        )
    };
    let run = start().await?.run().clone();
    println!("started {} ({}, {})", run.id, run.status, run.state);
    let again = start().await?;
    println!(
        "the same e-mail again: created = {}, run {}",
        again.is_created(),
        again.run().id
    );

    // The dispatcher claims the card and Telegram accepts it: the step's end and the run's
    // change go in together.
    let card = store.claim_due("worker", 10, lease).await?.remove(0);
    println!(
        "claimed {} for step {:?}",
        card.message.destination,
        card.message.run.as_ref().map(|r| r.step.as_str())
    );
    let sent = store
        .complete_and_advance(
            &card.lease,
            AttemptReport::success().code("200"),
            Advance::new(
                run.id,
                run.version,
                RunChange::new()
                    .status(RunStatus::Waiting)
                    .state("awaiting_callback")
                    .step("approval")
                    .merge(json!({"card": {"message_id": 7}})),
            ),
        )
        .await?;
    println!(
        "card sent: {} ({}), version {}",
        sent.run.status, sent.run.state, sent.run.version
    );

    // Two presses of Approve arrive at once (a double tap). Each reads the run, decides, and
    // applies; a press that finds the run changed reads it again. The wait decides: the first
    // consumes it, the second finds it consumed.
    let (store_ref, run_id) = (&store, run.id);
    let press = |by: &'static str| async move {
        let (store, run) = (store_ref, run_id);
        loop {
            let current = store.get_run(run).await?.ok_or("the run is gone")?.run;
            let change = RunChange::new()
                .status(RunStatus::Active)
                .state("callback_received")
                .step("github")
                .close_wait(
                    token,
                    WaitOutcome::Consumed {
                        by: by.into(),
                        action: "approve".into(),
                    },
                )
                .enqueue("github", NewMessage::new("github", json!({"merge": 42})));
            match store
                .advance_run(Advance::new(run, current.version, change))
                .await
            {
                Err(StoreError::RunConflict {
                    conflict: RunConflict::Version { .. },
                    ..
                }) => println!("press by {by}: the run changed meanwhile; reading it again"),
                other => return Ok::<_, Box<dyn std::error::Error>>(other),
            }
        }
    };
    let (first, second) = tokio::join!(press("1001"), press("1002"));
    for answer in [first?, second?] {
        match answer {
            Ok(advanced) => println!("press: applied, state {}", advanced.run.state),
            Err(e) => println!("press: refused: {e}"),
        }
    }

    // GitHub merges; the run completes.
    let github = store.claim_due("worker", 10, lease).await?.remove(0);
    let current = store.get_run(run.id).await?.ok_or("the run is gone")?.run;
    store
        .complete_and_advance(
            &github.lease,
            AttemptReport::success(),
            Advance::new(
                run.id,
                current.version,
                RunChange::new()
                    .status(RunStatus::Completed)
                    .state("completed"),
            ),
        )
        .await?;

    let detail = store.get_run(run.id).await?.ok_or("the run is gone")?;
    println!("\ntimeline of {}:", run.id);
    for e in &detail.events {
        println!(
            "  {:>2} {:<14} {:<9} {:<18} step={:<9} {}",
            e.seq,
            e.kind.as_str(),
            e.status.as_str(),
            e.state,
            e.step.as_deref().unwrap_or("-"),
            e.detail.as_deref().unwrap_or("")
        );
    }
    println!("messages:");
    for m in &detail.messages {
        println!(
            "  {} {:<14} step={:<9} {}",
            m.id, m.destination, m.step, m.status
        );
    }
    let stats = store
        .run_stats("pr-review", Duration::from_secs(3600))
        .await?;
    println!(
        "stats: completed {}, success rate {:?}, mean processing {:?}",
        stats.finished.completed, stats.success_rate, stats.mean
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
