//! Circuit breaker: stops calling a dependency that keeps failing, and probes it before trusting it again.

mod config;
mod error;
mod layer;
mod policy;
mod state;
mod tally;
mod window;

#[cfg(test)]
mod tests;

pub use config::{BreakerConfig, Window};
pub use error::CircuitOpen;
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use policy::{BreakerStatus, CircuitBreaker, OwnedPermit, Permit};
pub use state::CircuitState;
