//! The [`Fallback`] as a `tower` layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::config::FallbackOn;
use super::policy::Fallback;
use crate::breaker::CircuitOpen;
use crate::bulkhead::BulkheadFull;
use crate::chaos::Injected;
use crate::error::BoxError;
use crate::rate_limit::RateLimited;
use crate::timeout::Elapsed;

impl Fallback {
    /// `true` when a boxed error from a `tower` stack triggers the fallback.
    ///
    /// The kind is found by downcasting to the policies' typed errors; anything else counts as
    /// [`FallbackOn::Inner`]. A boxed [`Elapsed`] does not say whether it was a timeout or a
    /// deadline, so it matches if either is configured. [`FallbackOn::Rejected`] never matches
    /// (the layers do not classify responses).
    pub fn handles_boxed(&self, error: &BoxError) -> bool {
        let e = &**error;
        if e.is::<Elapsed>() {
            self.handles_kind(FallbackOn::Timeout)
                || self.handles_kind(FallbackOn::DeadlineExceeded)
        } else if e.is::<CircuitOpen>() {
            self.handles_kind(FallbackOn::CircuitOpen)
        } else if e.is::<BulkheadFull>() {
            self.handles_kind(FallbackOn::BulkheadFull)
        } else if e.is::<RateLimited>() {
            self.handles_kind(FallbackOn::RateLimited)
        } else if e.is::<Injected>() {
            self.handles_kind(FallbackOn::Injected)
        } else {
            self.handles_kind(FallbackOn::Inner)
        }
    }
}

/// Answers the wrapped service's failures with `f(error)`, for the failures the [`Fallback`]
/// is configured for (see [`Fallback::handles_boxed`]); other errors pass through.
///
/// `f` is a function from the boxed error to the response (or another error).
///
/// ```
/// use ferrule_policy::fallback::{Fallback, FallbackConfig, FallbackLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fallback = Fallback::new(FallbackConfig::default()).unwrap();
/// let svc = FallbackLayer::new(fallback, |_err| Ok("cached answer"))
///     .layer(service_fn(|_: ()| async { Err::<&str, _>(std::io::Error::other("down")) }));
/// assert_eq!(svc.oneshot(()).await.unwrap(), "cached answer");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FallbackLayer<F> {
    fallback: Fallback,
    f: F,
}

impl<F> FallbackLayer<F> {
    /// A layer answering `fallback`'s configured failures with `f`.
    pub fn new(fallback: Fallback, f: F) -> Self {
        FallbackLayer { fallback, f }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = FallbackService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
            f: self.f.clone(),
        }
    }
}

/// A service whose failures are answered by a fallback function; see [`FallbackLayer`].
#[derive(Debug, Clone)]
pub struct FallbackService<S, F> {
    inner: S,
    fallback: Fallback,
    f: F,
}

impl<S, F> FallbackService<S, F> {
    /// Wraps `inner`, answering `fallback`'s configured failures with `f`.
    pub fn new(inner: S, fallback: Fallback, f: F) -> Self {
        FallbackService { inner, fallback, f }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, F, Req> Service<Req> for FallbackService<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(BoxError) -> Result<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F>;

    /// Readiness errors are passed through: the fallback answers calls, not backpressure.
    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            fut: self.inner.call(req),
            fallback: self.fallback.clone(),
            f: self.f.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`FallbackService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<Fut, F> {
        #[pin]
        fut: Fut,
        fallback: Fallback,
        f: F,
    }
}

impl<Fut, F> fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl<Fut, F, T, E> Future for ResponseFuture<Fut, F>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: Fn(BoxError) -> Result<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(value)) => Poll::Ready(Ok(value)),
            Poll::Ready(Err(error)) => {
                let error: BoxError = error.into();
                if this.fallback.handles_boxed(&error) {
                    this.fallback.used();
                    Poll::Ready((this.f)(error))
                } else {
                    Poll::Ready(Err(error))
                }
            }
        }
    }
}
