//! The message search's conformance cases (filters by key and by payload text), generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`search_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{ErrorKind, Filter, NewMessage, ReplayTarget, Status, Store};
use serde_json::json;

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `search`.
#[macro_export]
macro_rules! search_conformance_tests {
    ($backend:ty) => {
        mod search {
            $crate::conformance_tests!(@cases search, $backend,
                list_finds_messages_by_key_and_payload_text,
                an_unbounded_payload_search_is_refused
            );
        }
    };
}

pub(crate) async fn list_finds_messages_by_key_and_payload_text<B: Backend>() {
    let f = fixture::<B>().await;
    let start = f.clock.system_now();
    let mut ids = Vec::new();
    for n in 0..6u32 {
        let mut m = NewMessage::new(
            "hook",
            json!({"order": format!("A-{n}"), "note": if n == 4 { "needle in here" } else { "hay" }}),
        )
        .idempotency_key(format!("key-{n}"));
        if n % 2 == 0 {
            m = m.ordering_key("customer-7");
        }
        ids.push(f.store.enqueue(m).await.unwrap().id());
        f.clock.advance(Duration::from_secs(60));
    }
    let ids_of = |filter: Filter| {
        let store = f.store.clone();
        async move {
            store
                .list(&filter, None, 100)
                .await
                .unwrap()
                .messages
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids_of(Filter::all().idempotency_key("key-3")).await,
        [ids[3]]
    );
    assert!(
        ids_of(Filter::all().idempotency_key("key-9"))
            .await
            .is_empty()
    );
    assert_eq!(
        ids_of(Filter::all().ordering_key("customer-7")).await,
        [ids[4], ids[2], ids[0]]
    );
    let day = Filter::all().created_between(start, start + Duration::from_secs(86_400));
    assert_eq!(
        ids_of(day.clone().payload_contains("needle")).await,
        [ids[4]]
    );
    assert_eq!(
        ids_of(day.clone().payload_contains("A-1")).await,
        [ids[1]],
        "text in a value"
    );
    assert!(
        ids_of(day.clone().payload_contains("NEEDLE"))
            .await
            .is_empty(),
        "case-sensitive"
    );
    // A time range pages newest first like any listing, its cursor continuing after its row.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f.store.list(&day, cursor.as_ref(), 2).await.unwrap();
        seen.extend(page.messages.iter().map(|m| m.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    // The range bounds the search.
    let early = Filter::all()
        .created_between(start, start + Duration::from_secs(120))
        .payload_contains("needle");
    assert!(ids_of(early).await.is_empty());
    // Filters combine, with status too.
    assert_eq!(
        ids_of(
            Filter::status(Status::Queued)
                .ordering_key("customer-7")
                .idempotency_key("key-2")
        )
        .await,
        [ids[2]]
    );
    assert!(
        ids_of(Filter::status(Status::Dead).ordering_key("customer-7"))
            .await
            .is_empty()
    );
    // A replay and a purge by such a filter touch only what it matches.
    let report = f
        .store
        .replay(
            ReplayTarget::Filter(Filter::all().idempotency_key("key-5")),
            true,
        )
        .await
        .unwrap();
    assert_eq!(report.count, 0, "pending messages are never replayed");
}

pub(crate) async fn an_unbounded_payload_search_is_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let now = f.clock.system_now();
    for filter in [
        Filter::all().payload_contains("x"),
        Filter {
            created_from: Some(now),
            ..Filter::all().payload_contains("x")
        },
        Filter::all()
            .created_between(now, now + Duration::from_secs(8 * 86_400))
            .payload_contains("x"),
    ] {
        let err = f.store.list(&filter, None, 10).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("payload_contains"), "{err}");
    }
}
