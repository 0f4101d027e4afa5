//! The gate, the alerts task and the breaker watch on a manual clock and a real store.

use std::time::{Duration, UNIX_EPOCH};

use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, Window};
use ferrule_policy::{Clock, Context, ManualClock, Outcome};

use super::gate::idempotency_key;
use super::*;

const INTERVAL: Duration = Duration::from_secs(300);

fn alert(kind: AlertKind, subject: &str) -> Alert {
    Alert::new(kind, subject, format!("{kind} {subject}"), UNIX_EPOCH)
}

fn sent(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Send(..))
}

/// A message id for a held alert's queued message.
fn id(n: u128) -> MessageId {
    MessageId::from_ulid(ulid::Ulid(n))
}

/// The held alert, its key and due time of a [`Verdict::Hold`].
fn hold(verdict: Verdict) -> (Alert, String, SystemTime) {
    match verdict {
        Verdict::Hold(alert, key, due) => (alert, key, due),
        other => panic!("not held: {other:?}"),
    }
}

#[test]
fn one_alert_per_kind_and_subject_per_interval_the_next_held_the_rest_folded() {
    let clock = ManualClock::new(); // wall clock 2026-01-01T00:00:00Z
    let mut gate = Gate::new(INTERVAL, 20);
    let dlq = || alert(AlertKind::DeadLetterThreshold, "dead-letters");
    assert!(sent(gate.admit(dlq(), &clock)));
    clock.advance(Duration::from_secs(10));
    // The next is held: queued now, due when the interval since the first ends.
    let (held, key, due) = hold(gate.admit(dlq(), &clock));
    assert_eq!(due, clock.system_now() + INTERVAL - Duration::from_secs(10));
    assert_eq!(key, idempotency_key(&held, due, INTERVAL));
    assert_eq!(key, "alert:dead_letters.threshold:dead-letters:5890753");
    assert_eq!(
        held.text,
        "dead_letters.threshold dead-letters (Held back until 2026-01-01T00:05:00.000Z: an alert \
         like it went out less than 5m before. Any more like it until then are not sent \
         separately.)"
    );
    gate.held_queued(
        AlertKind::DeadLetterThreshold,
        "dead-letters",
        Some(vec![id(1)]),
    );
    // Another subject or kind is not held back.
    assert!(sent(
        gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock)
    ));
    clock.advance(Duration::from_secs(10));
    assert_eq!(gate.admit(dlq(), &clock), Verdict::Held, "folded");
    assert_eq!(
        gate.next_due(),
        Some(clock.now() + INTERVAL - Duration::from_secs(20))
    );
    clock.advance(INTERVAL - Duration::from_secs(21));
    assert!(gate.promote(&clock).is_empty(), "one second early");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        gate.promote(&clock),
        [(AlertKind::DeadLetterThreshold, "dead-letters".to_owned(), 2)]
    );
    assert_eq!(gate.next_due(), None);
    assert!(gate.take_withdrawn().is_empty());
    // The held one counts as sent when due: the next is held for a whole interval.
    let (_, next_key, next_due) = hold(gate.admit(dlq(), &clock));
    assert_eq!(next_due, due + INTERVAL);
    assert_ne!(next_key, key);
    clock.advance(INTERVAL);
    assert_eq!(gate.promote(&clock).len(), 1);
    // A quiet interval later, an alert goes at once.
    clock.advance(INTERVAL);
    assert!(sent(gate.admit(dlq(), &clock)));
}

#[test]
fn a_held_alert_the_store_refused_is_held_again_by_the_next() {
    let clock = ManualClock::new();
    let mut gate = Gate::new(INTERVAL, 20);
    let dlq = || alert(AlertKind::DeadLetterThreshold, "dead-letters");
    assert!(sent(gate.admit(dlq(), &clock)));
    hold(gate.admit(dlq(), &clock));
    gate.held_queued(AlertKind::DeadLetterThreshold, "dead-letters", None);
    hold(gate.admit(dlq(), &clock));
}

#[test]
fn closed_goes_only_after_its_opened_and_a_held_opened_is_withdrawn_by_closing() {
    let clock = ManualClock::new();
    let mut gate = Gate::new(INTERVAL, 20);
    let opened = || alert(AlertKind::BreakerOpened, "hook");
    let closed = || alert(AlertKind::BreakerClosed, "hook");
    assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
    assert!(sent(gate.admit(opened(), &clock)));
    clock.advance(Duration::from_secs(30));
    assert!(sent(gate.admit(closed(), &clock)));
    // It flaps: opened again within the interval is held, and closing withdraws it.
    clock.advance(Duration::from_secs(30));
    hold(gate.admit(opened(), &clock));
    gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(1), id(2)]));
    clock.advance(Duration::from_secs(30));
    assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
    assert_eq!(gate.take_withdrawn(), [id(1), id(2)]);
    assert_eq!(gate.next_due(), None);
    clock.advance(INTERVAL);
    assert!(gate.promote(&clock).is_empty());
    // An outage that outlasts the interval is reported when the interval has passed.
    assert!(sent(gate.admit(opened(), &clock)));
    assert!(sent(gate.admit(closed(), &clock)));
    clock.advance(Duration::from_secs(10));
    let (_, _, due) = hold(gate.admit(opened(), &clock));
    gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(3)]));
    clock.advance(INTERVAL);
    assert_eq!(gate.promote(&clock).len(), 1);
    // Its "closed" goes too, keyed by when the held "opened" fell due.
    match gate.admit(closed(), &clock) {
        Verdict::Send(alert, key) => assert_eq!(key, idempotency_key(&alert, due, INTERVAL)),
        other => panic!("{other:?}"),
    }
    assert!(gate.take_withdrawn().is_empty());
    // Withdrawn while it was being queued: its messages are withdrawn once they are known.
    clock.advance(Duration::from_secs(10));
    hold(gate.admit(opened(), &clock));
    assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
    gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(4)]));
    assert_eq!(gate.take_withdrawn(), [id(4)]);
}

#[test]
fn the_overall_limit_drops_alerts_beyond_it_and_frees_up_after_a_minute() {
    let clock = ManualClock::new();
    let mut gate = Gate::new(INTERVAL, 5);
    let verdicts: Vec<Verdict> = (0..8)
        .map(|i| gate.admit(alert(AlertKind::BreakerOpened, &format!("d{i}")), &clock))
        .collect();
    assert_eq!(verdicts.iter().filter(|v| sent((*v).clone())).count(), 5);
    assert_eq!(
        verdicts[5..],
        [
            Verdict::Dropped("rate_limit"),
            Verdict::Dropped("rate_limit"),
            Verdict::Dropped("rate_limit")
        ]
    );
    // The closing of a sent "opened" still goes; of a dropped one, not.
    assert!(sent(
        gate.admit(alert(AlertKind::BreakerClosed, "d0"), &clock)
    ));
    assert_eq!(
        gate.admit(alert(AlertKind::BreakerClosed, "d7"), &clock),
        Verdict::Dropped("not_opened")
    );
    // A held alert is queued already: the limit does not drop it.
    hold(gate.admit(alert(AlertKind::BreakerOpened, "d1"), &clock));
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        gate.admit(alert(AlertKind::StartupRecovery, "store"), &clock),
        Verdict::Dropped("rate_limit")
    );
    clock.advance(Duration::from_secs(1));
    assert!(sent(
        gate.admit(alert(AlertKind::StartupRecovery, "store"), &clock)
    ));
    clock.advance(INTERVAL);
    assert_eq!(gate.promote(&clock).len(), 1);
}

#[test]
fn a_held_alert_counts_against_the_overall_limit_when_it_falls_due() {
    let clock = ManualClock::new();
    let mut gate = Gate::new(Duration::from_secs(1), 2);
    assert!(sent(
        gate.admit(alert(AlertKind::BreakerOpened, "a"), &clock)
    ));
    hold(gate.admit(alert(AlertKind::BreakerOpened, "a"), &clock));
    assert_eq!(gate.next_due(), Some(clock.now() + Duration::from_secs(1)));
    clock.advance(Duration::from_secs(1));
    assert_eq!(gate.promote(&clock).len(), 1);
    // Two sent within the minute: a third is over the limit.
    assert_eq!(
        gate.admit(alert(AlertKind::BreakerOpened, "b"), &clock),
        Verdict::Dropped("rate_limit")
    );
}

#[test]
fn idempotency_keys_differ_for_alerts_an_interval_apart() {
    let a = alert(AlertKind::BreakerOpened, "hook");
    let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let key = |t| idempotency_key(&a, t, INTERVAL);
    assert_eq!(key(t), key(t + Duration::from_secs(1)));
    for offset in [0, 1, 150, 299] {
        let start = t + Duration::from_secs(offset);
        assert_ne!(key(start), key(start + INTERVAL));
    }
    assert_eq!(key(t), "alert:breaker.opened:hook:3333");
}

#[test]
fn a_closed_alert_is_keyed_by_its_outage_not_by_when_it_ends() {
    // The manual clock's wall time starts at 2026-01-01T00:00:00Z, bucket 5890752.
    let clock = ManualClock::new();
    let mut gate = Gate::new(INTERVAL, 20);
    let key = |verdict| match verdict {
        Verdict::Send(_, key) => key,
        other => panic!("{other:?}"),
    };
    clock.advance(Duration::from_secs(299));
    let opened = key(gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock));
    assert_eq!(opened, "alert:breaker.opened:hook:5890752");
    clock.advance(Duration::from_secs(2));
    let closed = key(gate.admit(alert(AlertKind::BreakerClosed, "hook"), &clock));
    assert_eq!(closed, "alert:breaker.closed:hook:5890752");
    // The next outage opens an interval after the first and ends at once: both "closed"
    // alerts ended in bucket 5890753, but each is keyed by its own outage.
    clock.advance(INTERVAL - Duration::from_secs(2));
    let opened = key(gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock));
    clock.advance(Duration::from_millis(500));
    let closed = key(gate.admit(alert(AlertKind::BreakerClosed, "hook"), &clock));
    assert_eq!(opened, "alert:breaker.opened:hook:5890753");
    assert_eq!(closed, "alert:breaker.closed:hook:5890753");
}

/// A real breaker on a manual clock, driven through an outage that re-opens twice.
#[test]
fn an_outage_raises_one_opened_and_one_closed_however_often_it_reopens() {
    let clock = ManualClock::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch = Arc::new(BreakerWatch {
        destination: "hook".into(),
        clock: clock.shared(),
        outage_since: Mutex::new(None),
        tx,
    });
    let breaker = CircuitBreaker::with_context(
        BreakerConfig {
            window: Window::Count(2),
            min_calls: 2,
            open_for: Duration::from_secs(10),
            ..BreakerConfig::default()
        },
        Context::new("hook")
            .with_clock(clock.shared())
            .with_observer(watch),
    )
    .unwrap();
    let call = |outcome| breaker.try_acquire().unwrap().record(outcome);
    call(Outcome::Transient);
    call(Outcome::Transient);
    assert_eq!(breaker.state(), CircuitState::Open);
    for _ in 0..2 {
        clock.advance(Duration::from_secs(10));
        call(Outcome::Transient);
        assert_eq!(breaker.state(), CircuitState::Open, "the probe failed");
    }
    clock.advance(Duration::from_secs(10));
    call(Outcome::Success);
    assert_eq!(breaker.state(), CircuitState::Closed);
    let mut alerts = Vec::new();
    while let Ok(a) = rx.try_recv() {
        alerts.push(a);
    }
    let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::BreakerOpened, AlertKind::BreakerClosed]);
    assert!(
        alerts[1].text.contains("closed after 30s"),
        "{}",
        alerts[1].text
    );
    // An operator forcing it open and resetting it is no outage.
    breaker.force_open();
    breaker.reset();
    assert!(rx.try_recv().is_err());
}

#[test]
fn the_dead_letter_threshold_alerts_once_per_crossing() {
    let t = Threshold::new(2);
    let crossings: Vec<bool> = [0, 2, 3, 5, 9, 2, 3, 1, 0, 4]
        .into_iter()
        .map(|depth| t.crossed(depth))
        .collect();
    assert_eq!(
        crossings,
        [
            false, false, true, false, false, false, true, false, false, true
        ]
    );
}

#[test]
fn texts_are_cut_to_a_thousand_characters() {
    let a = Alert::new(
        AlertKind::StartupFailure,
        "serve",
        "é".repeat(5000),
        UNIX_EPOCH,
    );
    assert_eq!(a.text.chars().count(), 1001);
    assert!(a.text.ends_with('…'));
}
