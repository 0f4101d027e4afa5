//! The core delivery cases on the PostgreSQL store (`FERRULE_TEST_POSTGRES_URL`, one fresh
//! schema per test).

use std::time::Duration;

use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};

use crate::delivery;
use crate::support::{Backend, PgSchema, TestRelay, config_in, start_in, webhook};

#[tokio::test]
async fn postgres_delivers_signed_with_a_stable_webhook_id() {
    delivery::delivered_signed_with_a_stable_webhook_id(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_dead_letters_replays_and_delivers() {
    delivery::dead_lettered_then_replayed_and_delivered(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_delivers_an_idempotent_resubmit_once() {
    delivery::idempotent_resubmit_is_delivered_once(Backend::Postgres).await;
}

#[tokio::test]
async fn an_override_set_through_one_relay_reaches_another_sharing_postgres() {
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(std::time::SystemTime::now());
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = ferrule::config::Secret::new(schema.url());
        config
            .destinations
            .push(webhook("hook", "http://127.0.0.1:9/hook"));
        relays.push(start_in(dir, config, clock.shared()).await);
    }
    let (status, body) = relays[0]
        .call(
            Method::POST,
            "/v1/breakers/hook/force-open?reason=incident",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = body["override"].clone();
    // The other relay reads the overrides again every 5 s (on the relays' clock).
    let breaker = followed(&relays[1], &clock, "forced_open").await;
    assert_eq!(breaker["override"], set, "who and when come along");
    let (status, _) = relays[1]
        .call(Method::POST, "/v1/breakers/hook/reset", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let breaker = followed(&relays[0], &clock, "closed").await;
    assert_eq!(breaker["override"], serde_json::Value::Null);
    for relay in &mut relays {
        relay.stop().await;
    }
    drop(schema);
}

/// Moves `clock` on 5 s at a time until `relay` shows the breaker of `hook` in `state` (at most
/// 10 s of real time); answers the breaker.
async fn followed(relay: &TestRelay, clock: &ManualClock, state: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let breaker = relay.breaker("hook").await;
        if breaker["breaker"]["state"] == state {
            return breaker;
        }
        assert!(tokio::time::Instant::now() < deadline, "{breaker}");
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn relays_sharing_postgres_list_each_others_alerts() {
    let schema = PgSchema::new();
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = ferrule::config::Secret::new(schema.url());
        config
            .destinations
            .push(webhook("ops-hook", "http://127.0.0.1:9/hook"));
        config.alerts.webhook = Some("ops-hook".into());
        relays.push(start_in(dir, config, ferrule_policy::clock::system()).await);
    }
    for (n, relay) in relays.iter().enumerate() {
        let state = &relay.running.as_ref().unwrap().state;
        state
            .alerts
            .raise(ferrule::alerts::Alert::new(
                ferrule::alerts::AlertKind::ScheduleSkipped,
                format!("schedule-{n}"),
                "missed occurrences",
                std::time::SystemTime::now(),
            ))
            .await;
    }
    for relay in &relays {
        let listed = relay
            .page("/v1/alerts?kind=schedule.skipped", "alerts")
            .await;
        let mut subjects: Vec<&str> = listed
            .iter()
            .map(|a| a["subject"].as_str().unwrap())
            .collect();
        subjects.sort_unstable();
        assert_eq!(subjects, ["schedule-0", "schedule-1"], "{listed:?}");
    }
    for relay in &mut relays {
        relay.stop().await;
    }
    drop(schema);
}
