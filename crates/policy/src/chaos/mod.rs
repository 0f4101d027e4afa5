//! Chaos: fault injection (errors, latency, dropped calls, injected outcomes) with a seeded RNG.

mod error;

pub use error::{Fault, Injected};
