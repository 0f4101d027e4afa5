//! The conformance suite: every case is generic over [`Backend`] and is instantiated once per
//! backend with [`conformance_tests!`], one `#[tokio::test]` per case.

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{
    AttemptReport, DeadLetterPolicy, Depths, DestinationDepths, Duplicate, Enqueued, ErrorKind,
    Filter, MessageId, NewInbound, NewMessage, OutcomeClass, Recorded, ReplayTarget, Status, Store,
    StoreError, StoreOptions, Synchronous,
};
use serde_json::json;

/// A store under test with its manual clock; `_keep` holds whatever must outlive it (a temp
/// directory, a schema to drop).
pub(crate) struct Fixture<S> {
    pub(crate) store: S,
    pub(crate) clock: ManualClock,
    pub(crate) _keep: Box<dyn Any + Send>,
}

/// How a backend opens a fresh, empty store for one test.
pub(crate) trait Backend {
    type Store: Store + Clone;

    /// A fresh store using `options` (whose clock is the fixture's clock).
    fn open(
        options: StoreOptions,
        clock: ManualClock,
    ) -> impl Future<Output = Fixture<Self::Store>> + Send;
}

pub(crate) async fn fixture<B: Backend>() -> Fixture<B::Store> {
    fixture_with::<B>(|_| {}).await
}

pub(crate) async fn fixture_with<B: Backend>(
    tune: impl FnOnce(&mut StoreOptions),
) -> Fixture<B::Store> {
    let clock = ManualClock::new();
    let mut options = StoreOptions::with_clock(clock.shared());
    tune(&mut options);
    B::open(options, clock).await
}

/// The answer to a duplicate of `id`, still `queued`, without fingerprints to conflict.
fn queued_duplicate(id: MessageId) -> Enqueued {
    Enqueued::Duplicate(Duplicate {
        id,
        status: Some(Status::Queued),
        conflict: false,
    })
}

fn msg(dest: &str, n: u32) -> NewMessage {
    NewMessage::new(dest, json!({ "n": n }))
}

const LEASE: Duration = Duration::from_secs(30);

/// Instantiates every case for a backend type.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ty) => {
        $crate::conformance_tests!(@cases conformance, $backend,
            enqueue_then_get_shows_message_and_first_event,
            enqueue_batch_answers_in_order,
            idempotency_key_returns_original_within_window,
            concurrent_duplicate_submits_create_one_message,
            duplicates_within_one_batch_resolve_to_the_first,
            duplicates_report_the_original_its_status_and_conflicts,
            a_forward_reports_and_keeps_its_fingerprint_like_an_enqueue,
            payload_over_limit_is_refused_before_any_write,
            invalid_arguments_are_typed_errors,
            claim_returns_due_messages_oldest_first,
            claimed_message_is_not_claimed_twice_while_leased,
            expired_lease_is_reclaimed_exactly_once,
            late_worker_is_fenced_after_reclaim,
            replace_payload_is_fenced_and_used_by_the_next_attempt,
            a_kept_response_is_fenced_replaced_and_shown,
            complete_reschedule_and_dead_letter_record_events,
            extend_lease_keeps_the_claim,
            release_returns_message_without_counting_attempt,
            defer_returns_message_due_later_without_counting_attempt,
            repeated_deferrals_fold_into_one_event,
            get_shows_a_message_and_its_events_from_one_moment,
            cancel_applies_to_pending_messages_only,
            recover_expired_leases_counts_them,
            fifo_per_ordering_key,
            fifo_dead_letter_skip_lets_key_continue,
            fifo_dead_letter_block_holds_key,
            list_filters_and_paginates,
            replay_requeues_terminal_messages,
            purge_and_retention_delete_terminal_messages_only,
            purge_ids_deletes_only_the_named_terminal_matches,
            stats_report_counts_rates_percentiles_and_errors,
            depths_leave_out_scheduled_messages_and_count_per_destination,
            meta_round_trips_and_reserved_keys_are_refused,
            meta_lists_by_prefix_in_byte_order_and_deletes,
            concurrent_claimers_never_hold_the_same_message,
            wait_for_work_wakes_on_enqueue,
            take_wake_takes_the_kept_wake_once,
            next_due_at_reports_earliest_pending,
            next_due_at_after_a_claim_sees_every_later_write,
            record_inbound_stores_each_event_once,
            concurrent_duplicate_inbound_events_record_one,
            record_inbound_enqueues_the_forward_only_when_new,
            a_refused_forward_records_nothing,
            list_inbound_filters_by_source_and_paginates,
            purge_inbound_deletes_only_old_events
        );
    };
    // One test per case of `$module` (a module of this crate holding the generic cases).
    (@cases $module:ident, $backend:ty, $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::$module::$case::<$backend>().await;
            }
        )*
    };
}

pub(crate) async fn enqueue_then_get_shows_message_and_first_event<B: Backend>() {
    let f = fixture::<B>().await;
    let new = NewMessage::new("telegram:ops", json!({"text": "hello"}))
        .headers(json!({"x-a": "1"}))
        .ordering_key("chat-1");
    let id = f.store.enqueue(new).await.unwrap();
    assert!(id.is_created());
    let detail = f.store.get(id.id()).await.unwrap().expect("stored");
    let m = &detail.message;
    assert_eq!(m.id, id.id());
    assert_eq!(m.destination, "telegram:ops");
    assert_eq!(m.payload, json!({"text": "hello"}));
    assert_eq!(m.headers, Some(json!({"x-a": "1"})));
    assert_eq!(m.ordering_key.as_deref(), Some("chat-1"));
    assert_eq!(m.status, Status::Queued);
    assert_eq!(m.attempts, 0);
    assert_eq!(m.created_at, f.clock.system_now());
    assert_eq!(m.next_attempt_at, f.clock.system_now());
    assert_eq!(detail.events.len(), 1);
    assert_eq!(detail.events[0].status, Status::Queued);
    assert_eq!(detail.events[0].seq, 1);
    let missing = MessageId::from_ulid(ulid::Ulid::new());
    assert!(f.store.get(missing).await.unwrap().is_none());
}

pub(crate) async fn enqueue_batch_answers_in_order<B: Backend>() {
    let f = fixture::<B>().await;
    let out = f
        .store
        .enqueue_batch((0..5).map(|n| msg("d", n)).collect())
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    for (n, e) in out.iter().enumerate() {
        let got = f.store.get(e.id()).await.unwrap().unwrap();
        assert_eq!(got.message.payload, json!({ "n": n }));
    }
    assert!(f.store.enqueue_batch(Vec::new()).await.unwrap().is_empty());
}

pub(crate) async fn idempotency_key_returns_original_within_window<B: Backend>() {
    let f = fixture_with::<B>(|o| o.idempotency_window = Duration::from_secs(3600)).await;
    let first = f
        .store
        .enqueue(msg("d", 1).idempotency_key("k"))
        .await
        .unwrap();
    assert!(first.is_created());
    let again = f
        .store
        .enqueue(msg("d", 2).idempotency_key("k"))
        .await
        .unwrap();
    assert_eq!(again, queued_duplicate(first.id()));
    // Same key, other destination: a different message.
    let other = f
        .store
        .enqueue(msg("e", 3).idempotency_key("k"))
        .await
        .unwrap();
    assert!(other.is_created());
    // Within one batch, the second is a duplicate of the first.
    let batch = f
        .store
        .enqueue_batch(vec![
            msg("d", 4).idempotency_key("b"),
            msg("d", 5).idempotency_key("b"),
        ])
        .await
        .unwrap();
    assert!(batch[0].is_created());
    assert_eq!(batch[1], queued_duplicate(batch[0].id()));
    // After the window the key is free again.
    f.clock.advance(Duration::from_secs(3601));
    let later = f
        .store
        .enqueue(msg("d", 6).idempotency_key("k"))
        .await
        .unwrap();
    assert!(later.is_created());
    assert_ne!(later.id(), first.id());
}

pub(crate) async fn concurrent_duplicate_submits_create_one_message<B: Backend>() {
    let f = fixture::<B>().await;
    let mut tasks = Vec::new();
    for n in 0..32 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .enqueue(msg("d", n).idempotency_key("same"))
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    for t in tasks {
        let e = t.await.unwrap();
        created += usize::from(e.is_created());
        ids.insert(e.id());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let page = f.store.list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 1);
}

pub(crate) async fn duplicates_within_one_batch_resolve_to_the_first<B: Backend>() {
    let f = fixture::<B>().await;
    let earlier = f
        .store
        .enqueue(msg("d", 0).idempotency_key("seen"))
        .await
        .unwrap();
    let out = f
        .store
        .enqueue_batch(vec![
            msg("d", 1).idempotency_key("k"),
            msg("d", 2),
            msg("d", 3).idempotency_key("k"),
            msg("d", 4).idempotency_key("seen"),
            msg("e", 5).idempotency_key("k"),
            msg("d", 6).idempotency_key("k"),
            msg("d", 7).idempotency_key("seen"),
        ])
        .await
        .unwrap();
    assert!(out[0].is_created());
    assert!(out[1].is_created());
    assert_eq!(out[2], queued_duplicate(out[0].id()));
    assert_eq!(out[3], queued_duplicate(earlier.id()));
    assert!(out[4].is_created(), "same key, other destination");
    assert_eq!(out[5], queued_duplicate(out[0].id()));
    assert_eq!(out[6], queued_duplicate(earlier.id()));
    let first = f.store.get(out[0].id()).await.unwrap().unwrap();
    assert_eq!(
        first.message.payload,
        json!({ "n": 1 }),
        "the first one is kept"
    );
    assert_eq!(first.events.len(), 1);
    let page = f.store.list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 4, "earlier, k, the unkeyed one, e/k");
}

const FP_A: [u8; 32] = [0xa; 32];
const FP_B: [u8; 32] = [0xb; 32];

fn duplicate(id: MessageId, status: Option<Status>, conflict: bool) -> Enqueued {
    Enqueued::Duplicate(Duplicate {
        id,
        status,
        conflict,
    })
}

pub(crate) async fn duplicates_report_the_original_its_status_and_conflicts<B: Backend>() {
    let f = fixture_with::<B>(|o| o.idempotency_window = Duration::from_secs(3600)).await;
    let keyed = |n, key: &str| msg("d", n).idempotency_key(key);
    let id = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_A))
        .await
        .unwrap()
        .id();
    let queued = Some(Status::Queued);
    // The same request, another request, and requests that cannot be compared.
    let same = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_A))
        .await
        .unwrap();
    assert_eq!(same, duplicate(id, queued, false));
    let other = f
        .store
        .enqueue(keyed(2, "k").fingerprint(FP_B))
        .await
        .unwrap();
    assert_eq!(other, duplicate(id, queued, true));
    assert!(other.is_conflict() && !other.is_created());
    assert_eq!(other.duplicate().unwrap().id, id);
    let unknown = f.store.enqueue(keyed(3, "k")).await.unwrap();
    assert_eq!(unknown, duplicate(id, queued, false));
    let unprinted = f.store.enqueue(keyed(4, "u")).await.unwrap().id();
    let later = f
        .store
        .enqueue(keyed(5, "u").fingerprint(FP_B))
        .await
        .unwrap();
    assert_eq!(
        later,
        duplicate(unprinted, queued, false),
        "the original had none"
    );
    // Same key and fingerprint for another destination: a message of its own.
    assert!(
        f.store
            .enqueue(msg("e", 6).idempotency_key("k").fingerprint(FP_B))
            .await
            .unwrap()
            .is_created()
    );

    // The status is the original's now, not when it was submitted.
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.id, id);
    let again = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_A))
        .await
        .unwrap();
    assert_eq!(again, duplicate(id, Some(Status::Delivering), false));
    f.store
        .complete(&c.lease, AttemptReport::success())
        .await
        .unwrap();
    let again = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_B))
        .await
        .unwrap();
    assert_eq!(again, duplicate(id, Some(Status::Delivered), true));
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.id, unprinted);
    f.store
        .dead_letter(
            &c.lease,
            AttemptReport::failure(OutcomeClass::Permanent, "no"),
        )
        .await
        .unwrap();
    let again = f.store.enqueue(keyed(5, "u")).await.unwrap();
    assert_eq!(again, duplicate(unprinted, Some(Status::Dead), false));

    // Within one batch: repeats of a key new to the batch answer from its first occurrence,
    // and the original's fingerprint decides the conflict.
    let out = f
        .store
        .enqueue_batch(vec![
            keyed(10, "b").fingerprint(FP_A),
            keyed(11, "b").fingerprint(FP_A),
            keyed(12, "b").fingerprint(FP_B),
            keyed(13, "b"),
            keyed(14, "k").fingerprint(FP_A),
            keyed(15, "k").fingerprint(FP_B),
            keyed(16, "n"),
            keyed(17, "n").fingerprint(FP_B),
        ])
        .await
        .unwrap();
    assert!(out[0].is_created());
    let b = out[0].id();
    assert_eq!(
        out[1..6],
        [
            duplicate(b, queued, false),
            duplicate(b, queued, true),
            duplicate(b, queued, false),
            duplicate(id, Some(Status::Delivered), false),
            duplicate(id, Some(Status::Delivered), true),
        ]
    );
    assert!(out[6].is_created());
    assert_eq!(out[7], duplicate(out[6].id(), queued, false));

    // Retention purges the delivered original; its key, and the fingerprint with it, stay
    // for the rest of the window.
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(
        f.store
            .purge_delivered(Duration::from_secs(1))
            .await
            .unwrap(),
        1
    );
    assert!(f.store.get(id).await.unwrap().is_none());
    let gone = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_A))
        .await
        .unwrap();
    assert_eq!(gone, duplicate(id, None, false));
    let gone = f
        .store
        .enqueue(keyed(1, "k").fingerprint(FP_B))
        .await
        .unwrap();
    assert_eq!(gone, duplicate(id, None, true));

    // After the window the key is taken anew, with the new request's fingerprint.
    f.clock.advance(Duration::from_secs(3600));
    let renewed = f
        .store
        .enqueue(keyed(20, "k").fingerprint(FP_B))
        .await
        .unwrap();
    assert!(renewed.is_created());
    let again = f
        .store
        .enqueue(keyed(21, "k").fingerprint(FP_A))
        .await
        .unwrap();
    assert_eq!(again, duplicate(renewed.id(), queued, true));
    let again = f
        .store
        .enqueue(keyed(22, "k").fingerprint(FP_B))
        .await
        .unwrap();
    assert_eq!(again, duplicate(renewed.id(), queued, false));
}

pub(crate) async fn a_forward_reports_and_keeps_its_fingerprint_like_an_enqueue<B: Backend>() {
    let f = fixture::<B>().await;
    let forward = |n: u32, fingerprint: [u8; 32]| {
        NewMessage::new("app", json!({ "n": n }))
            .idempotency_key("fwd")
            .fingerprint(fingerprint)
    };
    let first = f
        .store
        .record_inbound(update("telegram:a", 1).forward(forward(1, FP_A)))
        .await
        .unwrap();
    let Recorded::Created {
        forward: Some(Enqueued::Created(original)),
        ..
    } = first
    else {
        panic!("a new event with a new forward: {first:?}");
    };
    // An enqueue with the forward's key compares with the forward's fingerprint.
    let submitted = f
        .store
        .enqueue(
            NewMessage::new("app", json!(2))
                .idempotency_key("fwd")
                .fingerprint(FP_B),
        )
        .await
        .unwrap();
    assert_eq!(submitted, duplicate(original, Some(Status::Queued), true));
    // A new event whose forward's key is taken stores the event, not the forward, and says so.
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    for (n, fingerprint, conflict) in [(2, FP_A, false), (3, FP_B, true)] {
        let second = f
            .store
            .record_inbound(update("telegram:a", n).forward(forward(n, fingerprint)))
            .await
            .unwrap();
        assert!(second.is_created());
        assert_eq!(
            second.forward(),
            Some(duplicate(original, Some(Status::Delivering), conflict))
        );
    }
    // A duplicate event forwards nothing and answers no forward.
    let repeated = f
        .store
        .record_inbound(update("telegram:a", 1).forward(forward(1, FP_A)))
        .await
        .unwrap();
    assert_eq!(repeated.forward(), None);
    assert!(!repeated.is_created());
    let app = f
        .store
        .list(&Filter::all().destination("app"), None, 10)
        .await
        .unwrap();
    assert_eq!(app.messages.len(), 1);
    assert_eq!(c.message.id, original);
    // Without a forward, none is answered.
    let plain = f
        .store
        .record_inbound(update("telegram:a", 9))
        .await
        .unwrap();
    assert_eq!(plain.forward(), None);
    assert!(plain.is_created());
}

pub(crate) async fn payload_over_limit_is_refused_before_any_write<B: Backend>() {
    let f = fixture_with::<B>(|o| o.max_payload_bytes = 64).await;
    let big = NewMessage::new("d", json!({ "text": "x".repeat(100) }));
    let err = f.store.enqueue(big.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    // A batch with one oversized payload writes nothing.
    let err = f
        .store
        .enqueue_batch(vec![msg("d", 1), big])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { max: 64, .. }));
    let page = f.store.list(&Filter::all(), None, 10).await.unwrap();
    assert!(page.messages.is_empty());
}

pub(crate) async fn invalid_arguments_are_typed_errors<B: Backend>() {
    let f = fixture::<B>().await;
    let err = f.store.enqueue(msg("", 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("destination"), "{err}");
    let err = f.store.claim_due("w", 0, LEASE).await.unwrap_err();
    assert!(err.to_string().contains("max"), "{err}");
    let err = f.store.claim_due("w", 1, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("lease"), "{err}");
    let err = f
        .store
        .list(
            &Filter::all(),
            Some(&ferrule_store::Cursor::from_string("nope")),
            10,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cursor"), "{err}");
}

pub(crate) async fn claim_returns_due_messages_oldest_first<B: Backend>() {
    let f = fixture::<B>().await;
    let later = f.clock.system_now() + Duration::from_secs(60);
    let delayed = f
        .store
        .enqueue(msg("d", 0).not_before(later))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(f.store.enqueue(msg("d", n)).await.unwrap().id());
        f.clock.advance(Duration::from_millis(5));
    }
    let claimed = f.store.claim_due("w1", 10, LEASE).await.unwrap();
    let got: Vec<_> = claimed.iter().map(|c| c.message.id).collect();
    assert_eq!(got, ids);
    for c in &claimed {
        assert_eq!(c.message.status, Status::Delivering);
        assert_eq!(c.message.attempts, 1);
        assert_eq!(c.lease.owner, "w1");
        assert_eq!(c.lease.expires_at, f.clock.system_now() + LEASE);
    }
    assert!(f.store.claim_due("w1", 10, LEASE).await.unwrap().is_empty());
    for c in &claimed {
        f.store
            .complete(&c.lease, AttemptReport::success())
            .await
            .unwrap();
    }
    f.clock.advance(Duration::from_secs(60));
    let claimed = f.store.claim_due("w1", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, delayed.id());
    // max is honoured
    for n in 0..5 {
        f.store.enqueue(msg("d", n)).await.unwrap();
    }
    assert_eq!(f.store.claim_due("w2", 2, LEASE).await.unwrap().len(), 2);
}

pub(crate) async fn claimed_message_is_not_claimed_twice_while_leased<B: Backend>() {
    let f = fixture::<B>().await;
    f.store.enqueue(msg("d", 1)).await.unwrap();
    assert_eq!(f.store.claim_due("a", 10, LEASE).await.unwrap().len(), 1);
    f.clock.advance(LEASE - Duration::from_millis(1));
    assert!(f.store.claim_due("b", 10, LEASE).await.unwrap().is_empty());
}

pub(crate) async fn expired_lease_is_reclaimed_exactly_once<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    f.store.claim_due("a", 10, LEASE).await.unwrap();
    f.clock.advance(LEASE);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_due(&format!("w{w}"), 10, LEASE).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.id, id);
    assert_eq!(got[0].message.attempts, 2);
}

pub(crate) async fn replace_payload_is_fenced_and_used_by_the_next_attempt<B: Backend>() {
    let f = fixture::<B>().await;
    f.store
        .enqueue(NewMessage::new(
            "d",
            json!({"chat_id": -4567, "text": "hi"}),
        ))
        .await
        .unwrap();
    let a = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    let moved = json!({"chat_id": -1_001_234_567_890_123_i64, "text": "hi"});
    f.store
        .replace_payload(&a.lease, moved.clone())
        .await
        .unwrap();
    let now = f.clock.system_now();
    f.store
        .reschedule(&a.lease, now, AttemptReport::new(OutcomeClass::Transient))
        .await
        .unwrap();
    let b = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(b.message.payload, moved);
    assert_eq!(b.message.attempts, 2);
    // The spent lease, and a lease that expired and was reclaimed, are fenced.
    let err = f
        .store
        .replace_payload(&a.lease, json!({"stale": true}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    f.clock.advance(LEASE + Duration::from_secs(1));
    let c = f.store.claim_due("c", 1, LEASE).await.unwrap().remove(0);
    let err = f
        .store
        .replace_payload(&b.lease, json!({"stale": true}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    assert_eq!(
        c.message.payload, moved,
        "a fenced replacement writes nothing"
    );
    // Too large is refused before any write.
    let big = json!({"text": "x".repeat(2 * 1024 * 1024)});
    let err = f.store.replace_payload(&c.lease, big).await.unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
    let m = f.store.get(c.message.id).await.unwrap().unwrap().message;
    assert_eq!(m.payload, moved);
    let missing = ferrule_store::Lease {
        id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<MessageId>().unwrap(),
        ..c.lease.clone()
    };
    let err = f
        .store
        .replace_payload(&missing, json!(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

pub(crate) async fn a_kept_response_is_fenced_replaced_and_shown<B: Backend>() {
    let f = fixture::<B>().await;
    let id = match f.store.enqueue(msg("api", 1)).await.unwrap() {
        Enqueued::Created(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(f.store.get(id).await.unwrap().unwrap().response, None);
    let a = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    let failed = json!({"status": 503, "headers": {}, "body": "busy", "truncated": false});
    f.store
        .keep_response(&a.lease, failed.clone())
        .await
        .unwrap();
    let now = f.clock.system_now();
    f.store
        .reschedule(&a.lease, now, AttemptReport::new(OutcomeClass::Transient))
        .await
        .unwrap();
    assert_eq!(
        f.store.get(id).await.unwrap().unwrap().response,
        Some(failed)
    );
    // The spent lease is fenced; the next attempt's answer replaces the first.
    let err = f
        .store
        .keep_response(&a.lease, json!({"stale": true}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    let b = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    let answer = json!({"status": 200, "headers": {"x-request-id": "req_1"}, "body": {"id": "chatcmpl-1", "n": 1.5}, "truncated": false});
    f.store
        .keep_response(&b.lease, answer.clone())
        .await
        .unwrap();
    f.store
        .complete(&b.lease, AttemptReport::success())
        .await
        .unwrap();
    let detail = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(detail.message.status, Status::Delivered);
    assert_eq!(detail.response, Some(answer));
}

pub(crate) async fn late_worker_is_fenced_after_reclaim<B: Backend>() {
    let f = fixture::<B>().await;
    f.store.enqueue(msg("d", 1)).await.unwrap();
    let a = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    f.clock.advance(LEASE + Duration::from_secs(1));
    let b = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    assert_ne!(a.lease.token, b.lease.token);
    let now = f.clock.system_now();
    for err in [
        f.store
            .complete(&a.lease, AttemptReport::success())
            .await
            .unwrap_err(),
        f.store
            .reschedule(&a.lease, now, AttemptReport::new(OutcomeClass::Transient))
            .await
            .unwrap_err(),
        f.store
            .dead_letter(&a.lease, AttemptReport::new(OutcomeClass::Permanent))
            .await
            .unwrap_err(),
        f.store.release(&a.lease).await.unwrap_err(),
        f.store.extend_lease(&a.lease, LEASE).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    }
    // Same owner name but an old token is fenced too.
    let mut forged = b.lease.clone();
    forged.token = a.lease.token.clone();
    let err = f
        .store
        .complete(&forged, AttemptReport::success())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    f.store
        .complete(&b.lease, AttemptReport::success())
        .await
        .unwrap();
    let m = f.store.get(b.message.id).await.unwrap().unwrap().message;
    assert_eq!(m.status, Status::Delivered);
    // After completion, even the winner's lease is spent.
    let err = f
        .store
        .complete(&b.lease, AttemptReport::success())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
}

pub(crate) async fn complete_reschedule_and_dead_letter_record_events<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    let retry_at = f.clock.system_now() + Duration::from_secs(10);
    f.store
        .reschedule(
            &c.lease,
            retry_at,
            AttemptReport::failure(OutcomeClass::Transient, "502 bad gateway")
                .code("502")
                .duration(Duration::from_millis(120)),
        )
        .await
        .unwrap();
    let m = f.store.get(id).await.unwrap().unwrap().message;
    assert_eq!(m.status, Status::Retrying);
    assert_eq!(m.next_attempt_at, retry_at);
    assert_eq!(m.last_error.as_deref(), Some("502 bad gateway"));
    assert!(m.lease_owner.is_none());
    assert!(f.store.claim_due("w", 1, LEASE).await.unwrap().is_empty());
    f.clock.advance(Duration::from_secs(10));
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.attempts, 2);
    f.clock.advance(Duration::from_millis(250));
    f.store
        .complete(
            &c.lease,
            AttemptReport::success()
                .code("200")
                .duration(Duration::from_millis(80)),
        )
        .await
        .unwrap();
    let d = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(d.message.status, Status::Delivered);
    assert_eq!(d.message.delivered_at, Some(f.clock.system_now()));
    let statuses: Vec<_> = d.events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Queued,
            Status::Delivering,
            Status::Retrying,
            Status::Delivering,
            Status::Delivered
        ]
    );
    let seqs: Vec<_> = d.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let retry = &d.events[2];
    assert_eq!(retry.outcome, Some(OutcomeClass::Transient));
    assert_eq!(retry.code.as_deref(), Some("502"));
    assert_eq!(retry.duration, Some(Duration::from_millis(120)));
    assert_eq!(retry.attempt, 1);
    assert_eq!(d.events[4].outcome, Some(OutcomeClass::Success));
    assert_eq!(d.events[4].attempt, 2);

    let id2 = f.store.enqueue(msg("d", 2)).await.unwrap().id();
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .dead_letter(
            &c.lease,
            AttemptReport::failure(OutcomeClass::Permanent, "403 blocked"),
        )
        .await
        .unwrap();
    let d = f.store.get(id2).await.unwrap().unwrap();
    assert_eq!(d.message.status, Status::Dead);
    assert_eq!(d.message.last_error.as_deref(), Some("403 blocked"));
    assert_eq!(
        d.events.last().unwrap().outcome,
        Some(OutcomeClass::Permanent)
    );
}

pub(crate) async fn extend_lease_keeps_the_claim<B: Backend>() {
    let f = fixture::<B>().await;
    f.store.enqueue(msg("d", 1)).await.unwrap();
    let c = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    f.clock.advance(Duration::from_secs(20));
    let extended = f.store.extend_lease(&c.lease, LEASE).await.unwrap();
    assert_eq!(extended.expires_at, f.clock.system_now() + LEASE);
    assert_eq!(extended.token, c.lease.token);
    f.clock.advance(Duration::from_secs(20));
    assert!(f.store.claim_due("b", 1, LEASE).await.unwrap().is_empty());
    f.store
        .complete(&extended, AttemptReport::success())
        .await
        .unwrap();
}

pub(crate) async fn release_returns_message_without_counting_attempt<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let c = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    f.store.release(&c.lease).await.unwrap();
    let m = f.store.get(id).await.unwrap().unwrap().message;
    assert_eq!(m.status, Status::Queued);
    assert_eq!(m.attempts, 0);
    let c = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.attempts, 1);
    let err = f
        .store
        .release(&c.lease)
        .await
        .and(f.store.release(&c.lease).await);
    assert_eq!(err.unwrap_err().kind(), ErrorKind::LeaseLost);
}

/// `get` while a message goes back and forth between `delivering` and `queued`: its status
/// always matches its last event (found as a flaky relay test, when SQLite read the row and
/// the events in two statements without a transaction).
pub(crate) async fn get_shows_a_message_and_its_events_from_one_moment<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let writer = {
        let store = f.store.clone();
        let now = f.clock.system_now();
        tokio::spawn(async move {
            for _ in 0..200 {
                let c = store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
                store.defer(&c.lease, now, "again").await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let d = f.store.get(id).await.unwrap().unwrap();
        let last = d.events.last().unwrap();
        assert_eq!(d.message.status, last.status, "{d:?}");
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
}

pub(crate) async fn defer_returns_message_due_later_without_counting_attempt<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let c = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    let until = f.clock.system_now() + Duration::from_secs(30);
    f.store
        .defer(&c.lease, until, "circuit open")
        .await
        .unwrap();
    let d = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(d.message.status, Status::Queued);
    assert_eq!(d.message.attempts, 0, "the attempt is not spent");
    assert_eq!(d.message.next_attempt_at, until);
    assert_eq!(d.message.last_error, None);
    assert_eq!(
        d.events.last().unwrap().detail.as_deref(),
        Some("circuit open")
    );
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(until));
    assert!(
        f.store.claim_due("a", 1, LEASE).await.unwrap().is_empty(),
        "not due yet"
    );
    // The lease is gone: a second defer is fenced.
    let err = f.store.defer(&c.lease, until, "again").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    f.clock.advance(Duration::from_secs(30));
    let c = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.attempts, 1);
    // A retrying message stays retrying when deferred.
    f.store
        .reschedule(
            &c.lease,
            f.clock.system_now(),
            AttemptReport::failure(OutcomeClass::Transient, "503"),
        )
        .await
        .unwrap();
    let c = f.store.claim_due("b", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.attempts, 2);
    f.store
        .defer(&c.lease, until, "rate limited")
        .await
        .unwrap();
    let m = f.store.get(id).await.unwrap().unwrap().message;
    assert_eq!((m.status, m.attempts), (Status::Retrying, 1));
    assert_eq!(m.last_error.as_deref(), Some("503"), "last_error is kept");
}

/// A timeline as `(seq, status, attempt, detail, repeats)`, without the claims' details
/// (which the backends word differently).
fn timeline(events: &[ferrule_store::Event]) -> Vec<(u32, Status, u32, Option<&str>, u32)> {
    events
        .iter()
        .map(|e| {
            let detail = e
                .detail
                .as_deref()
                .filter(|_| e.status != Status::Delivering);
            (e.seq, e.status, e.attempt, detail, e.repeats)
        })
        .collect()
}

pub(crate) async fn repeated_deferrals_fold_into_one_event<B: Backend>() {
    // Normal sync: a thousand claims and deferrals, each its own commit.
    let f = fixture_with::<B>(|o| o.synchronous = Synchronous::Normal).await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let claim = |owner: &'static str| {
        let store = f.store.clone();
        async move { store.claim_due(owner, 1, LEASE).await.unwrap().remove(0) }
    };
    let first_at = f.clock.system_now();
    for _ in 0..1000 {
        let c = claim("w").await;
        let now = f.clock.system_now();
        f.store.defer(&c.lease, now, "circuit open").await.unwrap();
        f.clock.advance(Duration::from_millis(10));
    }
    let last_at = f.clock.system_now() - Duration::from_millis(10);
    let d = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(
        timeline(&d.events),
        [
            (1, Status::Queued, 0, None, 1),
            (2, Status::Delivering, 1, None, 1),
            (3, Status::Queued, 0, Some("circuit open"), 1000),
        ]
    );
    let folded = &d.events[2];
    assert_eq!(folded.at, first_at, "`at` is the first deferral");
    assert_eq!(folded.last_at, Some(last_at), "`last_at` the latest");
    assert_eq!(d.events[0].last_at, None);
    assert_eq!((d.message.status, d.message.attempts), (Status::Queued, 0));

    // Another reason starts a new event, and its repeats fold into it.
    for _ in 0..2 {
        let c = claim("w").await;
        let now = f.clock.system_now();
        f.store.defer(&c.lease, now, "rate limited").await.unwrap();
    }
    // A real attempt in between: the next deferral is a new event even with the same reason.
    let c = claim("w").await;
    let now = f.clock.system_now();
    f.store
        .reschedule(
            &c.lease,
            now,
            AttemptReport::failure(OutcomeClass::Transient, "503"),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let c = claim("w").await;
        let now = f.clock.system_now();
        f.store.defer(&c.lease, now, "rate limited").await.unwrap();
    }
    // A release in between ends the run.
    let c = claim("w").await;
    f.store.release(&c.lease).await.unwrap();
    let c = claim("w").await;
    let now = f.clock.system_now();
    f.store.defer(&c.lease, now, "rate limited").await.unwrap();
    // An event that is not a deferral is never folded into, even one that looks the same: a
    // recovered lease (`retrying`, detail `lease expired`, the attempt it had).
    claim("w").await;
    f.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(f.store.recover_expired_leases().await.unwrap(), 1);
    for _ in 0..2 {
        let c = claim("w").await;
        let now = f.clock.system_now();
        f.store.defer(&c.lease, now, "lease expired").await.unwrap();
    }
    let d = f.store.get(id).await.unwrap().unwrap();
    let released = d.events[10].detail.as_deref();
    assert_eq!(
        timeline(&d.events)[3..],
        [
            (4, Status::Delivering, 1, None, 1),
            (5, Status::Queued, 0, Some("rate limited"), 2),
            (6, Status::Delivering, 1, None, 1),
            (7, Status::Retrying, 1, Some("503"), 1),
            (8, Status::Delivering, 2, None, 1),
            (9, Status::Retrying, 1, Some("rate limited"), 3),
            (10, Status::Delivering, 2, None, 1),
            (11, Status::Retrying, 1, released, 1),
            (12, Status::Delivering, 2, None, 1),
            (13, Status::Retrying, 1, Some("rate limited"), 1),
            (14, Status::Delivering, 2, None, 1),
            (15, Status::Retrying, 2, Some("lease expired"), 1),
            (16, Status::Delivering, 3, None, 1),
            (17, Status::Retrying, 2, Some("lease expired"), 2),
        ]
    );
    assert_eq!(d.events[8].outcome, None, "a deferral records no outcome");
    assert_eq!(d.events[6].last_at, None, "an event never repeated");
    // The timeline goes on from the folded event: the next claim and end are 18 and 19.
    let c = claim("w").await;
    f.store
        .complete(&c.lease, AttemptReport::success())
        .await
        .unwrap();
    let d = f.store.get(id).await.unwrap().unwrap();
    let seqs: Vec<u32> = d.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=19).collect::<Vec<_>>());
    assert_eq!(d.message.status, Status::Delivered);
    assert_eq!(d.message.attempts, 3, "deferrals spend no attempt");
}

pub(crate) async fn cancel_applies_to_pending_messages_only<B: Backend>() {
    let f = fixture::<B>().await;
    let id = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let c = f.store.claim_due("a", 1, LEASE).await.unwrap().remove(0);
    f.store
        .cancel(id, Some("operator said so".into()))
        .await
        .unwrap();
    let d = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(d.message.status, Status::Cancelled);
    assert_eq!(
        d.events.last().unwrap().detail.as_deref(),
        Some("operator said so")
    );
    // The worker that held it cannot complete it.
    let err = f
        .store
        .complete(&c.lease, AttemptReport::success())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    let err = f.store.cancel(id, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: Status::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    let missing = MessageId::from_ulid(ulid::Ulid::new());
    let err = f.store.cancel(missing, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

pub(crate) async fn recover_expired_leases_counts_them<B: Backend>() {
    let f = fixture::<B>().await;
    for n in 0..3 {
        f.store.enqueue(msg("d", n)).await.unwrap();
    }
    let claimed = f.store.claim_due("a", 2, LEASE).await.unwrap();
    assert_eq!(f.store.recover_expired_leases().await.unwrap(), 0);
    f.clock.advance(LEASE);
    assert_eq!(f.store.recover_expired_leases().await.unwrap(), 2);
    assert_eq!(f.store.recover_expired_leases().await.unwrap(), 0);
    let m = f
        .store
        .get(claimed[0].message.id)
        .await
        .unwrap()
        .unwrap()
        .message;
    assert_eq!(m.status, Status::Retrying);
    assert_eq!(m.attempts, 1);
    let err = f
        .store
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    assert_eq!(f.store.claim_due("b", 10, LEASE).await.unwrap().len(), 3);
}

pub(crate) async fn fifo_per_ordering_key<B: Backend>() {
    let f = fixture::<B>().await;
    let a1 = f
        .store
        .enqueue(msg("d", 1).ordering_key("chat"))
        .await
        .unwrap()
        .id();
    let a2 = f
        .store
        .enqueue(msg("d", 2).ordering_key("chat"))
        .await
        .unwrap()
        .id();
    let other = f
        .store
        .enqueue(msg("d", 3).ordering_key("other"))
        .await
        .unwrap()
        .id();
    let free = f.store.enqueue(msg("d", 4)).await.unwrap().id();
    let claimed: Vec<_> = f.store.claim_due("w", 10, LEASE).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.message.id).collect();
    assert_eq!(ids, [a1, other, free]);
    // The head fails and is retried later: the key stays blocked meanwhile.
    let head = &claimed[0];
    let at = f.clock.system_now() + Duration::from_secs(5);
    f.store
        .reschedule(&head.lease, at, AttemptReport::new(OutcomeClass::Transient))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(f.store.claim_due("w", 10, LEASE).await.unwrap().is_empty());
    f.clock.advance(Duration::from_secs(4));
    let c = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].message.id, a1);
    f.store
        .complete(&c[0].lease, AttemptReport::success())
        .await
        .unwrap();
    let c = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].message.id, a2);
}

async fn dead_head<B: Backend>(policy: DeadLetterPolicy) -> (Fixture<B::Store>, MessageId) {
    let f = fixture_with::<B>(|o| o.fifo_dead_letter_policy = policy).await;
    f.store
        .enqueue(msg("d", 1).ordering_key("k"))
        .await
        .unwrap();
    let second = f
        .store
        .enqueue(msg("d", 2).ordering_key("k"))
        .await
        .unwrap()
        .id();
    let c = f.store.claim_due("w", 10, LEASE).await.unwrap().remove(0);
    f.store
        .dead_letter(&c.lease, AttemptReport::new(OutcomeClass::Permanent))
        .await
        .unwrap();
    (f, second)
}

pub(crate) async fn fifo_dead_letter_skip_lets_key_continue<B: Backend>() {
    let (f, second) = dead_head::<B>(DeadLetterPolicy::Skip).await;
    let c = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].message.id, second);
}

pub(crate) async fn fifo_dead_letter_block_holds_key<B: Backend>() {
    let (f, second) = dead_head::<B>(DeadLetterPolicy::Block).await;
    assert!(f.store.claim_due("w", 10, LEASE).await.unwrap().is_empty());
    // Purging (or replaying) the dead head unblocks the key.
    assert_eq!(
        f.store.purge(&Filter::status(Status::Dead)).await.unwrap(),
        1
    );
    let c = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].message.id, second);
}

pub(crate) async fn list_filters_and_paginates<B: Backend>() {
    let f = fixture::<B>().await;
    let start = f.clock.system_now();
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(
            f.store
                .enqueue(msg(if n % 2 == 0 { "even" } else { "odd" }, n))
                .await
                .unwrap()
                .id(),
        );
        f.clock.advance(Duration::from_secs(1));
    }
    // Newest first, in pages of 3.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list(&Filter::all(), cursor.as_ref(), 3)
            .await
            .unwrap();
        assert!(page.messages.len() <= 3);
        seen.extend(page.messages.iter().map(|m| m.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    let even = f
        .store
        .list(&Filter::all().destination("even"), None, 100)
        .await
        .unwrap();
    assert_eq!(even.messages.len(), 4);
    let window = Filter::all().created_between(
        start + Duration::from_secs(2),
        start + Duration::from_secs(4),
    );
    let page = f.store.list(&window, None, 100).await.unwrap();
    let got: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(got, [ids[3], ids[2]]);
    // Error text and status.
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .dead_letter(
            &c.lease,
            AttemptReport::failure(OutcomeClass::Permanent, "chat not found"),
        )
        .await
        .unwrap();
    let page = f
        .store
        .list(
            &Filter::status(Status::Dead).error_contains("not found"),
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].id, c.message.id);
    let page = f
        .store
        .list(&Filter::all().error_contains("timeout"), None, 100)
        .await
        .unwrap();
    assert!(page.messages.is_empty());
}

pub(crate) async fn replay_requeues_terminal_messages<B: Backend>() {
    let f = fixture::<B>().await;
    let dead = f.store.enqueue(msg("d", 1)).await.unwrap().id();
    let pending = f.store.enqueue(msg("d", 2)).await.unwrap().id();
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.id, dead);
    f.store
        .dead_letter(
            &c.lease,
            AttemptReport::failure(OutcomeClass::Permanent, "boom"),
        )
        .await
        .unwrap();
    let dry = f
        .store
        .replay(ReplayTarget::Filter(Filter::all()), true)
        .await
        .unwrap();
    assert_eq!(
        (dry.count, dry.ids.clone(), dry.dry_run),
        (1, vec![dead], true)
    );
    assert_eq!(
        f.store.get(dead).await.unwrap().unwrap().message.status,
        Status::Dead
    );
    let events_before = f.store.get(dead).await.unwrap().unwrap().events.len();
    let done = f
        .store
        .replay(ReplayTarget::Ids(vec![dead]), false)
        .await
        .unwrap();
    assert_eq!(done.count, 1);
    let d = f.store.get(dead).await.unwrap().unwrap();
    assert_eq!(d.message.status, Status::Queued);
    assert_eq!(d.message.attempts, 0);
    assert!(d.message.last_error.is_none());
    assert_eq!(d.events.len(), events_before + 1);
    let err = f
        .store
        .replay(ReplayTarget::Ids(vec![pending]), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTransition);
    let missing = MessageId::from_ulid(ulid::Ulid::new());
    let err = f
        .store
        .replay(ReplayTarget::Ids(vec![missing]), true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

pub(crate) async fn purge_and_retention_delete_terminal_messages_only<B: Backend>() {
    let f = fixture::<B>().await;
    for n in 0..4 {
        f.store.enqueue(msg("d", n)).await.unwrap();
    }
    let claimed = f.store.claim_due("w", 3, LEASE).await.unwrap();
    f.store
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(3600));
    f.store
        .complete(&claimed[1].lease, AttemptReport::success())
        .await
        .unwrap();
    f.store
        .dead_letter(
            &claimed[2].lease,
            AttemptReport::new(OutcomeClass::Permanent),
        )
        .await
        .unwrap();
    // Retention: only the delivery older than 30 minutes goes.
    assert_eq!(
        f.store
            .purge_delivered(Duration::from_secs(1800))
            .await
            .unwrap(),
        1
    );
    assert!(f.store.get(claimed[0].message.id).await.unwrap().is_none());
    assert!(f.store.get(claimed[1].message.id).await.unwrap().is_some());
    // Purge never removes pending messages.
    assert_eq!(
        f.store
            .purge(&Filter::status(Status::Queued))
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.store.purge(&Filter::all()).await.unwrap(), 2);
    let left = f.store.list(&Filter::all(), None, 10).await.unwrap();
    assert_eq!(left.messages.len(), 1);
    assert_eq!(left.messages[0].status, Status::Queued);
}

pub(crate) async fn purge_ids_deletes_only_the_named_terminal_matches<B: Backend>() {
    let f = fixture::<B>().await;
    for n in 0..6 {
        f.store.enqueue(msg("d", n)).await.unwrap();
    }
    f.store.enqueue(msg("e", 6)).await.unwrap();
    let claimed = f.store.claim_due("w", 7, LEASE).await.unwrap();
    let id = |n: u64| {
        claimed
            .iter()
            .find(|c| c.message.payload["n"] == n)
            .unwrap_or_else(|| panic!("message {n} was not claimed"))
    };
    // d0..d3 and e6 dead, d4 still delivering, d5 delivered.
    for n in [0, 1, 2, 3, 6] {
        f.store
            .dead_letter(&id(n).lease, AttemptReport::new(OutcomeClass::Permanent))
            .await
            .unwrap();
    }
    f.store
        .complete(&id(5).lease, AttemptReport::success())
        .await
        .unwrap();
    let missing = MessageId::from_ulid(ulid::Ulid::new());
    let named: Vec<MessageId> = [0, 1, 4, 5, 6]
        .into_iter()
        .map(|n| id(n).message.id)
        .chain([missing])
        .collect();
    let dead_in_d = Filter::status(Status::Dead).destination("d");
    assert_eq!(f.store.purge_ids(&[], &dead_in_d).await.unwrap(), 0);
    assert_eq!(f.store.purge_ids(&named, &dead_in_d).await.unwrap(), 2);
    for (n, kept) in [
        (0, false),
        (1, false),
        (2, true),
        (3, true),
        (4, true),
        (5, true),
        (6, true),
    ] {
        let found = f.store.get(id(n).message.id).await.unwrap();
        assert_eq!(found.is_some(), kept, "message {n}: {found:?}");
    }
    // Pending messages are never purged, whatever the filter.
    assert_eq!(
        f.store
            .purge_ids(&[id(4).message.id], &Filter::all())
            .await
            .unwrap(),
        0
    );
}

pub(crate) async fn stats_report_counts_rates_percentiles_and_errors<B: Backend>() {
    let f = fixture::<B>().await;
    for n in 0..12 {
        f.store.enqueue(msg("d", n)).await.unwrap();
    }
    let claimed = f.store.claim_due("w", 11, LEASE).await.unwrap();
    // 10 delivered after 1..=10 seconds, 1 dead.
    for c in claimed.iter().take(10) {
        f.clock.advance(Duration::from_secs(1));
        f.store
            .complete(&c.lease, AttemptReport::success())
            .await
            .unwrap();
    }
    f.store
        .dead_letter(
            &claimed[10].lease,
            AttemptReport::failure(OutcomeClass::Permanent, "403 blocked").code("403"),
        )
        .await
        .unwrap();
    let s = f.store.stats(Duration::from_secs(3600)).await.unwrap();
    let depths = f.store.depths().await.unwrap();
    assert_eq!((depths.queue, depths.scheduled, depths.dead), (1, 0, 1));
    assert_eq!(s.by_status.delivered, 10);
    assert_eq!(s.by_status.dead, 1);
    assert_eq!(s.by_status.queued, 1);
    assert_eq!(s.queue_depth, 1);
    assert_eq!(s.due_now, 1);
    assert_eq!(s.dead_letter_depth, 1);
    assert_eq!(s.delivered_in_window, 10);
    assert_eq!(s.dead_in_window, 1);
    assert!((s.success_rate.unwrap() - 10.0 / 11.0).abs() < 1e-9);
    // Nearest rank (SQLite) or linear interpolation (PostgreSQL's percentile_cont) over
    // 1..=10 s: either definition is accepted, nothing else.
    let between = |p: Option<Duration>, lo: u64, hi: u64| {
        let p = p.expect("a percentile");
        assert!(
            p >= Duration::from_millis(lo) && p <= Duration::from_millis(hi),
            "{p:?} not in {lo}..={hi} ms"
        );
    };
    between(s.p50, 5000, 5500);
    between(s.p95, 9550, 10_000);
    between(s.p99, 9910, 10_000);
    assert_eq!(s.top_errors.len(), 1);
    assert_eq!(s.top_errors[0].code.as_deref(), Some("403"));
    assert_eq!(s.top_errors[0].count, 1);
    // Outside the window, nothing counts.
    f.clock.advance(Duration::from_secs(7200));
    let s = f.store.stats(Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.delivered_in_window, 0);
    assert_eq!(s.success_rate, None);
    assert_eq!(s.p50, None);
    assert!(s.top_errors.is_empty());
}

fn per_destination(counts: &[(&str, u64, u64, u64)]) -> Vec<DestinationDepths> {
    counts
        .iter()
        .map(|&(destination, queue, scheduled, dead)| DestinationDepths {
            destination: destination.to_owned(),
            queue,
            scheduled,
            dead,
        })
        .collect()
}

pub(crate) async fn depths_leave_out_scheduled_messages_and_count_per_destination<B: Backend>() {
    let f = fixture::<B>().await;
    assert_eq!(f.store.depths().await.unwrap(), Depths::default());
    let t0 = f.clock.system_now();
    let hour = Duration::from_secs(3600);
    // c: one message waiting for a retry, one dead; e: one delivered (counted nowhere).
    let ids = f
        .store
        .enqueue_batch(vec![msg("c", 1), msg("c", 2), msg("e", 3)])
        .await
        .unwrap();
    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let failed = AttemptReport::failure(OutcomeClass::Transient, "503");
    f.store
        .reschedule(&claimed[0].lease, t0 + hour / 6, failed)
        .await
        .unwrap();
    let permanent = AttemptReport::failure(OutcomeClass::Permanent, "403");
    f.store
        .dead_letter(&claimed[1].lease, permanent)
        .await
        .unwrap();
    f.store
        .complete(&claimed[2].lease, AttemptReport::success())
        .await
        .unwrap();
    assert_eq!(claimed[2].message.id, ids[2].id());
    // b: one deferred by a policy for an hour before its first attempt: `queued`, no attempt
    // spent, due in an hour, like a scheduled message, but not one.
    f.store.enqueue(msg("b", 4)).await.unwrap();
    let c = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .defer(&c.lease, t0 + hour, "circuit open")
        .await
        .unwrap();
    // a: one scheduled for later, cancelled and replayed: due now, no longer scheduled.
    let replayed = f
        .store
        .enqueue(msg("a", 5).not_before(t0 + 3 * hour))
        .await
        .unwrap()
        .id();
    f.store.cancel(replayed, None).await.unwrap();
    f.store
        .replay(ReplayTarget::Ids(vec![replayed]), false)
        .await
        .unwrap();
    // a: due now, due since before now, scheduled in an hour; b: scheduled in two hours;
    // d: scheduled and cancelled (counted nowhere).
    let past = t0 - Duration::from_secs(5);
    f.store
        .enqueue_batch(vec![
            msg("a", 6),
            msg("a", 7).not_before(past),
            msg("a", 8).not_before(t0 + hour),
            msg("b", 9).not_before(t0 + 2 * hour),
        ])
        .await
        .unwrap();
    let cancelled = f
        .store
        .enqueue(msg("d", 10).not_before(t0 + hour))
        .await
        .unwrap()
        .id();
    f.store.cancel(cancelled, None).await.unwrap();

    f.clock.advance(Duration::from_secs(1));
    let d = f.store.depths().await.unwrap();
    assert_eq!((d.queue, d.scheduled, d.dead), (5, 2, 1), "{d:?}");
    assert_eq!(
        d.by_destination,
        per_destination(&[("a", 3, 1, 0), ("b", 1, 1, 0), ("c", 1, 0, 1)])
    );
    assert_eq!(
        d.oldest_due_at,
        Some(past),
        "the lag runs from the earliest due time"
    );
    let stats = f.store.stats(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stats.queue_depth, d.queue + d.scheduled);

    // An hour on, a's scheduled message and b's deferred one are due: scheduled until the
    // moment itself, then queued.
    f.clock.advance(hour - Duration::from_secs(1));
    let d = f.store.depths().await.unwrap();
    assert_eq!((d.queue, d.scheduled, d.dead), (6, 1, 1), "{d:?}");
    assert_eq!(
        d.by_destination,
        per_destination(&[("a", 4, 0, 0), ("b", 1, 1, 0), ("c", 1, 0, 1)])
    );
    assert_eq!(d.oldest_due_at, Some(past));

    // Being delivered is still queued, but not due while the lease runs.
    let claimed = f.store.claim_due("w", 100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let d = f.store.depths().await.unwrap();
    assert_eq!((d.queue, d.scheduled, d.dead), (6, 1, 1), "{d:?}");
    assert_eq!(d.oldest_due_at, None, "nothing is due: {d:?}");
    // An expired lease is due again, from when it expired.
    f.clock.advance(LEASE);
    let d = f.store.depths().await.unwrap();
    assert_eq!(d.oldest_due_at, Some(t0 + hour + LEASE));
    for c in &claimed {
        f.store
            .complete(&c.lease, AttemptReport::success())
            .await
            .unwrap();
    }
    let d = f.store.depths().await.unwrap();
    assert_eq!((d.queue, d.scheduled, d.dead), (0, 1, 1), "{d:?}");
    assert_eq!(
        d.by_destination,
        per_destination(&[("b", 0, 1, 0), ("c", 0, 0, 1)])
    );
    assert_eq!(d.oldest_due_at, None);
}

pub(crate) async fn meta_round_trips_and_reserved_keys_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    assert_eq!(f.store.get_meta("telegram.offset").await.unwrap(), None);
    f.store.set_meta("telegram.offset", "41").await.unwrap();
    f.store.set_meta("telegram.offset", "42").await.unwrap();
    assert_eq!(
        f.store
            .get_meta("telegram.offset")
            .await
            .unwrap()
            .as_deref(),
        Some("42")
    );
    let err = f
        .store
        .set_meta("ferrule.schema_version", "99")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

pub(crate) async fn meta_lists_by_prefix_in_byte_order_and_deletes<B: Backend>() {
    let f = fixture::<B>().await;
    assert!(f.store.list_meta("relay.").await.unwrap().is_empty());
    // Upper case sorts before lower case and non-ASCII after both in byte order; a
    // locale-aware collation would interleave them.
    for (key, value) in [
        ("relay.tokens.b", "hb"),
        ("relay.tokens.é", "he"),
        ("relay.tokens.B", "hB"),
        ("relay.tokens.a", "ha"),
        ("relay.tokensx", "not under relay.tokens."),
        ("relay.breakers.smtp", "open"),
        ("telegram.offset", "42"),
    ] {
        f.store.set_meta(key, value).await.unwrap();
    }
    let tokens = f.store.list_meta("relay.tokens.").await.unwrap();
    let pairs: Vec<(&str, &str)> = tokens
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("relay.tokens.B", "hB"),
            ("relay.tokens.a", "ha"),
            ("relay.tokens.b", "hb"),
            ("relay.tokens.é", "he"),
        ]
    );
    let keys = |list: Vec<(String, String)>| list.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(f.store.list_meta("relay.breakers.").await.unwrap()),
        ["relay.breakers.smtp"]
    );
    // The prefix is literal: no LIKE wildcards.
    assert!(f.store.list_meta("relay%").await.unwrap().is_empty());
    assert!(f.store.list_meta("relay_tokens").await.unwrap().is_empty());
    // Everything but the store's own keys (its schema version is always there).
    assert!(
        f.store
            .get_meta("ferrule.schema_version")
            .await
            .unwrap()
            .is_some()
    );
    let all = keys(f.store.list_meta("").await.unwrap());
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
        "{all:?}"
    );
    assert!(f.store.list_meta("ferr").await.unwrap().is_empty());
    let err = f.store.list_meta("ferrule.").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    assert!(f.store.delete_meta("relay.tokens.a").await.unwrap());
    assert!(!f.store.delete_meta("relay.tokens.a").await.unwrap());
    assert!(!f.store.delete_meta("relay.never.set").await.unwrap());
    assert_eq!(f.store.get_meta("relay.tokens.a").await.unwrap(), None);
    assert_eq!(
        keys(f.store.list_meta("relay.tokens.").await.unwrap()),
        ["relay.tokens.B", "relay.tokens.b", "relay.tokens.é"]
    );
    for reserved in ["ferrule.schema_version", ""] {
        let err = f.store.delete_meta(reserved).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    assert!(
        f.store
            .get_meta("ferrule.schema_version")
            .await
            .unwrap()
            .is_some(),
        "a refused delete deletes nothing"
    );
    // A deleted key can be set again.
    f.store.set_meta("relay.tokens.a", "again").await.unwrap();
    assert_eq!(
        f.store.get_meta("relay.tokens.a").await.unwrap().as_deref(),
        Some("again")
    );
}

pub(crate) async fn concurrent_claimers_never_hold_the_same_message<B: Backend>() {
    let f = fixture::<B>().await;
    let total = 300;
    f.store
        .enqueue_batch((0..total).map(|n| msg("d", n)).collect())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(&owner, 7, LEASE).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for c in batch {
                    store
                        .complete(&c.lease, AttemptReport::success())
                        .await
                        .unwrap();
                    mine.push(c.message.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), total as usize);
    assert_eq!(unique.len(), total as usize);
}

pub(crate) async fn wait_for_work_wakes_on_enqueue<B: Backend>() {
    let f = fixture::<B>().await;
    let store = f.store.clone();
    let waiter = tokio::spawn(async move { store.wait_for_work().await });
    tokio::task::yield_now().await;
    f.store.enqueue(msg("d", 1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the enqueue")
        .unwrap();
}

pub(crate) async fn take_wake_takes_the_kept_wake_once<B: Backend>() {
    /// Polls `take_wake` until it answers true: SQLite's writer wakes the dispatchers just
    /// after it answers the enqueue.
    async fn taken(store: &impl Store) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if store.take_wake() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }
    let f = fixture::<B>().await;
    f.store.enqueue(msg("d", 1)).await.unwrap();
    assert!(
        taken(&f.store).await,
        "the enqueue's wake was kept for the next wait"
    );
    assert!(!f.store.take_wake(), "and taken");
    f.store.enqueue(msg("d", 2)).await.unwrap();
    assert!(taken(&f.store).await, "the next enqueue keeps one again");
}

pub(crate) async fn next_due_at_reports_earliest_pending<B: Backend>() {
    let f = fixture::<B>().await;
    assert_eq!(f.store.next_due_at().await.unwrap(), None);
    let t: SystemTime = f.clock.system_now() + Duration::from_secs(90);
    f.store.enqueue(msg("d", 1).not_before(t)).await.unwrap();
    f.store
        .enqueue(msg("d", 2).not_before(t + Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(t));
}

/// A store may answer [`Store::next_due_at`] from what its last claim read (one read fewer per
/// idle dispatcher); every later write that can make a message due sooner must still show.
pub(crate) async fn next_due_at_after_a_claim_sees_every_later_write<B: Backend>() {
    let f = fixture::<B>().await;
    let now = f.clock.system_now();
    let secs = |s: u64| now + Duration::from_secs(s);
    f.store.enqueue(msg("d", 0)).await.unwrap();
    f.store
        .enqueue(msg("d", 1).not_before(secs(60)))
        .await
        .unwrap();
    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // The claimed message falls due again when its lease expires, before the scheduled one.
    let expires = claimed[0].lease.expires_at;
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(expires));
    // An enqueue due sooner shows at once, with or without a claim in between.
    f.store
        .enqueue(msg("d", 2).not_before(secs(5)))
        .await
        .unwrap();
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(secs(5)));
    assert!(f.store.claim_due("w", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(secs(5)));
    // So does a reschedule sooner than that.
    f.store
        .reschedule(
            &claimed[0].lease,
            secs(2),
            AttemptReport::new(OutcomeClass::Transient),
        )
        .await
        .unwrap();
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(secs(2)));
    // Claimed when due; then the next one is the message scheduled at 5 s.
    f.clock.advance(Duration::from_secs(2));
    let again = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(f.store.next_due_at().await.unwrap(), Some(secs(5)));
    // A delivery never makes the answer later than the truth is: at most earlier.
    f.store
        .complete(&again[0].lease, AttemptReport::success())
        .await
        .unwrap();
    let due = f.store.next_due_at().await.unwrap().unwrap();
    assert!(due <= secs(5), "{due:?}");
}

fn update(source: &str, update_id: u32) -> NewInbound {
    NewInbound::new(
        source,
        update_id.to_string(),
        json!({ "update_id": update_id, "message": { "text": format!("#{update_id}") } }),
    )
}

pub(crate) async fn record_inbound_stores_each_event_once<B: Backend>() {
    let f = fixture::<B>().await;
    let first = f
        .store
        .record_inbound(update("telegram:a", 1))
        .await
        .unwrap();
    let Recorded::Created { id, forward: None } = first else {
        panic!("a new event is created: {first:?}");
    };
    f.clock.advance(Duration::from_secs(5));
    // A redelivery, even with another payload, is the original.
    let mut again = update("telegram:a", 1);
    again.payload = json!({ "update_id": 1, "changed": true });
    assert_eq!(
        f.store.record_inbound(again).await.unwrap(),
        Recorded::Duplicate(id)
    );
    // The same external id from another source is another event.
    let other = f
        .store
        .record_inbound(update("telegram:b", 1))
        .await
        .unwrap();
    assert!(other.is_created());
    assert_ne!(other.id(), id);
    let page = f.store.list_inbound(None, None, 10).await.unwrap();
    assert_eq!(page.events.len(), 2);
    let original = page.events.iter().find(|e| e.id == id).unwrap();
    assert_eq!(original.source, "telegram:a");
    assert_eq!(original.external_id, "1");
    assert_eq!(
        original.payload,
        json!({ "update_id": 1, "message": { "text": "#1" } })
    );
    let start = f.clock.system_now() - Duration::from_secs(5);
    assert_eq!(
        ferrule_store::types::to_millis(original.received_at),
        ferrule_store::types::to_millis(start),
        "received_at comes from the store's clock"
    );
    // Bad keys are refused before any write.
    for bad in [
        NewInbound::new("", "1", json!({})),
        NewInbound::new("s", "", json!({})),
        NewInbound::new("s", "x".repeat(600), json!({})),
    ] {
        let err = f.store.record_inbound(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    assert_eq!(
        f.store
            .list_inbound(None, None, 10)
            .await
            .unwrap()
            .events
            .len(),
        2
    );
}

pub(crate) async fn concurrent_duplicate_inbound_events_record_one<B: Backend>() {
    let f = fixture::<B>().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .record_inbound(
                        update("telegram:a", 7).forward(NewMessage::new("app", json!({"n": 7}))),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|a| a.is_created()).count(), 1);
    let ids: HashSet<_> = answers.iter().map(Recorded::id).collect();
    assert_eq!(ids.len(), 1, "every duplicate names the original");
    assert_eq!(
        f.store
            .list_inbound(None, None, 100)
            .await
            .unwrap()
            .events
            .len(),
        1
    );
    let forwarded = f
        .store
        .list(&Filter::all().destination("app"), None, 100)
        .await
        .unwrap();
    assert_eq!(forwarded.messages.len(), 1, "forwarded exactly once");
}

pub(crate) async fn record_inbound_enqueues_the_forward_only_when_new<B: Backend>() {
    let f = fixture::<B>().await;
    let forward = |n: u32| {
        NewMessage::new("app", json!({ "update": n }))
            .ordering_key("telegram:a:42")
            .headers(json!({ "x-source": "telegram:a" }))
    };
    let waiter = {
        let store = f.store.clone();
        tokio::spawn(async move { store.wait_for_work().await })
    };
    tokio::task::yield_now().await;
    let first = f
        .store
        .record_inbound(update("telegram:a", 1).forward(forward(1)))
        .await
        .unwrap();
    assert!(first.is_created());
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a forward wakes the dispatchers")
        .unwrap();
    // The redelivery forwards nothing, even with a different forward.
    let again = f
        .store
        .record_inbound(update("telegram:a", 1).forward(forward(99)))
        .await
        .unwrap();
    assert_eq!(again, Recorded::Duplicate(first.id()));
    // An event without a forward enqueues nothing.
    f.store
        .record_inbound(update("telegram:a", 2))
        .await
        .unwrap();
    let page = f.store.list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    let m = &page.messages[0];
    assert_eq!(m.destination, "app");
    assert_eq!(m.payload, json!({ "update": 1 }));
    assert_eq!(m.ordering_key.as_deref(), Some("telegram:a:42"));
    assert_eq!(m.headers, Some(json!({ "x-source": "telegram:a" })));
    assert_eq!(m.status, Status::Queued);
    // The forward is an ordinary message: claimable and deliverable.
    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, m.id);
    // A forward's idempotency key is honoured like a submit's.
    let keyed = |n: u32| NewMessage::new("app", json!({ "n": n })).idempotency_key("k");
    let submitted = f.store.enqueue(keyed(0)).await.unwrap();
    f.store
        .record_inbound(update("telegram:a", 3).forward(keyed(3)))
        .await
        .unwrap();
    let with_key = f
        .store
        .list(&Filter::all().destination("app"), None, 100)
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter(|m| m.idempotency_key.is_some())
        .collect::<Vec<_>>();
    assert_eq!(with_key.len(), 1);
    assert_eq!(with_key[0].id, submitted.id());
}

pub(crate) async fn a_refused_forward_records_nothing<B: Backend>() {
    let f = fixture_with::<B>(|o| o.max_payload_bytes = 200).await;
    let big = NewMessage::new("app", json!({ "text": "x".repeat(300) }));
    let err = f
        .store
        .record_inbound(update("telegram:a", 1).forward(big))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
    let err = f
        .store
        .record_inbound(NewInbound::new(
            "telegram:a",
            "2",
            json!({ "text": "x".repeat(300) }),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
    assert!(
        f.store
            .list_inbound(None, None, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert!(
        f.store
            .list(&Filter::all(), None, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    // Nothing was recorded, so the redelivery with a forward that fits is new.
    let retried = f
        .store
        .record_inbound(update("telegram:a", 1).forward(NewMessage::new("app", json!(1))))
        .await
        .unwrap();
    assert!(retried.is_created());
    assert_eq!(
        f.store
            .list(&Filter::all(), None, 10)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
}

pub(crate) async fn list_inbound_filters_by_source_and_paginates<B: Backend>() {
    let f = fixture::<B>().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let source = if n % 2 == 0 {
            "telegram:even"
        } else {
            "telegram:odd"
        };
        ids.push(
            f.store
                .record_inbound(update(source, n))
                .await
                .unwrap()
                .id(),
        );
        f.clock.advance(Duration::from_millis(10));
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_inbound(None, cursor.as_ref(), 3)
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let mut even = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_inbound(Some("telegram:even"), cursor.as_ref(), 2)
            .await
            .unwrap();
        even.extend(page.events.iter().map(|e| e.external_id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(even, ["6", "4", "2", "0"]);
    assert!(
        f.store
            .list_inbound(Some("telegram:none"), None, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    let err = f
        .store
        .list_inbound(None, Some(&ferrule_store::Cursor::from_string("nope")), 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = f.store.list_inbound(None, None, 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

pub(crate) async fn purge_inbound_deletes_only_old_events<B: Backend>() {
    let f = fixture::<B>().await;
    f.store
        .record_inbound(update("telegram:a", 1))
        .await
        .unwrap();
    f.store
        .record_inbound(update("telegram:a", 2))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(3600));
    f.store
        .record_inbound(update("telegram:a", 3))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .purge_inbound(Duration::from_secs(1800))
            .await
            .unwrap(),
        2
    );
    let left = f.store.list_inbound(None, None, 10).await.unwrap();
    let ids: Vec<_> = left.events.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(ids, ["3"]);
    // A purged event is forgotten: its redelivery is recorded again.
    assert!(
        f.store
            .record_inbound(update("telegram:a", 1))
            .await
            .unwrap()
            .is_created()
    );
}
