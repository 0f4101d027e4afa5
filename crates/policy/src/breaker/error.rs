//! The breaker's fail-fast rejection.

use std::time::Duration;

use super::CircuitState;

/// A call was rejected without running because the circuit does not admit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit {state}: call rejected{}", match .remaining {
    Some(d) => format!(", retry in {}", crate::duration::readable(*d)),
    None => String::new(),
})]
pub struct CircuitOpen {
    /// The state that rejected the call: `Open`, `ForcedOpen`, or `HalfOpen` with every probe taken.
    pub state: CircuitState,
    /// Time left before the circuit may admit a probe; `None` when forced open by an operator.
    pub remaining: Option<Duration>,
}
