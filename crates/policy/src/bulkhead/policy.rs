//! The [`Bulkhead`] policy and its permits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::config::BulkheadConfig;
use super::error::BulkheadFull;
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::Error;
use crate::event::Event;

/// The slots are a plain atomic counter, so taking and releasing one is a compare-and-swap and
/// a decrement, with no lock. Calls that must wait park on a [`Notify`]; a releasing call wakes
/// one of them when any are queued. While calls are queued, newcomers do not take a free slot
/// ahead of them.
///
/// No wake-up is lost: a waiter counts itself in `queued` and then re-checks the slots, and a
/// releaser frees its slot and then reads `queued` (all `SeqCst`), so at least one of the two
/// sees the other. A waiter that was woken but dropped passes the wake-up on (tokio's
/// `Notified` does so on drop).
struct Inner {
    /// Calls running now.
    in_flight: AtomicUsize,
    /// Calls currently waiting for a slot.
    queued: AtomicUsize,
    /// Wakes waiting calls when a slot is released.
    notify: Notify,
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

impl Inner {
    /// Takes a slot if one is free.
    #[inline]
    fn try_take(&self) -> bool {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        while current < self.max_concurrent {
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Takes a slot if one is free and no call is queued for one.
    #[inline]
    fn try_take_fair(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 && self.try_take()
    }

    /// Gives a slot back and wakes a queued call, if any.
    #[inline]
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }
}

/// A slot in a [`Bulkhead`], released when dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    inner: &'a Inner,
}

impl Drop for BulkheadPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("name", &self.inner.ctx.name())
            .finish()
    }
}

/// A slot in a [`Bulkhead`] that does not borrow it (for futures that must be `'static`),
/// released when dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct OwnedBulkheadPermit {
    inner: Arc<Inner>,
}

impl Drop for OwnedBulkheadPermit {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for OwnedBulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBulkheadPermit")
            .field("name", &self.inner.ctx.name())
            .finish()
    }
}

/// Counts a call in the wait queue while it lives.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                notify: Notify::new(),
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
        self.inner.in_flight.load(Ordering::Acquire)
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
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Takes a slot if one is free now (and no call is queued for one); never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        if self.inner.try_take_fair() {
            Ok(BulkheadPermit { inner: &self.inner })
        } else {
            Err(self.reject())
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that does not borrow the bulkhead.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        if self.inner.try_take_fair() {
            Ok(OwnedBulkheadPermit {
                inner: self.inner.clone(),
            })
        } else {
            Err(self.reject())
        }
    }

    /// Takes a slot, waiting in the queue if all are busy.
    ///
    /// Fails with [`BulkheadFull`] at once when the queue is full (or `max_queue` is 0), or
    /// when the call has waited `max_wait` on the policy's clock. Queued calls are woken in
    /// the order they started waiting.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        if !self.inner.try_take_fair() {
            self.wait().await?;
        }
        Ok(BulkheadPermit { inner: &self.inner })
    }

    /// Like [`acquire`](Self::acquire), with a permit that does not borrow the bulkhead.
    pub async fn acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        if !self.inner.try_take_fair() {
            self.wait().await?;
        }
        Ok(OwnedBulkheadPermit {
            inner: self.inner.clone(),
        })
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

    /// Joins the queue (if there is room) and waits until it takes a slot, at most `max_wait`.
    /// On `Ok` the caller owns one slot.
    async fn wait(&self) -> Result<(), BulkheadFull> {
        let _slot = self.enter_queue()?;
        let inner = &*self.inner;
        let take = async {
            let notified = inner.notify.notified();
            tokio::pin!(notified);
            loop {
                // Register for a wake-up before looking, so a release in between is not missed.
                notified.as_mut().enable();
                if inner.try_take() {
                    return;
                }
                notified.as_mut().await;
                notified.set(inner.notify.notified());
            }
        };
        match inner.max_wait {
            None => take.await,
            Some(max_wait) => {
                let sleep = inner.ctx.clock().sleep(max_wait);
                // `take` is polled first and returns in the same poll in which it takes a slot,
                // so a slot is never taken and then dropped by a firing timer.
                tokio::select! {
                    biased;
                    () = take => {}
                    () = sleep => return Err(self.reject()),
                }
            }
        }
        Ok(())
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
                Ordering::SeqCst,
                Ordering::SeqCst,
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
