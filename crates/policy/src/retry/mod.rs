//! Retry: backoff with jitter, max attempts and elapsed time, `Retry-After`, and a retry budget.

mod backoff;
mod budget;
mod config;
mod error;
mod layer;
mod policy;

pub use config::{Backoff, BudgetConfig, Jitter, RetryConfig};
pub use error::GiveUpReason;
pub use layer::{ResponseFuture, RetryLayer, RetryService};
pub use policy::{Retry, RetryBuilder, RetryDecision, RetryInfo, RetryState};

#[cfg(test)]
mod tests;
