//! Timeout per attempt and an overall deadline.

mod config;
mod error;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::{DeadlineConfig, TimeoutConfig};
pub use error::Elapsed;
pub use layer::{ResponseFuture, TimeoutLayer, TimeoutService};
pub use policy::{Deadline, Timeout, WithDeadline, WithTimeout};
