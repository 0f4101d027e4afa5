//! The circuit breaker's states.

use serde::{Deserialize, Serialize};

/// The state of a [`CircuitBreaker`](super::CircuitBreaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow; outcomes are recorded in the sliding window.
    Closed,
    /// Calls are rejected until the open wait is over.
    Open,
    /// A limited number of probe calls decide whether to close or re-open.
    HalfOpen,
    /// Opened by an operator: every call is rejected until [`reset`](super::CircuitBreaker::reset).
    ForcedOpen,
    /// Switched off by an operator: every call passes and nothing is recorded.
    Disabled,
}

impl CircuitState {
    /// A short stable name: `closed`, `open`, `half_open`, `forced_open`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
        }
    }

    /// A number for gauges: closed 0, half-open 1, open 2, forced-open 3, disabled 4.
    pub fn as_gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
            CircuitState::ForcedOpen => 3.0,
            CircuitState::Disabled => 4.0,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
