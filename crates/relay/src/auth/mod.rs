//! API tokens: generation, hashing, roles, and constant-time checking of bearer tokens.
//!
//! Only SHA-256 hashes are kept in memory and in the store; a configured token may be given
//! plain or as `sha256:<hex>`. A token is an `admin` one (every route) or a `read` one (the
//! routes that change nothing). Tokens come from `[auth] tokens` and `read_only_tokens`, and
//! from the store, where `ferrule token` keeps named ones ([`stored`]).

pub mod stored;

use std::fmt;
use std::sync::RwLock;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{AuthConfig, Secret};

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every route: submit, replay, purge, operate breakers, and everything `Read` may.
    Admin,
    /// Only the routes that change nothing: lists, messages, status, metrics.
    Read,
}

impl Role {
    /// The name stored and shown: `admin` or `read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }
}

/// Accepted tokens, as hashes with their roles.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(TokenHash, Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Admin tokens from hashes.
    pub fn from_hashes(hashes: Vec<TokenHash>) -> Self {
        Tokens {
            entries: hashes.into_iter().map(|h| (h, Role::Admin)).collect(),
        }
    }

    /// Adds a token by its hash.
    pub fn push(&mut self, hash: TokenHash, role: Role) {
        self.entries.push((hash, role));
    }

    /// The tokens of `[auth] tokens` (admin) and `[auth] read_only_tokens` (read); the error
    /// names the field of one that cannot be read or is malformed.
    pub fn configured(auth: &AuthConfig) -> Result<Self, ferrule_policy::ConfigError> {
        let mut tokens = Tokens::default();
        for (list, field, role) in [
            (&auth.tokens, "auth.tokens", Role::Admin),
            (&auth.read_only_tokens, "auth.read_only_tokens", Role::Read),
        ] {
            for (i, token) in list.iter().enumerate() {
                tokens.push(configured_hash(token, &format!("{field}[{i}]"))?, role);
            }
        }
        Ok(tokens)
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an admin token is among them.
    pub fn has_admin(&self) -> bool {
        self.entries.iter().any(|(_, role)| *role == Role::Admin)
    }

    /// The role of `token` if it is one of these. Every hash is compared in constant time, so
    /// the answer's timing does not depend on which one (if any) matched.
    pub fn verify(&self, token: &str) -> Option<Role> {
        self.verify_hash(&hash(token))
    }

    fn verify_hash(&self, candidate: &TokenHash) -> Option<Role> {
        let mut admin = Choice::from(0);
        let mut read = Choice::from(0);
        for (h, role) in &self.entries {
            let matched = h.ct_eq(candidate);
            let is_admin = Choice::from(u8::from(*role == Role::Admin));
            admin |= matched & is_admin;
            read |= matched & !is_admin;
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// What the API accepts: the configured tokens, fixed at start, and the stored ones, which a
/// background task reloads (see [`stored::RELOAD_EVERY`]).
#[derive(Debug, Default)]
pub struct TokenSet {
    configured: Tokens,
    stored: RwLock<Tokens>,
}

impl TokenSet {
    /// The configured tokens and those read from the store.
    pub fn new(configured: Tokens, stored: Tokens) -> Self {
        TokenSet {
            configured,
            stored: RwLock::new(stored),
        }
    }

    /// Replaces the stored tokens with a fresh reading of the store.
    pub fn replace_stored(&self, stored: Tokens) {
        *self.stored.write().unwrap_or_else(|e| e.into_inner()) = stored;
    }

    /// The role of `token`, if it is accepted (compared as [`Tokens::verify`] does).
    pub fn verify(&self, token: &str) -> Option<Role> {
        let candidate = hash(token);
        let configured = self.configured.verify_hash(&candidate);
        let stored = self
            .stored
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verify_hash(&candidate);
        match (configured, stored) {
            (Some(Role::Admin), _) | (_, Some(Role::Admin)) => Some(Role::Admin),
            (Some(Role::Read), _) | (_, Some(Role::Read)) => Some(Role::Read),
            (None, None) => None,
        }
    }
}

/// The hash of the configured token in `secret`, read from its `env:` or `file:` if so.
fn configured_hash(secret: &Secret, field: &str) -> Result<TokenHash, ferrule_policy::ConfigError> {
    let value = secret.expose(field)?;
    parse_configured(&value).map_err(|m| ferrule_policy::ConfigError::new(field.to_owned(), m))
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Lower-case hex of a hash.
pub fn to_hex(hash: &TokenHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from 64 hex digits.
pub fn from_hex(text: &str) -> Option<TokenHash> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The hash of a configured token (`sha256:<hex>` or the plain token).
pub fn parse_configured(value: &str) -> Result<TokenHash, String> {
    if let Some(hex) = value.strip_prefix("sha256:") {
        return from_hex(hex).ok_or_else(|| "`sha256:` must be followed by 64 hex digits".into());
    }
    if value.len() < 16 {
        return Err("a token must be at least 16 characters long".into());
    }
    Ok(hash(value))
}

/// A new random token: `frl_` + 32 random bytes in unpadded base64url.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "frl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_plain_and_hashed() {
        let token = generate().unwrap();
        assert!(
            token.starts_with("frl_") && token.len() == 4 + 43,
            "{token}"
        );
        let hashed = format!("sha256:{}", to_hex(&hash("another-long-token")));
        let mut tokens = Tokens::from_hashes(vec![parse_configured(&token).unwrap()]);
        tokens.push(parse_configured(&hashed).unwrap(), Role::Read);
        assert_eq!(tokens.verify(&token), Some(Role::Admin));
        assert_eq!(tokens.verify("another-long-token"), Some(Role::Read));
        assert_eq!(tokens.verify("another-long-tokeN"), None);
        assert_eq!(tokens.verify(""), None);
        assert!(parse_configured("short").is_err());
        assert!(parse_configured("sha256:abc").is_err());
        assert!(!format!("{tokens:?}").contains(&token));
    }
}
