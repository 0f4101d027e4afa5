//! The audit log's conformance cases, generic over [`Backend`](crate::conformance::Backend)
//! and instantiated once per backend with [`audit_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{AuditFilter, ErrorKind, NewAuditEntry, Store};
use serde_json::json;

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `audit`.
#[macro_export]
macro_rules! audit_conformance_tests {
    ($backend:ty) => {
        mod audit {
            $crate::conformance_tests!(@cases audit, $backend,
                audit_entries_round_trip_newest_first_by_filter_and_page,
                bad_audit_entries_are_refused_before_any_write
            );
        }
    };
}

pub(crate) async fn audit_entries_round_trip_newest_first_by_filter_and_page<B: Backend>() {
    let f = fixture::<B>().await;
    let start = f.clock.system_now();
    let first = f
        .store
        .record_audit(
            NewAuditEntry::new("ops", "breaker.reset")
                .target("hook")
                .detail(json!({"reason": "deploy"})),
        )
        .await
        .unwrap();
    assert_eq!(first.actor, "ops");
    assert_eq!(first.target.as_deref(), Some("hook"));
    assert_eq!(first.count, None);
    assert_eq!(first.detail, json!({"reason": "deploy"}));
    f.clock.advance(Duration::from_secs(60));
    for n in 0..5u64 {
        f.store
            .record_audit(
                NewAuditEntry::new(if n % 2 == 0 { "ops" } else { "ci" }, "dead_letters.replay")
                    .count(n * 10)
                    .detail(json!({"filter": {"destination": "hook"}})),
            )
            .await
            .unwrap();
    }
    let all = f
        .store
        .list_audit(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.entries.len(), 6);
    assert_eq!(all.next, None);
    assert!(all.entries.windows(2).all(|w| w[0].seq > w[1].seq));
    let last = &all.entries[5];
    assert_eq!(last, &first, "an entry is listed as it was answered");
    assert_eq!(all.entries[0].count, Some(40));

    // Pages of two, continuing after the cursor, cover every entry once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_audit(&AuditFilter::default(), cursor.as_ref(), 2)
            .await
            .unwrap();
        seen.extend(page.entries.iter().map(|e| e.seq));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all.entries.iter().map(|e| e.seq).collect::<Vec<_>>());

    let by = |actor: Option<&str>, action: Option<&str>, since| AuditFilter {
        actor: actor.map(str::to_owned),
        action: action.map(str::to_owned),
        since,
    };
    let count = |filter: AuditFilter| {
        let store = f.store.clone();
        async move {
            store
                .list_audit(&filter, None, 100)
                .await
                .unwrap()
                .entries
                .len()
        }
    };
    assert_eq!(count(by(Some("ops"), None, None)).await, 4);
    assert_eq!(count(by(Some("ci"), None, None)).await, 2);
    assert_eq!(count(by(None, Some("breaker.reset"), None)).await, 1);
    assert_eq!(count(by(Some("ci"), Some("breaker.reset"), None)).await, 0);
    let later = start + Duration::from_secs(30);
    assert_eq!(count(by(None, None, Some(later))).await, 5);
    assert_eq!(count(by(Some("ops"), None, Some(later))).await, 3);
    assert_eq!(
        count(by(None, None, Some(start))).await,
        6,
        "`since` is inclusive"
    );
}

pub(crate) async fn bad_audit_entries_are_refused_before_any_write<B: Backend>() {
    let f = fixture::<B>().await;
    let long = "x".repeat(513);
    for (entry, field) in [
        (NewAuditEntry::new("", "breaker.reset"), "actor"),
        (NewAuditEntry::new("ops", ""), "action"),
        (
            NewAuditEntry::new("ops", "a").target(long.clone()),
            "target",
        ),
        (NewAuditEntry::new("ops", "a").detail(json!([1])), "detail"),
        (
            NewAuditEntry::new("ops", "a").detail(json!({"big": "y".repeat(20_000)})),
            "detail",
        ),
    ] {
        let err = f.store.record_audit(entry).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    for limit in [0, 1001] {
        let err = f
            .store
            .list_audit(&AuditFilter::default(), None, limit)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    let err = f
        .store
        .list_audit(
            &AuditFilter::default(),
            Some(&ferrule_store::Cursor::from_string("not-a-cursor")),
            10,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let page = f
        .store
        .list_audit(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(page.entries.is_empty(), "nothing was written");
}
