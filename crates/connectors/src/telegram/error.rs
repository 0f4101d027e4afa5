//! [`TelegramError`]: why a Bot API call outside delivery (callbacks, webhooks, polling) failed.

use std::borrow::Cow;
use std::time::Duration;

use ferrule_policy::Outcome;

/// Why a Bot API call failed. Messages never contain the bot token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelegramError {
    /// An argument was refused before anything was sent.
    #[error("invalid `{field}`: {reason}")]
    InvalidArgument {
        /// The argument at fault.
        field: &'static str,
        /// Why it is refused.
        reason: Cow<'static, str>,
    },
    /// 401: the bot token was rejected. Nothing works until it is replaced.
    #[error("Telegram rejected the bot token (401): {description}")]
    Unauthorized {
        /// Telegram's description.
        description: String,
    },
    /// 409: another consumer is polling `getUpdates`, or a webhook is set while polling. An
    /// operational conflict, not a delivery failure: alert and stop polling.
    #[error("conflict (409): {description}")]
    Conflict {
        /// Telegram's description.
        description: String,
    },
    /// 429: flood control for the whole bot.
    #[error("too many requests: retry after {}", ferrule_policy::duration::readable(*.after))]
    RetryAfter {
        /// How long to wait.
        after: Duration,
    },
    /// Any other error Telegram reported with `ok: false`.
    #[error("Telegram error {code}: {description}")]
    Api {
        /// Telegram's `error_code` (or the HTTP status when absent).
        code: i32,
        /// Telegram's description.
        description: String,
    },
    /// A response that is not a Bot API answer (an HTML 502 from a proxy, garbage JSON).
    #[error("unexpected response (HTTP {status}): {detail}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// A short, token-free account of the body.
        detail: String,
    },
    /// The request did not complete: connect error, reset, timeout.
    #[error("{detail}")]
    Transport {
        /// A short, token-free account of what happened.
        detail: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
}

impl TelegramError {
    /// What the failure means to the policies: network problems, 5xx, non-JSON 2xx and flood
    /// control are retryable; a refused token, a conflict, a bad argument and other API errors
    /// are not.
    pub fn outcome(&self) -> Outcome {
        match self {
            TelegramError::RetryAfter { after } => Outcome::RetryAfter(*after),
            TelegramError::Transport { .. } => Outcome::Transient,
            TelegramError::InvalidResponse { status, .. } if *status >= 500 || *status < 300 => {
                Outcome::Transient
            }
            // Flood control without a stated wait, and server errors.
            TelegramError::Api { code, .. } if *code == 429 || *code >= 500 => Outcome::Transient,
            _ => Outcome::Permanent,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.outcome().is_retryable()
    }

    /// Whether this is the `getUpdates` conflict (409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, TelegramError::Conflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_whether_to_retry() {
        let api = |code| TelegramError::Api {
            code,
            description: String::new(),
        };
        let after = Duration::from_secs(3);
        assert_eq!(
            TelegramError::RetryAfter { after }.outcome(),
            Outcome::RetryAfter(after)
        );
        assert!(api(429).is_transient());
        assert!(api(502).is_transient());
        assert!(!api(400).is_transient());
        let conflict = TelegramError::Conflict {
            description: String::new(),
        };
        assert!(conflict.is_conflict() && !conflict.is_transient());
        let html = |status| TelegramError::InvalidResponse {
            status,
            detail: String::new(),
        };
        assert!(html(502).is_transient());
        assert!(html(200).is_transient());
        assert!(!html(404).is_transient());
        let timeout = TelegramError::Transport {
            detail: "timed out".into(),
            timeout: true,
        };
        assert!(timeout.is_transient());
    }
}
