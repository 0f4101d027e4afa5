//! The conformance suite for runs and waits: every case is generic over [`Backend`] and is
//! instantiated once per backend with [`run_conformance_tests!`].

use std::collections::HashSet;
use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{
    Advance, AttemptReport, Claimed, ErrorKind, Filter, NewMessage, NewRun, NewWait, OutcomeClass,
    ReplayTarget, Run, RunChange, RunConflict, RunEventKind, RunFilter, RunId, RunStatus, RunStep,
    Status, Store, StoreError, TIMER_DESTINATION, WaitOutcome, WaitState,
};
use serde_json::json;

use crate::conformance::{Backend, Fixture, fixture};

const LEASE: Duration = Duration::from_secs(30);

/// Instantiates every case for a backend type, in a module `runs`.
#[macro_export]
macro_rules! run_conformance_tests {
    ($backend:ty) => {
        mod runs {
            $crate::conformance_tests!(@cases runs, $backend,
                a_run_started_twice_with_one_key_is_one_run,
                a_run_walks_its_steps_each_change_with_its_messages,
                complete_and_advance_is_all_or_nothing,
                a_stale_lease_or_a_stale_version_changes_nothing,
                concurrent_consumers_of_one_wait_exactly_one_wins,
                consume_after_expiry_and_expiry_after_consume_are_refused,
                an_expiry_is_a_timer_message_tagged_with_its_wait,
                get_run_and_list_runs_filter_and_page,
                run_stats_leave_out_time_spent_waiting,
                retention_purges_finished_runs_and_keeps_waiting_ones,
                a_failed_step_is_retried_with_its_run_and_never_replayed,
                cancelling_a_run_cancels_its_pending_messages_and_waits,
                bad_run_input_is_refused_before_any_write
            );
        }
    };
}

/// A token of the right shape, distinct per `n`.
fn token(n: u32) -> String {
    format!("tok{n:0>19}")
}

fn card_message(n: u32) -> NewMessage {
    NewMessage::new("telegram:ops", json!({ "text": format!("PR #{n}") }))
}

fn github() -> NewMessage {
    NewMessage::new("github", json!({ "merge": true }))
}

/// The golden path's start: `received`, the card to send and its wait, expiring in an hour.
async fn start<S: Store>(f: &Fixture<S>, key: &str, n: u32) -> Run {
    let expires = f.clock.system_now() + Duration::from_secs(3600);
    f.store
        .start_run(
            NewRun::new("pr-review", key, "received", json!({ "pr": n })),
            RunChange::new()
                .state("processed")
                .step("card")
                .enqueue("card", card_message(n))
                .open_wait(
                    NewWait::new(token(n), "approval", expires)
                        .allowed(json!([42]))
                        .attached(json!({ "chat": -100 })),
                ),
        )
        .await
        .unwrap()
        .run()
        .clone()
}

/// Claims every due message that is not a timer; panics if a timer is due.
async fn claim_work<S: Store>(f: &Fixture<S>) -> Vec<Claimed> {
    let claimed = f.store.claim_due("w", 100, LEASE).await.unwrap();
    assert!(
        claimed
            .iter()
            .all(|c| c.message.destination != TIMER_DESTINATION),
        "no timer is due"
    );
    claimed
}

/// Starts a run of `route` with `key`, `received`, with an empty context and no change.
async fn start_bare<S: Store>(store: &S, route: &str, key: &str) -> ferrule_store::Started {
    store
        .start_run(
            NewRun::new(route, key, "received", json!({})),
            RunChange::new(),
        )
        .await
        .unwrap()
}

/// Applies `change` to `run` at its version; answers the run after it.
async fn advance<S: Store>(store: &S, run: &Run, change: RunChange) -> Run {
    store
        .advance_run(Advance::new(run.id, run.version, change))
        .await
        .unwrap()
        .run
}

fn conflict(err: StoreError) -> RunConflict {
    match err {
        StoreError::RunConflict { conflict, .. } => conflict,
        other => panic!("expected a run conflict, got {other}"),
    }
}

fn press(by: &str, action: &str) -> WaitOutcome {
    WaitOutcome::Consumed {
        by: by.into(),
        action: action.into(),
    }
}

pub(crate) async fn a_run_started_twice_with_one_key_is_one_run<B: Backend>() {
    let f = fixture::<B>().await;
    let first = start(&f, "<pr-1@github.com>", 1).await;
    assert_eq!(first.version, 1);
    assert_eq!(first.status, RunStatus::Active);
    let again = f
        .store
        .start_run(
            NewRun::new("pr-review", "<pr-1@github.com>", "received", json!({})),
            RunChange::new().enqueue("card", card_message(2)),
        )
        .await
        .unwrap();
    assert!(!again.is_created());
    assert_eq!(again.run(), &first);
    // The same key on another route is another run.
    let other = start_bare(&f.store, "other", "<pr-1@github.com>").await;
    assert!(other.is_created());
    // Concurrent starts with one key: one run, one card, whoever wins.
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .start_run(
                        NewRun::new("pr-review", "<pr-9@github.com>", "received", json!({})),
                        RunChange::new().enqueue("card", card_message(100 + n)),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut started = Vec::new();
    for t in tasks {
        started.push(t.await.unwrap());
    }
    assert_eq!(started.iter().filter(|s| s.is_created()).count(), 1);
    let ids: HashSet<RunId> = started.iter().map(|s| s.run().id).collect();
    assert_eq!(ids.len(), 1);
    let run = f.store.get_run(*ids.iter().next().unwrap()).await.unwrap();
    assert_eq!(run.unwrap().messages.len(), 1, "one card");
    let page = f
        .store
        .list_runs(&RunFilter::all(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 3);
}

pub(crate) async fn a_run_walks_its_steps_each_change_with_its_messages<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 7).await;
    assert_eq!(
        (run.state.as_str(), run.step.as_deref()),
        ("processed", Some("card"))
    );
    // The card is an ordinary message tagged with its run and step.
    let claimed = claim_work(&f).await;
    assert_eq!(claimed.len(), 1);
    let card = &claimed[0];
    assert_eq!(
        card.message.run,
        Some(RunStep {
            run: run.id,
            step: "card".into()
        })
    );
    f.clock.advance(Duration::from_millis(120));
    let sent = f
        .store
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
                    .merge(json!({ "steps": { "card": { "message_id": 555 } } }))
                    .detail("card sent")
                    .duration(Duration::from_millis(120)),
            ),
        )
        .await
        .unwrap();
    assert_eq!(sent.run.version, 2);
    assert_eq!(sent.run.status, RunStatus::Waiting);
    assert_eq!(sent.run.waiting_since, Some(f.clock.system_now()));
    let wait = f.store.find_wait(&token(7)).await.unwrap().unwrap();
    assert_eq!(wait.run, run.id);
    assert_eq!(wait.state, WaitState::Open);
    assert_eq!(wait.allowed, Some(json!([42])));
    assert_eq!(wait.attached, Some(json!({ "chat": -100 })));
    // A person answers ten minutes later: the wait is consumed, GitHub's step enqueued.
    f.clock.advance(Duration::from_secs(600));
    let pressed = f
        .store
        .advance_run(Advance::new(
            run.id,
            sent.run.version,
            RunChange::new()
                .status(RunStatus::Active)
                .state("callback_received")
                .step("github")
                .close_wait(token(7), press("42", "approve"))
                .merge(json!({ "answer": "approve" }))
                .enqueue("github", github()),
        ))
        .await
        .unwrap();
    assert_eq!(pressed.enqueued.len(), 1);
    assert_eq!(pressed.run.waited, Duration::from_secs(600));
    let wait = f.store.find_wait(&token(7)).await.unwrap().unwrap();
    assert_eq!(wait.state, WaitState::Consumed);
    assert_eq!(wait.consumed_by.as_deref(), Some("42"));
    assert_eq!(wait.action.as_deref(), Some("approve"));
    assert_eq!(wait.closed_at, Some(f.clock.system_now()));
    // The consumed wait's timer is cancelled: nothing waits in the queue for it.
    let timer = f.store.get(wait.timer.unwrap()).await.unwrap().unwrap();
    assert_eq!(timer.message.status, Status::Cancelled);
    let claimed = claim_work(&f).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, pressed.enqueued[0].id());
    f.clock.advance(Duration::from_millis(80));
    let done = f
        .store
        .complete_and_advance(
            &claimed[0].lease,
            AttemptReport::success(),
            Advance::new(
                run.id,
                pressed.run.version,
                RunChange::new()
                    .status(RunStatus::Completed)
                    .state("completed"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(done.run.finished_at, Some(f.clock.system_now()));
    assert_eq!(
        done.run.processing_time(f.clock.system_now()),
        Duration::from_millis(200)
    );
    let detail = f.store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(detail.run, done.run);
    assert_eq!(
        detail.run.context,
        json!({"pr": 7, "steps": {"card": {"message_id": 555}}, "answer": "approve"})
    );
    let timeline: Vec<_> = detail
        .events
        .iter()
        .map(|e| (e.seq, e.kind, e.state.as_str(), e.step.as_deref()))
        .collect();
    assert_eq!(
        timeline,
        [
            (1, RunEventKind::Started, "processed", Some("card")),
            (2, RunEventKind::WaitOpened, "processed", Some("approval")),
            (
                3,
                RunEventKind::Advanced,
                "awaiting_callback",
                Some("approval")
            ),
            (
                4,
                RunEventKind::Advanced,
                "callback_received",
                Some("github")
            ),
            (
                5,
                RunEventKind::WaitConsumed,
                "callback_received",
                Some("approval")
            ),
            (6, RunEventKind::Advanced, "completed", Some("github")),
        ]
    );
    assert_eq!(detail.events[2].message, Some(card.message.id));
    assert_eq!(detail.events[2].detail.as_deref(), Some("card sent"));
    assert_eq!(detail.events[2].duration, Some(Duration::from_millis(120)));
    assert_eq!(detail.events[4].detail.as_deref(), Some("approve by 42"));
    let messages: Vec<_> = detail
        .messages
        .iter()
        .map(|m| (m.step.as_str(), m.destination.as_str(), m.status))
        .collect();
    assert_eq!(
        messages,
        [
            ("card", "telegram:ops", Status::Delivered),
            ("approval", TIMER_DESTINATION, Status::Cancelled),
            ("github", "github", Status::Delivered),
        ]
    );
    assert_eq!(detail.waits.len(), 1);
}

pub(crate) async fn complete_and_advance_is_all_or_nothing<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 1).await;
    let other = start(&f, "k2", 2).await;
    let claimed = claim_work(&f).await;
    let card = claimed
        .iter()
        .find(|c| c.message.run.as_ref().is_some_and(|r| r.run == run.id))
        .unwrap();
    let before = f.store.get_run(run.id).await.unwrap().unwrap();
    // The change's last write (the wait, whose token another run holds) fails after the
    // message's end, the run's row, its events and the next message were written: the
    // transaction undoes all of them, as a crash before its commit would.
    let err = f
        .store
        .complete_and_advance(
            &card.lease,
            AttemptReport::success(),
            Advance::new(
                run.id,
                run.version,
                RunChange::new()
                    .state("sent_to_telegram")
                    .merge(json!({ "sent": true }))
                    .enqueue("reminder", card_message(9))
                    .open_wait(NewWait::new(
                        token(2),
                        "second",
                        f.clock.system_now() + Duration::from_secs(60),
                    )),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("token"), "{err}");
    assert_eq!(f.store.get_run(run.id).await.unwrap().unwrap(), before);
    let message = f.store.get(card.message.id).await.unwrap().unwrap();
    assert_eq!(message.message.status, Status::Delivering);
    assert_eq!(message.events.len(), 2, "queued, delivering");
    let all = f.store.list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(all.messages.len(), 4, "two cards, two timers, no reminder");
    assert_eq!(
        f.store
            .get_run(other.id)
            .await
            .unwrap()
            .unwrap()
            .waits
            .len(),
        1
    );
    // The same lease, a valid change: the message's end and the next step go in together.
    let ok = f
        .store
        .complete_and_advance(
            &card.lease,
            AttemptReport::success(),
            Advance::new(
                run.id,
                run.version,
                RunChange::new()
                    .state("sent_to_telegram")
                    .enqueue("reminder", card_message(9)),
            ),
        )
        .await
        .unwrap();
    let message = f.store.get(card.message.id).await.unwrap().unwrap();
    assert_eq!(message.message.status, Status::Delivered);
    let next = f.store.get(ok.enqueued[0].id()).await.unwrap().unwrap();
    assert_eq!(next.message.status, Status::Queued);
    assert_eq!(next.message.run.unwrap().step, "reminder");
}

pub(crate) async fn a_stale_lease_or_a_stale_version_changes_nothing<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 1).await;
    let other = start(&f, "k2", 2).await;
    let claimed = claim_work(&f).await;
    let of = |id: RunId| {
        claimed
            .iter()
            .find(|c| c.message.run.as_ref().is_some_and(|r| r.run == id))
            .unwrap()
            .clone()
    };
    let card = of(run.id);
    let before = f.store.get_run(run.id).await.unwrap().unwrap();
    let next = || RunChange::new().state("sent").enqueue("next", github());
    // A version the run has moved past.
    let err = f
        .store
        .complete_and_advance(
            &card.lease,
            AttemptReport::success(),
            Advance::new(run.id, run.version + 1, next()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RunConflict);
    assert_eq!(
        conflict(err),
        RunConflict::Version {
            expected: 2,
            found: 1
        }
    );
    // Another run's message cannot advance this run.
    let err = f
        .store
        .complete_and_advance(
            &of(other.id).lease,
            AttemptReport::success(),
            Advance::new(run.id, run.version, next()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // A lease that expired and was claimed again.
    f.clock.advance(LEASE + Duration::from_secs(1));
    let again = f.store.claim_due("w2", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 2);
    let err = f
        .store
        .complete_and_advance(
            &card.lease,
            AttemptReport::success(),
            Advance::new(run.id, run.version, next()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    let err = f
        .store
        .dead_letter_and_advance(
            &card.lease,
            AttemptReport::new(OutcomeClass::Permanent),
            Advance::new(run.id, run.version, next()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    assert_eq!(f.store.get_run(run.id).await.unwrap().unwrap(), {
        let mut d = before.clone();
        d.messages[0].attempts = 2;
        d.messages[0].updated_at = f.clock.system_now();
        d
    });
    // An unknown run.
    let missing = RunId::from_ulid(ulid::Ulid::new());
    let err = f
        .store
        .advance_run(Advance::new(missing, 1, next()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::RunNotFound { id } if id == missing),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(f.store.get_run(missing).await.unwrap().is_none());
    assert!(f.store.find_wait(&token(99)).await.unwrap().is_none());
}

pub(crate) async fn concurrent_consumers_of_one_wait_exactly_one_wins<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 1).await;
    // Two button presses, a duplicate update and the card's own delivery all race; each
    // press decides on what it read, and the wait's condition decides between them.
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let mut refused = Vec::new();
                loop {
                    let current = store.get_run(run.id).await.unwrap().unwrap().run;
                    let change = RunChange::new()
                        .state(format!("pressed by {n}"))
                        .close_wait(token(1), press(&n.to_string(), "approve"))
                        .enqueue("github", github());
                    match store
                        .advance_run(Advance::new(run.id, current.version, change))
                        .await
                    {
                        Ok(advanced) => return (n, Ok(advanced), refused),
                        Err(e) => match conflict(e) {
                            // Another press changed the run first: read again, decide again.
                            RunConflict::Version { .. } => refused.push(n),
                            closed => return (n, Err(closed), refused),
                        },
                    }
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (n, result, _) = t.await.unwrap();
        match result {
            Ok(advanced) => winners.push((n, advanced)),
            Err(closed) => assert_eq!(
                closed,
                RunConflict::WaitClosed {
                    state: WaitState::Consumed
                }
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one press wins");
    let (n, won) = &winners[0];
    let detail = f.store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(detail.run.version, 2);
    assert_eq!(detail.run.state, format!("pressed by {n}"));
    assert_eq!(won.run, detail.run);
    let wait = &detail.waits[0];
    assert_eq!(wait.consumed_by.as_deref(), Some(n.to_string().as_str()));
    let github_steps = detail
        .messages
        .iter()
        .filter(|m| m.step == "github")
        .count();
    assert_eq!(github_steps, 1, "one press, one GitHub action");
}

pub(crate) async fn consume_after_expiry_and_expiry_after_consume_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let late = start(&f, "late", 1).await;
    let early = start(&f, "early", 2).await;
    // Early's wait is consumed; its timer is cancelled with it.
    let consumed = f
        .store
        .advance_run(Advance::new(
            early.id,
            early.version,
            RunChange::new().close_wait(token(2), press("42", "approve")),
        ))
        .await
        .unwrap();
    // Past the expiry, before the timer is handled: a press is already too late.
    f.clock.advance(Duration::from_secs(3600));
    let err = f
        .store
        .advance_run(Advance::new(
            late.id,
            late.version,
            RunChange::new().close_wait(token(1), press("42", "approve")),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        conflict(err),
        RunConflict::WaitClosed {
            state: WaitState::Expired
        }
    );
    let wait = f.store.find_wait(&token(1)).await.unwrap().unwrap();
    assert_eq!(wait.state, WaitState::Open);
    assert!(!wait.is_open_at(f.clock.system_now()));
    // The timers that fall due: only late's (early's was cancelled with its wait).
    let due = f.store.claim_due("w", 100, LEASE).await.unwrap();
    let timers: Vec<_> = due
        .iter()
        .filter(|c| c.message.destination == TIMER_DESTINATION)
        .collect();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].message.payload, json!({ "wait": token(1) }));
    let expired = f
        .store
        .complete_and_advance(
            &timers[0].lease,
            AttemptReport::success(),
            Advance::new(
                late.id,
                late.version,
                RunChange::new()
                    .status(RunStatus::Expired)
                    .state("expired")
                    .error("no answer within an hour")
                    .close_wait(token(1), WaitOutcome::Expired),
            ),
        )
        .await
        .unwrap();
    assert_eq!(expired.run.status, RunStatus::Expired);
    let err = f
        .store
        .advance_run(Advance::new(
            late.id,
            expired.run.version,
            RunChange::new().close_wait(token(1), press("42", "approve")),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        conflict(err),
        RunConflict::WaitClosed {
            state: WaitState::Expired
        }
    );
    // Expiring the consumed wait is refused too, and so is consuming it twice, or a wait of
    // another run.
    for outcome in [WaitOutcome::Expired, press("43", "merge")] {
        let err = f
            .store
            .advance_run(Advance::new(
                early.id,
                consumed.run.version,
                RunChange::new().close_wait(token(2), outcome),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            conflict(err),
            RunConflict::WaitClosed {
                state: WaitState::Consumed
            }
        );
    }
    let err = f
        .store
        .advance_run(Advance::new(
            early.id,
            consumed.run.version,
            RunChange::new().close_wait(token(1), WaitOutcome::Cancelled),
        ))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), RunConflict::WaitNotFound);
    assert_eq!(
        f.store.get_run(early.id).await.unwrap().unwrap().run,
        consumed.run
    );
}

pub(crate) async fn an_expiry_is_a_timer_message_tagged_with_its_wait<B: Backend>() {
    let f = fixture::<B>().await;
    let expires = f.clock.system_now() + Duration::from_secs(600);
    let started = f
        .store
        .start_run(
            NewRun::new("r", "k", "waiting", json!({})),
            RunChange::new()
                .status(RunStatus::Waiting)
                .open_wait(NewWait::new(token(5), "approval", expires)),
        )
        .await
        .unwrap();
    let ferrule_store::Started::Created(advanced) = started else {
        panic!("a new run");
    };
    let timer_id = advanced.timer.expect("a timer");
    let wait = f.store.find_wait(&token(5)).await.unwrap().unwrap();
    assert_eq!(wait.timer, Some(timer_id));
    assert_eq!(wait.expires_at, expires);
    let timer = f.store.get(timer_id).await.unwrap().unwrap().message;
    assert_eq!(timer.destination, TIMER_DESTINATION);
    assert_eq!(timer.payload, json!({ "wait": token(5) }));
    assert_eq!(timer.next_attempt_at, expires);
    assert_eq!(
        timer.run,
        Some(RunStep {
            run: advanced.run.id,
            step: "approval".into()
        })
    );
    // It is scheduled, not queued work, until it falls due.
    let depths = f.store.depths().await.unwrap();
    assert_eq!((depths.queue, depths.scheduled), (0, 1));
    assert!(f.store.claim_due("w", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(expires));
    f.clock.advance(Duration::from_secs(600));
    let due = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message.id, timer_id);
}

pub(crate) async fn get_run_and_list_runs_filter_and_page<B: Backend>() {
    let f = fixture::<B>().await;
    let t0 = f.clock.system_now();
    let mut ids = Vec::new();
    for n in 0..7u32 {
        f.clock.advance(Duration::from_secs(1));
        let route = if n % 2 == 0 { "even" } else { "odd" };
        let started = f
            .store
            .start_run(
                NewRun::new(route, format!("k{n}"), "received", json!({ "n": n })),
                RunChange::new(),
            )
            .await
            .unwrap();
        ids.push(started.run().id);
    }
    // Run 6 completes, run 4 waits.
    for (n, status, state) in [
        (6, RunStatus::Completed, "completed"),
        (4, RunStatus::Waiting, "awaiting_callback"),
    ] {
        f.store
            .advance_run(Advance::new(
                ids[n],
                1,
                RunChange::new().status(status).state(state),
            ))
            .await
            .unwrap();
    }
    let listed =
        |page: &ferrule_store::RunPage| -> Vec<RunId> { page.runs.iter().map(|r| r.id).collect() };
    let all = f
        .store
        .list_runs(&RunFilter::all(), None, 100)
        .await
        .unwrap();
    let newest_first: Vec<RunId> = ids.iter().rev().copied().collect();
    assert_eq!(listed(&all), newest_first);
    assert_eq!(all.next, None);
    let even = RunFilter::all().route("even");
    let page = f.store.list_runs(&even, None, 3).await.unwrap();
    assert_eq!(listed(&page), [ids[6], ids[4], ids[2]]);
    let rest = f
        .store
        .list_runs(&even, page.next.as_ref(), 3)
        .await
        .unwrap();
    assert_eq!(listed(&rest), [ids[0]]);
    assert_eq!(rest.next, None);
    let unfinished = RunFilter::all()
        .status(RunStatus::Active)
        .status(RunStatus::Waiting);
    let page = f.store.list_runs(&unfinished, None, 100).await.unwrap();
    assert_eq!(page.runs.len(), 6);
    let page = f
        .store
        .list_runs(&RunFilter::all().state("awaiting_callback"), None, 100)
        .await
        .unwrap();
    assert_eq!(listed(&page), [ids[4]]);
    let since = t0 + Duration::from_secs(5);
    let page = f
        .store
        .list_runs(&RunFilter::all().since(since).route("odd"), None, 100)
        .await
        .unwrap();
    assert_eq!(listed(&page), [ids[5]]);
    let err = f
        .store
        .list_runs(
            &RunFilter::all(),
            Some(&ferrule_store::Cursor::from_string("x")),
            10,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = f
        .store
        .list_runs(&RunFilter::all(), None, 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let detail = f.store.get_run(ids[4]).await.unwrap().unwrap();
    assert_eq!(detail.run.context, json!({ "n": 4 }));
    assert_eq!(detail.events.len(), 2);
    assert!(detail.messages.is_empty() && detail.waits.is_empty());
}

pub(crate) async fn run_stats_leave_out_time_spent_waiting<B: Backend>() {
    let f = fixture::<B>().await;
    // Run A: 100 ms of work, a 10-minute wait for a person, 200 ms more: 300 ms.
    let a = start_bare(&f.store, "r", "a").await.run().clone();
    f.clock.advance(Duration::from_millis(100));
    let a = advance(&f.store, &a, RunChange::new().status(RunStatus::Waiting)).await;
    f.clock.advance(Duration::from_secs(600));
    let a = advance(&f.store, &a, RunChange::new().status(RunStatus::Active)).await;
    f.clock.advance(Duration::from_millis(200));
    let done = RunChange::new()
        .status(RunStatus::Completed)
        .state("completed");
    let a = advance(&f.store, &a, done).await;
    assert_eq!(a.waited, Duration::from_secs(600));
    // Runs that finish after 700 ms of work each: one more completed, two failed with one
    // reason, one expired, one cancelled; and one still waiting.
    let finish = |route: &'static str, key: &'static str, status, state: &'static str, error| {
        let store = f.store.clone();
        let clock = f.clock.clone();
        async move {
            let run = start_bare(&store, route, key).await.run().clone();
            clock.advance(Duration::from_millis(700));
            let mut change = RunChange::new().status(status).state(state);
            if let Some(error) = error as Option<&str> {
                change = change.error(error);
            }
            advance(&store, &run, change).await
        }
    };
    finish("r", "b", RunStatus::Completed, "email_reply_sent", None).await;
    finish("r", "c", RunStatus::Failed, "failed", Some("github 502")).await;
    finish("r", "d", RunStatus::Failed, "failed", Some("github 502")).await;
    finish("r", "e", RunStatus::Expired, "expired", None).await;
    finish("r", "f", RunStatus::Cancelled, "cancelled", None).await;
    f.store
        .start_run(
            NewRun::new("r", "g", "awaiting_callback", json!({})),
            RunChange::new().status(RunStatus::Waiting),
        )
        .await
        .unwrap();
    // Another route's runs do not count.
    finish("other", "h", RunStatus::Failed, "failed", Some("other")).await;
    start_bare(&f.store, "other", "x").await;

    let s = f
        .store
        .run_stats("r", Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(s.route, "r");
    assert_eq!((s.active, s.waiting), (0, 1));
    assert_eq!(
        (
            s.finished.completed,
            s.finished.failed,
            s.finished.expired,
            s.finished.cancelled
        ),
        (2, 2, 1, 1),
        "{s:?}"
    );
    let states: Vec<_> = s
        .by_state
        .iter()
        .map(|c| (c.state.as_str(), c.count))
        .collect();
    assert_eq!(
        states,
        [
            ("failed", 2),
            ("cancelled", 1),
            ("completed", 1),
            ("email_reply_sent", 1),
            ("expired", 1)
        ]
    );
    // Cancelled runs are neither successes nor failures.
    assert!((s.success_rate.unwrap() - 2.0 / 5.0).abs() < 1e-9, "{s:?}");
    // 300 ms and five of 700 ms: the wait of 10 minutes counts nowhere.
    let mean = s.mean.unwrap().as_secs_f64();
    assert!((mean - (0.3 + 5.0 * 0.7) / 6.0).abs() < 1e-6, "{s:?}");
    assert_eq!(s.p95, Some(Duration::from_millis(700)));
    let failures: Vec<_> = s
        .top_failures
        .iter()
        .map(|r| (r.status, r.reason.as_deref(), r.count))
        .collect();
    assert_eq!(
        failures,
        [
            (RunStatus::Failed, Some("github 502"), 2),
            (RunStatus::Expired, None, 1)
        ]
    );
    // A finished 4.2 s ago (five runs of 700 ms, and the other route's, since): a window of
    // 4.1 s holds the five that followed it.
    let recent = f
        .store
        .run_stats("r", Duration::from_millis(4100))
        .await
        .unwrap();
    assert_eq!(recent.finished.total(), 5, "{recent:?}");
    assert_eq!(recent.mean, Some(Duration::from_millis(700)));
    let nothing = f
        .store
        .run_stats("nobody", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(nothing.finished.total(), 0);
    assert_eq!(
        (nothing.success_rate, nothing.mean, nothing.p95),
        (None, None, None)
    );
}

pub(crate) async fn retention_purges_finished_runs_and_keeps_waiting_ones<B: Backend>() {
    let f = fixture::<B>().await;
    let waiting = start(&f, "waiting", 1).await;
    let done = start(&f, "done", 2).await;
    let claimed = claim_work(&f).await;
    for c in &claimed {
        let run = c.message.run.as_ref().unwrap().run;
        let (version, change) = if run == waiting.id {
            (
                waiting.version,
                RunChange::new()
                    .status(RunStatus::Waiting)
                    .state("awaiting_callback"),
            )
        } else {
            (
                done.version,
                RunChange::new()
                    .status(RunStatus::Completed)
                    .state("completed"),
            )
        };
        f.store
            .complete_and_advance(
                &c.lease,
                AttemptReport::success(),
                Advance::new(run, version, change),
            )
            .await
            .unwrap();
    }
    // A week later, retention of a day: the finished run goes with its events and wait, and
    // its key is free again; the waiting run and its delivered card stay.
    f.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let purged = f
        .store
        .purge_delivered(Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(purged, 1, "only the finished run's card");
    assert!(f.store.get_run(done.id).await.unwrap().is_none());
    assert!(f.store.find_wait(&token(2)).await.unwrap().is_none());
    let kept = f.store.get_run(waiting.id).await.unwrap().unwrap();
    assert_eq!(kept.run.status, RunStatus::Waiting);
    assert_eq!(kept.messages.len(), 2, "its card and its timer");
    assert_eq!(kept.waits.len(), 1);
    let again = start_bare(&f.store, "pr-review", "done").await;
    assert!(again.is_created());
}

pub(crate) async fn a_failed_step_is_retried_with_its_run_and_never_replayed<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 1).await;
    let claimed = claim_work(&f).await;
    let card = &claimed[0];
    let failed = f
        .store
        .dead_letter_and_advance(
            &card.lease,
            AttemptReport::failure(OutcomeClass::Permanent, "chat not found").code("400"),
            Advance::new(
                run.id,
                run.version,
                RunChange::new()
                    .status(RunStatus::Failed)
                    .state("failed")
                    .error("card: chat not found"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(failed.run.status, RunStatus::Failed);
    assert_eq!(
        failed.run.last_error.as_deref(),
        Some("card: chat not found")
    );
    let dead = f.store.get(card.message.id).await.unwrap().unwrap().message;
    assert_eq!(dead.status, Status::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("chat not found"));
    // The run finished, so its wait was cancelled with its timer.
    let wait = f.store.find_wait(&token(1)).await.unwrap().unwrap();
    assert_eq!(wait.state, WaitState::Cancelled);
    let timer = f.store.get(wait.timer.unwrap()).await.unwrap().unwrap();
    assert_eq!(timer.message.status, Status::Cancelled);
    // A message replay passes over a run's messages: by id it is refused, by filter skipped.
    let err = f
        .store
        .replay(ReplayTarget::Ids(vec![card.message.id]), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("retry it with its run"), "{err}");
    let report = f
        .store
        .replay(ReplayTarget::Filter(Filter::all()), false)
        .await
        .unwrap();
    assert_eq!(report.count, 0);
    // The run's retry re-queues the dead step with the run's change.
    let retried = f
        .store
        .advance_run(Advance::new(
            run.id,
            failed.run.version,
            RunChange::new()
                .status(RunStatus::Active)
                .state("processed")
                .retry(card.message.id),
        ))
        .await
        .unwrap();
    assert_eq!(retried.run.finished_at, None);
    let queued = f.store.get(card.message.id).await.unwrap().unwrap();
    assert_eq!(queued.message.status, Status::Queued);
    assert_eq!(queued.message.attempts, 0);
    assert_eq!(
        queued.events.last().unwrap().detail.as_deref(),
        Some("retried with its run")
    );
    let claimed = claim_work(&f).await;
    f.store
        .complete_and_advance(
            &claimed[0].lease,
            AttemptReport::success(),
            Advance::new(run.id, retried.run.version, RunChange::new().state("sent")),
        )
        .await
        .unwrap();
    // A delivered step never runs again: its retry is refused, and nothing is written.
    let current = f.store.get_run(run.id).await.unwrap().unwrap();
    let err = f
        .store
        .advance_run(Advance::new(
            run.id,
            current.run.version,
            RunChange::new().state("again").retry(card.message.id),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTransition, "{err}");
    let err = f
        .store
        .replay(ReplayTarget::Ids(vec![card.message.id]), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(f.store.get_run(run.id).await.unwrap().unwrap(), current);
    // A message that is not the run's is refused too.
    let plain = f.store.enqueue(card_message(5)).await.unwrap().id();
    let err = f
        .store
        .advance_run(Advance::new(
            run.id,
            current.run.version,
            RunChange::new().retry(plain),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

pub(crate) async fn cancelling_a_run_cancels_its_pending_messages_and_waits<B: Backend>() {
    let f = fixture::<B>().await;
    let run = start(&f, "k", 1).await;
    let bystander = f.store.enqueue(card_message(2)).await.unwrap().id();
    let claimed = f.store.claim_due("w", 1, LEASE).await.unwrap();
    assert_eq!(claimed[0].message.run.as_ref().unwrap().run, run.id);
    let cancelled = f
        .store
        .advance_run(Advance::new(
            run.id,
            run.version,
            RunChange::new()
                .status(RunStatus::Cancelled)
                .state("cancelled")
                .detail("cancelled by an operator"),
        ))
        .await
        .unwrap();
    assert_eq!(cancelled.run.finished_at, Some(f.clock.system_now()));
    let detail = f.store.get_run(run.id).await.unwrap().unwrap();
    assert!(
        detail
            .messages
            .iter()
            .all(|m| m.status == Status::Cancelled),
        "{:?}",
        detail.messages
    );
    assert_eq!(detail.waits[0].state, WaitState::Cancelled);
    let kinds: Vec<_> = detail.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            RunEventKind::Started,
            RunEventKind::WaitOpened,
            RunEventKind::Advanced,
            RunEventKind::WaitCancelled
        ]
    );
    // The worker still delivering the card finds its lease gone.
    let err = f
        .store
        .complete_and_advance(
            &claimed[0].lease,
            AttemptReport::success(),
            Advance::new(run.id, cancelled.run.version, RunChange::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    let other = f.store.get(bystander).await.unwrap().unwrap().message;
    assert_eq!(
        other.status,
        Status::Queued,
        "other messages are left alone"
    );
}

pub(crate) async fn bad_run_input_is_refused_before_any_write<B: Backend>() {
    let f = fixture_with_small_payloads::<B>().await;
    let config = |r: Result<ferrule_store::Started, StoreError>, field: &str| {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    };
    let new = || NewRun::new("r", "k", "received", json!({}));
    config(
        f.store
            .start_run(NewRun::new("", "k", "s", json!({})), RunChange::new())
            .await,
        "route",
    );
    config(
        f.store
            .start_run(NewRun::new("r", "", "s", json!({})), RunChange::new())
            .await,
        "dedupe_key",
    );
    config(
        f.store
            .start_run(new(), RunChange::new().enqueue("", github()))
            .await,
        "step",
    );
    config(
        f.store
            .start_run(
                new(),
                RunChange::new().open_wait(NewWait::new(
                    "guessable",
                    "approval",
                    f.clock.system_now(),
                )),
            )
            .await,
        "token",
    );
    config(
        f.store
            .start_run(
                new(),
                RunChange::new().close_wait(token(1), press("", "approve")),
            )
            .await,
        "by",
    );
    let err = f
        .store
        .start_run(
            NewRun::new("r", "k", "s", json!({ "body": "x".repeat(2000) })),
            RunChange::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    // A context that grows past the limit is refused and the run is left as it was.
    let run = f
        .store
        .start_run(
            new(),
            RunChange::new().merge(json!({ "a": "x".repeat(600) })),
        )
        .await
        .unwrap()
        .run()
        .clone();
    let err = f
        .store
        .advance_run(Advance::new(
            run.id,
            run.version,
            RunChange::new().merge(json!({ "b": "y".repeat(600) })),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert_eq!(f.store.get_run(run.id).await.unwrap().unwrap().run, run);
    assert!(
        f.store
            .list(&Filter::all(), None, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

async fn fixture_with_small_payloads<B: Backend>() -> Fixture<B::Store> {
    crate::conformance::fixture_with::<B>(|o| o.max_payload_bytes = 1024).await
}

/// Times one run transition of each kind, one after another on an idle store (each is its own
/// commit): start with a message and a wait, complete-and-advance, a press, beside a plain
/// enqueue. Prints p50, p95 and the mean; run by the backends' ignored `run_transition_latency` tests.
#[allow(clippy::print_stderr, reason = "a measurement prints its figures")]
pub(crate) async fn print_transition_latency<B: Backend>(backend: &str) {
    const N: u32 = 200;
    let f = fixture::<B>().await;
    let (mut starts, mut sends, mut presses) = (Vec::new(), Vec::new(), Vec::new());
    let mut enqueues = Vec::new();
    let expires = f.clock.system_now() + Duration::from_secs(3600);
    for n in 0..N {
        // The baseline: one plain enqueue, one commit.
        let t = std::time::Instant::now();
        f.store.enqueue(card_message(n)).await.unwrap();
        enqueues.push(t.elapsed());
        let _ = f.store.claim_due("w", 1, LEASE).await.unwrap();
        let t = std::time::Instant::now();
        let run = f
            .store
            .start_run(
                NewRun::new("bench", format!("k{n}"), "received", json!({ "pr": n })),
                RunChange::new()
                    .state("processed")
                    .enqueue("card", card_message(n))
                    .open_wait(NewWait::new(token(n), "approval", expires)),
            )
            .await
            .unwrap()
            .run()
            .clone();
        starts.push(t.elapsed());
        let card = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
        let t = std::time::Instant::now();
        let sent = f
            .store
            .complete_and_advance(
                &card.lease,
                AttemptReport::success(),
                Advance::new(
                    run.id,
                    run.version,
                    RunChange::new()
                        .status(RunStatus::Waiting)
                        .state("awaiting_callback")
                        .merge(json!({ "card": { "message_id": n } })),
                ),
            )
            .await
            .unwrap();
        sends.push(t.elapsed());
        let t = std::time::Instant::now();
        f.store
            .advance_run(Advance::new(
                run.id,
                sent.run.version,
                RunChange::new()
                    .status(RunStatus::Completed)
                    .close_wait(token(n), press("42", "approve")),
            ))
            .await
            .unwrap();
        presses.push(t.elapsed());
    }
    for (name, mut times) in [
        ("enqueue (baseline)", enqueues),
        ("start_run (card + wait)", starts),
        ("complete_and_advance", sends),
        ("advance_run (press)", presses),
    ] {
        times.sort();
        let mean = times.iter().sum::<Duration>() / N;
        eprintln!(
            "{backend} {name}: p50 {:?}, p95 {:?}, mean {mean:?} over {N}",
            times[times.len() / 2],
            times[times.len() * 95 / 100],
        );
    }
}
