//! `[ui]`: the operator's dashboard at `/ui`: sign-in sessions and bulk jobs.

use std::time::Duration;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};

use super::positive;

/// `[ui]`: the dashboard served at `/ui` on the API's address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// How long a sign-in lasts (default 12 h, at least 1 min, at most 30 days).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` on every answer (default false). Without it the
    /// cookie is `Secure` only when a proxy in front says the request came over TLS
    /// (`X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Most messages a bulk replay or purge started from the dashboard touches per second
    /// (default 500).
    pub bulk_rate: u32,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            bulk_rate: 500,
        }
    }
}

impl UiConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.session_ttl < Duration::from_secs(60)
            || self.session_ttl > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::new(
                "ui.session_ttl",
                "must be between 1 min and 30 days",
            ));
        }
        positive("ui.bulk_rate", u64::from(self.bulk_rate))
    }
}
