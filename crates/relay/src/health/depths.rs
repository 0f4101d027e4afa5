//! The queue and dead-letter depths as the relay estimates them between reads of the store.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Depths {
    /// The estimated number of pending messages now.
    pub fn queue_now(&self) -> u64 {
        self.queue
            .load(Ordering::Relaxed)
            .saturating_add(self.submitted_since.load(Ordering::Relaxed))
    }
}
