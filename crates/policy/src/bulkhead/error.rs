//! The bulkhead's rejection.

/// A call was rejected because the bulkhead is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full: {max_concurrent} running and {max_queue} waiting")]
pub struct BulkheadFull {
    /// Configured maximum of concurrent calls.
    pub max_concurrent: usize,
    /// Configured maximum of waiting calls.
    pub max_queue: usize,
}
