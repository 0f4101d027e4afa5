//! Backend-independent store options: limits, windows and policies, validated at open.

use std::time::Duration;

use ferrule_policy::SharedClock;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What a dead-lettered message does to the other messages with its ordering key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterPolicy {
    /// Later messages with the same key wait until the dead one is replayed, cancelled or purged.
    Block,
    /// Later messages with the same key go ahead (the default).
    #[default]
    Skip,
}

/// SQLite's `synchronous` pragma: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is durable across power loss (the default).
    #[default]
    Full,
    /// WAL commits survive a process crash but may be lost on power loss.
    Normal,
}

/// Options every backend understands.
#[derive(Clone)]
pub struct StoreOptions {
    /// Largest serialised payload accepted; larger ones are refused before any write (1 MiB).
    pub max_payload_bytes: usize,
    /// How long an idempotency key stays unique per destination (24 h).
    pub idempotency_window: Duration,
    /// Whether a dead-lettered message blocks its ordering key (default: skip).
    pub fifo_dead_letter_policy: DeadLetterPolicy,
    /// SQLite `synchronous` (default FULL).
    pub synchronous: Synchronous,
    /// How long SQLite waits on a lock before giving up (5 s).
    pub busy_timeout: Duration,
    /// Read connections in the SQLite read pool (4).
    pub read_connections: usize,
    /// Most operations the writer commits in one transaction (512): SQLite's writer thread, and
    /// PostgreSQL's group-commit writer (enqueued messages and ends of attempts).
    pub max_batch: usize,
    /// Bound on operations waiting for the writer, on either backend; submitters wait when it is
    /// full (4096).
    pub queue_capacity: usize,
    /// Longest any one operation may take, waiting for a connection, a lock or the writer
    /// included; past it the caller gets [`StoreError::Timeout`] instead of waiting on (10 s).
    /// On PostgreSQL it is also each connection's `statement_timeout`, so the server stops
    /// the statement too. `wait_for_work` is the one operation it does not bound.
    pub operation_timeout: Duration,
    /// Told how long each PostgreSQL operation waited for a pool connection, and whether it
    /// gave up (the relay feeds its wait histogram and its slow-wait warning from this).
    pub pool_observer: Option<PoolObserver>,
    /// The clock every timestamp is read from (the system clock by default).
    pub clock: SharedClock,
}

/// A callback told about each wait for a PostgreSQL pool connection.
pub type PoolObserver = std::sync::Arc<dyn Fn(PoolWait) + Send + Sync>;

/// One wait for a PostgreSQL pool connection, as told to a [`PoolObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWait {
    /// How long the caller waited.
    pub waited: Duration,
    /// Whether it gave up without a connection (the pool's acquire timeout).
    pub timed_out: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_payload_bytes: 1024 * 1024,
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            fifo_dead_letter_policy: DeadLetterPolicy::Skip,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            max_batch: 512,
            queue_capacity: 4096,
            operation_timeout: Duration::from_secs(10),
            pool_observer: None,
            clock: ferrule_policy::clock::system(),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("idempotency_window", &self.idempotency_window)
            .field("fifo_dead_letter_policy", &self.fifo_dead_letter_policy)
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .field("read_connections", &self.read_connections)
            .field("max_batch", &self.max_batch)
            .field("queue_capacity", &self.queue_capacity)
            .field("operation_timeout", &self.operation_timeout)
            .field("pool_observer", &self.pool_observer.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreOptions {
    /// Options with `clock` and defaults for everything else.
    pub fn with_clock(clock: SharedClock) -> Self {
        StoreOptions {
            clock,
            ..StoreOptions::default()
        }
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        fn positive(field: &'static str, value: usize) -> Result<(), StoreError> {
            if value == 0 {
                return Err(StoreError::InvalidOption {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(())
        }
        positive("max_payload_bytes", self.max_payload_bytes)?;
        positive("read_connections", self.read_connections)?;
        positive("max_batch", self.max_batch)?;
        positive("queue_capacity", self.queue_capacity)?;
        if self.operation_timeout.is_zero() {
            return Err(StoreError::InvalidOption {
                field: "operation_timeout",
                reason: "must be longer than zero".into(),
            });
        }
        if self.idempotency_window.is_zero() {
            return Err(StoreError::InvalidOption {
                field: "idempotency_window",
                reason: "must be longer than zero".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_is_refused() {
        StoreOptions::default().validate().unwrap();
        let err = StoreOptions {
            max_batch: 0,
            ..StoreOptions::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("max_batch"), "{err}");
    }
}
