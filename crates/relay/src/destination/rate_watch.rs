//! What a destination's send limits are doing now, for `/status` and the dashboard: how many
//! deliveries a limit deferred in the last minute and when the latest refusal said the next
//! slot frees.
//!
//! `governor`, under [`ferrule_policy::rate_limit::RateLimiter`], has no way to read its state
//! without taking a cell (its GCRA state is private, and its checks consume on success), so
//! the relay watches the refusals instead: each deferral for a rate limit (the configured
//! limit, a Telegram window, a GitHub write pace) is counted here with its `ready_at`. Counts
//! are kept per second for the last minute, so the memory is fixed however busy the limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ferrule_policy::SharedClock;
use serde::Serialize;

/// How far back the deferrals are counted.
const WINDOW: Duration = Duration::from_secs(60);

/// A destination's rate-limit deferrals of the last minute.
#[derive(Debug)]
pub struct RateWatch {
    clock: SharedClock,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Deferrals per second: the second's start and how many, oldest first.
    seconds: VecDeque<(Instant, u64)>,
    /// The latest `ready_at` a refusal gave.
    next_free: Option<Instant>,
}

/// What [`RateWatch::snapshot`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateState {
    /// Deliveries a rate limit deferred in the last minute.
    pub deferred_last_minute: u64,
    /// When the latest refusal said the next slot frees, if that is still ahead.
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_slot_at: Option<SystemTime>,
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::time::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

impl RateWatch {
    /// A watch on `clock`, with nothing seen yet.
    pub fn new(clock: SharedClock) -> Self {
        RateWatch {
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Counts a delivery deferred now by a limit that frees at `ready_at`.
    pub fn deferred(&self, ready_at: Instant) {
        let now = self.clock.now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut inner.seconds, now);
        match inner.seconds.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < Duration::from_secs(1) => {
                *n += 1;
            }
            _ => inner.seconds.push_back((now, 1)),
        }
        inner.next_free = Some(inner.next_free.map_or(ready_at, |at| at.max(ready_at)));
    }

    /// The deferrals of the last minute and the next slot, read without changing anything a
    /// delivery depends on.
    pub fn snapshot(&self) -> RateState {
        let now = self.clock.now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut inner.seconds, now);
        let next_slot_at = inner
            .next_free
            .filter(|&at| at > now)
            .map(|at| self.clock.system_now() + at.saturating_duration_since(now));
        RateState {
            deferred_last_minute: inner.seconds.iter().map(|(_, n)| n).sum(),
            next_slot_at,
        }
    }
}

/// Forgets the seconds that ended a minute or longer before `now`.
fn prune(seconds: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while seconds
        .front()
        .is_some_and(|&(start, _)| start + WINDOW <= now)
    {
        seconds.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrule_policy::{Clock, ManualClock};

    #[test]
    fn deferrals_count_for_a_minute_and_the_next_slot_only_while_ahead() {
        let clock = ManualClock::new();
        let watch = RateWatch::new(clock.shared());
        assert_eq!(
            watch.snapshot(),
            RateState {
                deferred_last_minute: 0,
                next_slot_at: None
            }
        );
        let t0 = clock.now();
        watch.deferred(t0 + Duration::from_millis(500));
        watch.deferred(t0 + Duration::from_millis(300));
        let s = watch.snapshot();
        assert_eq!(s.deferred_last_minute, 2);
        assert_eq!(
            s.next_slot_at,
            Some(clock.system_now() + Duration::from_millis(500)),
            "the latest ready_at"
        );
        clock.advance(Duration::from_secs(30));
        watch.deferred(clock.now() + Duration::from_secs(1));
        assert_eq!(watch.snapshot().deferred_last_minute, 3);
        clock.advance(Duration::from_secs(31));
        let s = watch.snapshot();
        assert_eq!(s.deferred_last_minute, 1, "the first two are a minute old");
        assert_eq!(s.next_slot_at, None, "the slot is free by now");
        clock.advance(Duration::from_secs(30));
        assert_eq!(watch.snapshot().deferred_last_minute, 0);
    }
}
