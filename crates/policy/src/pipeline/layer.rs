//! The pipeline as a `tower` layer.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::classify::Classify;
use crate::error::BoxError;

use super::Pipeline;

/// Wraps a service so every request runs through a [`Pipeline`].
///
/// Retries clone the request and the inner service, so both must be `Clone`. The classifier
/// judges `Result<S::Response, S::Error>`; errors come back as [`BoxError`], with each policy's
/// typed rejection (`CircuitOpen`, `Elapsed`, …) boxed so it can be downcast.
#[derive(Debug, Clone)]
pub struct PipelineLayer<C> {
    pipeline: Pipeline<C>,
}

impl<C> PipelineLayer<C> {
    /// A layer running requests through `pipeline`.
    pub fn new(pipeline: Pipeline<C>) -> Self {
        PipelineLayer { pipeline }
    }
}

impl<S, C: Clone> Layer<S> for PipelineLayer<C> {
    type Service = PipelineService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            inner,
            pipeline: self.pipeline.clone(),
        }
    }
}

/// The service produced by [`PipelineLayer`].
#[derive(Debug, Clone)]
pub struct PipelineService<S, C> {
    inner: S,
    pipeline: Pipeline<C>,
}

impl<S, C, Req> Service<Req> for PipelineService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<BoxError> + Send,
    Req: Clone + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited per attempt on a clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let inner = self.inner.clone();
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            pipeline
                .call(move || {
                    let mut service = inner.clone();
                    let request = request.clone();
                    async move {
                        poll_fn(|cx| service.poll_ready(cx)).await?;
                        service.call(request).await
                    }
                })
                .await
                .map_err(crate::Error::into_box_error)
        })
    }
}
