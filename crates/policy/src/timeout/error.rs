//! The timeout's error.

use std::time::Duration;

/// An attempt (or the whole call, for a deadline) did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {}", crate::duration::readable(*.after))]
pub struct Elapsed {
    /// The limit that was exceeded.
    pub after: Duration,
}
