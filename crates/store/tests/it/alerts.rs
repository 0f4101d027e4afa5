//! The alert log's conformance cases, generic over [`Backend`](crate::conformance::Backend)
//! and instantiated once per backend with [`alert_conformance_tests!`].

use std::time::Duration;

use ferrule_policy::Clock;
use ferrule_store::{AlertFilter, ErrorKind, MessageId, NewAlert, Store};

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `alerts`.
#[macro_export]
macro_rules! alert_conformance_tests {
    ($backend:ty) => {
        mod alerts {
            $crate::conformance_tests!(@cases alerts, $backend,
                alerts_round_trip_newest_first_by_filter_and_page,
                alerts_past_retention_are_purged,
                bad_alerts_are_refused_before_any_write
            );
        }
    };
}

fn new(kind: &str, subject: &str) -> NewAlert {
    NewAlert {
        kind: kind.into(),
        subject: subject.into(),
        severity: None,
        message: format!("{kind} about {subject}"),
        outcome: "queued".into(),
        messages: Vec::new(),
    }
}

pub(crate) async fn alerts_round_trip_newest_first_by_filter_and_page<B: Backend>() {
    let f = fixture::<B>().await;
    let start = f.clock.system_now();
    let message = MessageId::from_ulid(ulid::Ulid::new());
    let first = f
        .store
        .record_alert(NewAlert {
            severity: Some("critical".into()),
            messages: vec![message],
            ..new("breaker.opened", "hook")
        })
        .await
        .unwrap();
    assert_eq!(first.kind, "breaker.opened");
    assert_eq!(first.subject, "hook");
    assert_eq!(first.severity.as_deref(), Some("critical"));
    assert_eq!(first.messages, vec![message]);
    assert_eq!(first.at, start);
    f.clock.advance(Duration::from_secs(60));
    for n in 0..5 {
        let subject = if n % 2 == 0 { "hook" } else { "mail" };
        f.store
            .record_alert(new("health_check.failing", subject))
            .await
            .unwrap();
    }
    let all = f
        .store
        .list_alerts(&AlertFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.alerts.len(), 6);
    assert_eq!(all.next, None);
    assert!(all.alerts.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(
        &all.alerts[5], &first,
        "an alert is listed as it was answered"
    );

    // Pages of two, continuing after the cursor, cover every alert once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_alerts(&AlertFilter::default(), cursor.as_ref(), 2)
            .await
            .unwrap();
        assert!(page.alerts.len() <= 2);
        seen.extend(page.alerts.iter().map(|a| a.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all.alerts.iter().map(|a| a.id).collect::<Vec<_>>());

    let count = |filter: AlertFilter| {
        let store = f.store.clone();
        async move {
            store
                .list_alerts(&filter, None, 100)
                .await
                .unwrap()
                .alerts
                .len()
        }
    };
    let kind = |k: &str| Some(k.to_owned());
    assert_eq!(
        count(AlertFilter {
            subject: kind("hook"),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(AlertFilter {
            kind: kind("breaker.opened"),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(AlertFilter {
            kind: kind("breaker.opened"),
            subject: kind("mail"),
            ..Default::default()
        })
        .await,
        0
    );
    let later = start + Duration::from_secs(30);
    assert_eq!(
        count(AlertFilter {
            since: Some(later),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(AlertFilter {
            until: Some(later),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(AlertFilter {
            since: Some(start),
            until: Some(start + Duration::from_secs(60)),
            ..Default::default()
        })
        .await,
        1,
        "`since` is inclusive, `until` exclusive"
    );
}

pub(crate) async fn alerts_past_retention_are_purged<B: Backend>() {
    let f = fixture::<B>().await;
    for _ in 0..3 {
        f.store
            .record_alert(new("breaker.opened", "old"))
            .await
            .unwrap();
    }
    f.clock.advance(Duration::from_secs(3600));
    let kept = f
        .store
        .record_alert(new("breaker.closed", "new"))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(
        f.store
            .purge_alerts(Duration::from_secs(7200))
            .await
            .unwrap(),
        0,
        "nothing is that old"
    );
    assert_eq!(
        f.store
            .purge_alerts(Duration::from_secs(600))
            .await
            .unwrap(),
        3
    );
    let left = f
        .store
        .list_alerts(&AlertFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(left.alerts, vec![kept]);
}

pub(crate) async fn bad_alerts_are_refused_before_any_write<B: Backend>() {
    let f = fixture::<B>().await;
    let long = "x".repeat(513);
    let ids = vec![MessageId::from_ulid(ulid::Ulid::new()); 65];
    for (alert, field) in [
        (new("", "hook"), "kind"),
        (new("breaker.opened", ""), "subject"),
        (new("breaker.opened", &long), "subject"),
        (
            NewAlert {
                outcome: String::new(),
                ..new("k", "s")
            },
            "outcome",
        ),
        (
            NewAlert {
                severity: Some(long.clone()),
                ..new("k", "s")
            },
            "severity",
        ),
        (
            NewAlert {
                message: "y".repeat(9000),
                ..new("k", "s")
            },
            "message",
        ),
        (
            NewAlert {
                messages: ids,
                ..new("k", "s")
            },
            "messages",
        ),
    ] {
        let err = f.store.record_alert(alert).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    for limit in [0, 1001] {
        let err = f
            .store
            .list_alerts(&AlertFilter::default(), None, limit)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    for cursor in ["not-a-cursor", "12"] {
        let err = f
            .store
            .list_alerts(
                &AlertFilter::default(),
                Some(&ferrule_store::Cursor::from_string(cursor)),
                10,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    let page = f
        .store
        .list_alerts(&AlertFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(page.alerts.is_empty(), "nothing was written");
}
