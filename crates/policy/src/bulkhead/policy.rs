//! The [`Bulkhead`] policy and its permits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::config::BulkheadConfig;
use super::error::BulkheadFull;
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::Error;
use crate::event::Event;

struct Inner {
    /// One permit per concurrent call; tokio's semaphore is fair, so waiters are served in order
    /// and a newcomer cannot take a slot a queued call is waiting for.
    semaphore: Arc<Semaphore>,
    /// Calls currently waiting for a permit.
    queued: AtomicUsize,
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Option<Duration>,
    ctx: Context,
}

/// Caps how many calls run at once, with an optional bounded queue of waiting calls.
///
/// Cheap to clone: clones share the same slots.
///
/// ```
/// use ferrule_policy::bulkhead::{Bulkhead, BulkheadConfig};
///
/// let bulkhead = Bulkhead::new(BulkheadConfig { max_concurrent: 1, ..Default::default() }).unwrap();
/// let permit = bulkhead.try_acquire().unwrap();
/// assert_eq!(bulkhead.in_flight(), 1);
/// assert!(bulkhead.try_acquire().is_err()); // full, and no queue
/// drop(permit);
/// assert!(bulkhead.try_acquire().is_ok());
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.ctx.name())
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("max_queue", &self.inner.max_queue)
            .field("max_wait", &self.inner.max_wait)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// A slot in a [`Bulkhead`], released when dropped.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    _permit: SemaphorePermit<'a>,
}

/// A slot in a [`Bulkhead`] that does not borrow it (for futures that must be `'static`),
/// released when dropped.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct OwnedBulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

/// Counts a call in the wait queue while it lives.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead with the default [`Context`] (system clock, no observer).
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A bulkhead reading time from `ctx`'s clock and reporting to its observer.
    pub fn with_context(config: BulkheadConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                max_concurrent: config.max_concurrent,
                max_queue: config.max_queue,
                max_wait: config.max_wait,
                ctx,
            }),
        })
    }

    /// Calls running now (permits held).
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.inner
            .max_concurrent
            .saturating_sub(self.inner.semaphore.available_permits())
    }

    /// The configured maximum of concurrent calls.
    #[inline]
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// The configured maximum of waiting calls.
    #[inline]
    pub fn max_queue(&self) -> usize {
        self.inner.max_queue
    }

    /// Calls waiting for a slot now.
    #[inline]
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Takes a slot if one is free now; never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        match self.inner.semaphore.try_acquire() {
            Ok(permit) => Ok(BulkheadPermit { _permit: permit }),
            Err(_) => Err(self.reject()),
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that does not borrow the bulkhead.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        match self.inner.semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(OwnedBulkheadPermit { _permit: permit }),
            Err(_) => Err(self.reject()),
        }
    }

    /// Takes a slot, waiting in the queue if all are busy.
    ///
    /// Fails with [`BulkheadFull`] at once when the queue is full (or `max_queue` is 0), or
    /// when the call has waited `max_wait` on the policy's clock.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        if let Ok(permit) = self.inner.semaphore.try_acquire() {
            return Ok(BulkheadPermit { _permit: permit });
        }
        let permit = self.wait(self.inner.semaphore.acquire()).await?;
        Ok(BulkheadPermit { _permit: permit })
    }

    /// Like [`acquire`](Self::acquire), with a permit that does not borrow the bulkhead.
    pub async fn acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        if let Ok(permit) = self.inner.semaphore.clone().try_acquire_owned() {
            return Ok(OwnedBulkheadPermit { _permit: permit });
        }
        let permit = self
            .wait(self.inner.semaphore.clone().acquire_owned())
            .await?;
        Ok(OwnedBulkheadPermit { _permit: permit })
    }

    /// Runs `op` in a slot (waiting as [`acquire`](Self::acquire) does); a rejection is
    /// [`ErrorKind::BulkheadFull`](crate::ErrorKind::BulkheadFull).
    pub async fn call<T, E, F, Fut>(&self, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _permit = self.acquire().await?;
        op().await.map_err(Error::inner)
    }

    /// Joins the queue (if there is room) and waits for `acquire`, at most `max_wait`.
    async fn wait<P>(
        &self,
        acquire: impl Future<Output = Result<P, AcquireError>>,
    ) -> Result<P, BulkheadFull> {
        let _slot = self.enter_queue()?;
        let acquired = match self.inner.max_wait {
            None => acquire.await,
            Some(max_wait) => {
                let sleep = self.inner.ctx.clock().sleep(max_wait);
                tokio::select! {
                    biased;
                    acquired = acquire => acquired,
                    () = sleep => return Err(self.reject()),
                }
            }
        };
        // The semaphore is never closed, so an error cannot happen; treat it as full anyway.
        acquired.map_err(|_| self.reject())
    }

    fn enter_queue(&self) -> Result<QueueSlot<'_>, BulkheadFull> {
        let queued = &self.inner.queued;
        let mut current = queued.load(Ordering::Acquire);
        loop {
            if current >= self.inner.max_queue {
                return Err(self.reject());
            }
            match queued.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(QueueSlot(queued)),
                Err(actual) => current = actual,
            }
        }
    }

    #[cold]
    fn reject(&self) -> BulkheadFull {
        self.inner.ctx.emit(Event::BulkheadRejected {
            name: self.inner.ctx.name(),
        });
        BulkheadFull {
            max_concurrent: self.inner.max_concurrent,
            max_queue: self.inner.max_queue,
        }
    }
}
