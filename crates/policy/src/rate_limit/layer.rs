//! The rate limiters as `tower` layers: one limit for all requests, or one per key.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::RateLimited;
use super::policy::{KeyedRateLimiter, RateLimiter};
use crate::error::BoxError;

/// Checks a [`RateLimiter`] for every request of the wrapped service.
///
/// A refused request is not sent: it fails at once with a boxed [`RateLimited`] that says
/// when to come back (the check happens in `call`, not `poll_ready`, so the service never
/// stalls its callers).
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimiter, RateLimited};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = RateLimiter::new(RateLimitConfig::new(1, Duration::from_secs(60))).unwrap();
/// let svc = RateLimitLayer::new(limiter)
///     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
/// assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
/// let refused = svc.oneshot(2).await.unwrap_err();
/// assert!(refused.downcast_ref::<RateLimited>().is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    /// A layer sharing `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A service whose requests are rate limited; see [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S> RateLimitService<S> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: RateLimiter) -> Self {
        RateLimitService { inner, limiter }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for RateLimitService<S>
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
        ResponseFuture::new(self.limiter.check().map(|()| self.inner.call(req)))
    }
}

/// Checks a [`KeyedRateLimiter`] for every request, under the key `key(&request)` — e.g. the
/// destination host or the chat id.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::rate_limit::{KeyedRateLimitLayer, KeyedRateLimiter, RateLimitConfig};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let per_chat = KeyedRateLimiter::new(RateLimitConfig::new(1, Duration::from_secs(1))).unwrap();
/// let svc = KeyedRateLimitLayer::new(per_chat, |(chat, _text): &(i64, &'static str)| *chat)
///     .layer(service_fn(|(_chat, text): (i64, &'static str)| async move { Ok::<_, std::io::Error>(text.len()) }));
/// assert!(svc.clone().oneshot((1, "hi")).await.is_ok());
/// assert!(svc.clone().oneshot((1, "again")).await.is_err());
/// assert!(svc.oneshot((2, "other chat")).await.is_ok());
/// # }
/// ```
pub struct KeyedRateLimitLayer<K: Hash + Eq + Clone + Send + Sync, F> {
    limiter: KeyedRateLimiter<K>,
    key: F,
}

impl<K: Hash + Eq + Clone + Send + Sync, F: Clone> Clone for KeyedRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, F> fmt::Debug for KeyedRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, F> KeyedRateLimitLayer<K, F> {
    /// A layer sharing `limiter`, keying each request with `key`.
    pub fn new(limiter: KeyedRateLimiter<K>, key: F) -> Self {
        KeyedRateLimitLayer { limiter, key }
    }
}

impl<S, K: Hash + Eq + Clone + Send + Sync, F: Clone> Layer<S> for KeyedRateLimitLayer<K, F> {
    type Service = KeyedRateLimitService<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            _key: PhantomData,
        }
    }
}

/// A service whose requests are rate limited per key; see [`KeyedRateLimitLayer`].
pub struct KeyedRateLimitService<S, K: Hash + Eq + Clone + Send + Sync, F> {
    inner: S,
    limiter: KeyedRateLimiter<K>,
    key: F,
    _key: PhantomData<fn() -> K>,
}

impl<S: Clone, K: Hash + Eq + Clone + Send + Sync, F: Clone> Clone
    for KeyedRateLimitService<S, K, F>
{
    fn clone(&self) -> Self {
        KeyedRateLimitService {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            _key: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K: Hash + Eq + Clone + Send + Sync, F> fmt::Debug
    for KeyedRateLimitService<S, K, F>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K: Hash + Eq + Clone + Send + Sync, F> KeyedRateLimitService<S, K, F> {
    /// Wraps `inner` with `limiter`, keying each request with `key`.
    pub fn new(inner: S, limiter: KeyedRateLimiter<K>, key: F) -> Self {
        KeyedRateLimitService {
            inner,
            limiter,
            key,
            _key: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, K, F, Req> Service<Req> for KeyedRateLimitService<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + Send + Sync,
    F: Fn(&Req) -> K,
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
        let key = (self.key)(&req);
        ResponseFuture::new(self.limiter.check_key(&key).map(|()| self.inner.call(req)))
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Limited { error: Option<RateLimited> },
    }
}

pin_project! {
    /// The response future of the rate-limiting services.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    fn new(checked: Result<F, RateLimited>) -> Self {
        let state = match checked {
            Ok(fut) => State::Called { fut },
            Err(error) => State::Limited { error: Some(error) },
        };
        ResponseFuture { state }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limited = matches!(self.state, State::Limited { .. });
        f.debug_struct("ResponseFuture")
            .field("limited", &limited)
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
        match self.project().state.project() {
            StateProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Limited { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => "rate limit response future polled after completion".into(),
            })),
        }
    }
}
