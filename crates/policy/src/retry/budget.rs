//! The retry budget: a lock-free sliding-window token bucket shared by every call of a policy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::BudgetConfig;
use crate::clock::SharedClock;

/// Number of sub-windows the `ttl` window is divided into.
const SLOTS: usize = 10;
/// Fixed-point scale: one retry costs this many units, so `retries_per_success` keeps three
/// decimals.
const SCALE: i32 = 1000;

/// A token bucket over a sliding `ttl` window, without locks.
///
/// The window is split into [`SLOTS`] time slots; each slot is one atomic word holding the slot's
/// epoch (which `ttl / SLOTS` interval it belongs to) and the net amount deposited (+) and
/// withdrawn (−) in it. A slot whose epoch is older than the window is stale and counts as
/// empty; the first write in a new epoch resets it. The balance is a fixed reserve
/// (`min_per_second × ttl` retries) plus the live slots.
///
/// Checking and withdrawing are two steps, so concurrent retries may overdraw by a few tokens:
/// a budget is a load-shedding heuristic, not an exact quota.
#[derive(Debug)]
pub(crate) struct Budget {
    clock: SharedClock,
    origin: Instant,
    slot_nanos: u128,
    slots: [AtomicU64; SLOTS],
    reserve: i64,
    deposit: i32,
}

#[inline]
fn pack(epoch: u32, amount: i32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(amount as u32)
}

#[inline]
fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

/// `true` when `epoch` is later than `current` (modulo wrap-around): another thread read the
/// clock after us.
#[inline]
fn is_newer(epoch: u32, current: u32) -> bool {
    current.wrapping_sub(epoch) > u32::MAX / 2
}

impl Budget {
    pub(crate) fn new(config: &BudgetConfig, clock: SharedClock) -> Self {
        let origin = clock.now();
        let slot_nanos = (config.ttl.as_nanos() / SLOTS as u128).max(1);
        // `as` from f64 saturates; NaN cannot occur after validation but would give 0.
        let deposit = (config.retries_per_success * f64::from(SCALE)).round() as i32;
        let reserve = (f64::from(config.min_per_second)
            * config.ttl.as_secs_f64()
            * f64::from(SCALE))
        .round() as i64;
        Budget {
            clock,
            origin,
            slot_nanos,
            slots: Default::default(),
            reserve,
            deposit,
        }
    }

    #[inline]
    fn epoch(&self) -> u32 {
        let elapsed = self.clock.now().saturating_duration_since(self.origin);
        // Truncation wraps the epoch counter, which every comparison tolerates.
        (elapsed.as_nanos() / self.slot_nanos) as u32
    }

    fn add(&self, delta: i32) {
        let epoch = self.epoch();
        let slot = &self.slots[epoch as usize % SLOTS];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (slot_epoch, amount) = unpack(current);
            let next = if slot_epoch == epoch || is_newer(slot_epoch, epoch) {
                pack(slot_epoch, amount.saturating_add(delta))
            } else {
                pack(epoch, delta)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The tokens available now, in units of 1/[`SCALE`] retry.
    fn balance(&self) -> i64 {
        let epoch = self.epoch();
        let live: i64 = self
            .slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(slot_epoch, _)| {
                (epoch.wrapping_sub(*slot_epoch) as usize) < SLOTS || is_newer(*slot_epoch, epoch)
            })
            .map(|(_, amount)| i64::from(amount))
            .sum();
        self.reserve.saturating_add(live)
    }

    /// Records a success.
    #[inline]
    pub(crate) fn deposit(&self) {
        if self.deposit > 0 {
            self.add(self.deposit);
        }
    }

    /// Takes one retry's worth of tokens; `false` (and nothing taken) when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        if self.balance() < i64::from(SCALE) {
            return false;
        }
        self.add(-SCALE);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ManualClock;

    fn budget(clock: &ManualClock, per_success: f64, min_per_second: u32, ttl_secs: u64) -> Budget {
        let config = BudgetConfig {
            retries_per_success: per_success,
            min_per_second,
            ttl: Duration::from_secs(ttl_secs),
        };
        Budget::new(&config, clock.shared())
    }

    #[test]
    fn successes_earn_retries() {
        let clock = ManualClock::new();
        let b = budget(&clock, 0.5, 0, 10);
        assert!(!b.withdraw());
        b.deposit();
        assert!(!b.withdraw());
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn reserve_allows_min_per_second_times_ttl() {
        let clock = ManualClock::new();
        let b = budget(&clock, 0.0, 2, 3);
        for _ in 0..6 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
    }

    #[test]
    fn withdrawals_and_deposits_expire_after_ttl() {
        let clock = ManualClock::new();
        let b = budget(&clock, 1.0, 1, 1);
        assert!(b.withdraw());
        assert!(!b.withdraw());
        clock.advance(Duration::from_millis(500));
        assert!(!b.withdraw(), "the withdrawal is still inside the window");
        clock.advance(Duration::from_millis(500));
        assert!(b.withdraw(), "the withdrawal expired");
        // A deposit counts for one ttl, then expires too.
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
        clock.advance(Duration::from_secs(1));
        b.deposit();
        clock.advance(Duration::from_secs(1));
        assert!(b.withdraw());
        assert!(!b.withdraw(), "the deposit expired with the window");
    }

    #[test]
    fn survives_long_idle_periods_and_saturation() {
        let clock = ManualClock::new();
        let b = budget(&clock, 1000.0, u32::MAX, 1);
        for _ in 0..10_000 {
            b.deposit();
        }
        assert!(b.withdraw());
        clock.advance(Duration::from_secs(u64::MAX / 4));
        assert!(b.withdraw());
    }

    #[test]
    fn packing_round_trips() {
        for (epoch, amount) in [(0, 0), (7, -1000), (u32::MAX, i32::MIN), (1, i32::MAX)] {
            assert_eq!(unpack(pack(epoch, amount)), (epoch, amount));
        }
    }
}
