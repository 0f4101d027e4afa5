//! The [`Chaos`] policy as a `tower` layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::{Fault, Injected};
use super::policy::{Chaos, Injection};
use crate::clock::Sleep;
use crate::error::BoxError;

/// Injects faults into the wrapped service's requests.
///
/// - error: the inner service is not called; the request fails with a boxed [`Injected`];
/// - latency: the inner service is called at once but its future is only polled after the
///   delay (on the policy's clock);
/// - drop: the inner service is not called and the response never comes (only a timeout
///   layer around it ends the request);
/// - outcome: the request runs; if the injected outcome is a failure, its response is replaced
///   by a boxed [`Injected`] with [`Fault::Outcome`] (services have no classifier), otherwise
///   the response passes through.
///
/// ```
/// use ferrule_policy::chaos::{Chaos, ChaosConfig, ChaosLayer, Environment, Injected};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = ChaosConfig { enabled: true, error_rate: 1.0, ..Default::default() };
/// let chaos = Chaos::new(config, Environment::Test).unwrap();
/// let svc = ChaosLayer::new(chaos)
///     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
/// let err = svc.oneshot(1).await.unwrap_err();
/// assert!(err.downcast_ref::<Injected>().is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    chaos: Chaos,
}

impl ChaosLayer {
    /// A layer injecting `chaos`'s faults.
    pub fn new(chaos: Chaos) -> Self {
        ChaosLayer { chaos }
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = ChaosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ChaosService {
            inner,
            chaos: self.chaos.clone(),
        }
    }
}

/// A service with injected faults; see [`ChaosLayer`].
#[derive(Debug, Clone)]
pub struct ChaosService<S> {
    inner: S,
    chaos: Chaos,
}

impl<S> ChaosService<S> {
    /// Wraps `inner` with `chaos`.
    pub fn new(inner: S, chaos: Chaos) -> Self {
        ChaosService { inner, chaos }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for ChaosService<S>
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

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.chaos.decide() {
            Injection::None => State::Pass {
                fut: self.inner.call(req),
            },
            Injection::Error => State::Failed {
                error: Some(Injected {
                    fault: Fault::Error,
                }),
            },
            Injection::Latency(delay) => State::Delayed {
                sleep: self.chaos.sleep(delay),
                fut: self.inner.call(req),
            },
            Injection::Drop => State::Dropped,
            Injection::Outcome(outcome) => State::Outcome {
                fut: self.inner.call(req),
                failure: outcome.is_failure(),
            },
        };
        ResponseFuture { state }
    }
}

impl Chaos {
    pub(crate) fn sleep(&self, delay: std::time::Duration) -> Sleep {
        self.context().clock().sleep(delay)
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Pass { #[pin] fut: F },
        Delayed { #[pin] sleep: Sleep, #[pin] fut: F },
        Failed { error: Option<Injected> },
        Dropped,
        Outcome { #[pin] fut: F, failure: bool },
    }
}

pin_project! {
    /// The response future of [`ChaosService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Pass { .. } => "pass",
            State::Delayed { .. } => "delayed",
            State::Failed { .. } => "failed",
            State::Dropped => "dropped",
            State::Outcome { .. } => "outcome",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Pass { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Delayed { sleep, fut } => {
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                fut.poll(cx).map_err(Into::into)
            }
            StateProj::Failed { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => "chaos response future polled after completion".into(),
            })),
            StateProj::Dropped => Poll::Pending,
            StateProj::Outcome { fut, failure } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) if *failure => Poll::Ready(Err(Box::new(Injected {
                    fault: Fault::Outcome,
                }))),
                Poll::Ready(result) => Poll::Ready(result.map_err(Into::into)),
            },
        }
    }
}
