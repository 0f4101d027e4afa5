//! The [`Timeout`] and [`Deadline`] policies and the futures they wrap calls in.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use super::config::{DeadlineConfig, TimeoutConfig};
use super::error::Elapsed;
use crate::clock::Sleep;
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::event::Event;

/// What a [`WithTimeout`] future needs when its timer fires.
pub(crate) struct Shared {
    limit: Duration,
    /// `true` for a [`Deadline`]: it reports `DeadlineExceeded` instead of `Timeout`.
    deadline: bool,
    ctx: Context,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("limit", &self.limit)
            .field("deadline", &self.deadline)
            .field("name", &self.ctx.name())
            .finish()
    }
}

impl Shared {
    fn fire(&self) -> Elapsed {
        let name = self.ctx.name();
        let after = self.limit;
        if self.deadline {
            self.ctx.emit(Event::DeadlineExceeded { name, after });
        } else {
            self.ctx.emit(Event::Timeout { name, after });
        }
        Elapsed { after }
    }
}

/// A limit on how long one attempt may take.
///
/// Cheap to clone: clones share the configuration and context.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::timeout::{Timeout, TimeoutConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let timeout = Timeout::new(TimeoutConfig::new(Duration::from_secs(5))).unwrap();
/// let answer = timeout.wrap(async { 42 }).await;
/// assert_eq!(answer, Ok(42));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Timeout {
    shared: Arc<Shared>,
}

impl Timeout {
    /// A timeout with the default [`Context`] (system clock, no observer).
    pub fn new(config: TimeoutConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A timeout reading time from `ctx`'s clock and reporting to its observer.
    pub fn with_context(config: TimeoutConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Timeout {
            shared: Arc::new(Shared {
                limit: config.timeout,
                deadline: false,
                ctx,
            }),
        })
    }

    /// The configured limit.
    #[inline]
    pub fn timeout(&self) -> Duration {
        self.shared.limit
    }

    /// Wraps `fut`: it resolves to `Err(Elapsed)` if it has not finished within the limit,
    /// emitting [`Event::Timeout`]. The timer starts now.
    ///
    /// The future borrows the policy, so wrapping costs no reference-count traffic.
    #[inline]
    pub fn wrap<F: Future>(&self, fut: F) -> WithTimeout<'_, F> {
        WithTimeout {
            inner: Limited::new(fut, &*self.shared),
        }
    }

    /// Like [`wrap`](Self::wrap), with a future that owns a handle to the policy.
    #[inline]
    pub(crate) fn wrap_owned<F: Future>(&self, fut: F) -> Limited<F, Arc<Shared>> {
        Limited::new(fut, self.shared.clone())
    }

    /// Runs `op` once under the timeout; a timeout is [`ErrorKind::Timeout`].
    pub async fn call<T, E, F, Fut>(&self, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.wrap(op()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::inner(e)),
            Err(elapsed) => Err(Error::new(ErrorKind::Timeout(elapsed))),
        }
    }
}

pin_project! {
    /// A future with a timer; `H` is how it reaches the policy (a borrow or an `Arc`).
    ///
    /// The timer starts when the future is made (`start` is read then), but the clock's
    /// `Sleep` is only built if the inner future is still pending on its first poll: a call
    /// that completes at once never touches the timer wheel.
    pub(crate) struct Limited<F, H> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<Sleep>,
        start: u64,
        limit: Duration,
        shared: H,
    }
}

impl<F, H: Deref<Target = Shared>> Limited<F, H> {
    #[inline]
    fn new(fut: F, shared: H) -> Self {
        let limit = shared.limit;
        Self::with_sleep(fut, shared, limit)
    }

    #[inline]
    fn with_sleep(fut: F, shared: H, limit: Duration) -> Self {
        Limited {
            fut,
            sleep: None,
            start: shared.ctx.clock().now_nanos(),
            limit,
            shared,
        }
    }

    fn limit(&self) -> Duration {
        self.limit
    }
}

impl<F: Future, H: Deref<Target = Shared>> Future for Limited<F, H> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.sleep.is_none() {
            let clock = this.shared.ctx.clock();
            let elapsed = Duration::from_nanos(clock.now_nanos().saturating_sub(*this.start));
            this.sleep
                .set(Some(clock.sleep(this.limit.saturating_sub(elapsed))));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(this.shared.fire())),
            _ => Poll::Pending,
        }
    }
}

impl<F, H: Deref<Target = Shared>> fmt::Debug for Limited<F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limited")
            .field("limit", &self.limit())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A future limited in time by a [`Timeout`]: `Ok(output)` or `Err(Elapsed)`.
    ///
    /// The timer is held inline (tokio's `Sleep` with the system clock), so wrapping does not
    /// allocate.
    #[must_use = "futures do nothing unless polled"]
    pub struct WithTimeout<'a, F> {
        #[pin]
        inner: Limited<F, &'a Shared>,
    }
}

impl<F> fmt::Debug for WithTimeout<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithTimeout")
            .field("timeout", &self.inner.limit())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithTimeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// An overall deadline for a call, across all its retries.
///
/// Take a start instant with [`Deadline::start`] when the call begins, then wrap each attempt
/// with [`Deadline::wrap_from`] so it is cut off when the overall time runs out, or ask
/// [`Deadline::remaining`] to cap a backoff delay.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::{Context, ManualClock};
/// use ferrule_policy::timeout::{Deadline, DeadlineConfig};
///
/// let clock = ManualClock::new();
/// let deadline = Deadline::with_context(
///     DeadlineConfig::new(Duration::from_secs(30)),
///     Context::new("github").with_clock(clock.shared()),
/// )
/// .unwrap();
/// let start = deadline.start();
/// clock.advance(Duration::from_secs(12));
/// assert_eq!(deadline.remaining(start), Duration::from_secs(18));
/// ```
#[derive(Debug, Clone)]
pub struct Deadline {
    shared: Arc<Shared>,
}

impl Deadline {
    /// A deadline with the default [`Context`] (system clock, no observer).
    pub fn new(config: DeadlineConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A deadline reading time from `ctx`'s clock and reporting to its observer.
    pub fn with_context(config: DeadlineConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Deadline {
            shared: Arc::new(Shared {
                limit: config.deadline,
                deadline: true,
                ctx,
            }),
        })
    }

    /// The configured deadline.
    #[inline]
    pub fn deadline(&self) -> Duration {
        self.shared.limit
    }

    /// The current instant on the policy's clock: the start to measure the deadline from.
    #[inline]
    pub fn start(&self) -> Instant {
        self.shared.ctx.clock().now()
    }

    /// Time left before the deadline, for a call that started at `start` (zero once passed).
    #[inline]
    pub fn remaining(&self, start: Instant) -> Duration {
        let spent = self
            .shared
            .ctx
            .clock()
            .now()
            .saturating_duration_since(start);
        self.shared.limit.saturating_sub(spent)
    }

    /// `true` once the deadline for a call started at `start` has passed.
    #[inline]
    pub fn is_expired(&self, start: Instant) -> bool {
        self.remaining(start) == Duration::ZERO
    }

    /// Wraps `fut` with the whole deadline, starting now; when it passes the future resolves to
    /// `Err(Elapsed)` and [`Event::DeadlineExceeded`] is emitted.
    #[inline]
    pub fn wrap<F: Future>(&self, fut: F) -> WithDeadline<'_, F> {
        self.wrap_for(self.shared.limit, fut)
    }

    /// Wraps `fut` with the time left of a deadline that started at `start`.
    ///
    /// If the deadline has already passed, the future fails at its first poll (unless `fut`
    /// itself is ready at once).
    #[inline]
    pub fn wrap_from<F: Future>(&self, start: Instant, fut: F) -> WithDeadline<'_, F> {
        self.wrap_for(self.remaining(start), fut)
    }

    fn wrap_for<F: Future>(&self, left: Duration, fut: F) -> WithDeadline<'_, F> {
        WithDeadline {
            inner: Limited::with_sleep(fut, &*self.shared, left),
        }
    }

    /// Runs `op` once under the deadline; a passed deadline is [`ErrorKind::DeadlineExceeded`].
    pub async fn call<T, E, F, Fut>(&self, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.wrap(op()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::inner(e)),
            Err(elapsed) => Err(Error::new(ErrorKind::DeadlineExceeded(elapsed))),
        }
    }
}

pin_project! {
    /// A future limited by a [`Deadline`]: `Ok(output)` or `Err(Elapsed)`.
    #[must_use = "futures do nothing unless polled"]
    pub struct WithDeadline<'a, F> {
        #[pin]
        inner: Limited<F, &'a Shared>,
    }
}

impl<F> fmt::Debug for WithDeadline<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithDeadline")
            .field("deadline", &self.inner.limit())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithDeadline<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
