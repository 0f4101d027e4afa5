//! The circuit breaker itself: an atomic state word, the sliding window, permits and status.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::BreakerConfig;
use super::tally::{Count, Tally};
use super::window::{Sample, SlidingWindow, Totals};
use super::{CircuitOpen, CircuitState};
use crate::classify::{Classify, ErrorsAreTransient, Outcome};
use crate::clock::CoarseSource;
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::Error;
use crate::event::Event;

// The state word packs everything a transition must change atomically:
// bits 0..16 probes in flight, 16..32 probe successes, 32..35 state, 35..64 generation.
// The generation grows on every transition, so a permit from an earlier period is recognised
// (and ignored) when it is recorded.
const PROBE_ONE: u64 = 1;
const SUCCESS_SHIFT: u32 = 16;
const STATE_SHIFT: u32 = 32;
const GEN_SHIFT: u32 = 35;
const FIELD16: u64 = 0xffff;
const GEN_MASK: u32 = (1 << (64 - GEN_SHIFT)) - 1;

#[inline]
fn pack(generation: u32, state: CircuitState, probes: u32, successes: u32) -> u64 {
    (u64::from(generation & GEN_MASK) << GEN_SHIFT)
        | (state_code(state) << STATE_SHIFT)
        | ((u64::from(successes) & FIELD16) << SUCCESS_SHIFT)
        | (u64::from(probes) & FIELD16)
}

#[inline]
fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

#[inline]
fn probes(word: u64) -> u32 {
    (word & FIELD16) as u32
}

#[inline]
fn successes(word: u64) -> u32 {
    ((word >> SUCCESS_SHIFT) & FIELD16) as u32
}

#[inline]
fn state_code(state: CircuitState) -> u64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::Disabled => 4,
    }
}

#[inline]
fn state_of(word: u64) -> CircuitState {
    match (word >> STATE_SHIFT) & 0b111 {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        3 => CircuitState::ForcedOpen,
        _ => CircuitState::Disabled,
    }
}

/// `true` when both words belong to the same state period (same generation).
#[inline]
fn same_period(a: u64, b: u64) -> bool {
    generation(a) == generation(b)
}

#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Keeps a hot atomic on its own cache line(s) so that writers do not slow down readers of
/// the state word.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The config, pre-digested for the hot path.
#[derive(Debug)]
struct Settings {
    min_calls: u64,
    failure_rate: f64,
    slow_call_rate: f64,
    slow_call_duration: Option<Duration>,
    /// `slow_call_duration` in nanoseconds (`u64::MAX` when off).
    slow_call_nanos: u64,
    consecutive_failures: u32,
    open_for: Duration,
    open_backoff: f64,
    max_open_for: Option<Duration>,
    half_open_probes: u32,
    half_open_successes: u32,
    permanent_is_failure: bool,
    /// Whether calls are timed on the clock's coarse time (see [`COARSE_TIMING_FACTOR`]).
    coarse_timing: bool,
    /// Where the clock's coarse time is read from.
    coarse: CoarseSource,
}

/// Slow calls are timed on the clock's [coarse time](crate::Clock::coarse_nanos) when the
/// threshold is at least this many times the coarse resolution, so the timing error is at most
/// 1 % of the threshold (with the system clock: thresholds of 1 s and more, among them the
/// default 10 s). Shorter thresholds are timed exactly, with two exact clock reads per call.
const COARSE_TIMING_FACTOR: u32 = 100;

/// Bookkeeping changed only by transitions (under the mutex).
#[derive(Debug)]
struct Book {
    /// The wait of the current (or next) open period.
    open_wait: Duration,
}

/// The shared state behind every clone of a [`CircuitBreaker`].
struct Inner {
    /// The state word (see `pack`); read on every call, written on transitions and probes.
    word: Padded<AtomicU64>,
    /// When the open period ends, in nanoseconds since `origin`. Written before the state word
    /// publishes `Open`, read after it is seen.
    open_until: AtomicU64,
    /// When `open_until` was last set, in nanoseconds since `origin` on the exact clock:
    /// a floor for the coarse time of the open-period checks (see
    /// [`open_elapsed`](Inner::open_elapsed)). Written with `open_until`.
    open_set_at: AtomicU64,
    transitions: AtomicU64,
    /// Calls admitted and rejected.
    tally: Tally,
    consecutive: Padded<AtomicU32>,
    window: SlidingWindow,
    book: Mutex<Book>,
    settings: Settings,
    config: BreakerConfig,
    origin: Instant,
    /// The same moment as `origin`, on the clock's [`now_nanos`](crate::Clock::now_nanos) scale.
    origin_nanos: u64,
    ctx: Context,
}

/// A circuit breaker: stops calling a dependency that keeps failing, then lets a few probe
/// calls decide when to trust it again.
///
/// Cloning is cheap and every clone shares the same state, so one breaker can guard many
/// pipelines and tasks. The hot path takes no lock and, in the steady state, writes no shared
/// memory: when closed, admitting a call is one atomic load plus this thread's own counter;
/// recording a success into a count window already full of successes reads one word; other
/// records touch a ring slot and, only when the window's totals change, one packed counter.
///
/// Calls are timed for slow-call detection, and the open period's end is checked, on the
/// clock's [coarse time](crate::Clock::coarse_nanos): one relaxed load with the system clock,
/// which lags the exact time by up to [`COARSE_TICK`](crate::clock::COARSE_TICK) (10 ms). So a
/// slow-call verdict is right to within 10 ms (thresholds under 1 s are timed exactly
/// instead), and the first probe after an open period is admitted up to 10 ms late, never
/// early.
/// On a [`ManualClock`](crate::ManualClock) both are exact.
///
/// Under heavy concurrency the window's totals may be
/// momentarily approximate (never negative); transitions are decided by compare-and-swap on the
/// state word, so each happens — and emits [`Event::BreakerTransition`] — exactly once.
/// Transitions racing on different threads may reach the observer in a different order than
/// they happened.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, Window};
/// use ferrule_policy::{CircuitState, Outcome};
///
/// let breaker = CircuitBreaker::new(BreakerConfig {
///     window: Window::Count(4),
///     min_calls: 4,
///     failure_rate: 0.5,
///     ..BreakerConfig::default()
/// })?;
/// for outcome in [Outcome::Success, Outcome::Transient, Outcome::Success, Outcome::Transient] {
///     breaker.try_acquire()?.record(outcome);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert!(rejected.remaining.unwrap() <= Duration::from_secs(30));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.ctx.name())
            .field("state", &state_of(self.inner.word.load(Relaxed)))
            .field("config", &self.inner.config)
            .finish()
    }
}

/// How an admitted call was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Closed: the outcome goes to the window.
    Closed,
    /// Half-open: one of the probe slots.
    Probe,
    /// Disabled: nothing is recorded.
    Pass,
}

/// What a permit remembers about its admission, in two whole words.
///
/// On the happy path the ticket goes through memory (the `Result` that carries it), and a wide
/// load of fields that were stored one by one cannot be forwarded from those stores: the CPU
/// waits for them to reach the cache, which cost more than the rest of the happy path. Words
/// written and read whole are forwarded.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    /// `generation << 8 | done << 7 | kind code`.
    admission: u64,
    /// When the call started, on [`Inner::call_time`]; 0 unless slow calls are tracked.
    start: u64,
}

const DONE: u64 = 1 << 7;
const KIND_MASK: u64 = 0b11;

impl Ticket {
    #[inline]
    fn new(word: u64, kind: Kind, start: u64) -> Self {
        let code = match kind {
            Kind::Closed => 0,
            Kind::Probe => 1,
            Kind::Pass => 2,
        };
        Ticket {
            admission: (u64::from(generation(word)) << 8) | code,
            start,
        }
    }

    /// The generation of the period the call was admitted in.
    #[inline]
    fn generation(self) -> u32 {
        (self.admission >> 8) as u32
    }

    #[inline]
    fn kind(self) -> Kind {
        match self.admission & KIND_MASK {
            0 => Kind::Closed,
            1 => Kind::Probe,
            _ => Kind::Pass,
        }
    }

    /// Whether the outcome has been handled.
    #[inline]
    fn done(self) -> bool {
        self.admission & DONE != 0
    }

    #[inline]
    fn state(self) -> CircuitState {
        match self.kind() {
            Kind::Closed => CircuitState::Closed,
            Kind::Probe => CircuitState::HalfOpen,
            Kind::Pass => CircuitState::Disabled,
        }
    }
}

/// Admission of one call by [`CircuitBreaker::try_acquire`]; report how it went with
/// [`record`](Permit::record).
///
/// A permit dropped without `record` (e.g. the call was cancelled) counts as
/// [`Outcome::Ignored`] and frees its half-open probe slot.
#[must_use = "a permit dropped without `record` counts as Outcome::Ignored"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl Permit<'_> {
    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.inner.complete(&mut self.ticket, outcome);
    }

    /// The state the call was admitted in: `Closed`, `HalfOpen` (a probe) or `Disabled`.
    pub fn state(&self) -> CircuitState {
        self.ticket.state()
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.ticket.done() {
            self.inner.complete(&mut self.ticket, Outcome::Ignored);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.inner.ctx.name())
            .field("state", &self.ticket.state())
            .finish()
    }
}

/// A [`Permit`] that owns a handle to its breaker, for futures that must be `'static`
/// (e.g. in a `tower` service). Dropped without [`record`](OwnedPermit::record), it counts as
/// [`Outcome::Ignored`].
#[must_use = "a permit dropped without `record` counts as Outcome::Ignored"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl OwnedPermit {
    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.inner.complete(&mut self.ticket, outcome);
    }

    /// The state the call was admitted in: `Closed`, `HalfOpen` (a probe) or `Disabled`.
    pub fn state(&self) -> CircuitState {
        self.ticket.state()
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        if !self.ticket.done() {
            self.inner.complete(&mut self.ticket, Outcome::Ignored);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.inner.ctx.name())
            .field("state", &self.ticket.state())
            .finish()
    }
}

/// A serialisable snapshot of a breaker, for `/status` pages and dashboards.
///
/// Durations serialise as whole milliseconds, rounded up, under names that say so:
/// `remaining_open_ms` (`null` unless open) and `open_wait_ms`. A number a script can compare
/// beats a humane string such as `"26s 846ms 607us 469ns"`, and rounding up never shows an
/// open circuit with 0 ms left.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// The breaker's name (from its [`Context`]).
    pub name: String,
    /// The current state.
    pub state: CircuitState,
    /// Failed calls as a share of the calls in the window (0 when empty).
    pub failure_rate: f64,
    /// Slow calls as a share of the calls in the window (0 when empty).
    pub slow_call_rate: f64,
    /// Calls in the sliding window.
    pub calls: u64,
    /// Failed calls in the sliding window.
    pub failed_calls: u64,
    /// Slow calls in the sliding window.
    pub slow_calls: u64,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Time left before a probe may run, when open (serialised as `remaining_open_ms`).
    #[serde(rename = "remaining_open_ms", serialize_with = "millis::option")]
    pub remaining_open: Option<Duration>,
    /// The wait of the current open period, or of the next one when not open (serialised as
    /// `open_wait_ms`).
    #[serde(rename = "open_wait_ms", serialize_with = "millis::one")]
    pub open_wait: Duration,
    /// Probe calls currently running (half-open only).
    pub probes_in_flight: u32,
    /// Calls admitted since the breaker was built.
    pub total_calls: u64,
    /// Calls rejected since the breaker was built.
    pub total_rejected: u64,
    /// State transitions since the breaker was built.
    pub total_transitions: u64,
}

/// Durations as whole milliseconds, rounded up, for [`BreakerStatus`].
mod millis {
    use std::time::Duration;

    use serde::Serializer;

    fn ceil(d: Duration) -> u64 {
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    pub(super) fn one<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(ceil(*d))
    }

    pub(super) fn option<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&ceil(*d)),
            None => s.serialize_none(),
        }
    }
}

impl CircuitBreaker {
    /// A breaker with the default [`Context`] (system clock, no observer).
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A breaker that reads time from `ctx`'s clock and reports events to its observer.
    pub fn with_context(config: BreakerConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        let settings = Settings {
            min_calls: u64::from(config.min_calls),
            failure_rate: config.failure_rate,
            slow_call_rate: config.slow_call_rate,
            slow_call_duration: config.slow_call_duration,
            slow_call_nanos: config.slow_call_duration.map_or(u64::MAX, nanos),
            consecutive_failures: config.consecutive_failures.unwrap_or(0),
            open_for: config.open_for,
            open_backoff: config.open_backoff,
            max_open_for: config.max_open_for,
            half_open_probes: config.half_open_probes,
            half_open_successes: config.half_open_successes,
            permanent_is_failure: config.permanent_is_failure,
            coarse_timing: config.slow_call_duration.is_some_and(|limit| {
                ctx.clock()
                    .coarse_resolution()
                    .checked_mul(COARSE_TIMING_FACTOR)
                    .is_some_and(|least| limit >= least)
            }),
            coarse: ctx.clock().coarse_source(),
        };
        let origin_nanos = ctx.clock().now_nanos();
        let origin = ctx.clock().now();
        Ok(CircuitBreaker {
            inner: Arc::new(Inner {
                word: Padded(AtomicU64::new(pack(0, CircuitState::Closed, 0, 0))),
                open_until: AtomicU64::new(0),
                open_set_at: AtomicU64::new(0),
                transitions: AtomicU64::new(0),
                tally: Tally::default(),
                consecutive: Padded(AtomicU32::new(0)),
                window: SlidingWindow::new(config.window),
                book: Mutex::new(Book {
                    open_wait: config.open_for,
                }),
                settings,
                config,
                origin,
                origin_nanos,
                ctx,
            }),
        })
    }

    /// The configuration the breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// The breaker's name (from its [`Context`]).
    pub fn name(&self) -> &str {
        self.inner.ctx.name()
    }

    /// Admits a call, or rejects it with the state that refused it and the time left.
    ///
    /// Open → half-open happens here, lazily, once the open wait has passed. Half-open admits
    /// at most `half_open_probes` calls at once; the next is rejected with
    /// `remaining: Some(Duration::ZERO)`. Forced open rejects with `remaining: None`.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, CircuitOpen> {
        let ticket = self.inner.acquire()?;
        Ok(Permit {
            inner: &self.inner,
            ticket,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit holds its own handle to the
    /// breaker (one reference-count increment), so it can live in a `'static` future.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, CircuitOpen> {
        let ticket = self.inner.acquire()?;
        Ok(OwnedPermit {
            inner: self.inner.clone(),
            ticket,
        })
    }

    /// The current state (moving from open to half-open if the wait has passed).
    pub fn state(&self) -> CircuitState {
        state_of(self.inner.refresh())
    }

    /// Time left before the circuit admits a probe: `Some` only while `Open`.
    pub fn remaining_open(&self) -> Option<Duration> {
        let word = self.inner.refresh();
        (state_of(word) == CircuitState::Open)
            .then(|| self.inner.remaining(self.inner.open_elapsed()))
    }

    /// When the breaker may next admit a call, for schedulers that re-queue work instead of
    /// spending an attempt on a rejection: the end of the open wait while `Open`; now while
    /// closed, disabled or half-open (a busy half-open circuit frees a probe slot as soon as a
    /// probe finishes, which cannot be predicted); `None` while forced open (only an operator
    /// can close it) or when the wait is too long to represent as an [`Instant`].
    pub fn retry_at(&self) -> Option<Instant> {
        let word = self.inner.refresh();
        let now = self.inner.ctx.clock().now();
        match state_of(word) {
            CircuitState::ForcedOpen => None,
            CircuitState::Open => {
                let until = self.inner.open_until.load(Relaxed);
                self.inner.origin.checked_add(Duration::from_nanos(until))
            }
            CircuitState::Closed | CircuitState::HalfOpen | CircuitState::Disabled => Some(now),
        }
    }

    /// Closes the circuit: empties the window, forgets consecutive failures and sets the open
    /// wait back to `open_for`. Works from every state (including forced open and disabled).
    pub fn reset(&self) {
        self.inner.operator(CircuitState::Closed);
    }

    /// Opens the circuit until [`reset`](Self::reset): every call is rejected with
    /// `remaining: None`.
    pub fn force_open(&self) {
        self.inner.operator(CircuitState::ForcedOpen);
    }

    /// Switches the breaker off until [`reset`](Self::reset): every call is admitted and
    /// nothing is recorded.
    pub fn disable(&self) {
        self.inner.operator(CircuitState::Disabled);
    }

    /// Ends the open period now, so the next call is admitted as a half-open probe: for a
    /// health check that has just found the dependency answering, so deliveries resume without
    /// waiting out the rest of the open wait. Does nothing unless the circuit is `Open` (a
    /// forced-open or disabled breaker stays as the operator set it); answers whether it
    /// ended an open period.
    pub fn end_open_period(&self) -> bool {
        let inner = &*self.inner;
        let _book = inner.book();
        if state_of(inner.word.load(Acquire)) != CircuitState::Open {
            return false;
        }
        // On the coarse time the open-state check reads, so the very next call sees it over.
        inner
            .open_until
            .fetch_min(nanos(inner.open_elapsed()), Relaxed);
        true
    }

    /// Keeps an `Open` circuit open for at least `at_least` from now: for a health check that
    /// has just found the dependency still failing, so no delivery is spent as a probe before
    /// the next check. Never shortens the open period; does nothing in any other state;
    /// answers whether the circuit was open.
    pub fn extend_open_period(&self, at_least: Duration) -> bool {
        let inner = &*self.inner;
        let _book = inner.book();
        if state_of(inner.word.load(Acquire)) != CircuitState::Open {
            return false;
        }
        let now = nanos(inner.elapsed());
        inner.open_set_at.fetch_max(now, Relaxed);
        inner
            .open_until
            .fetch_max(now.saturating_add(nanos(at_least)), Relaxed);
        true
    }

    /// Opens the circuit for at least `at_least` from now, whatever it is doing (closed, open
    /// or half-open, whose probes are then released): for a circuit shared by several
    /// processes, when another one has opened it. Never shortens an open period; does nothing
    /// to a forced-open or disabled breaker. Answers whether the circuit is open afterwards.
    ///
    /// A closed or half-open circuit moves to `Open` (observers see the transition); its open
    /// wait is the usual one or `at_least`, whichever ends later.
    pub fn hold_open(&self, at_least: Duration) -> bool {
        let inner = &*self.inner;
        loop {
            let word = inner.word.load(Acquire);
            match state_of(word) {
                CircuitState::ForcedOpen | CircuitState::Disabled => return false,
                CircuitState::Open => {
                    if self.extend_open_period(at_least) {
                        return true;
                    }
                }
                CircuitState::Closed | CircuitState::HalfOpen => {
                    if inner.transition(word, CircuitState::Open, false).is_ok() {
                        self.extend_open_period(at_least);
                        return true;
                    }
                }
            }
        }
    }

    /// The state without the lazy open → half-open check.
    #[cfg(test)]
    pub(crate) fn raw_state(&self) -> CircuitState {
        self.inner.raw_state()
    }

    /// A serialisable snapshot of the breaker.
    pub fn status(&self) -> BreakerStatus {
        let inner = &*self.inner;
        let word = inner.refresh();
        let elapsed = inner.elapsed();
        let state = state_of(word);
        let totals: Totals = inner.window.totals(elapsed);
        let open_wait = inner.book().open_wait;
        BreakerStatus {
            name: inner.ctx.name().to_owned(),
            state,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_rate(),
            calls: totals.calls,
            failed_calls: totals.failures,
            slow_calls: totals.slow,
            consecutive_failures: inner.consecutive.load(Relaxed),
            remaining_open: (state == CircuitState::Open)
                .then(|| inner.remaining(inner.open_elapsed())),
            open_wait,
            probes_in_flight: if state == CircuitState::HalfOpen {
                probes(word)
            } else {
                0
            },
            total_calls: inner.tally.total(Count::Admitted),
            total_rejected: inner.tally.total(Count::Rejected),
            total_transitions: inner.transitions.load(Relaxed),
        }
    }

    /// Runs `op` once if the circuit admits it; `Ok` is a success, every `Err` a failure.
    ///
    /// A rejection is `Err(Error::from(CircuitOpen))`. The operation's result is returned as
    /// is: the breaker only observes it.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(&ErrorsAreTransient, op).await
    }

    /// Runs `op` once if the circuit admits it and records the outcome `classifier` assigns.
    ///
    /// An `Ok` the classifier judges a failure is still returned as `Ok` (the breaker only
    /// observes). If the returned future is dropped before `op` finishes, the call counts as
    /// [`Outcome::Ignored`].
    ///
    /// ```
    /// use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker};
    /// use ferrule_policy::Outcome;
    ///
    /// # tokio_test_block(async {
    /// let breaker = CircuitBreaker::new(BreakerConfig::default()).unwrap();
    /// let status_code = |r: &Result<u16, ()>| match r {
    ///     Ok(code) if *code >= 500 => Outcome::Transient,
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Transient,
    /// };
    /// let reply = breaker.call_classified(&status_code, || async { Ok::<_, ()>(503) }).await;
    /// assert_eq!(reply.unwrap(), 503);
    /// assert_eq!(breaker.status().failed_calls, 1);
    /// # });
    /// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub async fn call_classified<T, E, F, Fut>(
        &self,
        classifier: &impl Classify<T, E>,
        mut op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = op().await;
        permit.record(classifier.classify(&result));
        result.map_err(Error::inner)
    }
}

impl Inner {
    #[inline]
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book holds plain values: a panic elsewhere cannot leave it inconsistent.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the breaker was built, on its clock.
    #[inline]
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(
            self.ctx
                .clock()
                .now_nanos()
                .saturating_sub(self.origin_nanos),
        )
    }

    /// Time since the breaker was built, for the checks of the open period's end: the clock's
    /// coarse time, raised to `open_set_at` when it lags behind that. Never ahead of
    /// [`elapsed`](Self::elapsed), behind it by at most the coarse resolution.
    ///
    /// So the open-state rejection costs two relaxed loads instead of an exact clock read; the
    /// first probe is admitted at most one resolution late (never early: neither time runs
    /// ahead); and a rejection never reports more time left than the open period was given.
    #[inline]
    fn open_elapsed(&self) -> Duration {
        let coarse = self.coarse_now().saturating_sub(self.origin_nanos);
        Duration::from_nanos(coarse.max(self.open_set_at.load(Relaxed)))
    }

    /// The clock's coarse time.
    #[inline]
    fn coarse_now(&self) -> u64 {
        self.settings.coarse.read(&**self.ctx.clock())
    }

    /// The time a call's duration is measured on: the coarse time when the slow-call threshold
    /// is long enough for it (`coarse_timing`), else the exact time.
    #[inline]
    fn call_time(&self) -> u64 {
        if self.settings.coarse_timing {
            self.coarse_now()
        } else {
            self.ctx.clock().now_nanos()
        }
    }

    /// Time left in the open period at `elapsed`.
    #[inline]
    fn remaining(&self, elapsed: Duration) -> Duration {
        let until = self.open_until.load(Relaxed);
        Duration::from_nanos(until.saturating_sub(nanos(elapsed)))
    }

    /// Admits or rejects a call. The closed case is inlined into the caller: returned through
    /// memory from a call, the ticket's fields (stored one by one) are read back as one wide load
    /// the CPU cannot forward from those stores, a stall that cost more than the rest of the
    /// happy path.
    #[inline(always)]
    fn acquire(&self) -> Result<Ticket, CircuitOpen> {
        let word = self.word.load(Acquire);
        if state_of(word) == CircuitState::Closed {
            self.closed_ticket(word)
        } else {
            self.acquire_other(word)
        }
    }

    #[inline(always)]
    fn closed_ticket(&self, word: u64) -> Result<Ticket, CircuitOpen> {
        self.tally.add(Count::Admitted);
        Ok(Ticket::new(word, Kind::Closed, self.start()))
    }

    /// [`acquire`](Self::acquire) in every state but closed (or when the state changes under
    /// it).
    #[inline(never)]
    fn acquire_other(&self, mut word: u64) -> Result<Ticket, CircuitOpen> {
        loop {
            match state_of(word) {
                CircuitState::Closed => return self.closed_ticket(word),
                CircuitState::Disabled => {
                    self.tally.add(Count::Admitted);
                    return Ok(Ticket::new(word, Kind::Pass, 0));
                }
                CircuitState::ForcedOpen => {
                    return Err(self.reject(CircuitState::ForcedOpen, None));
                }
                CircuitState::Open => {
                    let remaining = self.remaining(self.open_elapsed());
                    if !remaining.is_zero() {
                        return Err(self.reject(CircuitState::Open, Some(remaining)));
                    }
                    match self.transition(word, CircuitState::HalfOpen, true) {
                        Ok(new) => return Ok(self.probe_ticket(new)),
                        Err(current) => word = current,
                    }
                }
                CircuitState::HalfOpen => {
                    if probes(word) >= self.settings.half_open_probes {
                        return Err(self.reject(CircuitState::HalfOpen, Some(Duration::ZERO)));
                    }
                    match self
                        .word
                        .compare_exchange_weak(word, word + PROBE_ONE, AcqRel, Acquire)
                    {
                        Ok(_) => return Ok(self.probe_ticket(word)),
                        Err(current) => word = current,
                    }
                }
            }
        }
    }

    /// The call's start time, read only when slow-call tracking needs it (else 0).
    #[inline]
    fn start(&self) -> u64 {
        if self.settings.slow_call_duration.is_some() {
            self.call_time()
        } else {
            0
        }
    }

    fn probe_ticket(&self, word: u64) -> Ticket {
        self.tally.add(Count::Admitted);
        Ticket::new(word, Kind::Probe, self.start())
    }

    #[cold]
    fn reject(&self, state: CircuitState, remaining: Option<Duration>) -> CircuitOpen {
        self.tally.add(Count::Rejected);
        self.ctx.emit(Event::BreakerRejected {
            name: self.ctx.name(),
            state,
            remaining,
        });
        CircuitOpen { state, remaining }
    }

    /// The state word after the lazy open → half-open check.
    fn refresh(&self) -> u64 {
        let word = self.word.load(Acquire);
        if state_of(word) == CircuitState::Open && self.remaining(self.open_elapsed()).is_zero() {
            match self.transition(word, CircuitState::HalfOpen, false) {
                Ok(new) | Err(new) => new,
            }
        } else {
            word
        }
    }

    /// Handles an admitted call's outcome (once per ticket).
    #[inline]
    fn complete(&self, ticket: &mut Ticket, outcome: Outcome) {
        ticket.admission |= DONE;
        // By value: a reference would keep the ticket in memory.
        match ticket.kind() {
            Kind::Closed => self.record_closed(ticket.generation(), ticket.start, outcome),
            Kind::Probe => self.record_probe(ticket.generation(), ticket.start, outcome),
            Kind::Pass => {}
        }
    }

    /// Classifies `outcome` for the window: `None` for ignored, else whether it failed.
    #[inline]
    fn failed(&self, outcome: Outcome) -> Option<bool> {
        match outcome {
            Outcome::Success => Some(false),
            Outcome::Transient | Outcome::RetryAfter(_) => Some(true),
            Outcome::Permanent => Some(self.settings.permanent_is_failure),
            Outcome::Ignored => None,
        }
    }

    /// Whether the call that started at `start` (on [`call_time`](Self::call_time)) and
    /// ends now was slow; reads the time only when slow calls are tracked.
    #[inline]
    fn slow(&self, start: u64) -> bool {
        self.settings.slow_call_duration.is_some()
            && self.call_time().saturating_sub(start) >= self.settings.slow_call_nanos
    }

    #[inline]
    fn record_closed(&self, admitted_in: u32, start: u64, outcome: Outcome) {
        let Some(failure) = self.failed(outcome) else {
            return;
        };
        let slow = self.slow(start);
        let word = self.word.load(Acquire);
        if generation(word) != admitted_in {
            return; // the circuit has moved on since this call was admitted
        }
        let mut trip = false;
        if failure {
            let run = self
                .consecutive
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1)))
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let limit = self.settings.consecutive_failures;
            trip = limit != 0 && run >= limit;
        } else if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        let elapsed = if self.window.needs_time() {
            self.elapsed()
        } else {
            Duration::ZERO
        };
        if let Some(totals) = self.window.record(Sample { failure, slow }, elapsed) {
            trip = trip || self.should_trip(&totals);
        }
        if trip {
            self.trip(word);
        }
    }

    #[inline]
    fn should_trip(&self, totals: &Totals) -> bool {
        let s = &self.settings;
        totals.calls >= s.min_calls
            && ((totals.failures > 0 && totals.failure_rate() >= s.failure_rate)
                || (totals.slow > 0 && totals.slow_rate() >= s.slow_call_rate))
    }

    #[cold]
    fn trip(&self, word: u64) {
        let _ = self.transition(word, CircuitState::Open, false);
    }

    fn record_probe(&self, admitted_in: u32, start: u64, outcome: Outcome) {
        let verdict = match self.failed(outcome) {
            None => None,
            Some(true) => Some(false),
            Some(false) => Some(!self.slow(start)),
        };
        let mut word = self.word.load(Acquire);
        loop {
            if generation(word) != admitted_in || probes(word) == 0 {
                return; // a transition already released every probe slot of this period
            }
            let next = match verdict {
                // Ignored: free the slot without counting.
                None => word - PROBE_ONE,
                // A failed (or slow) probe re-opens the circuit.
                Some(false) => {
                    let _ = self.transition(word, CircuitState::Open, false);
                    return;
                }
                Some(true) => {
                    if successes(word) + 1 >= self.settings.half_open_successes {
                        let _ = self.transition(word, CircuitState::Closed, false);
                        return;
                    }
                    word - PROBE_ONE + (1 << SUCCESS_SHIFT)
                }
            };
            match self.word.compare_exchange_weak(word, next, AcqRel, Acquire) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// The new open wait after a failed probe: multiplied by `open_backoff`, capped.
    fn grown_wait(&self, wait: Duration) -> Duration {
        let s = &self.settings;
        let grown = if s.open_backoff > 1.0 {
            Duration::try_from_secs_f64(wait.as_secs_f64() * s.open_backoff)
                .unwrap_or(Duration::MAX)
        } else {
            wait
        };
        match s.max_open_for {
            Some(cap) => grown.min(cap),
            None => grown,
        }
    }

    /// Moves from the period of `from` to `to`, unless another thread already left that
    /// period. Returns the new word, or the current one when the transition did not happen.
    ///
    /// Every change of generation and state goes through here, under the book's mutex, so the
    /// bookkeeping of one transition cannot interleave with another's; the lock-free probe
    /// updates only touch the counters, hence the CAS loop.
    fn transition(&self, from: u64, to: CircuitState, claim_probe: bool) -> Result<u64, u64> {
        let mut book = self.book();
        let mut current = self.word.load(Acquire);
        if !same_period(current, from) {
            return Err(current);
        }
        let previous = state_of(current);
        match to {
            CircuitState::Open => {
                if previous == CircuitState::HalfOpen {
                    book.open_wait = self.grown_wait(book.open_wait);
                }
                let now = nanos(self.elapsed());
                self.open_set_at.fetch_max(now, Relaxed);
                self.open_until
                    .store(now.saturating_add(nanos(book.open_wait)), Relaxed);
            }
            CircuitState::Closed => {
                self.window.clear();
                self.consecutive.store(0, Relaxed);
                book.open_wait = self.settings.open_for;
            }
            CircuitState::HalfOpen | CircuitState::ForcedOpen | CircuitState::Disabled => {}
        }
        let next = pack(
            generation(current).wrapping_add(1),
            to,
            u32::from(claim_probe),
            0,
        );
        while let Err(now) = self.word.compare_exchange(current, next, AcqRel, Acquire) {
            // Only probe counters change outside the lock; the period is still ours.
            current = now;
        }
        drop(book);
        self.transitions.fetch_add(1, Relaxed);
        self.ctx.emit(Event::BreakerTransition {
            name: self.ctx.name(),
            from: previous,
            to,
        });
        Ok(next)
    }

    /// The state without the lazy open → half-open check (tests compare it with a model).
    #[cfg(test)]
    pub(crate) fn raw_state(&self) -> CircuitState {
        state_of(self.word.load(Acquire))
    }

    /// An operator's command: move to `to` from whatever state the breaker is in.
    fn operator(&self, to: CircuitState) {
        loop {
            let word = self.word.load(Acquire);
            if state_of(word) == to {
                if to == CircuitState::Closed {
                    // Already closed: still start afresh, without a transition.
                    let mut book = self.book();
                    self.window.clear();
                    self.consecutive.store(0, Relaxed);
                    book.open_wait = self.settings.open_for;
                }
                return;
            }
            if self.transition(word, to, false).is_ok() {
                return;
            }
        }
    }
}
