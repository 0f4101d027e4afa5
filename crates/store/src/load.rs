//! How loaded the store is: its writer's queue, the PostgreSQL pool, and operations that ran
//! past the operation timeout — counted here, read by the relay's `/status` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::options::{PoolObserver, PoolWait};

/// A snapshot of the store's load, from [`AnyStore::load`](crate::AnyStore::load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreLoad {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The operation timeout, in milliseconds.
    pub operation_timeout_ms: u64,
    /// Operations that ran past the operation timeout since the store was opened.
    pub operation_timeouts: u64,
    /// Operations waiting for the writer (SQLite's writer thread, PostgreSQL's group-commit
    /// writer), and the most that may wait before submitters are held back.
    pub writer_queue: usize,
    /// The writer queue's bound (`queue_capacity`).
    pub writer_queue_capacity: usize,
    /// The PostgreSQL connection pool; `None` on SQLite, which has one writer connection and a
    /// fixed set of readers instead of a pool.
    pub pool: Option<PoolLoad>,
}

/// A snapshot of the PostgreSQL connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolLoad {
    /// Connections lent out to operations now.
    pub in_use: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// Most connections the pool opens (`pool_size`).
    pub max: u32,
    /// Connections handed out since the store was opened.
    pub acquires: u64,
    /// Waits that gave up without a connection (the pool's acquire timeout).
    pub acquire_timeouts: u64,
    /// Total time spent waiting for connections, in microseconds.
    pub wait_micros_total: u64,
    /// The longest single wait since the store was opened, in microseconds.
    pub wait_micros_max: u64,
}

/// Counters shared by a store's handles.
#[derive(Default)]
pub(crate) struct Meter {
    operation_timeouts: AtomicU64,
    acquires: AtomicU64,
    acquire_timeouts: AtomicU64,
    wait_micros: AtomicU64,
    wait_micros_max: AtomicU64,
    observer: Option<PoolObserver>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("operation_timeouts", &self.operation_timeouts)
            .field("acquires", &self.acquires)
            .field("acquire_timeouts", &self.acquire_timeouts)
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// A meter telling each pool wait to `observer`.
    pub(crate) fn new(observer: Option<PoolObserver>) -> Self {
        Meter {
            observer,
            ..Meter::default()
        }
    }

    /// Counts one operation that ran past the operation timeout.
    pub(crate) fn operation_timed_out(&self) {
        self.operation_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Operations that ran past the operation timeout.
    pub(crate) fn operation_timeouts(&self) -> u64 {
        self.operation_timeouts.load(Ordering::Relaxed)
    }

    /// Records one wait for a pool connection.
    pub(crate) fn waited(&self, waited: Duration, timed_out: bool) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        if timed_out {
            self.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.acquires.fetch_add(1, Ordering::Relaxed);
        }
        self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        self.wait_micros_max.fetch_max(micros, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer(PoolWait { waited, timed_out });
        }
    }

    /// The pool's figures, with the sizes read from the pool itself.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn pool(&self, size: u32, idle: u32, max: u32) -> PoolLoad {
        PoolLoad {
            in_use: size.saturating_sub(idle),
            idle,
            max,
            acquires: self.acquires.load(Ordering::Relaxed),
            acquire_timeouts: self.acquire_timeouts.load(Ordering::Relaxed),
            wait_micros_total: self.wait_micros.load(Ordering::Relaxed),
            wait_micros_max: self.wait_micros_max.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn waits_are_counted_and_told() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let meter = Meter::new(Some(Arc::new(move |w| s.lock().unwrap().push(w))));
        meter.waited(Duration::from_millis(3), false);
        meter.waited(Duration::from_millis(7), true);
        meter.operation_timed_out();
        let pool = meter.pool(5, 2, 16);
        assert_eq!((pool.in_use, pool.idle, pool.max), (3, 2, 16));
        assert_eq!((pool.acquires, pool.acquire_timeouts), (1, 1));
        assert_eq!(
            (pool.wait_micros_total, pool.wait_micros_max),
            (10_000, 7_000)
        );
        assert_eq!(meter.operation_timeouts(), 1);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(seen.lock().unwrap()[1].timed_out);
    }
}
