//! Schedule occurrences' conformance cases, generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`schedule_conformance_tests!`].

use std::time::{Duration, UNIX_EPOCH};

use ferrule_policy::Clock;
use ferrule_store::{
    ErrorKind, Filter, Fired, NewMessage, NewOccurrence, NewRun, OccurrenceAction, OccurrenceState,
    RunChange, RunFilter, Store,
};
use serde_json::json;

use crate::conformance::{Backend, fixture, fixture_with};

/// Instantiates every case for a backend type, in a module `schedules`.
#[macro_export]
macro_rules! schedule_conformance_tests {
    ($backend:ty) => {
        mod schedules {
            $crate::conformance_tests!(@cases schedules, $backend,
                an_occurrence_fires_its_message_once,
                a_skipped_occurrence_is_recorded_without_work,
                an_occurrence_starts_its_run_once,
                concurrent_records_of_one_occurrence_fire_once,
                retention_keeps_the_latest_occurrence_of_each_schedule,
                bad_occurrences_are_refused_before_any_write
            );
        }
    };
}

fn at(secs: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn digest(secs: u64) -> NewOccurrence {
    NewOccurrence {
        schedule: "digest".into(),
        scheduled_for: at(secs),
        manual: false,
        action: OccurrenceAction::Enqueue(
            NewMessage::new("hook", json!({ "for": secs }))
                .idempotency_key(format!("schedule:digest:{secs}")),
        ),
    }
}

pub(crate) async fn an_occurrence_fires_its_message_once<B: Backend>() {
    let f = fixture::<B>().await;
    let first = f.store.record_occurrence(digest(60)).await.unwrap();
    let Fired::Created(occurrence) = &first else {
        panic!("new: {first:?}")
    };
    assert_eq!(occurrence.schedule, "digest");
    assert_eq!(occurrence.scheduled_for, at(60));
    assert_eq!(occurrence.state, OccurrenceState::Fired);
    assert_eq!(occurrence.recorded_at, f.clock.system_now());
    assert!(!occurrence.manual);
    let id = occurrence.message_id.expect("its message");
    let message = f.store.get(id).await.unwrap().unwrap().message;
    assert_eq!(message.destination, "hook");
    assert_eq!(message.payload, json!({"for": 60}));
    assert_eq!(
        message.idempotency_key.as_deref(),
        Some("schedule:digest:60")
    );

    // Again: found, nothing written.
    f.clock.advance(Duration::from_secs(1));
    let again = f.store.record_occurrence(digest(60)).await.unwrap();
    assert_eq!(again, Fired::Existing(occurrence.clone()));
    let page = f.store.list(&Filter::all(), None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1, "one message");

    // A manual trigger at the same instant is an occurrence of its own.
    let mut manual = digest(60);
    manual.manual = true;
    manual.action = OccurrenceAction::Enqueue(
        NewMessage::new("hook", json!({})).idempotency_key("schedule:digest:manual:60"),
    );
    let manual = f.store.record_occurrence(manual).await.unwrap();
    assert!(manual.is_created());
    assert!(manual.occurrence().manual);

    // The latest of each kind.
    f.store.record_occurrence(digest(120)).await.unwrap();
    let latest = f.store.latest_occurrences().await.unwrap();
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(
        (latest[0].scheduled_for, latest[0].manual),
        (at(120), false)
    );
    assert_eq!((latest[1].scheduled_for, latest[1].manual), (at(60), true));
}

pub(crate) async fn a_skipped_occurrence_is_recorded_without_work<B: Backend>() {
    let f = fixture::<B>().await;
    let skip = NewOccurrence {
        schedule: "digest".into(),
        scheduled_for: at(60),
        manual: false,
        action: OccurrenceAction::Skip("missed while no relay ran".into()),
    };
    let fired = f.store.record_occurrence(skip.clone()).await.unwrap();
    let o = fired.occurrence();
    assert!(fired.is_created());
    assert_eq!(o.state, OccurrenceState::Skipped);
    assert_eq!(o.reason.as_deref(), Some("missed while no relay ran"));
    assert_eq!((o.message_id, o.run_id), (None, None));
    assert!(f.store.next_due_at().await.unwrap().is_none(), "no work");
    // A later attempt to fire it finds the skip: the first decision stands.
    let fire = f.store.record_occurrence(digest(60)).await.unwrap();
    assert_eq!(fire.occurrence().state, OccurrenceState::Skipped);
    assert!(!fire.is_created());
    assert!(
        f.store.next_due_at().await.unwrap().is_none(),
        "still no work"
    );
    // Another schedule is apart.
    let mut other = skip;
    other.schedule = "backup".into();
    assert!(f.store.record_occurrence(other).await.unwrap().is_created());
    let latest = f.store.latest_occurrences().await.unwrap();
    let names: Vec<_> = latest.iter().map(|o| o.schedule.as_str()).collect();
    assert_eq!(names, ["backup", "digest"]);
}

pub(crate) async fn an_occurrence_starts_its_run_once<B: Backend>() {
    let f = fixture::<B>().await;
    let occurrence = NewOccurrence {
        schedule: "report".into(),
        scheduled_for: at(3600),
        manual: false,
        action: OccurrenceAction::StartRun(
            NewRun::new(
                "weekly",
                "schedule:report:3600",
                "scheduled",
                json!({"n": 1}),
            ),
            RunChange::new().enqueue("send", NewMessage::new("hook", json!({"step": 1}))),
        ),
    };
    let fired = f.store.record_occurrence(occurrence.clone()).await.unwrap();
    assert!(fired.is_created());
    let run_id = fired.occurrence().run_id.expect("its run");
    let detail = f.store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(detail.run.route, "weekly");
    assert_eq!(detail.messages.len(), 1, "the first step's message");
    let again = f.store.record_occurrence(occurrence).await.unwrap();
    assert!(!again.is_created());
    assert_eq!(again.occurrence().run_id, Some(run_id));
    let runs = f
        .store
        .list_runs(&RunFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(runs.runs.len(), 1, "one run");
}

pub(crate) async fn concurrent_records_of_one_occurrence_fire_once<B: Backend>() {
    let f = fixture::<B>().await;
    for round in 0..4u64 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = f.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record_occurrence(digest(60 * (round + 1)))
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let fired = t.await.unwrap();
            created += usize::from(fired.is_created());
            ids.insert(fired.occurrence().message_id);
        }
        assert_eq!(created, 1, "round {round}: one recorded it");
        assert_eq!(ids.len(), 1, "round {round}: all name its message");
    }
    let page = f.store.list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 4, "one message per occurrence");
}

pub(crate) async fn retention_keeps_the_latest_occurrence_of_each_schedule<B: Backend>() {
    let f = fixture_with::<B>(|_| {}).await;
    f.clock.advance(Duration::from_secs(10_000));
    for s in [60, 120, 180] {
        f.store.record_occurrence(digest(s)).await.unwrap();
    }
    let mut old = digest(60);
    old.schedule = "other".into();
    f.store.record_occurrence(old).await.unwrap();
    // Everything is older than an hour; the latest of each schedule stays.
    let purged = f
        .store
        .purge_occurrences(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(purged, 2);
    let latest = f.store.latest_occurrences().await.unwrap();
    let kept: Vec<_> = latest
        .iter()
        .map(|o| (o.schedule.as_str(), o.scheduled_for))
        .collect();
    assert_eq!(kept, [("digest", at(180)), ("other", at(60))]);
    // The kept one still answers as recorded.
    assert!(
        !f.store
            .record_occurrence(digest(180))
            .await
            .unwrap()
            .is_created()
    );
}

pub(crate) async fn bad_occurrences_are_refused_before_any_write<B: Backend>() {
    let f = fixture_with::<B>(|o| o.max_payload_bytes = 64).await;
    let mut empty = digest(60);
    empty.schedule = String::new();
    let mut long = digest(60);
    long.action = OccurrenceAction::Skip("x".repeat(600));
    let mut big = digest(60);
    big.action = OccurrenceAction::Enqueue(NewMessage::new("hook", json!({"x": "y".repeat(100)})));
    for (occurrence, field) in [(empty, "schedule"), (long, "reason"), (big, "payload")] {
        let err = f.store.record_occurrence(occurrence).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Config | ErrorKind::PayloadTooLarge),
            "{err}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(f.store.latest_occurrences().await.unwrap().is_empty());
    let page = f.store.list(&Filter::all(), None, 10).await.unwrap();
    assert!(page.messages.is_empty());
}
