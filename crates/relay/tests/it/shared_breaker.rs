//! Breakers shared by three relays on one PostgreSQL database (`breaker.shared = true`): one
//! relay's open circuit stops the others, one relay probes, and a silent owner is replaced.

use std::time::Duration;

use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::fast_retry;
use crate::receiver::{Receiver, Reply};
use crate::support::{PgSchema, TestRelay, config_in, start_in};

/// The relays' follow period, on their clock.
const TICK: Duration = Duration::from_millis(500);

/// Three relays on `schema`, on `clock`, delivering `hook` to `url` with a shared breaker that
/// opens on a failure for 10 s.
async fn three_relays(schema: &PgSchema, clock: &ManualClock, url: &str) -> Vec<TestRelay> {
    let mut relays = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = ferrule::config::Secret::new(schema.url());
        // Retries 3 s apart: past the time the relays take to follow an opened circuit.
        let mut d = fast_retry("hook", url, "3s", 50);
        // The tests move the clock while attempts are in flight: far beyond those moves.
        d.timeout = Some(Duration::from_secs(120));
        d.breaker = Some(json!({
            "window": {"count": 1}, "min_calls": 1, "failure_rate": 0.5,
            "open_for": "10s", "slow_call_duration": "off", "shared": true,
        }));
        config.destinations.push(d);
        relays.push(start_in(dir, config, clock.shared()).await);
    }
    relays
}

async fn state(relay: &TestRelay) -> Value {
    relay.breaker("hook").await["breaker"]["state"].clone()
}

/// Moves `clock` on a tick at a time (at most `most` in all) until every relay in `relays`
/// shows the breaker in `wanted`; answers how far the clock moved.
async fn until_state(
    relays: &[&TestRelay],
    clock: &ManualClock,
    wanted: &str,
    most: Duration,
) -> Duration {
    let mut moved = Duration::ZERO;
    loop {
        let mut states = Vec::new();
        for relay in relays {
            states.push(state(relay).await);
        }
        if states.iter().all(|s| *s == wanted) {
            return moved;
        }
        if moved >= most {
            let state = &relays[0].running.as_ref().unwrap().state;
            let rows = ferrule_store::Store::shared_breakers(&state.store).await;
            let mut breakers = Vec::new();
            for relay in relays {
                breakers.push(relay.breaker("hook").await);
            }
            panic!(
                "not every relay is {wanted} after {moved:?}: {states:?} {rows:#?} {breakers:#?}"
            );
        }
        clock.advance(TICK);
        moved += TICK;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Moves `clock` on a tick at a time until `receiver` has `n` requests, never past `most`.
async fn until_hits(
    relays: &[TestRelay],
    receiver: &Receiver,
    clock: &ManualClock,
    n: usize,
    most: Duration,
) {
    let mut moved = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.hits().len() < n {
        if tokio::time::Instant::now() >= deadline {
            let mut seen = Vec::new();
            for relay in relays.iter().filter(|r| r.running.is_some()) {
                seen.push(relay.breaker("hook").await);
                seen.push(relay.call(Method::GET, "/v1/messages", None).await.1);
            }
            panic!(
                "{} hits after the clock moved {moved:?}: {seen:#?}",
                receiver.hits().len()
            );
        }
        if moved < most {
            clock.advance(TICK);
            moved += TICK;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The receiver recovers, but holds the first request it gets (the probe) while the clock
/// moves on 20 s: no other request comes, from any relay, until the probe's answer.
async fn one_probe(relays: &[TestRelay], receiver: &Receiver, clock: &ManualClock) {
    let (answer, gate) = tokio::sync::watch::channel(false);
    receiver.script([Reply::Held(gate, 200)]);
    receiver.otherwise(Reply::Status(200));
    until_hits(relays, receiver, clock, 2, Duration::from_secs(30)).await;
    for _ in 0..40 {
        clock.advance(TICK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.hits().len(), 2, "one probe, not one per relay");
    answer.send(true).unwrap();
}

/// Which of `relays` owns the shared circuit of `hook`, as the store says.
async fn owner(relays: &[TestRelay]) -> usize {
    let state = &relays[0].running.as_ref().unwrap().state;
    let rows = ferrule_store::Store::shared_breakers(&state.store)
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.destination == "hook").unwrap();
    relays
        .iter()
        .position(|r| r.running.as_ref().unwrap().state.owner == row.owner)
        .expect("a relay of the test owns it")
}

/// A failure through any relay opens the circuit of `hook` on every relay; answers the owner.
async fn opened(relays: &[TestRelay], receiver: &Receiver, clock: &ManualClock) -> usize {
    relays[0].submit("hook", json!({"n": 0})).await;
    receiver.wait_for_hits(1, Duration::from_secs(10)).await;
    // The relay that failed publishes at once; the others follow at their next read.
    let moved = until_state(
        &relays.iter().collect::<Vec<_>>(),
        clock,
        "open",
        Duration::from_secs(2),
    )
    .await;
    assert!(moved <= 2 * TICK, "followed after {moved:?}");
    // Each relay shows the time left until the shared probe may start (the 10 s open period),
    // not the end of its own hold, which lies past the 120 s attempt timeout.
    for relay in relays {
        let view = relay.breaker("hook").await;
        let left = view["breaker"]["remaining_open_ms"].as_u64().unwrap();
        assert!((1..=10_000).contains(&left), "{view:#}");
        assert_eq!(view["shared"]["held"], true, "{view:#}");
        assert!(view["shared"]["probe_at"].is_string(), "{view:#}");
    }
    owner(relays).await
}

#[tokio::test]
async fn one_relays_open_circuit_stops_the_others_and_only_it_probes() {
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(std::time::SystemTime::now());
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(500));
    let relays = three_relays(&schema, &clock, &receiver.url).await;
    opened(&relays, &receiver, &clock).await;
    // Messages submitted to any relay are held back: nothing reaches the receiver.
    for relay in &relays {
        relay.submit("hook", json!({"n": 1})).await;
    }
    for _ in 0..8 {
        clock.advance(TICK);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        receiver.hits().len(),
        1,
        "no traffic while the circuit is open anywhere"
    );
    // The receiver recovers. At the end of the open period (10 s) the relay that has a message
    // due first claims the probe; the others hold theirs open until it answers.
    one_probe(&relays, &receiver, &clock).await;
    until_state(
        &relays.iter().collect::<Vec<_>>(),
        &clock,
        "closed",
        Duration::from_secs(2),
    )
    .await;
    // Everything goes out once: 4 messages, one failure.
    until_hits(&relays, &receiver, &clock, 5, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits().len(), 5);
}

#[tokio::test]
async fn a_silent_owner_is_replaced_by_one_relay_that_probes() {
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(std::time::SystemTime::now());
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(500));
    let mut relays = three_relays(&schema, &clock, &receiver.url).await;
    let owner = opened(&relays, &receiver, &clock).await;
    // The owner stops before its open period ends: its probe never comes.
    relays[owner].stop().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    relays[others[0]].submit("hook", json!({"n": 1})).await;
    // Past the open period (10 s), the relay that has a message due first claims the probe;
    // the other follows its verdict.
    one_probe(&relays, &receiver, &clock).await;
    let live: Vec<&TestRelay> = others.iter().map(|i| &relays[*i]).collect();
    until_state(&live, &clock, "closed", Duration::from_secs(30)).await;
    until_hits(&relays, &receiver, &clock, 3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits().len(), 3, "two messages, one failure");
    let (status, _) = relays[others[0]].call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    for i in others {
        relays[i].stop().await;
    }
}
