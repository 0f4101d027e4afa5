//! The unkeyed [`RateLimiter`], the [`KeyedRateLimiter`] and its per-key view [`KeyLimiter`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};

use super::clock::GovernorClock;
use super::config::RateLimitConfig;
use super::error::{InsufficientCapacity, RateLimited};
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::Error;
use crate::event::Event;

type Direct = governor::RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Nanos>>;
type Keyed<K> =
    governor::RateLimiter<K, DashMapStateStore<K>, GovernorClock, NoOpMiddleware<Nanos>>;

/// What both limiters share besides their `governor` state.
struct Common {
    clock: GovernorClock,
    quota: Quota,
    ctx: Context,
}

impl Common {
    fn new(config: &RateLimitConfig, ctx: Context) -> Result<Self, ConfigError> {
        let quota = config.quota()?;
        Ok(Common {
            clock: GovernorClock::new(ctx.clock().clone()),
            quota,
            ctx,
        })
    }

    /// Turns governor's "not until" into our rejection, without emitting an event.
    #[cold]
    fn not_until(&self, not_until: &NotUntil<Nanos>) -> RateLimited {
        let ready_at = self.clock.to_instant(not_until.earliest_possible());
        RateLimited {
            wait: ready_at.saturating_duration_since(self.clock.instant_now()),
            ready_at,
        }
    }

    /// Turns governor's "not until" into our rejection and reports it.
    #[cold]
    fn refuse(&self, not_until: &NotUntil<Nanos>) -> RateLimited {
        let limited = self.not_until(not_until);
        self.ctx.emit(Event::RateLimited {
            name: self.ctx.name(),
            wait: limited.wait,
        });
        limited
    }

    fn insufficient(&self, n: u32) -> InsufficientCapacity {
        InsufficientCapacity {
            requested: n,
            burst: self.quota.burst_size().get(),
        }
    }

    fn debug(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("name", &self.ctx.name())
            .field("replenish_interval", &self.quota.replenish_interval())
            .field("burst", &self.quota.burst_size());
    }
}

struct DirectInner {
    limiter: Direct,
    common: Common,
}

/// One GCRA rate limit for all calls (e.g. Telegram's 30 messages per second per bot).
///
/// A refused call learns when it may go ([`RateLimited::ready_at`]). Time is read from the
/// context's clock. Cheap to clone: clones share the same limit.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::{Context, ManualClock};
/// use ferrule_policy::rate_limit::{RateLimitConfig, RateLimiter};
///
/// let clock = ManualClock::new();
/// let ctx = Context::new("telegram").with_clock(clock.shared());
/// let limiter = RateLimiter::with_context(RateLimitConfig::new(2, Duration::from_secs(1)), ctx).unwrap();
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let refused = limiter.check().unwrap_err();
/// assert_eq!(refused.wait, Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<DirectInner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RateLimiter");
        self.inner.common.debug(&mut s);
        s.finish()
    }
}

impl RateLimiter {
    /// A limiter with the default [`Context`] (system clock, no observer).
    pub fn new(config: RateLimitConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A limiter reading time from `ctx`'s clock and reporting to its observer.
    pub fn with_context(config: RateLimitConfig, ctx: Context) -> Result<Self, ConfigError> {
        let common = Common::new(&config, ctx)?;
        let limiter = governor::RateLimiter::direct_with_clock(common.quota, common.clock.clone());
        Ok(RateLimiter {
            inner: Arc::new(DirectInner { limiter, common }),
        })
    }

    /// Admits one call now, or says when it could go (emitting [`Event::RateLimited`]).
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        match self.inner.limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => Err(self.inner.common.refuse(&not_until)),
        }
    }

    /// Admits `n` calls at once or none.
    ///
    /// The outer error means the batch can never go (it is larger than the burst); the inner
    /// one says when it could go. `n = 0` is always admitted.
    pub fn check_n(&self, n: u32) -> Result<Result<(), RateLimited>, InsufficientCapacity> {
        let Some(cells) = NonZeroU32::new(n) else {
            return Ok(Ok(()));
        };
        match self.inner.limiter.check_n(cells) {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(not_until)) => Ok(Err(self.inner.common.refuse(&not_until))),
            Err(_) => Err(self.inner.common.insufficient(n)),
        }
    }

    /// Waits on the policy's clock until one call is admitted, and takes it.
    pub async fn until_ready(&self) {
        loop {
            match self.inner.limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = self.inner.common.not_until(&not_until).wait;
                    self.inner.common.clock.shared().sleep(wait).await;
                }
            }
        }
    }

    /// Runs `op` if the limit admits it now; otherwise fails at once with
    /// [`ErrorKind::RateLimited`](crate::ErrorKind::RateLimited), which says when to come back
    /// (a retry policy waits that long). Use [`until_ready`](Self::until_ready) to wait instead.
    pub async fn call<T, E, F, Fut>(&self, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.check()?;
        op().await.map_err(Error::inner)
    }
}

struct KeyedInner<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    common: Common,
}

/// A GCRA rate limit per key (e.g. 1 message per second per Telegram chat).
///
/// Each key has its own state, created on first use; call
/// [`retain_recent`](Self::retain_recent) now and then so keys that have gone quiet do not
/// accumulate. Cheap to clone: clones share the same state.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::rate_limit::{KeyedRateLimiter, RateLimitConfig};
///
/// let per_chat = KeyedRateLimiter::<i64>::new(RateLimitConfig::new(1, Duration::from_secs(1))).unwrap();
/// assert!(per_chat.check_key(&42).is_ok());
/// assert!(per_chat.check_key(&42).is_err());
/// assert!(per_chat.for_key(7).check().is_ok()); // another chat is not affected
/// ```
pub struct KeyedRateLimiter<K: Hash + Eq + Clone + Send + Sync> {
    inner: Arc<KeyedInner<K>>,
}

impl<K: Hash + Eq + Clone + Send + Sync> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("KeyedRateLimiter");
        self.inner.common.debug(&mut s);
        s.field("keys", &self.len()).finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> KeyedRateLimiter<K> {
    /// A keyed limiter with the default [`Context`] (system clock, no observer).
    pub fn new(config: RateLimitConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A keyed limiter reading time from `ctx`'s clock and reporting to its observer.
    pub fn with_context(config: RateLimitConfig, ctx: Context) -> Result<Self, ConfigError> {
        let common = Common::new(&config, ctx)?;
        let limiter = governor::RateLimiter::dashmap_with_clock(common.quota, common.clock.clone());
        Ok(KeyedRateLimiter {
            inner: Arc::new(KeyedInner { limiter, common }),
        })
    }

    /// Admits one call for `key` now, or says when it could go (emitting
    /// [`Event::RateLimited`]).
    #[inline]
    pub fn check_key(&self, key: &K) -> Result<(), RateLimited> {
        match self.inner.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(self.inner.common.refuse(&not_until)),
        }
    }

    /// Admits `n` calls for `key` at once or none; see [`RateLimiter::check_n`].
    pub fn check_key_n(
        &self,
        key: &K,
        n: u32,
    ) -> Result<Result<(), RateLimited>, InsufficientCapacity> {
        let Some(cells) = NonZeroU32::new(n) else {
            return Ok(Ok(()));
        };
        match self.inner.limiter.check_key_n(key, cells) {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(not_until)) => Ok(Err(self.inner.common.refuse(&not_until))),
            Err(_) => Err(self.inner.common.insufficient(n)),
        }
    }

    /// Waits on the policy's clock until one call for `key` is admitted, and takes it.
    pub async fn until_key_ready(&self, key: &K) {
        loop {
            match self.inner.limiter.check_key(key) {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = self.inner.common.not_until(&not_until).wait;
                    self.inner.common.clock.shared().sleep(wait).await;
                }
            }
        }
    }

    /// Runs `op` if `key`'s limit admits it now; otherwise fails at once with
    /// [`ErrorKind::RateLimited`](crate::ErrorKind::RateLimited).
    pub async fn call_key<T, E, F, Fut>(&self, key: &K, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.check_key(key)?;
        op().await.map_err(Error::inner)
    }

    /// Forgets keys whose state is the same as a fresh key's (quiet long enough to refill their
    /// burst, plus one replenish interval), so per-key state does not grow forever. Call it
    /// periodically, e.g. once a minute.
    pub fn retain_recent(&self) {
        self.inner.limiter.retain_recent();
    }

    /// Releases memory left over after [`retain_recent`](Self::retain_recent).
    pub fn shrink_to_fit(&self) {
        self.inner.limiter.shrink_to_fit();
    }

    /// How many keys have state.
    pub fn len(&self) -> usize {
        self.inner.limiter.len()
    }

    /// `true` when no key has state.
    pub fn is_empty(&self) -> bool {
        self.inner.limiter.is_empty()
    }

    /// A view of this limiter for one key, with the unkeyed API (`limiter.for_key(chat_id)`).
    pub fn for_key(&self, key: K) -> KeyLimiter<'_, K> {
        KeyLimiter { limiter: self, key }
    }
}

/// One key of a [`KeyedRateLimiter`], with the same API as [`RateLimiter`].
pub struct KeyLimiter<'a, K: Hash + Eq + Clone + Send + Sync> {
    limiter: &'a KeyedRateLimiter<K>,
    key: K,
}

impl<K: Hash + Eq + Clone + Send + Sync + fmt::Debug> fmt::Debug for KeyLimiter<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLimiter")
            .field("name", &self.limiter.inner.common.ctx.name())
            .field("key", &self.key)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> KeyLimiter<'_, K> {
    /// The key this view limits.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// See [`RateLimiter::check`].
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        self.limiter.check_key(&self.key)
    }

    /// See [`RateLimiter::check_n`].
    pub fn check_n(&self, n: u32) -> Result<Result<(), RateLimited>, InsufficientCapacity> {
        self.limiter.check_key_n(&self.key, n)
    }

    /// See [`RateLimiter::until_ready`].
    pub async fn until_ready(&self) {
        self.limiter.until_key_ready(&self.key).await;
    }

    /// See [`RateLimiter::call`].
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.limiter.call_key(&self.key, op).await
    }
}
