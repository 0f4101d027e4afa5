//! The queue and dead-letter depths as the relay estimates them between reads of the store,
//! and the depth gauges it exports from each read.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::telemetry::prometheus::{
    DEAD_LETTER_DEPTH, OLDEST_DUE_AGE, QUEUE_DEPTH, SCHEDULED_DEPTH,
};

/// The queue and dead-letter depths, refreshed in the background from the store's counts and
/// bumped by each submission in between, so a submit never has to count rows.
#[derive(Debug, Default)]
pub struct Depths {
    /// Pending messages at the last refresh.
    pub queue: AtomicU64,
    /// Dead messages at the last refresh.
    pub dead: AtomicU64,
    /// Messages submitted since the last refresh.
    pub submitted_since: AtomicU64,
    /// The destinations whose depth gauges this relay has set: configured ones, and any other
    /// the store holds messages of (a destination since removed from the configuration), so
    /// their gauges go back to 0 rather than keep their last count.
    exported: Mutex<BTreeSet<String>>,
}

impl Depths {
    /// The estimated number of pending messages now.
    pub fn queue_now(&self) -> u64 {
        self.queue
            .load(Ordering::Relaxed)
            .saturating_add(self.submitted_since.load(Ordering::Relaxed))
    }

    /// Sets the depth gauges from `read`, the store's depths at `now`: queue, scheduled and
    /// dead-letter depth per destination (0 for each of `configured` the store has none of),
    /// and how long the oldest due message has waited.
    pub fn export(
        &self,
        read: &ferrule_store::Depths,
        configured: impl IntoIterator<Item = impl Into<String>>,
        now: SystemTime,
    ) {
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        exported.extend(configured.into_iter().map(Into::into));
        exported.extend(read.by_destination.iter().map(|d| d.destination.clone()));
        for name in exported.iter() {
            let counts = read
                .by_destination
                .binary_search_by(|d| d.destination.as_str().cmp(name))
                .ok()
                .map(|i| &read.by_destination[i]);
            for (family, value) in [
                (QUEUE_DEPTH, counts.map_or(0, |c| c.queue)),
                (SCHEDULED_DEPTH, counts.map_or(0, |c| c.scheduled)),
                (DEAD_LETTER_DEPTH, counts.map_or(0, |c| c.dead)),
            ] {
                metrics::gauge!(family.name, "destination" => name.clone()).set(value as f64);
            }
        }
        let lag = read
            .oldest_due_at
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        metrics::gauge!(OLDEST_DUE_AGE.name).set(lag.as_secs_f64());
    }
}
