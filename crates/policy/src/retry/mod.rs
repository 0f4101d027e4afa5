//! Retry: backoff with jitter, max attempts and elapsed time, `Retry-After`, and a retry budget.

mod backoff;
mod budget;
mod config;
mod layer;
mod policy;

pub use config::{Backoff, BudgetConfig, Jitter, RetryConfig};
pub use layer::{ResponseFuture, RetryLayer, RetryService};
pub use policy::{GiveUpReason, Retry, RetryBuilder, RetryDecision, RetryInfo, RetryState};

#[cfg(test)]
mod tests;
