//! The [`Retry`] policy: decisions, the pipeline primitives, and the standalone call loop.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::budget::Budget;
use super::config::{Backoff, BudgetConfig, Jitter, RetryConfig};
use crate::classify::{Classify, ErrorsAreTransient, Outcome};
use crate::error::{Error, ErrorKind};
use crate::event::{self, Event};
use crate::{ConfigError, Context};

/// Why the retry policy stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUpReason {
    /// The outcome was not retryable (permanent, or not a failure at all).
    Permanent,
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next attempt would start after `max_elapsed`.
    MaxElapsed,
    /// The retry budget is spent.
    Budget,
    /// The server asked to wait longer than `max_retry_after`.
    RetryAfterTooLong,
}

impl GiveUpReason {
    /// A short stable name, as in [`Event::RetryGaveUp`]: `permanent`, `max_attempts`,
    /// `max_elapsed`, `budget`, `retry_after_too_long`.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Permanent => "permanent",
            GiveUpReason::MaxAttempts => "max_attempts",
            GiveUpReason::MaxElapsed => "max_elapsed",
            GiveUpReason::Budget => "budget",
            GiveUpReason::RetryAfterTooLong => "retry_after_too_long",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryDecision {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: the failure is final.
    GiveUp(GiveUpReason),
}

impl RetryDecision {
    /// The delay, when the decision is to retry.
    pub fn delay(self) -> Option<Duration> {
        match self {
            RetryDecision::Retry(d) => Some(d),
            RetryDecision::GiveUp(_) => None,
        }
    }
}

/// What the `on_retry` hook is told before each sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryInfo {
    /// The attempt that just failed (1-based).
    pub attempt: u32,
    /// How long until the next attempt.
    pub delay: Duration,
    /// How the failed attempt was classified.
    pub outcome: Outcome,
}

/// The progress of one call through a [`Retry`]: attempts made, when it started, the last delay.
///
/// Made by [`Retry::start`] and advanced by [`Retry::on_failure`]; it lives on the caller's
/// stack, so the pipeline drives retries without allocating.
#[derive(Debug, Clone)]
pub struct RetryState {
    attempts: u32,
    started: Option<Instant>,
    prev: Option<Duration>,
    rng: Option<fastrand::Rng>,
}

impl RetryState {
    /// Attempts made so far, counting the one in progress (1 right after [`Retry::start`]).
    #[inline]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before the latest retry, if any.
    pub fn last_delay(&self) -> Option<Duration> {
        self.prev
    }
}

type OnRetry = Arc<dyn Fn(&RetryInfo) + Send + Sync>;

/// Retries failed calls with backoff and jitter, within attempt, time and budget limits,
/// never sooner than a `Retry-After` asks.
///
/// Cheap to clone: clones share the configuration and the retry budget.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::retry::{Jitter, Retry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let retry = Retry::exponential(Duration::from_millis(1), Duration::from_millis(5))
///     .jitter(Jitter::Full)
///     .max_attempts(4)
///     .build()
///     .unwrap();
///
/// let mut calls = 0;
/// let reply = retry
///     .call(|| {
///         calls += 1;
///         let failing = calls < 3;
///         async move { if failing { Err("busy") } else { Ok("done") } }
///     })
///     .await;
/// assert_eq!(reply.unwrap(), "done");
/// assert_eq!(calls, 3);
/// # }
/// ```
#[derive(Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryConfig,
    ctx: Context,
    budget: Option<Budget>,
    on_retry: Option<OnRetry>,
    seed: Option<u64>,
    /// Whether an observer other than the no-op one is installed: attempts are only timed
    /// (two clock reads) when someone listens.
    observed: bool,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("config", &self.inner.config)
            .field("ctx", &self.inner.ctx)
            .field("budget", &self.inner.budget)
            .field("on_retry", &self.inner.on_retry.is_some())
            .field("seed", &self.inner.seed)
            .finish()
    }
}

impl Retry {
    /// A retry policy from `config`, with the default context (system clock, no observer).
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A retry policy from `config`, reading time from and reporting events to `ctx`.
    pub fn with_context(config: RetryConfig, ctx: Context) -> Result<Self, ConfigError> {
        RetryBuilder::new(config).context(ctx).build()
    }

    /// A builder starting from the default configuration.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::new(RetryConfig::default())
    }

    /// A builder with exponential backoff: `base`, doubling, at most `cap`.
    pub fn exponential(base: Duration, cap: Duration) -> RetryBuilder {
        Self::builder().backoff(Backoff::Exponential {
            base,
            multiplier: 2.0,
            cap,
        })
    }

    /// A builder with linear backoff: `base`, then `step` more per retry, at most `cap`.
    pub fn linear(base: Duration, step: Duration, cap: Duration) -> RetryBuilder {
        Self::builder().backoff(Backoff::Linear { base, step, cap })
    }

    /// A builder with the same `delay` before every retry.
    pub fn fixed(delay: Duration) -> RetryBuilder {
        Self::builder().backoff(Backoff::Fixed { delay })
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.inner.config
    }

    /// The context (name, clock, observer).
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// What to do after attempt number `attempt` (1-based, the one that just failed) ended with
    /// `outcome`, given the delay used before it (`prev`, `None` after the first attempt).
    ///
    /// Pure: no clock, no budget, no events, so a durable scheduler can compute and store the
    /// next attempt time. It checks the outcome, `max_attempts` and `max_retry_after`; see
    /// [`Retry::next_delay_with_elapsed`] to also apply `max_elapsed`. A
    /// [`RetryAfter(d)`](Outcome::RetryAfter) outcome never gives a delay shorter than `d`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ferrule_policy::{Outcome, retry::{GiveUpReason, Jitter, Retry, RetryDecision}};
    ///
    /// let retry = Retry::fixed(Duration::from_secs(1)).jitter(Jitter::None).max_attempts(3).build()?;
    /// let mut rng = fastrand::Rng::new();
    /// let secs = |s| RetryDecision::Retry(Duration::from_secs(s));
    /// assert_eq!(retry.next_delay(1, Outcome::Transient, None, &mut rng), secs(1));
    /// assert_eq!(retry.next_delay(1, Outcome::RetryAfter(Duration::from_secs(9)), None, &mut rng), secs(9));
    /// assert_eq!(
    ///     retry.next_delay(3, Outcome::Transient, None, &mut rng),
    ///     RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    /// );
    /// # Ok::<_, ferrule_policy::ConfigError>(())
    /// ```
    pub fn next_delay(
        &self,
        attempt: u32,
        outcome: Outcome,
        prev: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> RetryDecision {
        self.inner.decide(attempt, outcome, prev, None, rng)
    }

    /// Like [`Retry::next_delay`], and also gives up with [`GiveUpReason::MaxElapsed`] when
    /// `elapsed` (time since the first attempt started) plus the delay would pass `max_elapsed`.
    pub fn next_delay_with_elapsed(
        &self,
        attempt: u32,
        outcome: Outcome,
        prev: Option<Duration>,
        elapsed: Duration,
        rng: &mut fastrand::Rng,
    ) -> RetryDecision {
        self.inner
            .decide(attempt, outcome, prev, Some(elapsed), rng)
    }

    /// Starts a call: the state for its first attempt. Reads the clock only when
    /// `max_elapsed` is set.
    #[inline]
    pub fn start(&self) -> RetryState {
        RetryState {
            attempts: 1,
            started: self
                .inner
                .config
                .max_elapsed
                .map(|_| self.inner.ctx.clock().now()),
            prev: None,
            rng: None,
        }
    }

    /// Records a successful call: deposits into the retry budget, if any.
    #[inline]
    pub fn on_success(&self) {
        if let Some(budget) = &self.inner.budget {
            budget.deposit();
        }
    }

    /// Decides what follows the failed attempt `state.attempts()` with `outcome`.
    ///
    /// On [`RetryDecision::Retry`] it takes a token from the budget, emits
    /// [`Event::RetryScheduled`], calls the `on_retry` hook and counts the next attempt in
    /// `state`; the caller then sleeps for the delay and tries again. On
    /// [`RetryDecision::GiveUp`] it emits [`Event::RetryGaveUp`]. An outcome that is not
    /// retryable (including [`Outcome::Success`] and [`Outcome::Ignored`]) gives up with
    /// [`GiveUpReason::Permanent`]. A delay that would end past `max_elapsed` gives up now
    /// rather than sleep past it.
    pub fn on_failure(&self, state: &mut RetryState, outcome: Outcome) -> RetryDecision {
        let inner = &*self.inner;
        let elapsed = state
            .started
            .map(|started| inner.ctx.clock().now().saturating_duration_since(started));
        let seed = inner.seed;
        let rng = state.rng.get_or_insert_with(|| match seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        });
        let mut decision = inner.decide(state.attempts, outcome, state.prev, elapsed, rng);
        if decision.delay().is_some() && inner.budget.as_ref().is_some_and(|b| !b.withdraw()) {
            decision = RetryDecision::GiveUp(GiveUpReason::Budget);
        }
        match decision {
            RetryDecision::Retry(delay) => {
                inner.ctx.emit(Event::RetryScheduled {
                    name: inner.ctx.name(),
                    attempt: state.attempts,
                    delay,
                    outcome,
                });
                if let Some(hook) = &inner.on_retry {
                    hook(&RetryInfo {
                        attempt: state.attempts,
                        delay,
                        outcome,
                    });
                }
                state.attempts = state.attempts.saturating_add(1);
                state.prev = Some(delay);
            }
            RetryDecision::GiveUp(reason) => inner.ctx.emit(Event::RetryGaveUp {
                name: inner.ctx.name(),
                attempts: state.attempts,
                reason: reason.as_str(),
            }),
        }
        decision
    }

    /// When attempts are observed, the instant an attempt starts.
    #[inline]
    pub(crate) fn attempt_started(&self) -> Option<Instant> {
        if self.inner.observed {
            Some(self.inner.ctx.clock().now())
        } else {
            None
        }
    }

    /// Emits [`Event::Attempt`] for a failed attempt that started at `started`.
    pub(crate) fn attempt_failed(
        &self,
        state: &RetryState,
        outcome: Outcome,
        started: Option<Instant>,
    ) {
        if let Some(started) = started {
            let ctx = &self.inner.ctx;
            ctx.emit(Event::Attempt {
                name: ctx.name(),
                attempt: state.attempts,
                outcome,
                duration: ctx.clock().now().saturating_duration_since(started),
            });
        }
    }

    /// Runs `op`, retrying every error (as [`ErrorsAreTransient`] judges).
    ///
    /// The final error is the last attempt's error with the number of attempts made.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(&ErrorsAreTransient, op).await
    }

    /// Runs `op`, retrying while `classifier` judges the result retryable.
    ///
    /// A success deposits into the budget and is returned. When retrying stops, an `Err` is
    /// returned as [`ErrorKind::Inner`] with the number of attempts made; an `Ok` that the
    /// classifier judged a failure (an HTTP 503 response, say) is returned as that `Ok` value:
    /// a 503 response is still a response, and the caller may want its body. An
    /// [`Outcome::Ignored`] result is returned at once, not retried.
    pub async fn call_classified<T, E, F, Fut, C>(
        &self,
        classifier: &C,
        op: F,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(op, |result| {
            let outcome = classifier.classify(&result);
            (outcome, result.map_err(Error::inner))
        })
        .await
    }

    /// Runs `op`, which already returns this crate's [`Error`] (e.g. a call through inner
    /// policies such as a timeout or circuit breaker), retrying every retryable failure.
    ///
    /// The operation's own errors ([`ErrorKind::Inner`]) are all transient; other errors are
    /// judged by [`Error::policy_outcome`] (an open circuit's remaining time becomes a
    /// `Retry-After`, a passed deadline is permanent). The final error carries this policy's
    /// attempt count.
    pub async fn call_nested<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        self.call_nested_classified(&ErrorsAreTransient, op).await
    }

    /// Like [`Retry::call_nested`], judging `Ok` values and the operation's own errors with
    /// `classifier`.
    pub async fn call_nested_classified<T, E, F, Fut, C>(
        &self,
        classifier: &C,
        op: F,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        self.run(op, |result| match result {
            Ok(value) => {
                let result = Ok(value);
                (classifier.classify(&result), result.map_err(Error::inner))
            }
            Err(error) => match error.into_kind() {
                ErrorKind::Inner(e) => {
                    let result = Err(e);
                    (classifier.classify(&result), result.map_err(Error::inner))
                }
                kind => {
                    let error = Error::new(kind);
                    let outcome = error.policy_outcome().unwrap_or(Outcome::Transient);
                    (outcome, Err(error))
                }
            },
        })
        .await
    }

    /// The call loop shared by every `call*` method; `judge` classifies a raw result.
    async fn run<R, T, E, F, Fut, J>(&self, mut op: F, mut judge: J) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = R>,
        J: FnMut(R) -> (Outcome, Result<T, Error<E>>),
    {
        let mut state = self.start();
        loop {
            let started = self.attempt_started();
            let (outcome, result) = judge(op().await);
            if !outcome.is_failure() {
                if outcome.is_success() {
                    self.on_success();
                }
                return result.map_err(|e| e.with_attempts(state.attempts));
            }
            self.attempt_failed(&state, outcome, started);
            match self.on_failure(&mut state, outcome) {
                RetryDecision::Retry(delay) => self.inner.ctx.clock().sleep(delay).await,
                RetryDecision::GiveUp(_) => {
                    return result.map_err(|e| e.with_attempts(state.attempts));
                }
            }
        }
    }
}

impl Inner {
    fn decide(
        &self,
        attempt: u32,
        outcome: Outcome,
        prev: Option<Duration>,
        elapsed: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> RetryDecision {
        let config = &self.config;
        if !outcome.is_retryable() {
            return RetryDecision::GiveUp(GiveUpReason::Permanent);
        }
        if attempt >= config.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::MaxAttempts);
        }
        let at_least = match outcome.retry_after() {
            Some(wait) if wait > config.max_retry_after => {
                return RetryDecision::GiveUp(GiveUpReason::RetryAfterTooLong);
            }
            Some(wait) => wait,
            None => Duration::ZERO,
        };
        let delay = config
            .backoff
            .delay(attempt, config.jitter, prev, rng)
            .max(at_least);
        if let (Some(max_elapsed), Some(elapsed)) = (config.max_elapsed, elapsed)
            && elapsed.saturating_add(delay) > max_elapsed
        {
            return RetryDecision::GiveUp(GiveUpReason::MaxElapsed);
        }
        RetryDecision::Retry(delay)
    }
}

/// Builds a [`Retry`] by chaining setters over a [`RetryConfig`].
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::retry::{Jitter, Retry};
///
/// let retry = Retry::exponential(Duration::from_millis(200), Duration::from_secs(30))
///     .jitter(Jitter::Full)
///     .max_attempts(6)
///     .on_retry(|info| eprintln!("retry {} in {:?}", info.attempt, info.delay))
///     .build()?;
/// assert_eq!(retry.config().max_attempts, 6);
/// # Ok::<_, ferrule_policy::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build()`"]
pub struct RetryBuilder {
    config: RetryConfig,
    ctx: Context,
    on_retry: Option<OnRetry>,
    seed: Option<u64>,
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("config", &self.config)
            .field("ctx", &self.ctx)
            .field("on_retry", &self.on_retry.is_some())
            .field("seed", &self.seed)
            .finish()
    }
}

impl RetryBuilder {
    /// A builder starting from `config`.
    pub fn new(config: RetryConfig) -> Self {
        RetryBuilder {
            config,
            ctx: Context::default(),
            on_retry: None,
            seed: None,
        }
    }

    /// Most attempts in all, counting the first.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.max_attempts = max_attempts;
        self
    }

    /// Give up once this much time has passed since the first attempt started.
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.config.max_elapsed = Some(max_elapsed);
        self
    }

    /// The backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// The longest `Retry-After` to honour (see [`RetryConfig::max_retry_after`]).
    pub fn max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.config.max_retry_after = max_retry_after;
        self
    }

    /// A retry budget.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// The context: name, clock and observer.
    pub fn context(mut self, ctx: Context) -> Self {
        self.ctx = ctx;
        self
    }

    /// A hook called before each sleep, after the decision to retry.
    pub fn on_retry(mut self, hook: impl Fn(&RetryInfo) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Seeds the jitter: every call then draws the same sequence of random delays
    /// (reproducible tests and simulations). Unseeded, each call draws fresh randomness.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the configuration and builds the policy.
    pub fn build(self) -> Result<Retry, ConfigError> {
        self.config.validate()?;
        let budget = self
            .config
            .budget
            .as_ref()
            .map(|b| Budget::new(b, self.ctx.clock().clone()));
        let observed = !Arc::ptr_eq(self.ctx.observer(), &event::noop());
        Ok(Retry {
            inner: Arc::new(Inner {
                config: self.config,
                ctx: self.ctx,
                budget,
                on_retry: self.on_retry,
                seed: self.seed,
                observed,
            }),
        })
    }
}

impl TryFrom<RetryBuilder> for Retry {
    type Error = ConfigError;

    fn try_from(builder: RetryBuilder) -> Result<Self, ConfigError> {
        builder.build()
    }
}
