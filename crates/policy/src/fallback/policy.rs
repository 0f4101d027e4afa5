//! The [`Fallback`] policy.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::config::{FallbackConfig, FallbackOn};
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::Error;
use crate::event::Event;

struct Inner {
    /// One bit per [`FallbackOn`] that triggers the fallback.
    mask: u16,
    ctx: Context,
}

/// Produces an alternative result when a call fails in one of the configured ways — e.g. a
/// plain e-mail when Telegram's circuit is open.
///
/// Cheap to clone.
///
/// ```
/// use ferrule_policy::{Error, ErrorKind};
/// use ferrule_policy::fallback::{Fallback, FallbackConfig, FallbackOn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fallback = Fallback::new(FallbackConfig::on([FallbackOn::Inner])).unwrap();
/// let sent: Result<&str, Error<&str>> = fallback
///     .call(
///         || async { Err(Error::inner("telegram is down")) },
///         |_error| async { Ok("sent by e-mail instead") },
///     )
///     .await;
/// assert_eq!(sent.unwrap(), "sent by e-mail instead");
/// # }
/// ```
#[derive(Clone)]
pub struct Fallback {
    inner: Arc<Inner>,
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<FallbackOn> = FallbackOn::ALL
            .into_iter()
            .filter(|on| self.handles_kind(*on))
            .collect();
        f.debug_struct("Fallback")
            .field("name", &self.inner.ctx.name())
            .field("on", &on)
            .finish()
    }
}

impl Fallback {
    /// A fallback with the default [`Context`] (no observer).
    pub fn new(config: FallbackConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A fallback reporting to `ctx`'s observer.
    pub fn with_context(config: FallbackConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Fallback {
            inner: Arc::new(Inner {
                mask: config.mask(),
                ctx,
            }),
        })
    }

    /// `true` when failures of this kind trigger the fallback.
    #[inline]
    pub fn handles_kind(&self, on: FallbackOn) -> bool {
        self.inner.mask & on.bit() != 0
    }

    /// `true` when `error` triggers the fallback.
    #[inline]
    pub fn handles<E>(&self, error: &Error<E>) -> bool {
        self.handles_kind(FallbackOn::of(error.kind()))
    }

    /// Runs `op`; if it fails in a configured way, runs `fallback` with the error and returns
    /// its result instead (emitting [`Event::FallbackUsed`]). Other failures are returned as
    /// they are.
    ///
    /// `op` returns an [`Error<E>`] so that it can be another policy's call (a breaker, a
    /// retry, a timeout) whose rejections the fallback answers; wrap a plain operation's error
    /// with [`Error::inner`].
    pub async fn call<T, E, Op, Fut, Fb, FbFut>(
        &self,
        mut op: Op,
        fallback: Fb,
    ) -> Result<T, Error<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
        Fb: FnOnce(Error<E>) -> FbFut,
        FbFut: Future<Output = Result<T, Error<E>>>,
    {
        match op().await {
            Ok(value) => Ok(value),
            Err(error) if self.handles(&error) => {
                self.used();
                fallback(error).await
            }
            Err(error) => Err(error),
        }
    }

    #[cold]
    pub(crate) fn used(&self) {
        self.inner.ctx.emit(Event::FallbackUsed {
            name: self.inner.ctx.name(),
        });
    }
}
