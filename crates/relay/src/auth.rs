//! API tokens: generation, hashing, and constant-time checking of bearer tokens.
//!
//! Only SHA-256 hashes are kept in memory and in the store; a configured token may be given
//! plain or as `sha256:<hex>`.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The store meta key holding the hash of the generated token.
pub const TOKEN_META_KEY: &str = "relay.auth.token_sha256";

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// The accepted tokens, as hashes.
#[derive(Clone, Default)]
pub struct Tokens {
    hashes: Vec<TokenHash>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl Tokens {
    /// Tokens from hashes.
    pub fn from_hashes(hashes: Vec<TokenHash>) -> Self {
        Tokens { hashes }
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `token` is one of the accepted tokens. Every stored hash is compared in
    /// constant time, so the answer's timing does not depend on which one (if any) matched.
    pub fn verify(&self, token: &str) -> bool {
        let candidate = hash(token);
        let mut matched = subtle::Choice::from(0);
        for h in &self.hashes {
            matched |= h.ct_eq(&candidate);
        }
        matched.into()
    }
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
        let tokens = Tokens::from_hashes(vec![
            parse_configured(&token).unwrap(),
            parse_configured(&hashed).unwrap(),
        ]);
        assert!(tokens.verify(&token));
        assert!(tokens.verify("another-long-token"));
        assert!(!tokens.verify("another-long-tokeN"));
        assert!(!tokens.verify(""));
        assert!(parse_configured("short").is_err());
        assert!(parse_configured("sha256:abc").is_err());
        assert!(!format!("{tokens:?}").contains(&token));
    }
}
