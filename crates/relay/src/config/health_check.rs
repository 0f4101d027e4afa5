//! `[destinations.health_check]`: an active check of one destination's dependency, run on a
//! schedule whether or not messages flow.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[destinations.health_check]`: what to check, how often, and what it takes to count the
/// dependency unhealthy or healthy again.
///
/// What is checked depends on the destination's type: a webhook's receiver answers a `GET` of
/// `url` with one of `expect_status` (any 2xx when empty); a Telegram bot's token is accepted
/// (`getMe`); an SMTP server greets and answers `NOOP`; a GitHub token is accepted
/// (`GET /rate_limit`, free of rate limit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Webhook and `http` destinations: the URL to `GET` (required for them, refused for the
    /// others); the
    /// destination's `allow_private` applies to it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Webhook and `http` destinations: the statuses that pass (default: any 2xx).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// Time between checks (default 30 s, at least 1 s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The longest one check may take (default 5 s; at most `interval`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed checks in a row that make the dependency unhealthy (default 3; one is degraded).
    pub failure_threshold: u32,
    /// Passed checks in a row that make it healthy again (default 2).
    pub recovery_threshold: u32,
    /// After the relay starts, failed checks are not counted for this long (default 0 s): for
    /// a dependency that starts with it.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Whether an unhealthy check makes the whole relay `unhealthy` in `/status` (default
    /// true); otherwise it is `degraded`.
    pub critical: bool,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            url: None,
            expect_status: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            recovery_threshold: 2,
            grace_period: Duration::ZERO,
            critical: true,
        }
    }
}

impl HealthCheckConfig {
    /// Checks the values of the check at `path` (e.g. `destinations[0].health_check`) of a
    /// destination that takes a URL (`webhook`) or not.
    pub(crate) fn validate(&self, path: &str, takes_url: bool) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        match (&self.url, takes_url) {
            (None, true) => {
                return Err(ConfigError::new(
                    field("url"),
                    "is required: the URL of the receiver's health endpoint to GET",
                ));
            }
            (Some(_), false) => {
                return Err(ConfigError::new(
                    field("url"),
                    "only webhook and http destinations take one; the others know what to check",
                ));
            }
            (Some(url), true) => match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => return Err(ConfigError::new(field("url"), "must be http or https")),
                Err(e) => return Err(ConfigError::new(field("url"), format!("not a URL: {e}"))),
            },
            (None, false) => {}
        }
        if !takes_url && !self.expect_status.is_empty() {
            return Err(ConfigError::new(
                field("expect_status"),
                "only webhook and http destinations take one",
            ));
        }
        if let Some(bad) = self
            .expect_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(ConfigError::new(
                field("expect_status"),
                format!("{bad} is not an HTTP status"),
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(ConfigError::new(field("interval"), "must be at least 1s"));
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(ConfigError::new(
                field("timeout"),
                "must be longer than zero and at most `interval`",
            ));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::new(
                field("failure_threshold"),
                "must be at least 1",
            ));
        }
        if self.recovery_threshold == 0 {
            return Err(ConfigError::new(
                field("recovery_threshold"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
