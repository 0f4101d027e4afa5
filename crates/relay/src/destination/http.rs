//! What an `http` destination holds for proxied calls beyond the policies every destination
//! has: its settings and the retry policy, with its budget, that proxied calls share.

use ferrule_policy::retry::Retry;
use ferrule_policy::{ConfigError, Context};

use crate::config::ProxySettings;

/// An `http` destination's proxy side.
#[derive(Debug)]
pub struct ProxyPolicies {
    /// Fallbacks and deadline.
    pub settings: ProxySettings,
    /// In-memory retries of a proxied call; every call shares its budget.
    pub retry: Retry,
}

impl ProxyPolicies {
    /// Builds the retry policy of `settings` on `ctx`.
    pub fn new(settings: ProxySettings, ctx: Context) -> Result<Self, ConfigError> {
        let retry = Retry::with_context(settings.retry.clone(), ctx)?;
        Ok(ProxyPolicies { settings, retry })
    }
}
