//! Routes' chat mappings' conformance cases, generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`chat_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{ErrorKind, Store};

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `chats`.
#[macro_export]
macro_rules! chat_conformance_tests {
    ($backend:ty) => {
        mod chats {
            $crate::conformance_tests!(@cases chats, $backend,
                route_chats_are_set_replaced_listed_and_removed,
                bad_route_chats_are_refused
            );
        }
    };
}

pub(crate) async fn route_chats_are_set_replaced_listed_and_removed<B: Backend>() {
    let f = fixture::<B>().await;
    assert!(f.store.route_chats(None).await.unwrap().is_empty());
    let set = f
        .store
        .set_route_chat("github-pr", "octo/hello", -100123, "ops")
        .await
        .unwrap();
    assert_eq!(
        (set.route.as_str(), set.key.as_str(), set.chat_id),
        ("github-pr", "octo/hello", -100123)
    );
    assert_eq!(set.updated_by, "ops");
    assert_eq!(set.updated_at, f.clock.system_now());
    // Another key, another route, a key that differs only in case (keys are exact).
    f.store
        .set_route_chat("github-pr", "Octo/hello", 7, "ops")
        .await
        .unwrap();
    f.store
        .set_route_chat("alerts", "octo/hello", 9, "ci")
        .await
        .unwrap();
    // Replaced: the new chat, who and when.
    f.clock.advance(Duration::from_secs(5));
    let replaced = f
        .store
        .set_route_chat("github-pr", "octo/hello", -200, "lead")
        .await
        .unwrap();
    assert_eq!(replaced.chat_id, -200);
    assert_eq!(replaced.updated_by, "lead");
    assert_eq!(replaced.updated_at, f.clock.system_now());
    assert_ne!(replaced.updated_at, set.updated_at);

    let listed = f.store.route_chats(Some("github-pr")).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.key.as_str(), c.chat_id))
            .collect::<Vec<_>>(),
        [("Octo/hello", 7), ("octo/hello", -200)],
        "by key in byte order"
    );
    assert_eq!(listed[1], replaced);
    let all = f.store.route_chats(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.route.as_str(), c.key.as_str()))
            .collect::<Vec<_>>(),
        [
            ("alerts", "octo/hello"),
            ("github-pr", "Octo/hello"),
            ("github-pr", "octo/hello")
        ]
    );
    assert!(f.store.route_chats(Some("none")).await.unwrap().is_empty());

    // Removed once; the other route's entry of the same key stays.
    assert!(
        f.store
            .delete_route_chat("github-pr", "octo/hello")
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .delete_route_chat("github-pr", "octo/hello")
            .await
            .unwrap()
    );
    let all = f.store.route_chats(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.route.as_str(), c.key.as_str()))
            .collect::<Vec<_>>(),
        [("alerts", "octo/hello"), ("github-pr", "Octo/hello")]
    );
    // A key at the limit, in characters of several bytes each.
    let long = "ж".repeat(ferrule_store::chats::MAX_KEY_CHARS);
    let stored = f
        .store
        .set_route_chat("github-pr", &long, 1, "ops")
        .await
        .unwrap();
    assert_eq!(stored.key, long);
}

pub(crate) async fn bad_route_chats_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let long = "k".repeat(ferrule_store::chats::MAX_KEY_CHARS + 1);
    for (route, key, by, field) in [
        ("", "octo/hello", "ops", "route"),
        ("github-pr", "", "ops", "key"),
        ("github-pr", "  ", "ops", "key"),
        ("github-pr", long.as_str(), "ops", "key"),
        ("github-pr", "octo\0hello", "ops", "key"),
        ("github-pr", "octo\nhello", "ops", "key"),
        ("github-pr", "octo/hello", "", "updated_by"),
    ] {
        let err = f.store.set_route_chat(route, key, 1, by).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    for (route, key, field) in [("", "k", "route"), ("r", "", "key")] {
        let err = f.store.delete_route_chat(route, key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(f.store.route_chats(None).await.unwrap().is_empty());
}
