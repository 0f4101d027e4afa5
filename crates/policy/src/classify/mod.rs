//! Outcomes and classification: what a call's result means to the policies.
//!
//! Every policy decides from an [`Outcome`], never from a raw result. The caller supplies a
//! [`Classify`] implementation (or a closure); ready-made classifiers cover HTTP responses,
//! the OpenAI and Anthropic APIs, `std::io` errors and SMTP replies.

use std::time::Duration;

use serde::Serialize;

pub mod http;
pub mod io;
pub mod provider;
pub mod retry_after;
pub mod smtp;

pub use self::http::{HttpClassifier, HttpClassifierConfig};
pub use self::io::IoClassifier;
pub use self::provider::{
    LimitHint, Provider, ProviderClassifier, ProviderClassifierConfig, Quota, Reason, Usage,
    Verdict, parse_go_duration, retry_hint,
};
pub use self::retry_after::parse_retry_after;
pub use self::smtp::{
    EnhancedCode, InvalidSmtpReply, SmtpClassifier, SmtpReply, classify_smtp_code,
};

/// What one attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "class", content = "retry_after", rename_all = "snake_case")]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that may succeed if tried again.
    Transient,
    /// The call failed and may be retried, but no sooner than this delay.
    RetryAfter(#[serde(with = "humantime_serde")] Duration),
    /// The call failed and retrying will not help.
    Permanent,
    /// Neither success nor failure (e.g. a cancelled call): breakers do not count it.
    Ignored,
}

impl Outcome {
    /// `true` for [`Outcome::Success`].
    #[inline]
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// `true` for [`Outcome::Transient`], [`Outcome::RetryAfter`] and [`Outcome::Permanent`].
    #[inline]
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Transient | Outcome::RetryAfter(_) | Outcome::Permanent
        )
    }

    /// `true` when another attempt may succeed.
    #[inline]
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Transient | Outcome::RetryAfter(_))
    }

    /// The minimum wait a [`Outcome::RetryAfter`] demands.
    #[inline]
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Outcome::RetryAfter(d) => Some(d),
            _ => None,
        }
    }

    /// A short stable name: `success`, `transient`, `retry_after`, `permanent`, `ignored`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Transient => "transient",
            Outcome::RetryAfter(_) => "retry_after",
            Outcome::Permanent => "permanent",
            Outcome::Ignored => "ignored",
        }
    }
}

/// Decides the [`Outcome`] of a call's result.
///
/// Closures `Fn(&Result<T, E>) -> Outcome` implement it:
///
/// ```
/// use ferrule_policy::{Classify, Outcome};
///
/// let classify = |r: &Result<u16, ()>| match r {
///     Ok(status) if *status < 500 => Outcome::Success,
///     Ok(_) | Err(_) => Outcome::Transient,
/// };
/// assert_eq!(classify.classify(&Ok(503)), Outcome::Transient);
/// ```
pub trait Classify<T, E>: Send + Sync {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome + Send + Sync,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success and every `Err` is transient.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreTransient;

impl<T, E> Classify<T, E> for ErrorsAreTransient {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates() {
        assert!(Outcome::Success.is_success());
        assert!(Outcome::Permanent.is_failure());
        assert!(!Outcome::Permanent.is_retryable());
        assert!(Outcome::RetryAfter(Duration::from_secs(1)).is_retryable());
        assert!(!Outcome::Ignored.is_failure());
        assert_eq!(
            Outcome::RetryAfter(Duration::from_secs(3)).retry_after(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn default_classifier() {
        let c = ErrorsAreTransient;
        assert_eq!(c.classify(&Ok::<_, ()>(1)), Outcome::Success);
        assert_eq!(c.classify(&Err::<(), _>("x")), Outcome::Transient);
    }
}
