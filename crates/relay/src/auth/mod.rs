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

/// One accepted token: its hash, role and name (if it has one).
#[derive(Clone)]
struct Entry {
    hash: TokenHash,
    role: Role,
    name: Option<String>,
}

/// Accepted tokens, as hashes with their roles and names.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Unnamed admin tokens from hashes.
    pub fn from_hashes(hashes: Vec<TokenHash>) -> Self {
        let mut tokens = Tokens::default();
        for hash in hashes {
            tokens.push(hash, Role::Admin, None);
        }
        tokens
    }

    /// Adds a token by its hash, with its name if it has one.
    pub fn push(&mut self, hash: TokenHash, role: Role, name: Option<String>) {
        self.entries.push(Entry { hash, role, name });
    }

    /// The tokens of `[auth] tokens` (admin) and `[auth] read_only_tokens` (read); the error
    /// names the field of one that cannot be read or is malformed, or whose name is not 1 to
    /// 64 of `A-Z a-z 0-9 _ . -` or is given twice.
    pub fn configured(auth: &AuthConfig) -> Result<Self, ferrule_policy::ConfigError> {
        let mut tokens = Tokens::default();
        for (list, field, role) in [
            (&auth.tokens, "auth.tokens", Role::Admin),
            (&auth.read_only_tokens, "auth.read_only_tokens", Role::Read),
        ] {
            for (i, configured) in list.iter().enumerate() {
                let field = format!("{field}[{i}]");
                if let Some(name) = &configured.name {
                    let bad =
                        |m: String| ferrule_policy::ConfigError::new(format!("{field}.name"), m);
                    stored::check_name(name).map_err(|e| bad(e.to_string()))?;
                    if tokens.entries.iter().any(|e| e.name.as_ref() == Some(name)) {
                        return Err(bad(format!("the name `{name}` is given to another token")));
                    }
                }
                let hash = configured_hash(&configured.token, &field)?;
                tokens.push(hash, role, configured.name.clone());
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
        self.entries.iter().any(|e| e.role == Role::Admin)
    }

    /// The name of the token with `hash`, if it is one of these and has a name. Only asked
    /// about a token already accepted, so the search need not take constant time.
    fn name_of(&self, hash: &TokenHash) -> Option<String> {
        self.entries
            .iter()
            .find(|e| e.hash == *hash)
            .and_then(|e| e.name.clone())
    }

    /// The role of `token` if it is one of these. Every hash is compared in constant time, so
    /// the answer's timing does not depend on which one (if any) matched.
    pub fn verify(&self, token: &str) -> Option<Role> {
        self.verify_hash(&hash(token))
    }

    fn verify_hash(&self, candidate: &TokenHash) -> Option<Role> {
        let mut admin = Choice::from(0);
        let mut read = Choice::from(0);
        for Entry { hash, role, .. } in &self.entries {
            let matched = hash.ct_eq(candidate);
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

impl TokenSet {
    /// How the audit log, breaker overrides and cancelled messages name the caller presenting
    /// `token` (already accepted): its name, configured or stored, else `api:` and the first 8
    /// hex digits of its SHA-256 (the hash the relay keeps, never the token), e.g.
    /// `api:1f2e3d4c`.
    pub fn caller_name(&self, token: &str) -> String {
        let hash = hash(token);
        self.configured
            .name_of(&hash)
            .or_else(|| {
                self.stored
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .name_of(&hash)
            })
            .unwrap_or_else(|| format!("api:{}", &to_hex(&hash)[..8]))
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
    fn a_caller_is_named_by_its_tokens_name_or_a_prefix_of_its_hash() {
        let mut configured = Tokens::default();
        configured.push(hash("unnamed-token-0123456789"), Role::Admin, None);
        configured.push(
            hash("named-token-0123456789"),
            Role::Read,
            Some("grafana".into()),
        );
        let mut stored = Tokens::default();
        stored.push(
            hash("stored-token-0123456789"),
            Role::Admin,
            Some("ops".into()),
        );
        let set = TokenSet::new(configured, stored);
        assert_eq!(set.caller_name("named-token-0123456789"), "grafana");
        assert_eq!(set.caller_name("stored-token-0123456789"), "ops");
        let unnamed = set.caller_name("unnamed-token-0123456789");
        assert!(
            unnamed.starts_with("api:") && unnamed.len() == 12,
            "{unnamed}"
        );
        assert!(!unnamed.contains("unnamed"));
        assert_eq!(unnamed, set.caller_name("unnamed-token-0123456789"));
        assert_ne!(unnamed, set.caller_name("another-token-0123456789"));
    }

    #[test]
    fn tokens_verify_plain_and_hashed() {
        let token = generate().unwrap();
        assert!(
            token.starts_with("frl_") && token.len() == 4 + 43,
            "{token}"
        );
        let hashed = format!("sha256:{}", to_hex(&hash("another-long-token")));
        let mut tokens = Tokens::from_hashes(vec![parse_configured(&token).unwrap()]);
        tokens.push(parse_configured(&hashed).unwrap(), Role::Read, None);
        assert_eq!(tokens.verify(&token), Some(Role::Admin));
        assert_eq!(tokens.verify("another-long-token"), Some(Role::Read));
        assert_eq!(tokens.verify("another-long-tokeN"), None);
        assert_eq!(tokens.verify(""), None);
        assert!(parse_configured("short").is_err());
        assert!(parse_configured("sha256:abc").is_err());
        assert!(!format!("{tokens:?}").contains(&token));
    }
}
