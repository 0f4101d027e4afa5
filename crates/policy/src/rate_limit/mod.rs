//! Rate limiting (GCRA, via `governor`), keyed or not, that says when a refused call may go.

mod clock;
mod config;
mod error;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::RateLimitConfig;
pub use error::{InsufficientCapacity, RateLimited};
pub use layer::{
    KeyedRateLimitLayer, KeyedRateLimitService, RateLimitLayer, RateLimitService, ResponseFuture,
};
pub use policy::{KeyLimiter, KeyedRateLimiter, RateLimiter};
