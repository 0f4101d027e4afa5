//! `[auth]`: the API tokens configured in the file (named tokens created with `ferrule token`
//! are kept in the store).

use serde::{Deserialize, Serialize};

use super::Secret;
use super::secret::show_tokens;

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Admin API tokens (every route), plain or as `sha256:<hex>`. With none here and none
    /// stored, `serve` generates one. A hash is shown by its first 8 digits, a plain token not
    /// at all.
    #[serde(serialize_with = "show_tokens")]
    pub tokens: Vec<Secret>,
    /// Read-only API tokens, written like `tokens`: they may call the routes that change
    /// nothing (lists, messages, `/status`, `/metrics`) and get 403 on the others.
    #[serde(serialize_with = "show_tokens")]
    pub read_only_tokens: Vec<Secret>,
}
