//! Shared circuit breakers' conformance cases, generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`shared_breaker_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{BreakerUpdate, ErrorKind, SharedState, Store};

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `shared_breaker`.
#[macro_export]
macro_rules! shared_breaker_conformance_tests {
    ($backend:ty) => {
        mod shared_breaker {
            $crate::conformance_tests!(@cases shared_breaker, $backend,
                a_published_breaker_is_read_back_with_its_epoch,
                only_the_first_take_over_of_an_epoch_wins,
                bad_breakers_are_refused
            );
        }
    };
}

fn update(destination: &str, state: SharedState, until: Duration, owner: &str) -> BreakerUpdate {
    BreakerUpdate {
        destination: destination.into(),
        state,
        open_until: std::time::UNIX_EPOCH + until,
        owner: owner.into(),
    }
}

pub(crate) async fn a_published_breaker_is_read_back_with_its_epoch<B: Backend>() {
    let f = fixture::<B>().await;
    assert!(f.store.shared_breakers().await.unwrap().is_empty());
    let until = Duration::from_secs(1_800_000_000);
    let first = f
        .store
        .publish_breaker(&update("hook", SharedState::Open, until, "relay-a"))
        .await
        .unwrap();
    assert_eq!(first.destination, "hook");
    assert_eq!(first.state, SharedState::Open);
    assert_eq!(first.open_until, std::time::UNIX_EPOCH + until);
    assert_eq!(first.owner, "relay-a");
    assert_eq!(first.epoch, 1);
    assert_eq!(first.updated_at, f.clock.system_now());
    f.store
        .publish_breaker(&update("alpha", SharedState::Open, until, "relay-c"))
        .await
        .unwrap();
    // Another relay closes it: it becomes the owner, one epoch later.
    let closed = f
        .store
        .publish_breaker(&update("hook", SharedState::Closed, until, "relay-b"))
        .await
        .unwrap();
    assert_eq!((closed.state, closed.epoch), (SharedState::Closed, 2));
    assert_eq!(closed.owner, "relay-b");
    let all = f.store.shared_breakers().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|b| (b.destination.as_str(), b.epoch))
            .collect::<Vec<_>>(),
        [("alpha", 1), ("hook", 2)]
    );
    assert_eq!(all[1], closed);
}

pub(crate) async fn only_the_first_take_over_of_an_epoch_wins<B: Backend>() {
    let f = fixture::<B>().await;
    let until = Duration::from_secs(1_800_000_000);
    let open = f
        .store
        .publish_breaker(&update("hook", SharedState::Open, until, "relay-a"))
        .await
        .unwrap();
    let later = std::time::UNIX_EPOCH + until + Duration::from_secs(5);
    let won = f
        .store
        .take_over_breaker("hook", open.epoch, "relay-b", later)
        .await
        .unwrap()
        .expect("the first take-over of the epoch wins");
    assert_eq!((won.owner.as_str(), won.epoch), ("relay-b", 2));
    assert_eq!(won.state, SharedState::Probing);
    assert_eq!(won.open_until, later, "the new owner's open period");
    assert_eq!(
        f.store
            .take_over_breaker("hook", open.epoch, "relay-c", later)
            .await
            .unwrap(),
        None,
        "a second one of the same epoch loses"
    );
    assert_eq!(
        f.store
            .take_over_breaker("missing", 1, "relay-c", later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(f.store.shared_breakers().await.unwrap(), [won]);
}

pub(crate) async fn bad_breakers_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let until = Duration::from_secs(1);
    for (bad, field) in [
        (update("", SharedState::Open, until, "relay"), "destination"),
        (update("hook", SharedState::Open, until, ""), "owner"),
        (
            update(&"d".repeat(10_000), SharedState::Open, until, "relay"),
            "destination",
        ),
    ] {
        let err = f.store.publish_breaker(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = f
        .store
        .take_over_breaker("hook", 1, "", std::time::UNIX_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(f.store.shared_breakers().await.unwrap().is_empty());
}
