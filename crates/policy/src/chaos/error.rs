//! Faults injected by the chaos policy.

use serde::Serialize;

/// The kind of fault the chaos policy injected into a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The call was replaced by an injected error.
    Error,
    /// Latency was added before the call.
    Latency,
    /// The call was dropped: it never completes (only a timeout ends it).
    Drop,
    /// The call's outcome was replaced by an injected outcome.
    Outcome,
}

impl Fault {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Error => "error",
            Fault::Latency => "latency",
            Fault::Drop => "drop",
            Fault::Outcome => "outcome",
        }
    }
}

/// An error injected by the chaos policy instead of running the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chaos: injected {}", .fault.as_str())]
pub struct Injected {
    /// What was injected.
    pub fault: Fault,
}
