//! The store's load as the relay shows it: each wait for a PostgreSQL pool connection fed to
//! the wait histogram and, past `[store] pool_wait_warn`, to a warning logged at most once a
//! minute; the pool's and writer's gauges set at each scrape of `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrule_policy::SharedClock;
use ferrule_store::{PoolObserver, PoolWait, StoreLoad};

use crate::telemetry::prometheus as m;

/// Least time between two slow-wait warnings.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The observer given to the store: records every wait, warns (rate-limited) about slow ones.
pub fn observer(threshold: Duration, clock: SharedClock) -> PoolObserver {
    let warner = Arc::new(SlowWaits::new(threshold, clock));
    Arc::new(move |wait: PoolWait| {
        metrics::histogram!(m::STORE_POOL_WAIT.name).record(wait.waited.as_secs_f64());
        if wait.timed_out {
            metrics::counter!(m::STORE_POOL_ACQUIRE_TIMEOUTS.name).increment(1);
        }
        warner.observe(wait);
    })
}

/// Rate-limits the warning about waits longer than the threshold.
#[derive(Debug)]
pub(crate) struct SlowWaits {
    threshold: Duration,
    clock: SharedClock,
    /// When the last warning went out, and the slow waits seen since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl SlowWaits {
    pub(crate) fn new(threshold: Duration, clock: SharedClock) -> Self {
        SlowWaits {
            threshold,
            clock,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts `wait` if it was slow; returns how many slow waits the warning logged now
    /// covers, if one was logged.
    pub(crate) fn observe(&self, wait: PoolWait) -> Option<u64> {
        if wait.waited < self.threshold && !wait.timed_out {
            return None;
        }
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state
            .0
            .is_some_and(|last| now.saturating_duration_since(last) < WARN_EVERY)
        {
            return None;
        }
        let slow = std::mem::take(&mut state.1);
        state.0 = Some(now);
        drop(state);
        tracing::warn!(
            waited_ms = wait.waited.as_millis() as u64,
            timed_out = wait.timed_out,
            slow_waits = slow,
            threshold_ms = self.threshold.as_millis() as u64,
            "store operations are waiting for PostgreSQL pool connections; \
             the pool (`pool_size` in the store URL) may be too small or the database slow"
        );
        Some(slow)
    }
}

/// Sets the store's gauges from `load` (called before each `/metrics` answer).
pub fn export(load: &StoreLoad) {
    metrics::counter!(m::STORE_OPERATION_TIMEOUTS.name).absolute(load.operation_timeouts);
    metrics::gauge!(m::STORE_WRITER_QUEUE.name).set(load.writer_queue as f64);
    if let Some(pool) = &load.pool {
        metrics::gauge!(m::STORE_POOL_CONNECTIONS.name, "state" => "in_use")
            .set(f64::from(pool.in_use));
        metrics::gauge!(m::STORE_POOL_CONNECTIONS.name, "state" => "idle")
            .set(f64::from(pool.idle));
        metrics::gauge!(m::STORE_POOL_MAX.name).set(f64::from(pool.max));
    }
}

/// Registers the store's series at zero: the operation timeouts on every backend, and the
/// pool's wait histogram and acquire timeouts on PostgreSQL (`pool`).
pub fn register(pool: bool) {
    metrics::counter!(m::STORE_OPERATION_TIMEOUTS.name).increment(0);
    metrics::gauge!(m::STORE_WRITER_QUEUE.name).increment(0.0);
    if pool {
        let _ = metrics::histogram!(m::STORE_POOL_WAIT.name);
        metrics::counter!(m::STORE_POOL_ACQUIRE_TIMEOUTS.name).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use ferrule_policy::ManualClock;

    use super::*;

    fn wait(ms: u64) -> PoolWait {
        PoolWait {
            waited: Duration::from_millis(ms),
            timed_out: false,
        }
    }

    #[test]
    fn slow_waits_warn_once_a_minute_with_a_count() {
        let clock = ManualClock::new();
        let slow = SlowWaits::new(Duration::from_millis(100), Arc::new(clock.clone()));
        assert_eq!(slow.observe(wait(5)), None, "a fast wait is not counted");
        assert_eq!(slow.observe(wait(150)), Some(1));
        assert_eq!(slow.observe(wait(300)), None);
        assert_eq!(slow.observe(wait(200)), None);
        clock.advance(Duration::from_secs(61));
        assert_eq!(slow.observe(wait(120)), Some(3));
    }
}
