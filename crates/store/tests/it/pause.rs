//! Paused destinations' conformance cases, generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`pause_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{ErrorKind, NewMessage, Status, Store};
use serde_json::json;

use crate::conformance::{Backend, fixture};

const LEASE: Duration = Duration::from_secs(30);

/// Instantiates every case for a backend type, in a module `pause`.
#[macro_export]
macro_rules! pause_conformance_tests {
    ($backend:ty) => {
        mod pause {
            $crate::conformance_tests!(@cases pause, $backend,
                a_paused_destination_is_not_claimed_until_resumed,
                bad_pauses_are_refused
            );
        }
    };
}

pub(crate) async fn a_paused_destination_is_not_claimed_until_resumed<B: Backend>() {
    let f = fixture::<B>().await;
    let held = f
        .store
        .enqueue(NewMessage::new("hook", json!({"n": 1})))
        .await
        .unwrap()
        .id();
    let paused = f
        .store
        .pause_destination("hook", "ops", Some("deploy"))
        .await
        .unwrap();
    assert_eq!(paused.destination, "hook");
    assert_eq!(paused.paused_by, "ops");
    assert_eq!(paused.reason.as_deref(), Some("deploy"));
    assert_eq!(paused.paused_at, f.clock.system_now());
    assert_eq!(
        f.store.next_due_at().await.unwrap(),
        None,
        "a paused destination's due message is no work"
    );
    assert!(f.store.claim_due("w", 10, LEASE).await.unwrap().is_empty());
    // Another destination goes on.
    let other = f
        .store
        .enqueue(NewMessage::new("other", json!({"n": 2})))
        .await
        .unwrap()
        .id();
    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.message.id).collect::<Vec<_>>(),
        [other]
    );
    // The held message stays queued, attempts unspent, timeline untouched.
    let detail = f.store.get(held).await.unwrap().unwrap();
    assert_eq!(detail.message.status, Status::Queued);
    assert_eq!(detail.message.attempts, 0);
    assert_eq!(detail.events.len(), 1);

    // A second pause keeps the first.
    f.clock.advance(Duration::from_secs(5));
    let again = f.store.pause_destination("hook", "ci", None).await.unwrap();
    assert_eq!(again, paused);
    assert_eq!(f.store.paused_destinations().await.unwrap(), [paused]);

    // A resume wakes a waiting dispatcher and the message is claimed.
    let store = f.store.clone();
    let waiter = tokio::spawn(async move { store.wait_for_work().await });
    tokio::task::yield_now().await;
    assert!(f.store.resume_destination("hook").await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the resume")
        .unwrap();
    assert!(!f.store.resume_destination("hook").await.unwrap());
    assert!(f.store.paused_destinations().await.unwrap().is_empty());
    assert!(f.store.next_due_at().await.unwrap().is_some());
    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.message.id).collect::<Vec<_>>(),
        [held]
    );
}

pub(crate) async fn bad_pauses_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let long = "x".repeat(3000);
    for (destination, by, reason, field) in [
        ("", "ops", None, "destination"),
        ("hook", "", None, "paused_by"),
        ("hook", "ops", Some(long.as_str()), "reason"),
    ] {
        let err = f
            .store
            .pause_destination(destination, by, reason)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let err = f.store.resume_destination("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(f.store.paused_destinations().await.unwrap().is_empty());
}
