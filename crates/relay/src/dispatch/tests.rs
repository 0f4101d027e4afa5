//! The dispatcher against a real SQLite store and loopback receivers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrule_store::{NewMessage, Status, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DestinationConfig, DestinationKind, Secret};
use crate::state::AppState;

/// A loopback receiver answering 200 that records the `webhook-id` of every request.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn status_of(state: &AppState, id: ferrule_store::MessageId) -> Status {
    state.store.get(id).await.unwrap().unwrap().message.status
}

async fn wait_until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_delivery_is_rescheduled_and_the_dispatcher_goes_on() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("ferrule.db").display()
    ));
    config.store.synchronous = ferrule_store::Synchronous::Normal;
    config.auth.tokens = vec![Secret::new("test-token-0123456789abcdef").into()];
    config.dispatcher.poll_interval = Duration::from_millis(50);
    // Far longer than the test may take: recovery must not wait for the lease to expire.
    config.dispatcher.lease = Duration::from_secs(60);
    config.destinations.push(DestinationConfig {
        name: "hook".into(),
        kind: DestinationKind::Webhook,
        url,
        secret: Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        allow_private: true,
        timeout: Some(Duration::from_secs(2)),
        headers: Default::default(),
        retry: Some(json!({
            "backoff": {"kind": "fixed", "delay": "50ms"},
            "jitter": "none",
            "max_attempts": 5,
        })),
        ..DestinationConfig::default()
    });
    let (state, _) = crate::server::build_state(config, ferrule_policy::clock::system())
        .await
        .unwrap();
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    // The real delivery, except that a message asking for it panics on its first attempt.
    super::spawn_with(
        state.clone(),
        tracker.clone(),
        hard_stop.clone(),
        |state, claimed: ferrule_store::Claimed, hard_stop| async move {
            if claimed.message.payload["panic"] == true && claimed.message.attempts == 1 {
                panic!("injected panic for the test");
            }
            super::deliver(state, claimed, hard_stop).await;
        },
    );

    let panicky = state
        .store
        .enqueue(NewMessage::new("hook", json!({"panic": true})))
        .await
        .unwrap()
        .id();
    wait_until("the panic", || async {
        state.counters.panics.load(Ordering::Relaxed) == 1
    })
    .await;
    // Messages submitted after the panic are still delivered.
    let mut others = Vec::new();
    for n in 0..3 {
        let enqueued = state
            .store
            .enqueue(NewMessage::new("hook", json!({"n": n})))
            .await
            .unwrap();
        others.push(enqueued.id());
    }
    wait_until("every message delivered", || async {
        for id in others.iter().chain([&panicky]) {
            if status_of(&state, *id).await != Status::Delivered {
                return false;
            }
        }
        true
    })
    .await;

    let detail = state.store.get(panicky).await.unwrap().unwrap();
    assert_eq!(detail.message.attempts, 2, "{detail:#?}");
    let retried = detail
        .events
        .iter()
        .find(|e| e.status == Status::Retrying)
        .unwrap_or_else(|| panic!("no retrying event: {detail:#?}"));
    assert!(
        retried
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("delivery task panicked: injected panic")),
        "{retried:#?}"
    );
    assert_eq!(state.counters.panics.load(Ordering::Relaxed), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|id| **id == panicky.to_string()).count(),
        1,
        "the panicking attempt sent nothing; the retry delivered once: {seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");

    state.shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// The run of attempts and the previous delay, read from a real store's timeline.
#[tokio::test]
async fn retry_history_counts_from_the_first_attempt_since_the_last_replay() {
    use ferrule_policy::Clock;
    use ferrule_store::{AttemptReport, OutcomeClass, ReplayTarget};

    use super::RetryHistory;

    let clock = ferrule_policy::ManualClock::with_system_time(std::time::SystemTime::now());
    // The store keeps milliseconds.
    let now = || {
        let since = clock
            .system_now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        std::time::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("ferrule.db").display()
    ));
    config.store.synchronous = ferrule_store::Synchronous::Normal;
    let store = crate::server::open_store(&config, clock.shared())
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let history = |id| {
        let store = &store;
        async move { RetryHistory::of(&store.get(id).await.unwrap().unwrap().events) }
    };
    let id = store
        .enqueue(NewMessage::new("hook", json!({})))
        .await
        .unwrap()
        .id();
    clock.advance(Duration::from_secs(10));
    // A deferral before the first attempt does not start the run.
    let first = store.claim_due("w", 1, lease).await.unwrap().remove(0);
    store
        .defer(&first.lease, clock.system_now(), "bulkhead full")
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let first = store.claim_due("w", 1, lease).await.unwrap().remove(0);
    let started = now();
    assert_eq!(
        history(id).await,
        RetryHistory {
            first_attempt_at: Some(started),
            previous_delay: None
        }
    );
    clock.advance(Duration::from_millis(200));
    let failure = || AttemptReport::failure(OutcomeClass::Transient, "500");
    store
        .reschedule(
            &first.lease,
            clock.system_now() + Duration::from_secs(5),
            failure(),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let second = store.claim_due("w", 1, lease).await.unwrap().remove(0);
    assert_eq!(
        history(id).await,
        RetryHistory {
            first_attempt_at: Some(started),
            previous_delay: Some(Duration::from_secs(5))
        }
    );
    // Dead, then replayed an hour later: a new run with no previous delay.
    store.dead_letter(&second.lease, failure()).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    store
        .replay(ReplayTarget::Ids(vec![id]), false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    store.claim_due("w", 1, lease).await.unwrap().remove(0);
    assert_eq!(
        history(id).await,
        RetryHistory {
            first_attempt_at: Some(now()),
            previous_delay: None
        }
    );
}
