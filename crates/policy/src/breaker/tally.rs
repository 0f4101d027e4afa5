//! The breaker's running totals of admitted and rejected calls, striped per thread so that
//! counting a call takes no atomic read-modify-write.
//!
//! An uncontended `fetch_add` still costs about 5 ns here (a locked instruction), as much as the
//! rest of the closed breaker's happy path. So each thread that counts gets a stripe of its own,
//! taken from a process-wide pool of [`STRIPES`] and given back when the thread exits: one writer
//! per stripe, which adds with a plain load and store. Threads beyond the pool's size share one
//! stripe with atomic adds. A total is the sum of the stripes, read with relaxed loads: exact
//! once the counting threads are quiescent, never decreasing between two reads on one thread.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Stripes per tally, and so the number of threads that can count without atomic adds at once.
const STRIPES: usize = 16;

/// `STRIPE` of a thread that has not counted yet.
const UNSET: usize = usize::MAX;
/// `STRIPE` of a thread that counts on the shared stripe (the pool was empty, or the thread is
/// exiting).
const SHARED: usize = usize::MAX - 1;

thread_local! {
    /// This thread's stripe index (`< STRIPES`), or [`UNSET`] or [`SHARED`].
    static STRIPE: Cell<usize> = const { Cell::new(UNSET) };
    /// Gives the thread's stripe back to the pool when the thread exits.
    static RELEASE: Release = const { Release };
}

/// The stripes no live thread holds.
static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    next: 0,
});

struct Pool {
    /// Stripes given back by exited threads.
    free: Vec<usize>,
    /// The next never-used stripe.
    next: usize,
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The pool holds plain values: a panic elsewhere cannot leave it inconsistent.
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let stripe = STRIPE.replace(SHARED);
        if stripe < STRIPES {
            // The thread's last stores to its stripes happen before this push (the pool's
            // mutex), so the next owner's plain adds start from them.
            pool().free.push(stripe);
        }
    }
}

/// This thread's stripe index, or [`SHARED`].
#[inline]
fn stripe() -> usize {
    match STRIPE.get() {
        UNSET => take_stripe(),
        stripe => stripe,
    }
}

#[cold]
#[inline(never)]
fn take_stripe() -> usize {
    // Register the release first: a thread already tearing down its thread-locals gets none,
    // and must not take a stripe it could never give back.
    if RELEASE.try_with(|_| ()).is_err() {
        STRIPE.set(SHARED);
        return SHARED;
    }
    let stripe = {
        let mut pool = pool();
        match pool.free.pop() {
            Some(stripe) => stripe,
            None if pool.next < STRIPES => {
                pool.next += 1;
                pool.next - 1
            }
            None => SHARED,
        }
    };
    STRIPE.set(stripe);
    stripe
}

/// One stripe's counts, on its own cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    admitted: AtomicU64,
    rejected: AtomicU64,
}

/// Which count to add to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    /// A call admitted (closed, half-open probe or disabled).
    Admitted,
    /// A call rejected.
    Rejected,
}

/// Calls admitted and rejected since the breaker was built.
#[derive(Debug)]
pub(crate) struct Tally {
    stripes: Box<[Stripe]>,
    /// For threads without a stripe of their own: atomic adds.
    shared: Stripe,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            shared: Stripe::default(),
        }
    }
}

impl Stripe {
    #[inline]
    fn counter(&self, count: Count) -> &AtomicU64 {
        match count {
            Count::Admitted => &self.admitted,
            Count::Rejected => &self.rejected,
        }
    }
}

impl Tally {
    /// Adds one to `count`.
    #[inline]
    pub(crate) fn add(&self, count: Count) {
        match self.stripes.get(stripe()) {
            Some(own) => {
                // This thread is the stripe's only writer: no read-modify-write needed.
                let counter = own.counter(count);
                counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
            }
            None => {
                self.shared.counter(count).fetch_add(1, Relaxed);
            }
        }
    }

    /// The total of `count` over every stripe.
    pub(crate) fn total(&self, count: Count) -> u64 {
        self.stripes
            .iter()
            .chain(std::iter::once(&self.shared))
            .fold(0u64, |sum, stripe| {
                sum.wrapping_add(stripe.counter(count).load(Relaxed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_more_threads_than_stripes_add_up_exactly() {
        let tally = Tally::default();
        let threads = STRIPES * 2 + 3;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let tally = &tally;
                scope.spawn(move || {
                    for _ in 0..1000 + t {
                        tally.add(Count::Admitted);
                    }
                    tally.add(Count::Rejected);
                });
            }
        });
        let admitted: usize = (0..threads).map(|t| 1000 + t).sum();
        assert_eq!(tally.total(Count::Admitted), admitted as u64);
        assert_eq!(tally.total(Count::Rejected), threads as u64);
    }

    #[test]
    fn stripes_of_exited_threads_are_reused_and_keep_their_counts() {
        let tally = Tally::default();
        // One thread after the other: a stripe given back by an exited thread is taken again
        // by a later one, which adds on top of what its predecessor left.
        for _ in 0..STRIPES * 3 {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for _ in 0..100 {
                        tally.add(Count::Admitted);
                    }
                });
            });
        }
        assert_eq!(tally.total(Count::Admitted), (STRIPES * 3 * 100) as u64);
        assert_eq!(tally.total(Count::Rejected), 0);
    }
}
