//! The [`Timeout`] as a `tower` layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use std::sync::Arc;

use super::policy::{Limited, Shared, Timeout};
use crate::error::BoxError;

/// Applies a [`Timeout`] to every request of the wrapped service.
///
/// A request that takes too long fails with a boxed [`Elapsed`](super::Elapsed); the inner
/// service's own errors are boxed as they are.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let timeout = Timeout::new(TimeoutConfig::new(Duration::from_secs(1))).unwrap();
/// let svc = TimeoutLayer::new(timeout)
///     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
/// assert_eq!(svc.oneshot(1).await.unwrap(), 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Timeout,
}

impl TimeoutLayer {
    /// A layer applying `timeout`.
    pub fn new(timeout: Timeout) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            timeout: self.timeout.clone(),
        }
    }
}

/// A service whose requests are limited by a [`Timeout`]; see [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Timeout,
}

impl<S> TimeoutService<S> {
    /// Wraps `inner` with `timeout`.
    pub fn new(inner: S, timeout: Timeout) -> Self {
        TimeoutService { inner, timeout }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.timeout.wrap_owned(self.inner.call(req)),
        }
    }
}

pin_project! {
    /// The response future of [`TimeoutService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Limited<F, Arc<Shared>>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(value))) => Poll::Ready(Ok(value)),
            Poll::Ready(Ok(Err(e))) => Poll::Ready(Err(e.into())),
            Poll::Ready(Err(elapsed)) => Poll::Ready(Err(Box::new(elapsed))),
        }
    }
}
