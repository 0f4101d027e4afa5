//! Circuit breaker: stops calling a dependency that keeps failing, and probes it before trusting it again.

mod error;
mod state;

pub use error::CircuitOpen;
pub use state::CircuitState;
