//! The circuit breaker as a `tower` layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{CircuitBreaker, CircuitOpen, OwnedPermit};
use crate::classify::{Classify, ErrorsAreTransient};
use crate::error::BoxError;

/// Guards a `tower` service with a [`CircuitBreaker`].
///
/// The classifier judges `Result<S::Response, S::Error>` (by default `Ok` is a success and
/// every `Err` a failure). It is cloned into each call's future, so keep it cheap to clone
/// (a zero-sized type, a closure over `Copy` data, or one holding an `Arc`). A rejected call fails with a boxed [`CircuitOpen`] the caller can
/// downcast; the inner service's errors are boxed as they are.
///
/// ```
/// use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
/// use ferrule_policy::CircuitOpen;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = CircuitBreaker::new(BreakerConfig::default()).unwrap();
/// breaker.force_open();
/// let service = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker))
///     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) });
/// let error = service.oneshot(1).await.unwrap_err();
/// assert!(error.downcast_ref::<CircuitOpen>().is_some());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAreTransient> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer with the default classifier (`Ok` succeeds, `Err` fails).
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier: ErrorsAreTransient,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same layer judging results with `classifier`.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker this layer applies.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A `tower` service guarded by a [`CircuitBreaker`]; built by [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = ErrorsAreTransient> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// The breaker guarding this service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let state = match self.breaker.try_acquire_owned() {
            Ok(permit) => State::Running {
                future: self.inner.call(request),
                permit: Some(permit),
                classifier: self.classifier.clone(),
            },
            Err(open) => State::Rejected { open },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of [`CircuitBreakerService`]: the inner call, recorded when it finishes (or
    /// counted as ignored if dropped first), or an immediate rejection.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Running {
            #[pin]
            future: F,
            permit: Option<OwnedPermit>,
            classifier: C,
        },
        Rejected {
            open: CircuitOpen,
        },
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Rejected { open } => Poll::Ready(Err(Box::new(*open))),
            StateProj::Running {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}
