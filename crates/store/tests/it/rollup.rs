//! Rollups' conformance cases, generic over [`Backend`](crate::conformance::Backend) and
//! instantiated once per backend with [`rollup_conformance_tests!`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrule_policy::Clock;
use ferrule_store::rollup::{BUCKETS, MINUTE};
use ferrule_store::{ErrorKind, RollupBatch, RunOutcome, SeriesQuery, Store};

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `rollup`.
#[macro_export]
macro_rules! rollup_conformance_tests {
    ($backend:ty) => {
        mod rollup {
            $crate::conformance_tests!(@cases rollup, $backend,
                batches_add_into_minutes_and_read_back_in_buckets,
                reasons_sum_over_the_range_most_frequent_first,
                prune_drops_minutes_older_than_retention,
                bad_series_queries_name_the_field
            );
        }
    };
}

/// Minute `n` of the tests' day (a whole minute since the epoch), plus `secs`.
fn at(n: u64, secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n * 60 + secs)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One batch: minute 0: hook delivered twice and retried once; minute 1: hook dead-lettered
/// (permanent), mail delivered; minute 3: route `pr` started and completed.
fn sample() -> RollupBatch {
    let mut b = RollupBatch::new();
    b.delivered(at(0, 1), "hook", ms(20), ms(1500));
    b.delivered(at(0, 59), "hook", ms(40), ms(3000));
    b.retried(at(0, 30), "hook", ms(3), "status 503");
    b.dead_lettered(at(1, 10), "hook", ms(4), true, "status 400");
    b.delivered(at(1, 0), "mail", ms(700), ms(900));
    b.run(at(3, 0), "pr", RunOutcome::Started);
    b.run(at(3, 5), "pr", RunOutcome::Completed);
    b
}

pub(crate) async fn batches_add_into_minutes_and_read_back_in_buckets<B: Backend>() {
    let f = fixture::<B>().await;
    f.store.add_rollups(&sample()).await.unwrap();
    f.store.add_rollups(&sample()).await.unwrap();
    f.store.add_rollups(&RollupBatch::new()).await.unwrap();

    // Minute resolution over minutes 0..4: dense, zeros included, every count doubled.
    let series = f
        .store
        .rollup_series(&SeriesQuery::new(at(0, 0), at(4, 0), MINUTE))
        .await
        .unwrap();
    assert_eq!(series.points.len(), 4);
    assert_eq!(series.from, at(0, 0));
    assert_eq!(series.to, at(4, 0));
    let p = &series.points;
    assert_eq!(p[0].start, at(0, 0));
    assert_eq!(p[0].deliveries.delivered, 4);
    assert_eq!(p[0].deliveries.retried, 2);
    assert_eq!(p[0].deliveries.attempts, 6);
    assert_eq!(p[0].deliveries.attempt_latency.count(), 6);
    assert_eq!(p[0].deliveries.attempt_latency.sum_ms, 2 * (20 + 40 + 3));
    assert_eq!(p[0].deliveries.delivery_latency.count(), 4);
    assert_eq!(p[0].deliveries.delivery_latency.sum_ms, 2 * 4500);
    assert_eq!(p[1].deliveries.delivered, 2, "mail");
    assert_eq!(p[1].deliveries.dead_lettered, 2);
    assert_eq!(p[1].deliveries.failed, 2);
    assert!(p[2].deliveries.is_empty() && p[2].runs.is_empty());
    assert_eq!(p[3].runs.started, 2);
    assert_eq!(p[3].runs.completed, 2);
    assert!(p[3].deliveries.is_empty());

    // Two-minute points from minute 1, one destination, one route.
    let mut q = SeriesQuery::new(at(1, 30), at(3, 1), 2 * MINUTE);
    q.destination = Some("hook".into());
    q.route = Some("pr".into());
    let s = f.store.rollup_series(&q).await.unwrap();
    assert_eq!(s.from, at(1, 0), "from moves back to its minute");
    assert_eq!(s.to, at(4, 0), "to moves on to the end of its minute");
    assert_eq!(
        s.points.iter().map(|p| p.start).collect::<Vec<_>>(),
        [at(1, 0), at(3, 0)]
    );
    assert_eq!(s.points[0].deliveries.delivered, 0, "mail is left out");
    assert_eq!(s.points[0].deliveries.dead_lettered, 2);
    assert_eq!(s.points[1].runs.completed, 2);
    q.route = Some("other".into());
    let s = f.store.rollup_series(&q).await.unwrap();
    assert!(s.points.iter().all(|p| p.runs.is_empty()));

    // The whole range as one point sums everything; p50/p95 from summed buckets.
    let one = f
        .store
        .rollup_series(&SeriesQuery::new(at(0, 0), at(4, 0), 4 * MINUTE))
        .await
        .unwrap();
    assert_eq!(one.points.len(), 1);
    let (d, r) = one.totals();
    assert_eq!(
        (d.delivered, d.retried, d.failed, d.dead_lettered),
        (6, 2, 2, 2)
    );
    assert_eq!(d.attempts, 10);
    assert_eq!(d.attempt_latency.counts.len(), BUCKETS);
    assert_eq!(d.delivery_latency.count(), 6);
    assert!(d.delivery_latency.quantile(0.95).unwrap() >= ms(2500));
    assert_eq!((r.started, r.completed), (2, 2));
}

pub(crate) async fn reasons_sum_over_the_range_most_frequent_first<B: Backend>() {
    let f = fixture::<B>().await;
    let mut b = RollupBatch::new();
    b.retried(at(0, 1), "hook", ms(1), "status 503");
    b.retried(at(0, 2), "hook", ms(1), "status 503");
    b.retried(at(2, 7), "hook", ms(1), "status 503");
    b.dead_lettered(at(1, 3), "hook", ms(1), true, "status 400");
    b.retried(at(1, 4), "mail", ms(1), "connection refused");
    f.store.add_rollups(&b).await.unwrap();
    let mut later = RollupBatch::new();
    later.retried(at(2, 9), "hook", ms(1), "status 503");
    f.store.add_rollups(&later).await.unwrap();

    let all = f
        .store
        .rollup_reasons(at(0, 0), at(10, 0), None, 10)
        .await
        .unwrap();
    let summary: Vec<_> = all
        .iter()
        .map(|r| (r.reason.as_str(), r.count, r.dead_lettered))
        .collect();
    assert_eq!(
        summary,
        [
            ("status 503", 4, 0),
            ("connection refused", 1, 0),
            ("status 400", 1, 1)
        ],
        "ties: the most recent first"
    );
    assert_eq!(all[0].last_at, at(2, 9), "the later of the two adds");
    let hook = f
        .store
        .rollup_reasons(at(0, 0), at(1, 0), Some("hook"), 1)
        .await
        .unwrap();
    assert_eq!(hook.len(), 1);
    assert_eq!((hook[0].reason.as_str(), hook[0].count), ("status 503", 2));
    let err = f
        .store
        .rollup_reasons(at(0, 0), at(1, 0), None, 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

pub(crate) async fn prune_drops_minutes_older_than_retention<B: Backend>() {
    let f = fixture::<B>().await;
    let now = f.clock.system_now();
    let mut b = RollupBatch::new();
    b.delivered(now - Duration::from_secs(3 * 3600), "hook", ms(1), ms(1));
    b.retried(
        now - Duration::from_secs(3 * 3600),
        "hook",
        ms(1),
        "status 503",
    );
    b.run(
        now - Duration::from_secs(3 * 3600),
        "pr",
        RunOutcome::Failed,
    );
    b.delivered(now, "hook", ms(1), ms(1));
    f.store.add_rollups(&b).await.unwrap();
    let pruned = f
        .store
        .prune_rollups(Duration::from_secs(2 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 3, "one old row in each table");
    let s = f
        .store
        .rollup_series(&SeriesQuery::new(
            now - Duration::from_secs(4 * 3600),
            now + MINUTE,
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    let (d, r) = s.totals();
    assert_eq!((d.delivered, d.retried, r.failed), (1, 0, 0));
    assert_eq!(
        f.store
            .prune_rollups(Duration::from_secs(2 * 3600))
            .await
            .unwrap(),
        0
    );
}

pub(crate) async fn bad_series_queries_name_the_field<B: Backend>() {
    let f = fixture::<B>().await;
    for (q, field) in [
        (
            SeriesQuery::new(at(0, 0), at(1, 0), Duration::from_secs(30)),
            "step",
        ),
        (SeriesQuery::new(at(2, 0), at(1, 0), MINUTE), "to"),
        (SeriesQuery::new(at(0, 0), at(20_000, 0), MINUTE), "step"),
        (
            SeriesQuery {
                destination: Some(String::new()),
                ..SeriesQuery::new(at(0, 0), at(1, 0), MINUTE)
            },
            "destination",
        ),
    ] {
        let err = f.store.rollup_series(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
}
