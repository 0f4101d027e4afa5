//! The breaker's sliding windows: lock-free count and time windows of call outcomes.
//!
//! Both windows are updated with a few relaxed atomic operations and no lock. Under concurrent
//! recording the totals may be momentarily approximate (a bucket reset can lose a call recorded
//! at the same instant; two writers on the same ring slot may apply their deltas out of order),
//! but every total read is clamped to `0..=capacity`, so it is never negative.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::config::Window;

/// What one recorded call contributes to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// The window's totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    /// Failed calls as a share of all calls (0 when empty).
    #[inline]
    pub(crate) fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls as a share of all calls (0 when empty).
    #[inline]
    pub(crate) fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

#[inline]
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A sliding window of either kind.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the count window's padding is deliberate and there is one window per breaker"
)]
pub(crate) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    /// A window for a validated config.
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => SlidingWindow::Count(CountWindow::new(n)),
            Window::Time { duration, buckets } => {
                SlidingWindow::Time(TimeWindow::new(duration, buckets))
            }
        }
    }

    /// Whether recording needs the current time (`elapsed` since the breaker's origin).
    #[inline]
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, SlidingWindow::Time(_))
    }

    /// Adds one call recorded at `elapsed`; returns the totals after it, or `None` when the
    /// totals cannot have changed (a count window replacing an identical outcome).
    #[inline]
    pub(crate) fn record(&self, sample: Sample, elapsed: Duration) -> Option<Totals> {
        match self {
            SlidingWindow::Count(w) => w.record(sample),
            SlidingWindow::Time(w) => Some(w.record(sample, elapsed)),
        }
    }

    /// The totals now.
    pub(crate) fn totals(&self, elapsed: Duration) -> Totals {
        match self {
            SlidingWindow::Count(w) => w.totals(),
            SlidingWindow::Time(w) => w.totals(elapsed),
        }
    }

    /// Empties the window.
    pub(crate) fn clear(&self) {
        match self {
            SlidingWindow::Count(w) => w.clear(),
            SlidingWindow::Time(w) => w.clear(),
        }
    }
}

// Slot encoding of the count window: 0 = empty.
const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// Width of each signed field packed into the count window's totals word.
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The last `n` calls: a ring of one-byte slots, an atomic cursor and packed running totals.
///
/// When every slot already holds the outcome being recorded (the steady state of a healthy
/// dependency: a full window of successes), recording changes nothing and writes nothing, not
/// even the cursor: all slots being equal, which one the next different outcome replaces makes
/// no difference to the window. So the happy path reads one word and writes none.
///
/// The totals word packs three signed 21-bit fields (calls, failures, slow). Each record adds
/// the packed difference between the new slot value and the one it evicts, with one
/// `fetch_add`; decoding propagates borrows between fields, so a field that is momentarily
/// negative (two writers on the same slot finishing out of order) decodes exactly and is then
/// clamped to zero. The window holds at most 1 000 000 < 2^20 calls, so fields never overflow.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    counters: Counters,
}

/// The count window's write-hot atomics, on their own cache line(s) so that their writers do
/// not slow down readers of the breaker's read-mostly fields.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    cursor: AtomicU64,
    totals: AtomicU64,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        let n = n.max(1) as usize;
        CountWindow {
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            counters: Counters::default(),
        }
    }

    #[inline]
    fn encode(sample: Sample) -> u8 {
        PRESENT | if sample.failure { FAILED } else { 0 } | if sample.slow { SLOW } else { 0 }
    }

    /// The packed totals contribution of one slot value.
    #[inline]
    fn packed(slot: u8) -> u64 {
        u64::from(slot & PRESENT)
            | (u64::from((slot & FAILED) >> 1) << FIELD_BITS)
            | (u64::from((slot & SLOW) >> 2) << (2 * FIELD_BITS))
    }

    #[inline]
    fn record(&self, sample: Sample) -> Option<Totals> {
        let value = Self::encode(sample);
        let len = self.slots.len() as u64;
        // A full window of this very outcome: the record cannot change it (see the type's doc).
        if self.counters.totals.load(Relaxed) == Self::packed(value).wrapping_mul(len) {
            return None;
        }
        let index = (self.counters.cursor.fetch_add(1, Relaxed) % len) as usize;
        let slot = &self.slots[index];
        // Steady state: a success replacing a success changes nothing; skip the writes.
        if slot.load(Relaxed) == value {
            return None;
        }
        let old = slot.swap(value, Relaxed);
        if old == value {
            return None;
        }
        let delta = Self::packed(value).wrapping_sub(Self::packed(old));
        let after = self
            .counters
            .totals
            .fetch_add(delta, Relaxed)
            .wrapping_add(delta);
        Some(self.decode(after))
    }

    fn totals(&self) -> Totals {
        self.decode(self.counters.totals.load(Relaxed))
    }

    /// Unpacks the three signed fields and clamps each to `0..=len`.
    #[inline]
    fn decode(&self, word: u64) -> Totals {
        let len = self.slots.len() as i64;
        let clamp = |v: i64| v.clamp(0, len) as u64;
        let mut rest = word as i64;
        let calls = sign_extend(rest as u64 & FIELD_MASK);
        rest = rest.wrapping_sub(calls) >> FIELD_BITS;
        let failures = sign_extend(rest as u64 & FIELD_MASK);
        rest = rest.wrapping_sub(failures) >> FIELD_BITS;
        let slow = rest;
        Totals {
            calls: clamp(calls),
            failures: clamp(failures),
            slow: clamp(slow),
        }
    }

    fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Relaxed);
        }
        self.counters.totals.store(0, Relaxed);
    }
}

/// Interprets the low [`FIELD_BITS`] of `field` as a two's-complement number.
#[inline]
fn sign_extend(field: u64) -> i64 {
    let shift = 64 - FIELD_BITS;
    ((field << shift) as i64) >> shift
}

/// One bucket of the time window: the epoch it counts for and its counts.
#[derive(Debug, Default)]
struct Bucket {
    /// `epoch + 1` of the bucket's period; 0 = never used (or cleared).
    tag: AtomicU64,
    /// Calls in the low 32 bits, failures in the high 32 bits.
    calls_failures: AtomicU64,
    slow: AtomicU32,
}

/// The calls of the last `duration`, in `buckets` buckets tagged with their epoch
/// (`elapsed / bucket_len`). A bucket whose epoch has left the window is ignored when summing
/// and reset by the first call that lands in it again.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
}

impl TimeWindow {
    fn new(duration: Duration, buckets: u32) -> Self {
        let count = u64::from(buckets.max(1));
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        TimeWindow {
            buckets: (0..count).map(|_| Bucket::default()).collect(),
            bucket_nanos: (nanos / count).max(1),
        }
    }

    #[inline]
    fn epoch(&self, elapsed: Duration) -> u64 {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        nanos / self.bucket_nanos
    }

    #[inline]
    fn record(&self, sample: Sample, elapsed: Duration) -> Totals {
        let epoch = self.epoch(elapsed);
        let len = self.buckets.len() as u64;
        let bucket = &self.buckets[(epoch % len) as usize];
        let tag = epoch.saturating_add(1);
        let seen = bucket.tag.load(Relaxed);
        if seen < tag
            && bucket
                .tag
                .compare_exchange(seen, tag, Relaxed, Relaxed)
                .is_ok()
        {
            // This thread moved the bucket to the new epoch: drop the old epoch's counts.
            // A call recorded by another thread between the CAS and these stores is lost.
            bucket.calls_failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        let delta = 1 | (u64::from(sample.failure) << 32);
        bucket.calls_failures.fetch_add(delta, Relaxed);
        if sample.slow {
            bucket.slow.fetch_add(1, Relaxed);
        }
        self.sum(epoch)
    }

    fn totals(&self, elapsed: Duration) -> Totals {
        self.sum(self.epoch(elapsed))
    }

    /// Sums the buckets whose epoch lies in `(epoch - buckets, epoch]`.
    #[inline]
    fn sum(&self, epoch: u64) -> Totals {
        let len = self.buckets.len() as u64;
        // Tags are epoch + 1: the window holds tags in (epoch + 1 - len, epoch + 1].
        let newest = epoch.saturating_add(1);
        let oldest = newest.saturating_sub(len - 1).max(1);
        let mut totals = Totals::default();
        for bucket in self.buckets.iter() {
            let tag = bucket.tag.load(Relaxed);
            if tag >= oldest && tag <= newest {
                let cf = bucket.calls_failures.load(Relaxed);
                totals.calls += cf & u64::from(u32::MAX);
                totals.failures += cf >> 32;
                totals.slow += u64::from(bucket.slow.load(Relaxed));
            }
        }
        // Racing updates may read failures or slow calls without their call: keep rates ≤ 1.
        totals.failures = totals.failures.min(totals.calls);
        totals.slow = totals.slow.min(totals.calls);
        totals
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.tag.store(0, Relaxed);
            bucket.calls_failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
    }
}

impl SlidingWindow {
    /// The totals recounted from the slots or buckets themselves (tests compare them with the
    /// running totals once writers are quiescent).
    #[cfg(test)]
    pub(crate) fn recount(&self, elapsed: Duration) -> Totals {
        match self {
            SlidingWindow::Count(w) => {
                let mut t = Totals::default();
                for slot in w.slots.iter() {
                    let v = slot.load(Relaxed);
                    t.calls += u64::from(v & PRESENT);
                    t.failures += u64::from((v & FAILED) >> 1);
                    t.slow += u64::from((v & SLOW) >> 2);
                }
                t
            }
            SlidingWindow::Time(w) => w.totals(elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_totals_decode_negative_fields_exactly() {
        let w = CountWindow::new(8);
        let pack = |calls: i64, failures: i64, slow: i64| {
            (calls as u64)
                .wrapping_add((failures as u64).wrapping_shl(FIELD_BITS))
                .wrapping_add((slow as u64).wrapping_shl(2 * FIELD_BITS))
        };
        let t = |calls, failures, slow| Totals {
            calls,
            failures,
            slow,
        };
        assert_eq!(w.decode(pack(3, 2, 1)), t(3, 2, 1));
        // Momentarily negative fields (out-of-order writers) clamp to zero without
        // disturbing their neighbours.
        assert_eq!(w.decode(pack(-1, 2, 1)), t(0, 2, 1));
        assert_eq!(w.decode(pack(5, -1, 3)), t(5, 0, 3));
        assert_eq!(w.decode(pack(5, 2, -2)), t(5, 2, 0));
        assert_eq!(w.decode(pack(-1, -1, -1)), t(0, 0, 0));
        // And values above the capacity clamp to it.
        assert_eq!(w.decode(pack(9, 9, 9)), t(8, 8, 8));
    }

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = SlidingWindow::new(Window::Count(3));
        let s = |failure, slow| Sample { failure, slow };
        let z = Duration::ZERO;
        assert!(w.record(s(true, false), z).is_some());
        w.record(s(false, true), z);
        w.record(s(false, false), z);
        assert_eq!(
            w.totals(z),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // Replacing the failure with a plain success.
        let t = w.record(s(false, false), z).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 1));
        // Same value over same value: no change reported.
        w.record(s(false, false), z);
        assert_eq!(w.record(s(false, false), z), None);
        w.clear();
        assert_eq!(w.totals(z), Totals::default());
        assert_eq!(w.recount(z), Totals::default());
    }

    #[test]
    fn records_into_a_uniform_window_keep_it_sliding_exactly() {
        // Successes into a window full of successes write nothing, not even the cursor; the
        // window must still hold exactly the last n outcomes afterwards.
        let w = SlidingWindow::new(Window::Count(3));
        let z = Duration::ZERO;
        let ok = Sample {
            failure: false,
            slow: false,
        };
        let failed = Sample {
            failure: true,
            slow: false,
        };
        for _ in 0..3 {
            w.record(ok, z);
        }
        for _ in 0..5 {
            assert_eq!(w.record(ok, z), None);
        }
        assert_eq!(w.record(failed, z).map(|t| t.failures), Some(1));
        // The failure stays for the next two calls and leaves with the third.
        for left in [1, 1, 0] {
            w.record(ok, z);
            assert_eq!(w.totals(z).failures, left);
            assert_eq!(w.totals(z), w.recount(z));
        }
        assert_eq!(w.totals(z).calls, 3);
    }

    #[test]
    fn concurrent_count_window_totals_match_slots_when_quiescent() {
        let w = SlidingWindow::new(Window::Count(4));
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let w = &w;
                scope.spawn(move || {
                    for i in 0..20_000u64 {
                        let x = i.wrapping_mul(31).wrapping_add(t * 7);
                        let sample = Sample {
                            failure: x % 3 == 0,
                            slow: x % 5 == 0,
                        };
                        if let Some(t) = w.record(sample, Duration::ZERO) {
                            assert!(t.calls <= 4 && t.failures <= 4 && t.slow <= 4);
                        }
                    }
                });
            }
        });
        assert_eq!(w.totals(Duration::ZERO), w.recount(Duration::ZERO));
        assert_eq!(w.totals(Duration::ZERO).calls, 4);
    }
}
