//! Fallback: an alternative result when a call fails or is rejected.

mod config;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::{FallbackConfig, FallbackOn};
pub use layer::{FallbackLayer, FallbackService, ResponseFuture};
pub use policy::Fallback;
