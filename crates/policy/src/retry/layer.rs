//! The retry policy as a `tower` [`Layer`] and [`Service`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::policy::{Retry, RetryDecision, RetryState};
use crate::BoxError;
use crate::classify::{Classify, ErrorsAreTransient};
use crate::clock::Sleep;

/// Wraps a service in a [`RetryService`].
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use ferrule_policy::retry::{Retry, RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let retry = Retry::fixed(Duration::from_millis(1)).max_attempts(3).build().unwrap();
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(retry))
///     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) }));
/// assert_eq!(service.oneshot(21).await.unwrap(), 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = ErrorsAreTransient> {
    retry: Retry,
    classifier: C,
}

impl RetryLayer {
    /// A layer that retries every error of the inner service.
    pub fn new(retry: Retry) -> Self {
        RetryLayer {
            retry,
            classifier: ErrorsAreTransient,
        }
    }
}

impl<C> RetryLayer<C> {
    /// A layer that retries what `classifier` judges retryable in `Result<Response, Error>`.
    pub fn with_classifier(retry: Retry, classifier: C) -> Self {
        RetryLayer { retry, classifier }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service that retries the inner service's failed calls with a [`Retry`] policy.
///
/// The request is cloned for each attempt. The inner service's error is boxed into
/// [`BoxError`] as is, so callers can downcast it. As with
/// [`Retry::call_classified`], a response the classifier judged a failure (e.g. a 503) is
/// returned as the response when retrying stops.
#[derive(Debug, Clone)]
pub struct RetryService<S, C = ErrorsAreTransient> {
    inner: S,
    retry: Retry,
    classifier: C,
}

impl<S, C> RetryService<S, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, retry: Retry, classifier: C) -> Self {
        RetryService {
            inner,
            retry,
            classifier,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The retry policy.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }
}

impl<S, C, Req> Service<Req> for RetryService<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The service that was polled ready serves this call; keep a clone in its place.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let state = self.retry.start();
        let started = self.retry.attempt_started();
        let future = service.call(request.clone());
        ResponseFuture {
            phase: Phase::Calling { future },
            service,
            request,
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
            state,
            started,
        }
    }
}

pin_project! {
    #[project = PhaseProj]
    enum Phase<F> {
        // An attempt is running.
        Calling { #[pin] future: F },
        // Waiting out the delay before the next attempt.
        Sleeping { #[pin] sleep: Sleep },
        // Waiting for the inner service to be ready for the next attempt.
        Ready,
    }
}

pin_project! {
    /// The future returned by [`RetryService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, C, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        phase: Phase<S::Future>,
        service: S,
        request: Req,
        retry: Retry,
        classifier: C,
        state: RetryState,
        started: Option<Instant>,
    }
}

impl<S, C, Req> fmt::Debug for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retry", &self.retry)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.phase.as_mut().project() {
                PhaseProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let outcome = this.classifier.classify(&result);
                    if !outcome.is_failure() {
                        if outcome.is_success() {
                            this.retry.on_success();
                        }
                        return Poll::Ready(result.map_err(Into::into));
                    }
                    this.retry
                        .attempt_failed(this.state, outcome, *this.started);
                    match this.retry.on_failure(this.state, outcome) {
                        RetryDecision::Retry(delay) => {
                            let sleep = this.retry.context().clock().sleep(delay);
                            this.phase.set(Phase::Sleeping { sleep });
                        }
                        RetryDecision::GiveUp(_) => {
                            return Poll::Ready(result.map_err(Into::into));
                        }
                    }
                }
                PhaseProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.phase.set(Phase::Ready);
                }
                PhaseProj::Ready => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    *this.started = this.retry.attempt_started();
                    let future = this.service.call(this.request.clone());
                    this.phase.set(Phase::Calling { future });
                }
            }
        }
    }
}
