//! The rollups' recorder and flusher against a real SQLite store, on a manual clock.

use std::time::{Duration, Instant};

use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{RunStatus, SeriesQuery, Store};

use super::*;
use crate::config::{Config, Secret};

async fn state_on(clock: &ManualClock, dir: &tempfile::TempDir, retention: &str) -> AppState {
    let mut config = Config::default();
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("ferrule.db").display()
    ));
    config.store.synchronous = ferrule_store::Synchronous::Normal;
    config.auth.tokens = vec![Secret::new("test-token-0123456789abcdef").into()];
    config.store.rollup_retention = humantime::parse_duration(retention).unwrap();
    let (state, _) = crate::server::build_state(config, clock.shared())
        .await
        .unwrap();
    state
}

async fn delivered(state: &AppState, from: SystemTime) -> u64 {
    let s = state
        .store
        .rollup_series(&SeriesQuery::new(
            from,
            from + Duration::from_secs(3600),
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    s.totals().0.delivered
}

/// Waits (a bounded time, for the flusher's task to look at the clock) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_flusher_writes_the_batch_every_ten_seconds_of_the_relay_clock() {
    let clock =
        ManualClock::with_system_time(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let dir = tempfile::tempdir().unwrap();
    let state = state_on(&clock, &dir, "14d").await;
    let start = clock.system_now();
    let flusher = tokio::spawn(run(state.clone()));
    state.rollups.delivered(
        start,
        "hook",
        Duration::from_millis(5),
        Duration::from_millis(9),
    );
    state.rollups.run_started(start, "pr");
    state
        .rollups
        .run_finished(start, "pr", RunStatus::Cancelled);
    // The flusher looks at the clock four times a second: let it look a few times unmoved.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        delivered(&state, start).await,
        0,
        "nothing written before 10 s"
    );
    clock.advance(FLUSH_EVERY);
    eventually("the flush", async || delivered(&state, start).await == 1).await;
    let (_, runs) = state
        .store
        .rollup_series(&SeriesQuery::new(start, start + MINUTE_D, MINUTE_D))
        .await
        .unwrap()
        .totals();
    assert_eq!(
        (runs.started, runs.completed),
        (1, 0),
        "a cancelled run is not counted"
    );

    // Recorded after the flush: written by the next one, added to the same minute.
    state.rollups.delivered(
        start,
        "hook",
        Duration::from_millis(5),
        Duration::from_millis(9),
    );
    clock.advance(FLUSH_EVERY);
    eventually("the second flush", async || {
        delivered(&state, start).await == 2
    })
    .await;

    // At shutdown the server flushes what is left, without waiting for the timer.
    state.shutdown.cancel();
    flusher.await.unwrap();
    state.rollups.delivered(
        start,
        "hook",
        Duration::from_millis(5),
        Duration::from_millis(9),
    );
    flush(&state).await;
    assert_eq!(delivered(&state, start).await, 3);
    assert!(
        !state.rollups.flush(&state.store).await.unwrap(),
        "nothing left"
    );
}

const MINUTE_D: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_refused_batch_is_dropped_not_retried_forever() {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let state = state_on(&clock, &dir, "14d").await;
    let now = clock.system_now();
    state.rollups.retried(now, "", Duration::ZERO, "status 503");
    let err = state.rollups.flush(&state.store).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    state
        .rollups
        .retried(now, "hook", Duration::ZERO, "status 503");
    assert!(
        state.rollups.flush(&state.store).await.unwrap(),
        "later flushes go on"
    );
    let reasons = state
        .store
        .rollup_reasons(now - MINUTE_D, now + MINUTE_D, None, 10)
        .await
        .unwrap();
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].count, 1);
}

#[tokio::test]
async fn a_zero_retention_records_nothing() {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let state = state_on(&clock, &dir, "0s").await;
    assert!(!state.rollups.enabled());
    state
        .rollups
        .delivered(clock.system_now(), "hook", Duration::ZERO, Duration::ZERO);
    assert!(!state.rollups.flush(&state.store).await.unwrap());
}

#[test]
fn windows_are_a_number_and_a_unit() {
    assert_eq!(parse_window("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_window("24h"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_window("7d"), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_window("999m"), Some(Duration::from_secs(999 * 60)));
    for bad in [
        "", "0h", "01h", "1000h", "100d", "1", "h", "1s", "1.5h", "-1h", "1hh", "１h",
    ] {
        assert_eq!(parse_window(bad), None, "{bad}");
    }
}

#[test]
fn reasons_are_the_status_code_else_the_error() {
    assert_eq!(reason_of(Some("503"), Some("boom")), "status 503");
    assert_eq!(
        reason_of(None, Some("connection refused")),
        "connection refused"
    );
    assert_eq!(reason_of(Some(""), None), "unknown");
}
