//! Why the retry policy stops: the reason carried by its give-up decision and event.
//!
//! Retry has no rejection of its own: its final error is the last attempt's [`Error`](crate::Error)
//! with [`Error::attempts`](crate::Error::attempts) set.

use std::fmt;

use serde::Serialize;

/// Why the retry policy stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUpReason {
    /// The outcome was not retryable (permanent, or not a failure at all).
    Permanent,
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next attempt would start after `max_elapsed`.
    MaxElapsed,
    /// The retry budget is spent.
    Budget,
    /// The server asked to wait longer than `max_retry_after`.
    RetryAfterTooLong,
}

impl GiveUpReason {
    /// A short stable name, as in [`Event::RetryGaveUp`](crate::Event::RetryGaveUp): `permanent`, `max_attempts`,
    /// `max_elapsed`, `budget`, `retry_after_too_long`.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Permanent => "permanent",
            GiveUpReason::MaxAttempts => "max_attempts",
            GiveUpReason::MaxElapsed => "max_elapsed",
            GiveUpReason::Budget => "budget",
            GiveUpReason::RetryAfterTooLong => "retry_after_too_long",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
