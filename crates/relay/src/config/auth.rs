//! `[auth]`: the API tokens.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::secret::show_tokens;

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API tokens, plain or as `sha256:<hex>`. Empty: the first `serve` generates one. A hash
    /// is shown by its first 8 digits, a plain token not at all.
    #[serde(serialize_with = "show_tokens")]
    pub tokens: Vec<Secret>,
}
