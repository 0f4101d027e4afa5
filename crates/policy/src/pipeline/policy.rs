//! The pipeline itself and its builder.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::bulkhead::{Bulkhead, BulkheadConfig};
use crate::chaos::{Chaos, ChaosConfig, Environment, Injected, Injection};
use crate::classify::{Classify, ErrorsAreTransient, Outcome};
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::event::Event;
use crate::fallback::{Fallback, FallbackConfig};
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::retry::{Retry, RetryBuilder, RetryConfig, RetryDecision};
use crate::timeout::{Deadline, DeadlineConfig, Timeout, TimeoutConfig};

use super::PipelineConfig;

/// Policies composed in the order fallback → deadline → retry → circuit breaker → rate limit →
/// bulkhead → timeout → chaos → call (see the [module docs](super)).
///
/// Cloning is cheap and shares the policies (a cloned pipeline shares its breaker's state).
///
/// ```
/// # use std::time::Duration;
/// use ferrule_policy::{Error, Pipeline, breaker::{BreakerConfig, CircuitBreaker}, retry::{Jitter, Retry}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::new(BreakerConfig::default())?;
/// let pipeline = Pipeline::builder()
///     .retry(Retry::exponential(Duration::from_millis(1), Duration::from_millis(10))
///         .jitter(Jitter::Full)
///         .max_attempts(3))
///     .circuit_breaker(breaker.clone()) // shareable: the same breaker can guard many pipelines
///     .timeout(Duration::from_secs(15))
///     .build()?;
///
/// let mut calls = 0;
/// let value = pipeline
///     .call(|| {
///         calls += 1;
///         let attempt = calls;
///         async move {
///             if attempt < 3 { Err(std::io::Error::other("flaky")) } else { Ok(attempt) }
///         }
///     })
///     .await?;
/// assert_eq!(value, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline<C = ErrorsAreTransient> {
    ctx: Context,
    fallback: Option<Fallback>,
    deadline: Option<Deadline>,
    retry: Option<Retry>,
    breaker: Option<CircuitBreaker>,
    rate_limit: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
    timeout: Option<Timeout>,
    chaos: Option<Chaos>,
    classifier: C,
}

impl Pipeline {
    /// A builder with no policies, the [`ErrorsAreTransient`] classifier and a default context.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::new()
    }

    /// Builds every configured section with `ctx` (chaos is checked against `environment`).
    pub fn from_config(
        config: &PipelineConfig,
        ctx: Context,
        environment: Environment,
    ) -> Result<Pipeline, ConfigError> {
        config.validate()?;
        let mut builder = PipelineBuilder::new().context(ctx).environment(environment);
        builder.retry = config.retry.clone().map(boxed);
        builder.breaker = config.breaker.clone().map(boxed);
        builder.rate_limit = config.rate_limit.clone().map(boxed);
        builder.bulkhead = config.bulkhead.clone().map(boxed);
        builder.timeout = config.timeout.map(boxed);
        builder.deadline = config.deadline.map(boxed);
        builder.chaos = config.chaos.clone().map(boxed);
        builder.fallback = config.fallback.clone().map(boxed);
        builder.build()
    }
}

fn boxed<P, T: IntoPolicy<P> + 'static>(value: T) -> Box<dyn DynIntoPolicy<P>> {
    Box::new(Some(value))
}

impl<C> Pipeline<C> {
    /// The pipeline's context (name, clock, observer).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The circuit breaker, if any (for status and operator overrides).
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The retry policy, if any.
    pub fn retry_policy(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// The rate limiter, if any.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.rate_limit.as_ref()
    }

    /// The bulkhead, if any.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<&Timeout> {
        self.timeout.as_ref()
    }

    /// The overall deadline, if any.
    pub fn deadline(&self) -> Option<&Deadline> {
        self.deadline.as_ref()
    }

    /// The chaos policy, if any.
    pub fn chaos(&self) -> Option<&Chaos> {
        self.chaos.as_ref()
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// Runs `op` through every policy.
    ///
    /// The result is the last attempt's: `Ok` when it succeeded — or when it returned `Ok` but
    /// the classifier judged it a failure and retrying stopped (a 503 response is still a
    /// response) — otherwise the error, with [`Error::attempts`] set.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        match &self.deadline {
            None => self.run(op, None).await,
            Some(deadline) => {
                let start = deadline.start();
                match deadline.wrap_from(start, self.run(op, Some(start))).await {
                    Ok(result) => result,
                    Err(elapsed) => Err(Error::new(ErrorKind::DeadlineExceeded(elapsed))),
                }
            }
        }
    }

    /// Like [`call`](Self::call), and when the call fails in a way the pipeline's fallback
    /// handles (all failures when no fallback section was configured), runs `fallback` with
    /// the error and returns its result instead.
    pub async fn call_or_else<T, E, F, Fut, Fb, FbFut>(
        &self,
        op: F,
        fallback: Fb,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
        Fb: FnOnce(Error<E>) -> FbFut,
        FbFut: Future<Output = Result<T, Error<E>>>,
    {
        match self.call(op).await {
            Ok(value) => Ok(value),
            Err(error) => match &self.fallback {
                Some(policy) if !policy.handles(&error) => Err(error),
                _ => {
                    self.ctx.emit(Event::FallbackUsed {
                        name: self.ctx.name(),
                    });
                    fallback(error).await
                }
            },
        }
    }

    /// The retry loop around single attempts.
    async fn run<T, E, F, Fut>(&self, mut op: F, start: Option<Instant>) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let Some(retry) = &self.retry else {
            return self.attempt(&mut op).await.0;
        };
        let mut state = retry.start();
        loop {
            let (result, outcome) = self.attempt(&mut op).await;
            if outcome.is_success() {
                retry.on_success();
                return result;
            }
            let attempts = state.attempts();
            match retry.on_failure(&mut state, outcome) {
                RetryDecision::GiveUp(_) => return with_attempts(result, attempts),
                RetryDecision::Retry(delay) => {
                    if let (Some(deadline), Some(start)) = (&self.deadline, start)
                        && delay >= deadline.remaining(start)
                    {
                        // Sleeping would end past the deadline: fail now rather than later.
                        self.ctx.emit(Event::DeadlineExceeded {
                            name: self.ctx.name(),
                            after: deadline.deadline(),
                        });
                        return with_attempts(result, attempts);
                    }
                    self.ctx.clock().sleep(delay).await;
                }
            }
        }
    }

    /// One attempt through breaker → rate limit → bulkhead → timeout → chaos → op.
    async fn attempt<T, E, F, Fut>(&self, op: &mut F) -> (Result<T, Error<E>>, Outcome)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let permit = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.try_acquire() {
                Ok(permit) => Some(permit),
                Err(open) => return rejected(open.into()),
            },
        };
        if let Some(limiter) = &self.rate_limit {
            limiter.until_ready().await;
        }
        let _slot = match &self.bulkhead {
            None => None,
            // Dropping the breaker permit unrecorded counts it as ignored: a full bulkhead is
            // our own limit, not the dependency's failure.
            Some(bulkhead) => match bulkhead.acquire().await {
                Ok(slot) => Some(slot),
                Err(full) => return rejected(full.into()),
            },
        };

        let injection = self.chaos.as_ref().map_or(Injection::None, Chaos::decide);
        let run = async {
            match injection {
                Injection::None => Ok((op().await, None)),
                Injection::Error => Err(Injected {
                    fault: crate::chaos::Fault::Error,
                }),
                Injection::Latency(delay) => {
                    self.ctx.clock().sleep(delay).await;
                    Ok((op().await, None))
                }
                Injection::Drop => std::future::pending().await,
                Injection::Outcome(outcome) => Ok((op().await, Some(outcome))),
            }
        };
        let ran = match &self.timeout {
            None => Ok(run.await),
            Some(timeout) => timeout.wrap(run).await,
        };

        let (result, outcome) = match ran {
            Err(elapsed) => (
                Err(Error::new(ErrorKind::Timeout(elapsed))),
                Outcome::Transient,
            ),
            Ok(Err(injected)) => (Err(injected.into()), Outcome::Transient),
            Ok(Ok((result, forced))) => {
                let outcome = forced.unwrap_or_else(|| self.classifier.classify(&result));
                (result.map_err(Error::inner), outcome)
            }
        };
        if let Some(permit) = permit {
            permit.record(outcome);
        }
        (result, outcome)
    }
}

/// A policy's rejection as an attempt result, with the outcome a retry should assume.
#[inline]
fn rejected<T, E>(error: Error<E>) -> (Result<T, Error<E>>, Outcome) {
    let outcome = error.policy_outcome().unwrap_or(Outcome::Transient);
    (Err(error), outcome)
}

#[inline]
fn with_attempts<T, E>(result: Result<T, Error<E>>, attempts: u32) -> Result<T, Error<E>> {
    result.map_err(|e| e.with_attempts(attempts))
}

/// Something that becomes policy `P` when the pipeline is built: the policy itself (kept as it
/// is, with its own context), or a config or builder (built with the pipeline's context).
pub trait IntoPolicy<P> {
    /// Builds the policy.
    fn into_policy(self, ctx: &Context, environment: Environment) -> Result<P, ConfigError>;
}

macro_rules! into_policy {
    ($policy:ty: $($source:ty => |$v:ident, $ctx:ident, $env:ident| $build:expr),* $(,)?) => {
        impl IntoPolicy<$policy> for $policy {
            fn into_policy(self, _: &Context, _: Environment) -> Result<$policy, ConfigError> {
                Ok(self)
            }
        }
        $(impl IntoPolicy<$policy> for $source {
            fn into_policy(self, $ctx: &Context, $env: Environment) -> Result<$policy, ConfigError> {
                let $v = self;
                let _ = $env;
                $build
            }
        })*
    };
}

into_policy!(Retry:
    RetryConfig => |c, ctx, env| Retry::with_context(c, ctx.clone()),
    RetryBuilder => |b, ctx, env| b.context(ctx.clone()).build(),
);
into_policy!(CircuitBreaker:
    BreakerConfig => |c, ctx, env| CircuitBreaker::with_context(c, ctx.clone()),
);
into_policy!(RateLimiter:
    RateLimitConfig => |c, ctx, env| RateLimiter::with_context(c, ctx.clone()),
);
into_policy!(Bulkhead:
    BulkheadConfig => |c, ctx, env| Bulkhead::with_context(c, ctx.clone()),
);
into_policy!(Timeout:
    TimeoutConfig => |c, ctx, env| Timeout::with_context(c, ctx.clone()),
    Duration => |d, ctx, env| Timeout::with_context(TimeoutConfig { timeout: d }, ctx.clone()),
);
into_policy!(Deadline:
    DeadlineConfig => |c, ctx, env| Deadline::with_context(c, ctx.clone()),
    Duration => |d, ctx, env| Deadline::with_context(DeadlineConfig { deadline: d }, ctx.clone()),
);
into_policy!(Chaos:
    ChaosConfig => |c, ctx, env| Chaos::with_context(c, env, ctx.clone()),
);
into_policy!(Fallback:
    FallbackConfig => |c, ctx, env| Fallback::with_context(c, ctx.clone()),
);

/// Object-safe, consume-once form of [`IntoPolicy`] so the builder can hold any source.
trait DynIntoPolicy<P> {
    fn build(&mut self, ctx: &Context, environment: Environment) -> Option<Result<P, ConfigError>>;
}

impl<P, T: IntoPolicy<P>> DynIntoPolicy<P> for Option<T> {
    fn build(&mut self, ctx: &Context, environment: Environment) -> Option<Result<P, ConfigError>> {
        self.take()
            .map(|source| source.into_policy(ctx, environment))
    }
}

type Source<P> = Option<Box<dyn DynIntoPolicy<P>>>;

/// Builds a [`Pipeline`]. Each stage takes a ready policy (kept with its own context) or a
/// config/builder (built with the pipeline's context); `build` validates everything and names
/// the bad field with its stage, e.g. `retry.max_attempts`.
pub struct PipelineBuilder<C = ErrorsAreTransient> {
    ctx: Context,
    environment: Environment,
    retry: Source<Retry>,
    breaker: Source<CircuitBreaker>,
    rate_limit: Source<RateLimiter>,
    bulkhead: Source<Bulkhead>,
    timeout: Source<Timeout>,
    deadline: Source<Deadline>,
    chaos: Source<Chaos>,
    fallback: Source<Fallback>,
    classifier: C,
}

impl<C> std::fmt::Debug for PipelineBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("ctx", &self.ctx)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        PipelineBuilder {
            ctx: Context::default(),
            environment: Environment::Development,
            retry: None,
            breaker: None,
            rate_limit: None,
            bulkhead: None,
            timeout: None,
            deadline: None,
            chaos: None,
            fallback: None,
            classifier: ErrorsAreTransient,
        }
    }
}

impl<C> PipelineBuilder<C> {
    /// The context for policies built from configs, and for the pipeline's own events.
    #[must_use]
    pub fn context(mut self, ctx: Context) -> Self {
        self.ctx = ctx;
        self
    }

    /// The environment chaos is checked against (default: development).
    #[must_use]
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Retries: a [`Retry`], [`RetryBuilder`] or [`RetryConfig`].
    #[must_use]
    pub fn retry(mut self, retry: impl IntoPolicy<Retry> + 'static) -> Self {
        self.retry = Some(boxed(retry));
        self
    }

    /// A circuit breaker: a [`CircuitBreaker`] (shared with its other users) or a [`BreakerConfig`].
    #[must_use]
    pub fn circuit_breaker(mut self, breaker: impl IntoPolicy<CircuitBreaker> + 'static) -> Self {
        self.breaker = Some(boxed(breaker));
        self
    }

    /// A rate limit; calls wait for a token. A [`RateLimiter`] or [`RateLimitConfig`].
    #[must_use]
    pub fn rate_limit(mut self, limiter: impl IntoPolicy<RateLimiter> + 'static) -> Self {
        self.rate_limit = Some(boxed(limiter));
        self
    }

    /// A bulkhead: a [`Bulkhead`] or [`BulkheadConfig`].
    #[must_use]
    pub fn bulkhead(mut self, bulkhead: impl IntoPolicy<Bulkhead> + 'static) -> Self {
        self.bulkhead = Some(boxed(bulkhead));
        self
    }

    /// A per-attempt timeout: a `Duration`, [`Timeout`] or [`TimeoutConfig`].
    #[must_use]
    pub fn timeout(mut self, timeout: impl IntoPolicy<Timeout> + 'static) -> Self {
        self.timeout = Some(boxed(timeout));
        self
    }

    /// An overall deadline: a `Duration`, [`Deadline`] or [`DeadlineConfig`].
    #[must_use]
    pub fn deadline(mut self, deadline: impl IntoPolicy<Deadline> + 'static) -> Self {
        self.deadline = Some(boxed(deadline));
        self
    }

    /// Fault injection: a [`Chaos`] or [`ChaosConfig`] (checked against the environment).
    #[must_use]
    pub fn chaos(mut self, chaos: impl IntoPolicy<Chaos> + 'static) -> Self {
        self.chaos = Some(boxed(chaos));
        self
    }

    /// Which failures [`Pipeline::call_or_else`] answers: a [`Fallback`] or [`FallbackConfig`].
    #[must_use]
    pub fn fallback(mut self, fallback: impl IntoPolicy<Fallback> + 'static) -> Self {
        self.fallback = Some(boxed(fallback));
        self
    }

    /// The classifier that judges each attempt's result.
    pub fn classify<C2>(self, classifier: C2) -> PipelineBuilder<C2> {
        PipelineBuilder {
            ctx: self.ctx,
            environment: self.environment,
            retry: self.retry,
            breaker: self.breaker,
            rate_limit: self.rate_limit,
            bulkhead: self.bulkhead,
            timeout: self.timeout,
            deadline: self.deadline,
            chaos: self.chaos,
            fallback: self.fallback,
            classifier,
        }
    }

    /// Builds every stage; the first invalid one is reported with its stage name.
    pub fn build(self) -> Result<Pipeline<C>, ConfigError> {
        let ctx = self.ctx;
        let env = self.environment;
        fn stage<P>(
            source: Source<P>,
            name: &str,
            ctx: &Context,
            env: Environment,
        ) -> Result<Option<P>, ConfigError> {
            match source.and_then(|mut source| source.build(ctx, env)) {
                None => Ok(None),
                Some(result) => result.map(Some).map_err(|e| e.within(name)),
            }
        }
        Ok(Pipeline {
            retry: stage(self.retry, "retry", &ctx, env)?,
            breaker: stage(self.breaker, "breaker", &ctx, env)?,
            rate_limit: stage(self.rate_limit, "rate_limit", &ctx, env)?,
            bulkhead: stage(self.bulkhead, "bulkhead", &ctx, env)?,
            timeout: stage(self.timeout, "timeout", &ctx, env)?,
            deadline: stage(self.deadline, "deadline", &ctx, env)?,
            chaos: stage(self.chaos, "chaos", &ctx, env)?,
            fallback: stage(self.fallback, "fallback", &ctx, env)?,
            classifier: self.classifier,
            ctx,
        })
    }
}
