//! An adapter that lets `governor` read time from our [`Clock`](crate::Clock).

use std::fmt;
use std::time::{Duration, Instant};

use governor::nanos::Nanos;

use crate::clock::SharedClock;

/// A `governor` clock over a [`SharedClock`]: nanoseconds since `origin` on that clock.
#[derive(Clone)]
pub(crate) struct GovernorClock {
    clock: SharedClock,
    /// The same moment as `origin_nanos`, as an `Instant`, for reporting `ready_at`.
    origin: Instant,
    origin_nanos: u64,
}

impl fmt::Debug for GovernorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorClock")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl GovernorClock {
    /// A clock whose zero is now on `clock`.
    pub(crate) fn new(clock: SharedClock) -> Self {
        let origin_nanos = clock.now_nanos();
        let origin = clock.now();
        GovernorClock {
            clock,
            origin,
            origin_nanos,
        }
    }

    /// The instant on our clock that `nanos` stands for.
    #[inline]
    pub(crate) fn to_instant(&self, nanos: Nanos) -> Instant {
        let offset = Duration::from_nanos(nanos.as_u64());
        self.origin.checked_add(offset).unwrap_or(self.origin)
    }

    /// The current instant on our clock.
    #[inline]
    pub(crate) fn instant_now(&self) -> Instant {
        self.clock.now()
    }

    /// The underlying clock.
    pub(crate) fn shared(&self) -> &SharedClock {
        &self.clock
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        Nanos::new(self.clock.now_nanos().saturating_sub(self.origin_nanos))
    }
}
