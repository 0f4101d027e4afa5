//! `[auth]`: the API tokens configured in the file (named tokens created with `ferrule token`
//! are kept in the store).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Secret;
use super::secret::show_token;

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Admin API tokens (every route), plain or as `sha256:<hex>`, each either the token alone
    /// or `{ name = "…", token = "…" }`. With none here and none stored, `serve` generates one.
    /// A hash is shown by its first 8 digits, a plain token not at all.
    pub tokens: Vec<ConfiguredToken>,
    /// Read-only API tokens, written like `tokens`: they may call the routes that change
    /// nothing (lists, messages, `/status`, `/metrics`) and get 403 on the others.
    pub read_only_tokens: Vec<ConfiguredToken>,
}

/// One configured token: the token (plain, `sha256:<hex>`, `env:` or `file:`) and, when given,
/// the name the audit log and breaker overrides say it by (1 to 64 of `A-Z a-z 0-9 _ . -`).
/// An unnamed token is said by `api:` and the first 8 hex digits of its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredToken {
    /// The token.
    pub token: Secret,
    /// Its name, if given.
    pub name: Option<String>,
}

impl ConfiguredToken {
    /// A token with a name.
    pub fn named(name: impl Into<String>, token: Secret) -> Self {
        ConfiguredToken {
            token,
            name: Some(name.into()),
        }
    }
}

impl From<Secret> for ConfiguredToken {
    fn from(token: Secret) -> Self {
        ConfiguredToken { token, name: None }
    }
}

/// The two ways a token is written in the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Plain(Secret),
    Named(Named),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    token: Secret,
    #[serde(default)]
    name: Option<String>,
}

impl<'de> Deserialize<'de> for ConfiguredToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Written::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a token or a table `{ name = \"…\", token = \"…\" }`",
            )
        })? {
            Written::Plain(token) => Ok(token.into()),
            Written::Named(Named { token, name }) => Ok(ConfiguredToken { token, name }),
        }
    }
}

impl Serialize for ConfiguredToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match &self.name {
            None => s.serialize_str(&show_token(&self.token)),
            Some(name) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("name", name)?;
                map.serialize_entry("token", &show_token(&self.token))?;
                map.end()
            }
        }
    }
}
