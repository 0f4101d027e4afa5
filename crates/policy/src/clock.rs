//! Time: the one [`Clock`] every policy reads, the real [`SystemClock`] and a [`ManualClock`] for tests.
//!
//! Policies never call `Instant::now()` or `tokio::time::sleep` directly; they ask the clock in
//! their [`Context`](crate::Context). Production code uses [`SystemClock`] (tokio's timer, no
//! allocation per sleep); tests use [`ManualClock`] and move time forward by hand, so a test of a
//! 30-second breaker wait takes microseconds.
//!
//! Besides the exact time ([`Clock::now_nanos`]) a clock offers a coarse one
//! ([`Clock::coarse_nanos`]) for hot paths that judge spans of seconds: the system clock's is
//! one relaxed load of a time a background thread refreshes every [`COARSE_TICK`]; the manual
//! clock's is its exact time, so tests stay deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use pin_project_lite::pin_project;

/// A source of monotonic time, wall-clock time and timers.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current monotonic instant.
    fn now(&self) -> Instant;

    /// Monotonic nanoseconds since an origin fixed for this clock; moves exactly as
    /// [`now`](Clock::now) does.
    ///
    /// Hot paths that only subtract times (rate limiters, breaker windows, slow-call timing)
    /// read this instead of building an `Instant`. The default derives it from `now()` against
    /// a process-wide origin; clocks that can answer more cheaply override it.
    #[inline]
    fn now_nanos(&self) -> u64 {
        nanos_between(*PROCESS_ORIGIN, self.now())
    }

    /// Monotonic nanoseconds on the scale of [`now_nanos`](Clock::now_nanos), read as cheaply as
    /// the clock can at the price of lagging behind it by up to
    /// [`coarse_resolution`](Clock::coarse_resolution). It is never ahead of `now_nanos` and
    /// never goes backwards.
    ///
    /// For hot paths that compare spans far longer than the resolution: the breaker times calls
    /// against its slow-call threshold and checks the end of its open period with it. The
    /// default is `now_nanos()` itself (exact, resolution zero).
    #[inline]
    fn coarse_nanos(&self) -> u64 {
        self.now_nanos()
    }

    /// Where a hot path reads [`coarse_nanos`](Clock::coarse_nanos) from: through the clock
    /// (the default), or, for [`SystemClock`], straight from its ticker's time without a
    /// dynamic call. Policies ask once, when they are built.
    #[inline]
    fn coarse_source(&self) -> CoarseSource {
        CoarseSource::CLOCK
    }

    /// How far [`coarse_nanos`](Clock::coarse_nanos) may lag behind
    /// [`now_nanos`](Clock::now_nanos): zero when it is exact (the default, and [`ManualClock`]),
    /// [`COARSE_TICK`] for [`SystemClock`].
    #[inline]
    fn coarse_resolution(&self) -> Duration {
        Duration::ZERO
    }

    /// The current wall-clock time (used for HTTP-date `Retry-After` values and timestamps).
    fn system_now(&self) -> SystemTime;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// A clock shared between policies.
pub type SharedClock = Arc<dyn Clock>;

/// Where a hot path reads a clock's [coarse time](Clock::coarse_nanos) from, as answered by
/// [`Clock::coarse_source`]. Opaque: every clock but [`SystemClock`] answers
/// [`CoarseSource::CLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoarseSource(Source);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Through `Clock::coarse_nanos`.
    Clock,
    /// The system clock's ticker, read directly.
    System,
}

impl CoarseSource {
    /// Read through the clock's [`coarse_nanos`](Clock::coarse_nanos).
    pub const CLOCK: CoarseSource = CoarseSource(Source::Clock);

    /// The coarse time of `clock`, which must be the clock that answered this source.
    #[inline]
    pub fn read(self, clock: &dyn Clock) -> u64 {
        match self.0 {
            Source::System => system_coarse_nanos(),
            Source::Clock => clock.coarse_nanos(),
        }
    }
}

/// The origin of the default [`Clock::now_nanos`]: `Instant` arithmetic saturates below it.
static PROCESS_ORIGIN: LazyLock<Instant> = LazyLock::new(|| {
    // Far enough in the past that any clock's `now()` after start-up lies beyond it.
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(86_400 * 365))
        .unwrap_or(now)
});

/// Nanoseconds from `earlier` to `later`, saturating at zero and at `u64::MAX`.
#[inline]
pub fn nanos_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_nanos()).unwrap_or(u64::MAX)
}

static SYSTEM: LazyLock<SharedClock> = LazyLock::new(|| Arc::new(SystemClock));

/// The process-wide [`SystemClock`] as a [`SharedClock`].
pub fn system() -> SharedClock {
    SYSTEM.clone()
}

/// The real clock: the CPU's time-stamp counter (via `quanta`) for reading and tokio's timer for
/// sleeping.
///
/// `Instant::now()` costs about 24 ns on a typical VM (a `clock_gettime` through the vDSO); the
/// calibrated TSC costs about 9 ns, which matters on paths that read the clock on every call
/// (rate limiters, time-windowed breakers). Readings are anchored to one `std::time::Instant`
/// taken at first use, so they are ordinary `Instant`s. Where no stable TSC exists `quanta` falls
/// back to the OS monotonic clock.
///
/// Its [`coarse_nanos`](Clock::coarse_nanos) is one relaxed load of a time that a background
/// thread, `ferrule-clock`, stores every [`COARSE_TICK`] (started by the first coarse read; it
/// costs a hundred short wake-ups a second and lives as long as the process). A coarse
/// reading therefore lags the exact time by at most one tick — or by however late the OS runs
/// that thread on an overloaded machine. If the thread cannot be started, coarse reads are
/// exact reads.
///
/// Sleeping requires a tokio runtime with the time driver enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// How often the system clock's coarse time is refreshed, hence how far
/// [`SystemClock`]'s [`coarse_nanos`](Clock::coarse_nanos) lags behind its exact time.
///
/// Ten milliseconds: the coarse time serves spans of a second or more (slow-call thresholds,
/// open periods), where it is an error of 1 % or less. A shorter tick would cost more than it
/// saves: the ticker's wake-ups (a hundred a second, a few microseconds each) are context
/// switches of the process at every load, idle included.
pub const COARSE_TICK: Duration = Duration::from_millis(10);

/// The system clock's coarse time, in [`SystemClock::now_nanos`](Clock::now_nanos) units;
/// 0 before the first coarse read, and for good if the ticker could not be started.
static COARSE: AtomicU64 = AtomicU64::new(0);

/// Starts the ticker once.
static TICKER: Once = Once::new();

/// [`SystemClock`]'s coarse time.
#[inline]
fn system_coarse_nanos() -> u64 {
    match COARSE.load(Ordering::Relaxed) {
        0 => coarse_before_first_tick(),
        nanos => nanos,
    }
}

/// The first coarse read: stores the time and starts the ticker. Also every coarse read if the
/// ticker could not be started: those answer exactly.
#[cold]
#[inline(never)]
fn coarse_before_first_tick() -> u64 {
    TICKER.call_once(|| {
        // The time is there at once, not only once the new thread first runs (which can take
        // a while on a loaded machine). `max(1)`: 0 means "no coarse time".
        COARSE.store(SystemClock.now_nanos().max(1), Ordering::Relaxed);
        // The default stack size, on purpose: with a 64 KiB stack the relay's debug binary
        // died of SIGSEGV as this thread started (its stack untouched is only address space).
        let started = std::thread::Builder::new()
            .name("ferrule-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    // The only writer from now on; the TSC only moves forward, so its stores
                    // never go backwards.
                    COARSE.store(SystemClock.now_nanos(), Ordering::Relaxed);
                }
            });
        if started.is_err() {
            // No ticker: every coarse read stays an exact read.
            COARSE.store(0, Ordering::Relaxed);
        }
    });
    // The stored time, not a newer exact one: the next coarse read returns the stored time
    // again, and coarse time must not go backwards.
    match COARSE.load(Ordering::Relaxed) {
        0 => SystemClock.now_nanos(),
        nanos => nanos,
    }
}

struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    instant: Instant,
}

static ANCHOR: LazyLock<Anchor> = LazyLock::new(|| {
    let clock = quanta::Clock::new();
    Anchor {
        raw: clock.raw(),
        instant: Instant::now(),
        clock,
    }
});

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        let anchor = &*ANCHOR;
        let nanos = anchor.clock.delta_as_nanos(anchor.raw, anchor.clock.raw());
        anchor.instant + Duration::from_nanos(nanos)
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        let anchor = &*ANCHOR;
        anchor.clock.delta_as_nanos(anchor.raw, anchor.clock.raw())
    }

    #[inline]
    fn coarse_nanos(&self) -> u64 {
        system_coarse_nanos()
    }

    #[inline]
    fn coarse_source(&self) -> CoarseSource {
        CoarseSource(Source::System)
    }

    #[inline]
    fn coarse_resolution(&self) -> Duration {
        COARSE_TICK
    }

    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }

    #[inline]
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::tokio(duration)
    }
}

pin_project! {
    /// The future returned by [`Clock::sleep`].
    ///
    /// It is a concrete type so that policies can hold it inline (no allocation for the
    /// system clock); custom clocks may wrap any future with [`Sleep::from_future`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Sleep {
        #[pin]
        inner: SleepInner,
    }
}

pin_project! {
    #[project = SleepProj]
    enum SleepInner {
        Tokio { #[pin] sleep: tokio::time::Sleep },
        Manual { clock: Arc<ManualInner>, deadline: Duration, key: Option<u64> },
        Boxed { future: Pin<Box<dyn Future<Output = ()> + Send>> },
    }

    impl PinnedDrop for SleepInner {
        fn drop(this: Pin<&mut Self>) {
            if let SleepProj::Manual { clock, key: Some(key), .. } = this.project() {
                clock.sleepers().remove(key);
            }
        }
    }
}

impl Sleep {
    /// A sleep on tokio's timer.
    pub fn tokio(duration: Duration) -> Self {
        Sleep {
            inner: SleepInner::Tokio {
                sleep: tokio::time::sleep(duration),
            },
        }
    }

    /// A sleep backed by any future (for custom [`Clock`] implementations).
    pub fn from_future(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Sleep {
            inner: SleepInner::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            SleepInner::Tokio { .. } => "tokio",
            SleepInner::Manual { .. } => "manual",
            SleepInner::Boxed { .. } => "boxed",
        };
        f.debug_struct("Sleep").field("kind", &kind).finish()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        match self.project().inner.project() {
            SleepProj::Tokio { sleep } => sleep.poll(cx),
            SleepProj::Boxed { future } => future.as_mut().poll(cx),
            SleepProj::Manual {
                clock,
                deadline,
                key,
            } => {
                let mut sleepers = clock.sleepers();
                if clock.elapsed() >= *deadline {
                    if let Some(key) = key.take() {
                        sleepers.remove(&key);
                    }
                    return Poll::Ready(());
                }
                let key =
                    *key.get_or_insert_with(|| clock.next_key.fetch_add(1, Ordering::Relaxed));
                sleepers.insert(key, (*deadline, cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// A clock that only moves when told to: deterministic tests of time-dependent policies.
///
/// Cloning gives another handle to the same clock.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - start, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    origin: Instant,
    system_origin: SystemTime,
    offset_nanos: AtomicU64,
    next_key: AtomicU64,
    /// Pending sleeps: key → (deadline as offset from origin, waker).
    sleepers: Mutex<BTreeMap<u64, (Duration, Waker)>>,
}

impl Default for ManualInner {
    fn default() -> Self {
        ManualInner {
            origin: Instant::now(),
            // 2026-01-01T00:00:00Z: a fixed wall clock keeps HTTP-date tests reproducible.
            system_origin: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            offset_nanos: AtomicU64::new(0),
            next_key: AtomicU64::new(0),
            sleepers: Mutex::new(BTreeMap::new()),
        }
    }
}

impl fmt::Debug for ManualInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualInner")
            .field("elapsed", &self.elapsed())
            .field("sleepers", &self.sleepers().len())
            .finish()
    }
}

impl ManualInner {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire))
    }

    fn sleepers(&self) -> MutexGuard<'_, BTreeMap<u64, (Duration, Waker)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.sleepers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ManualClock {
    /// A new clock at time zero whose wall clock reads 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new clock whose wall clock starts at `system_time`.
    pub fn with_system_time(system_time: SystemTime) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                system_origin: system_time,
                ..ManualInner::default()
            }),
        }
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// How far the clock has moved since it was created.
    pub fn elapsed(&self) -> Duration {
        self.inner.elapsed()
    }

    /// Moves time forward by `duration` and wakes every sleep that is now due.
    pub fn advance(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let mut sleepers = self.inner.sleepers();
        let previous = self.inner.offset_nanos.load(Ordering::Acquire);
        let now = previous.saturating_add(nanos);
        self.inner.offset_nanos.store(now, Ordering::Release);
        let now = Duration::from_nanos(now);
        let due: Vec<u64> = sleepers
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            if let Some((_, waker)) = sleepers.remove(&key) {
                waker.wake();
            }
        }
    }

    /// Time until the earliest pending sleep is due, if any sleep is pending.
    pub fn next_sleep_in(&self) -> Option<Duration> {
        let now = self.elapsed();
        self.inner
            .sleepers()
            .values()
            .map(|(deadline, _)| deadline.saturating_sub(now))
            .min()
    }

    /// Moves time forward to the earliest pending sleep and wakes it; returns how far time moved.
    pub fn advance_to_next_sleep(&self) -> Option<Duration> {
        let step = self.next_sleep_in()?;
        self.advance(step);
        Some(step)
    }

    /// Number of sleeps currently waiting on this clock.
    pub fn pending_sleeps(&self) -> usize {
        self.inner.sleepers().len()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.origin + self.elapsed()
    }

    fn now_nanos(&self) -> u64 {
        self.inner.offset_nanos.load(Ordering::Acquire)
    }

    fn system_now(&self) -> SystemTime {
        self.inner.system_origin + self.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline = self.elapsed().saturating_add(duration);
        Sleep {
            inner: SleepInner::Manual {
                clock: self.inner.clone(),
                deadline,
                key: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_completes_only_after_advance() {
        let clock = ManualClock::new();
        let sleep = clock.sleep(Duration::from_secs(10));
        let handle = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        assert_eq!(clock.pending_sleeps(), 1);
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        assert_eq!(clock.advance_to_next_sleep(), Some(Duration::from_secs(1)));
        handle.await.unwrap();
        assert_eq!(clock.pending_sleeps(), 0);
    }

    #[tokio::test]
    async fn dropped_manual_sleep_unregisters() {
        let clock = ManualClock::new();
        let handle = tokio::spawn(clock.sleep(Duration::from_secs(1)));
        tokio::task::yield_now().await;
        assert_eq!(clock.pending_sleeps(), 1);
        handle.abort();
        let _ = handle.await;
        assert_eq!(clock.pending_sleeps(), 0);
    }

    #[tokio::test]
    async fn zero_sleep_is_ready_at_once() {
        let clock = ManualClock::new();
        clock.sleep(Duration::ZERO).await;
        assert_eq!(clock.pending_sleeps(), 0);
    }

    #[test]
    fn system_clock_tracks_std_instant() {
        let clock = SystemClock;
        let a = clock.now();
        let std_a = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = clock.now();
        let std_b = Instant::now();
        assert!(b > a);
        let ours = b - a;
        let std = std_b - std_a;
        let diff = ours.abs_diff(std);
        assert!(
            diff < Duration::from_millis(2),
            "ours {ours:?} vs std {std:?}"
        );
    }

    #[test]
    fn now_nanos_moves_with_now() {
        let manual = ManualClock::new();
        let before = manual.now_nanos();
        manual.advance(Duration::from_micros(7));
        assert_eq!(manual.now_nanos() - before, 7_000);

        let system = SystemClock;
        let (a, na) = (system.now(), system.now_nanos());
        std::thread::sleep(Duration::from_millis(3));
        let (b, nb) = (system.now(), system.now_nanos());
        let by_instant = nanos_between(a, b);
        assert!(
            by_instant.abs_diff(nb - na) < 1_000_000,
            "{by_instant} vs {}",
            nb - na
        );

        // The default, derived from `now()`, for clocks that do not override it.
        #[derive(Debug)]
        struct Plain(ManualClock);
        impl Clock for Plain {
            fn now(&self) -> Instant {
                self.0.now()
            }
            fn system_now(&self) -> SystemTime {
                self.0.system_now()
            }
            fn sleep(&self, duration: Duration) -> Sleep {
                self.0.sleep(duration)
            }
        }
        let plain = Plain(ManualClock::new());
        let before = plain.now_nanos();
        plain.0.advance(Duration::from_nanos(1234));
        assert_eq!(plain.now_nanos() - before, 1234);
    }

    #[test]
    fn system_coarse_time_never_runs_ahead_and_keeps_moving() {
        let clock = SystemClock;
        assert_eq!(clock.coarse_resolution(), COARSE_TICK);
        let source = clock.coarse_source();
        assert_ne!(source, CoarseSource::CLOCK);
        let first = clock.coarse_nanos();
        assert!(first <= clock.now_nanos());
        // The ticker moves it on; poll with a deadline, a loaded machine may run it late.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let coarse = source.read(&clock);
            let exact = clock.now_nanos();
            assert!(coarse <= exact, "coarse {coarse} ahead of exact {exact}");
            assert!(coarse >= first, "coarse went back: {coarse} < {first}");
            if coarse >= first + 2 * 1_000_000 {
                break;
            }
            assert!(Instant::now() < deadline, "the coarse time did not move");
            std::thread::sleep(COARSE_TICK);
        }
    }

    #[test]
    fn manual_coarse_time_is_its_exact_time() {
        let clock = ManualClock::new();
        assert_eq!(clock.coarse_resolution(), Duration::ZERO);
        assert_eq!(clock.coarse_source(), CoarseSource::CLOCK);
        clock.advance(Duration::from_nanos(1_234_567));
        assert_eq!(clock.coarse_nanos(), clock.now_nanos());
        assert_eq!(clock.coarse_source().read(&clock), 1_234_567);
    }

    #[test]
    fn wall_clock_moves_with_monotonic_clock() {
        let clock = ManualClock::new();
        let before = clock.system_now();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            clock.system_now().duration_since(before).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
