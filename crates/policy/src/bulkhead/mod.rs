//! Bulkhead: a cap on concurrent calls, with an optional bounded wait queue.

mod config;
mod error;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use config::BulkheadConfig;
pub use error::BulkheadFull;
pub use layer::{BulkheadLayer, BulkheadService, ResponseFuture};
pub use policy::{Bulkhead, BulkheadPermit, OwnedBulkheadPermit};
