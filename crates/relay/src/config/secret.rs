//! Secrets in the configuration: inline, `env:NAME` or `file:/path`, and how each is shown
//! (redacted) in `config check`, logs and the API.

use std::fmt;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value: redacted in `Debug` and when serialised (so in `config check` and logs).
///
/// Written inline, as `env:NAME` (read from the environment) or `file:/path` (read from a
/// file, trailing newline removed).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its configured text.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// Whether the secret is a reference (`env:NAME` or `file:/path`) that
    /// [`expose`](Self::expose) reads from the environment or a file, rather than the value.
    pub fn is_reference(&self) -> bool {
        self.0.starts_with("env:") || self.0.starts_with("file:")
    }

    /// The value, reading `env:` and `file:` references. `field` names it in errors.
    pub fn expose(&self, field: &str) -> Result<String, ConfigError> {
        if let Some(var) = self.0.strip_prefix("env:") {
            return std::env::var(var).map_err(|_| {
                ConfigError::new(
                    field.to_owned(),
                    format!("environment variable `{var}` is not set"),
                )
            });
        }
        if let Some(path) = self.0.strip_prefix("file:") {
            return std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    ConfigError::new(field.to_owned(), format!("cannot read `{path}`: {e}"))
                });
        }
        Ok(self.0.clone())
    }

    /// The text as configured, only for values that are not really secret (the store URL
    /// without a password is shown by [`redact_url`]).
    pub(super) fn raw(&self) -> &str {
        &self.0
    }
}

/// Serialises the store URL without its password (a reference as written).
pub(super) fn show_url<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    if url.is_reference() {
        s.serialize_str(url.raw())
    } else {
        s.serialize_str(&redact_url(url.raw()))
    }
}

/// Serialises API tokens: a `sha256:` hash by its first 8 digits (a hash is not secret, and
/// its start tells tokens apart; a token so written is always a hash, as `validate()`
/// checks), anything else as [`Secret`] does.
pub(super) fn show_tokens<S: Serializer>(tokens: &[Secret], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        tokens
            .iter()
            .map(|token| match token.raw().strip_prefix("sha256:") {
                Some(hex) => format!("sha256:{}…", hex.get(..8).unwrap_or("")),
                None => redacted(token.raw()),
            }),
    )
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redacted(&self.0))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// How a secret is shown: references stay visible (they are not secret), values do not, and
/// nothing of a value is shown but whether it is a webhook secret. The fields that show more
/// say so themselves ([`show_url`], [`show_tokens`]): a value's look must not decide it, or an
/// SMTP password containing `://` would be shown as a URL.
pub(super) fn redacted(text: &str) -> String {
    if text.starts_with("env:") || text.starts_with("file:") {
        text.to_owned()
    } else if text.starts_with("whsec_") {
        "whsec_***".into()
    } else {
        "***".into()
    }
}

/// A URL with its passwords replaced by `***`: the one in the user info
/// (`postgres://user:***@host/db`) and the value of every `password` query parameter
/// (`?password=***`), both places PostgreSQL URLs may hold one. The parts are found as the
/// `url` crate (and so the PostgreSQL driver) finds them: only `scheme://` opens an authority,
/// the user info ends at the last `@` before the path, query parameter names are
/// percent-decoded. A URL without an authority (`sqlite:ferrule.db?password=…`) still has its
/// query redacted.
pub fn redact_url(url: &str) -> String {
    let (head, authority, tail) = match authority_start(url) {
        Some(start) => {
            let (head, rest) = url.split_at(start);
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            (head, &rest[..end], &rest[end..])
        }
        None => ("", "", url),
    };
    let mut out = String::from(head);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<&str> = query
                .split('&')
                .map(|pair| {
                    let key = url::form_urlencoded::parse(pair.as_bytes()).next();
                    match key {
                        Some((key, _)) if key == "password" => "password=***",
                        _ => pair,
                    }
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Where the authority of `url` starts: after `scheme://`, the scheme being a letter then
/// letters, digits, `+`, `-` or `.`, as the `url` crate reads it. `None` when there is no
/// authority, e.g. `sqlite:ferrule.db`, or a `://` inside the path or query.
pub(super) fn authority_start(url: &str) -> Option<usize> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && url[colon..].starts_with("://")).then_some(colon + 3)
}
