//! Chaos: fault injection (errors, latency, dropped calls, injected outcomes) with a seeded RNG.

mod config;
mod error;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::{ChaosConfig, Environment, InjectedOutcome};
pub use error::{Fault, Injected};
pub use layer::{ChaosLayer, ChaosService, ResponseFuture};
pub use policy::{Chaos, Injection};
