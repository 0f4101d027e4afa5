//! The delay computation: pure functions of the attempt number, usable without running anything.

use std::time::Duration;

use super::config::{Backoff, Jitter};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A duration from a nanosecond count, saturating at [`Duration::MAX`].
#[inline]
fn from_nanos(nanos: u128) -> Duration {
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 1e9, so it fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Uniform in `[lo, hi]` (nanosecond resolution); `lo` when `hi < lo`.
#[inline]
fn uniform(rng: &mut fastrand::Rng, lo: Duration, hi: Duration) -> Duration {
    let (lo, hi) = (lo.as_nanos(), hi.as_nanos());
    if hi <= lo {
        return from_nanos(lo);
    }
    from_nanos(rng.u128(lo..=hi))
}

impl Backoff {
    /// The first delay (for [`Backoff::Fixed`], the delay).
    pub fn base(&self) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Linear { base, .. } | Backoff::Exponential { base, .. } => base,
        }
    }

    /// The longest delay (for [`Backoff::Fixed`], the delay).
    pub fn cap(&self) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Linear { cap, .. } | Backoff::Exponential { cap, .. } => cap,
        }
    }

    /// The delay before retry number `attempt` (= the number of attempts made so far, 1 for the
    /// first retry; 0 is treated as 1), without jitter. Always within `[0, cap]`; saturates
    /// instead of overflowing for any attempt number or multiplier.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let steps = attempt.saturating_sub(1);
        let cap = self.cap();
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Linear { base, step, .. } => {
                base.saturating_add(step.saturating_mul(steps)).min(cap)
            }
            Backoff::Exponential {
                base, multiplier, ..
            } => {
                let exponent = i32::try_from(steps).unwrap_or(i32::MAX);
                // In nanoseconds so that integer multipliers give exact results.
                let nanos = base.as_nanos() as f64 * multiplier.powi(exponent);
                if nanos.is_nan() || nanos >= cap.as_nanos() as f64 {
                    cap
                } else {
                    // `as` saturates: a negative product (a negative multiplier) becomes 0.
                    from_nanos(nanos as u128).min(cap)
                }
            }
        }
    }

    /// The delay before retry number `attempt`, randomised by `jitter`; always within
    /// `[0, cap]`.
    ///
    /// `prev` is the delay used before the previous retry (`None` before the first); only
    /// [`Jitter::Decorrelated`] reads it. `rng` is only drawn from when `jitter` is not
    /// [`Jitter::None`], so a seeded [`fastrand::Rng`] makes a schedule reproducible. This is
    /// what a durable scheduler stores as "next attempt at", instead of sleeping.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ferrule_policy::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::Exponential {
    ///     base: Duration::from_millis(100),
    ///     multiplier: 2.0,
    ///     cap: Duration::from_secs(1),
    /// };
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert_eq!(backoff.delay(3, Jitter::None, None, &mut rng), Duration::from_millis(400));
    /// assert_eq!(backoff.delay(50, Jitter::None, None, &mut rng), Duration::from_secs(1));
    /// let jittered = backoff.delay(3, Jitter::Full, None, &mut rng);
    /// assert!(jittered <= Duration::from_millis(400));
    /// ```
    pub fn delay(
        &self,
        attempt: u32,
        jitter: Jitter,
        prev: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        match jitter {
            Jitter::None => self.base_delay(attempt),
            Jitter::Full => uniform(rng, Duration::ZERO, self.base_delay(attempt)),
            Jitter::Equal => {
                let delay = self.base_delay(attempt);
                let half = delay / 2;
                uniform(rng, half, delay)
            }
            Jitter::Decorrelated => {
                let cap = self.cap();
                let base = self.base().min(cap);
                let high = prev.unwrap_or(base).saturating_mul(3);
                uniform(rng, base, high).min(cap)
            }
        }
    }
}
