//! The queue, scheduled and dead-letter depths as the relay estimates them between reads of
//! the store, and the depth gauges it exports from each read.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::telemetry::prometheus::{
    DEAD_LETTER_DEPTH, OLDEST_DUE_AGE, QUEUE_DEPTH, SCHEDULED_DEPTH,
};

/// The depths, refreshed in the background from the store's counts
/// ([`Store::depths`](ferrule_store::Store::depths)) and bumped by each submission in between,
/// so a submit never has to count rows.
///
/// Like the store, the relay counts a pending message once: in `queue` (due now, waiting for a
/// retry or a deferral, or being delivered) or in `scheduled` (its first attempt held back by a
/// `deliver_after` still ahead). `server.max_queue_depth` weighs the queue only, so messages a
/// client scheduled far ahead never crowd out due work; `server.max_scheduled` bounds them on
/// their own. A scheduled message that falls due moves to the queue at the next refresh.
#[derive(Debug, Default)]
pub struct Depths {
    /// Pending messages not scheduled ahead, at the last refresh.
    pub queue: AtomicU64,
    /// Pending messages waiting for their `deliver_after`, at the last refresh.
    pub scheduled: AtomicU64,
    /// Dead messages at the last refresh.
    pub dead: AtomicU64,
    /// Messages submitted due (not scheduled ahead) since the last refresh.
    pub submitted_since: AtomicU64,
    /// Messages submitted scheduled ahead since the last refresh.
    pub scheduled_since: AtomicU64,
    /// The destinations whose depth gauges this relay has set: configured ones, and any other
    /// the store holds messages of (a destination since removed from the configuration), so
    /// their gauges go back to 0 rather than keep their last count.
    exported: Mutex<BTreeSet<String>>,
}

impl Depths {
    /// The estimated number of pending messages not scheduled ahead now.
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

    /// The estimated number of messages waiting for their `deliver_after` now.
    pub fn scheduled_now(&self) -> u64 {
        self.scheduled
            .load(Ordering::Relaxed)
            .saturating_add(self.scheduled_since.load(Ordering::Relaxed))
    }

    /// Counts `n` messages just stored (after their commit): `scheduled` when their first
    /// attempt waits for a time still ahead.
    pub fn added(&self, n: u64, scheduled: bool) {
        let counter = if scheduled {
            &self.scheduled_since
        } else {
            &self.submitted_since
        };
        counter.fetch_add(n, Ordering::AcqRel);
    }

    /// Takes the store's `depths`, read after the submissions counted in `counted` (the
    /// values of `submitted_since` and `scheduled_since` loaded before the read, which the
    /// store's counts include): those are subtracted, the ones counted since stay.
    pub fn refreshed(&self, depths: &ferrule_store::Depths, counted: (u64, u64)) {
        self.submitted_since.fetch_sub(counted.0, Ordering::AcqRel);
        self.scheduled_since.fetch_sub(counted.1, Ordering::AcqRel);
        self.queue.store(depths.queue, Ordering::Relaxed);
        self.scheduled.store(depths.scheduled, Ordering::Relaxed);
        self.dead.store(depths.dead, Ordering::Relaxed);
    }

    /// What [`refreshed`](Self::refreshed) takes as counted: both counters, loaded now.
    pub fn counted(&self) -> (u64, u64) {
        (
            self.submitted_since.load(Ordering::Acquire),
            self.scheduled_since.load(Ordering::Acquire),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_submissions_are_counted_apart_from_the_queue() {
        let depths = Depths::default();
        depths.added(2, false);
        depths.added(5, true);
        assert_eq!((depths.queue_now(), depths.scheduled_now()), (2, 5));
        let counted = depths.counted();
        // One more of each while the store is read: not in its counts, kept.
        depths.added(1, false);
        depths.added(1, true);
        let store = ferrule_store::Depths {
            queue: 10,
            scheduled: 20,
            dead: 3,
            ..Default::default()
        };
        depths.refreshed(&store, counted);
        assert_eq!((depths.queue_now(), depths.scheduled_now()), (11, 21));
        assert_eq!(depths.dead.load(Ordering::Relaxed), 3);
    }
}
