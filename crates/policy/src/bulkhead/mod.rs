//! Bulkhead: a cap on concurrent calls, with an optional bounded wait queue.

mod error;

pub use error::BulkheadFull;
