//! The rate limiter's rejection, which says when to come back.

use std::time::{Duration, Instant};

/// A call was refused by a rate limiter; it may go ahead at `ready_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: ready in {}", crate::duration::readable(*.wait))]
pub struct RateLimited {
    /// How long until a call would be admitted.
    pub wait: Duration,
    /// The instant (on the limiter's clock) at which a call would be admitted.
    pub ready_at: Instant,
}

/// A batch can never be admitted: it asks for more cells than the limiter's burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit: {requested} cells requested but the burst is {burst}")]
pub struct InsufficientCapacity {
    /// Cells asked for.
    pub requested: u32,
    /// The most cells the limiter admits at once.
    pub burst: u32,
}
