//! The error every policy returns: the operation's own error or a policy's rejection, plus the
//! number of attempts made.

use std::fmt;
use std::time::Duration;

use crate::breaker::CircuitOpen;
use crate::bulkhead::BulkheadFull;
use crate::chaos::Injected;
use crate::classify::Outcome;
use crate::rate_limit::RateLimited;
use crate::timeout::Elapsed;

/// Why a call through one or more policies failed.
///
/// `E` is the operation's own error type. [`Error::attempts`] reports how many attempts were
/// made (1 unless a retry policy ran more).
pub struct Error<E> {
    kind: ErrorKind<E>,
    attempts: u32,
}

/// What failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind<E> {
    /// The operation ran and returned this error.
    Inner(E),
    /// The operation ran and returned `Ok`, but the classifier judged it a failure
    /// (e.g. an HTTP 503 response); the outcome is kept.
    Rejected(Outcome),
    /// The circuit breaker rejected the call without running it.
    CircuitOpen(CircuitOpen),
    /// The attempt did not finish within its timeout.
    Timeout(Elapsed),
    /// The overall deadline passed.
    DeadlineExceeded(Elapsed),
    /// The bulkhead was full.
    BulkheadFull(BulkheadFull),
    /// The rate limiter refused the call.
    RateLimited(RateLimited),
    /// The chaos policy injected a fault.
    Injected(Injected),
}

impl<E> Error<E> {
    /// An error of `kind` after one attempt.
    pub fn new(kind: ErrorKind<E>) -> Self {
        Error { kind, attempts: 1 }
    }

    /// The operation's own error, after one attempt.
    pub fn inner(error: E) -> Self {
        Self::new(ErrorKind::Inner(error))
    }

    /// The same error, reporting `attempts` attempts.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// What failed.
    pub fn kind(&self) -> &ErrorKind<E> {
        &self.kind
    }

    /// What failed, by value.
    pub fn into_kind(self) -> ErrorKind<E> {
        self.kind
    }

    /// How many attempts were made before giving up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The operation's own error, if that is what failed.
    pub fn as_inner(&self) -> Option<&E> {
        match &self.kind {
            ErrorKind::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The operation's own error, by value, if that is what failed.
    pub fn into_inner(self) -> Option<E> {
        match self.kind {
            ErrorKind::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// `true` when a policy refused to run the call (open circuit, full bulkhead, rate limit).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::CircuitOpen(_) | ErrorKind::BulkheadFull(_) | ErrorKind::RateLimited(_)
        )
    }

    /// The outcome a retry policy should assume for a policy's own error, or `None` for
    /// [`ErrorKind::Inner`] (which only the caller's classifier can judge).
    ///
    /// Open circuits and rate limits say when to come back; timeouts, full bulkheads and
    /// injected faults are transient; a passed deadline is permanent.
    pub fn policy_outcome(&self) -> Option<Outcome> {
        Some(match &self.kind {
            ErrorKind::Inner(_) => return None,
            ErrorKind::Rejected(outcome) => *outcome,
            ErrorKind::CircuitOpen(open) => match open.remaining {
                Some(d) if d > Duration::ZERO => Outcome::RetryAfter(d),
                Some(_) => Outcome::Transient,
                None => Outcome::Permanent,
            },
            ErrorKind::RateLimited(limited) => Outcome::RetryAfter(limited.wait),
            ErrorKind::Timeout(_) | ErrorKind::BulkheadFull(_) | ErrorKind::Injected(_) => {
                Outcome::Transient
            }
            ErrorKind::DeadlineExceeded(_) => Outcome::Permanent,
        })
    }

    /// Maps the operation's error type.
    pub fn map_inner<F, E2>(self, f: F) -> Error<E2>
    where
        F: FnOnce(E) -> E2,
    {
        let kind = match self.kind {
            ErrorKind::Inner(e) => ErrorKind::Inner(f(e)),
            ErrorKind::Rejected(o) => ErrorKind::Rejected(o),
            ErrorKind::CircuitOpen(x) => ErrorKind::CircuitOpen(x),
            ErrorKind::Timeout(x) => ErrorKind::Timeout(x),
            ErrorKind::DeadlineExceeded(x) => ErrorKind::DeadlineExceeded(x),
            ErrorKind::BulkheadFull(x) => ErrorKind::BulkheadFull(x),
            ErrorKind::RateLimited(x) => ErrorKind::RateLimited(x),
            ErrorKind::Injected(x) => ErrorKind::Injected(x),
        };
        Error {
            kind,
            attempts: self.attempts,
        }
    }
}

impl<E> From<ErrorKind<E>> for Error<E> {
    fn from(kind: ErrorKind<E>) -> Self {
        Error::new(kind)
    }
}

macro_rules! from_rejection {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl<E> From<$ty> for Error<E> {
            fn from(e: $ty) -> Self {
                Error::new(ErrorKind::$variant(e))
            }
        }
    )*};
}

from_rejection! {
    CircuitOpen => CircuitOpen,
    BulkheadFull => BulkheadFull,
    RateLimited => RateLimited,
    Injected => Injected,
}

impl<E: fmt::Debug> fmt::Debug for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Inner(e) => write!(f, "{e}")?,
            ErrorKind::Rejected(o) => write!(f, "call classified as {}", o.as_str())?,
            ErrorKind::CircuitOpen(e) => write!(f, "{e}")?,
            ErrorKind::Timeout(e) => write!(f, "attempt {e}")?,
            ErrorKind::DeadlineExceeded(e) => write!(f, "deadline exceeded: {e}")?,
            ErrorKind::BulkheadFull(e) => write!(f, "{e}")?,
            ErrorKind::RateLimited(e) => write!(f, "{e}")?,
            ErrorKind::Injected(e) => write!(f, "{e}")?,
        }
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl<E> std::error::Error for Error<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Inner(e) => Some(e),
            ErrorKind::Rejected(_) => None,
            ErrorKind::CircuitOpen(e) => Some(e),
            ErrorKind::Timeout(e) | ErrorKind::DeadlineExceeded(e) => Some(e),
            ErrorKind::BulkheadFull(e) => Some(e),
            ErrorKind::RateLimited(e) => Some(e),
            ErrorKind::Injected(e) => Some(e),
        }
    }
}

/// The boxed error type that the `tower` layers return, as `tower` itself does.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A call that returned normally but that the classifier judged a failure, as a standalone
/// error (what [`ErrorKind::Rejected`] becomes in a [`BoxError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call classified as {}", .0.as_str())]
pub struct ClassifiedFailure(pub Outcome);

impl<E: Into<BoxError>> Error<E> {
    /// Boxes the error the way the `tower` layers return it: the operation's own error as it
    /// is, and each policy's rejection as its typed error (`CircuitOpen`, `Elapsed`,
    /// `BulkheadFull`, `RateLimited`, `Injected`, `ClassifiedFailure`), so callers can
    /// `downcast_ref` it.
    pub fn into_box_error(self) -> BoxError {
        match self.kind {
            ErrorKind::Inner(e) => e.into(),
            ErrorKind::Rejected(o) => Box::new(ClassifiedFailure(o)),
            ErrorKind::CircuitOpen(e) => Box::new(e),
            ErrorKind::Timeout(e) | ErrorKind::DeadlineExceeded(e) => Box::new(e),
            ErrorKind::BulkheadFull(e) => Box::new(e),
            ErrorKind::RateLimited(e) => Box::new(e),
            ErrorKind::Injected(e) => Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CircuitState;

    #[test]
    fn reports_attempts_and_source() {
        let e: Error<std::io::Error> = Error::inner(std::io::Error::other("boom")).with_attempts(3);
        assert_eq!(e.attempts(), 3);
        assert_eq!(e.to_string(), "boom (after 3 attempts)");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.policy_outcome(), None);
    }

    #[test]
    fn open_circuit_means_retry_after_remaining() {
        let e: Error<()> = CircuitOpen {
            state: CircuitState::Open,
            remaining: Some(Duration::from_secs(5)),
        }
        .into();
        assert!(e.is_rejection());
        assert_eq!(
            e.policy_outcome(),
            Some(Outcome::RetryAfter(Duration::from_secs(5)))
        );
    }
}
