//! Configuration of the fallback: which failures it answers.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ensure};
use crate::error::ErrorKind;

/// A kind of failure a [`Fallback`](super::Fallback) can answer; one per [`ErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackOn {
    /// The operation returned its own error.
    Inner,
    /// The classifier judged an `Ok` result a failure.
    Rejected,
    /// The circuit breaker was open.
    CircuitOpen,
    /// An attempt timed out.
    Timeout,
    /// The overall deadline passed.
    DeadlineExceeded,
    /// The bulkhead was full.
    BulkheadFull,
    /// The rate limiter refused the call.
    RateLimited,
    /// The chaos policy injected a fault.
    Injected,
}

impl FallbackOn {
    /// Every kind, in declaration order.
    pub const ALL: [FallbackOn; 8] = [
        FallbackOn::Inner,
        FallbackOn::Rejected,
        FallbackOn::CircuitOpen,
        FallbackOn::Timeout,
        FallbackOn::DeadlineExceeded,
        FallbackOn::BulkheadFull,
        FallbackOn::RateLimited,
        FallbackOn::Injected,
    ];

    /// The kind of `kind`.
    pub fn of<E>(kind: &ErrorKind<E>) -> FallbackOn {
        match kind {
            ErrorKind::Inner(_) => FallbackOn::Inner,
            ErrorKind::Rejected(_) => FallbackOn::Rejected,
            ErrorKind::CircuitOpen(_) => FallbackOn::CircuitOpen,
            ErrorKind::Timeout(_) => FallbackOn::Timeout,
            ErrorKind::DeadlineExceeded(_) => FallbackOn::DeadlineExceeded,
            ErrorKind::BulkheadFull(_) => FallbackOn::BulkheadFull,
            ErrorKind::RateLimited(_) => FallbackOn::RateLimited,
            ErrorKind::Injected(_) => FallbackOn::Injected,
        }
    }

    #[inline]
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Configuration of a [`Fallback`](super::Fallback).
///
/// ```
/// # use ferrule_policy::fallback::{FallbackConfig, FallbackOn};
/// let config: FallbackConfig = toml::from_str(r#"on = ["circuit_open", "timeout"]"#).unwrap();
/// assert_eq!(config.on, vec![FallbackOn::CircuitOpen, FallbackOn::Timeout]);
/// assert_eq!(FallbackConfig::default().on.len(), 8); // every kind by default
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// The failures that trigger the fallback (default: all; must not be empty).
    pub on: Vec<FallbackOn>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            on: FallbackOn::ALL.to_vec(),
        }
    }
}

impl FallbackConfig {
    /// A config answering only `on`.
    pub fn on(on: impl IntoIterator<Item = FallbackOn>) -> Self {
        FallbackConfig {
            on: on.into_iter().collect(),
        }
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.on.is_empty(),
            "on",
            "must name at least one failure kind (a fallback that never runs is a mistake)",
        )
    }

    pub(crate) fn mask(&self) -> u16 {
        self.on.iter().fold(0, |mask, on| mask | on.bit())
    }
}
