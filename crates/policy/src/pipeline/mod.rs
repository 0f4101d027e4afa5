//! Pipeline: every policy composed in one documented order around a call.
//!
//! Outermost first: **fallback → deadline → retry → circuit breaker → rate limit → bulkhead →
//! timeout → chaos → the call**. The order is fixed on purpose:
//!
//! - the fallback sees the final failure, after every retry;
//! - the deadline bounds the whole call, retries and their waits included;
//! - each retry passes through the breaker again, so an opening circuit stops the retries (an
//!   open circuit is a `RetryAfter(remaining)` outcome for the retry);
//! - a call the breaker rejects spends no rate-limit token and no bulkhead slot;
//! - the timeout covers the call itself, not the wait for a rate-limit token or a bulkhead slot;
//! - chaos sits inside the timeout, so an injected drop or latency is cut off by it like a real
//!   slow dependency would be.
//!
//! Every stage is optional, and an absent stage costs one branch.

mod config;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::PipelineConfig;
pub use layer::{PipelineLayer, PipelineService};
pub use policy::{IntoPolicy, Pipeline, PipelineBuilder};
