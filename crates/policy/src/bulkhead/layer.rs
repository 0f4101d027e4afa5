//! The [`Bulkhead`] as a `tower` layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::BulkheadFull;
use super::policy::{Bulkhead, OwnedBulkheadPermit};
use crate::error::BoxError;

/// Runs every request of the wrapped service in a [`Bulkhead`] slot.
///
/// The slot is taken when the request is called and held until its response future
/// completes or is dropped. When no slot is free, the request waits in the bulkhead's queue
/// (this slow path allocates) or fails with a boxed [`BulkheadFull`].
///
/// ```
/// use ferrule_policy::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bulkhead = Bulkhead::new(BulkheadConfig::default()).unwrap();
/// let svc = BulkheadLayer::new(bulkhead)
///     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
/// assert_eq!(svc.oneshot(1).await.unwrap(), 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer sharing `bulkhead`'s slots.
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// A service whose requests run in [`Bulkhead`] slots; see [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// Wraps `inner` with `bulkhead`.
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        BulkheadService { inner, bulkhead }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bulkhead.try_acquire_owned() {
            Ok(permit) => ResponseFuture {
                state: State::Running {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                },
            },
            Err(error) if self.bulkhead.max_queue() == 0 => ResponseFuture {
                state: State::Rejected { error: Some(error) },
            },
            Err(_) => {
                // Take the service that was driven ready; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let bulkhead = self.bulkhead.clone();
                let fut: BoxFuture<S::Response> = Box::pin(async move {
                    let _permit = bulkhead.acquire_owned().await?;
                    ready.call(req).await.map_err(Into::into)
                });
                ResponseFuture {
                    state: State::Waiting { fut },
                }
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Running { #[pin] fut: F, permit: Option<OwnedBulkheadPermit> },
        Waiting { fut: BoxFuture<T> },
        Rejected { error: Option<BulkheadFull> },
    }
}

pin_project! {
    /// The response future of [`BulkheadService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { fut, permit } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(result) => {
                    // Release the slot as soon as the call is done.
                    permit.take();
                    Poll::Ready(result.map_err(Into::into))
                }
            },
            StateProj::Waiting { fut } => fut.as_mut().poll(cx),
            StateProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => "bulkhead response future polled after completion".into(),
            })),
        }
    }
}
