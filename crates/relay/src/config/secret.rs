//! Secrets in the configuration: inline, `env:NAME` or `file:/path`, and how each is shown
//! (redacted) in `config check`, logs and the API.

use std::collections::BTreeMap;
use std::fmt;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// A shared secret that callers present (a webhook's secret token, an e-mail source's
/// secret), kept only as its SHA-256 and compared in constant time: equal lengths whatever
/// the presented value's, so neither its content nor its length leaks. Hidden in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// The digest of `secret`.
    pub fn of(secret: &str) -> Self {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `presented` is the secret, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(***)")
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

/// Serialises a URL of the configuration as [`redact_url`] shows it.
pub(super) fn show_endpoint<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Serialises an optional URL of the configuration as [`redact_url`] shows it.
pub(super) fn show_optional_endpoint<S: Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&redact_url(url)),
        None => s.serialize_none(),
    }
}

/// Serialises extra HTTP headers by name, every value redacted: headers are how many receivers
/// authenticate (`Authorization`, `X-Api-Key`).
pub(super) fn show_header_values<S: Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.keys().map(|name| (name, REDACTED)))
}

/// How an API token is shown: a `sha256:` hash by its first 8 digits (a hash is not secret,
/// and its start tells tokens apart; a token so written is always a hash, as `validate()`
/// checks), anything else as [`Secret`] is.
pub(super) fn show_token(token: &Secret) -> String {
    match token.raw().strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}…", hex.get(..8).unwrap_or("")),
        None => redacted(token.raw()),
    }
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
        format!("whsec_{REDACTED}")
    } else {
        REDACTED.into()
    }
}

/// How every URL of the configuration is shown — by `config check`, `/v1/destinations`,
/// `migrate` and a destination's `Debug` — so that no credential a URL may carry is:
///
/// - the user info (`user:password@`) becomes `***@`: a user name can be a key too;
/// - the path is kept only for the store's schemes (`sqlite:`, `postgres:`, `postgresql:`),
///   where it names a file or a database; any other URL shows its origin and `/***` for a
///   path longer than `/`, because webhook and API URLs often carry their token in the path
///   (`https://hooks.example.com/services/T0/B0/XXXX`, Telegram's `/bot<token>/…`);
/// - every query value becomes `***` (keys stay; a parameter without `=` is `***` whole);
/// - a fragment becomes `#***`.
///
/// The parts are found as the `url` crate (and so the PostgreSQL driver and the HTTP client)
/// finds them: only `scheme://` opens an authority, the user info ends at the last `@` before
/// the path. Text that is not `scheme:…` shows as `***`.
///
/// ```
/// use ferrule::config::redact_url;
/// assert_eq!(
///     redact_url("https://u:pw@hooks.example.com/services/T0/XXXX?token=t1&v=2"),
///     "https://***@hooks.example.com/***?token=***&v=***"
/// );
/// assert_eq!(redact_url("postgres://relay:pw@db:5432/ferrule"), "postgres://***@db:5432/ferrule");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme) = scheme_of(url) else {
        return REDACTED.into();
    };
    let keeps_path = ["sqlite", "postgres", "postgresql"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s));
    let (head, authority, tail) = match authority_start(url) {
        Some(start) => {
            let (head, rest) = url.split_at(start);
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            (head, &rest[..end], &rest[end..])
        }
        None => {
            let (head, rest) = url.split_at(scheme.len() + 1);
            (head, "", rest)
        }
    };
    let mut out = String::from(head);
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str(REDACTED);
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, _)) => (before, true),
        None => (tail, false),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    if keeps_path || path.is_empty() || path == "/" {
        out.push_str(path);
    } else {
        out.push('/');
        out.push_str(REDACTED);
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={REDACTED}"),
                None if pair.is_empty() => String::new(),
                None => REDACTED.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// What a redacted value or part is replaced with.
const REDACTED: &str = "***";

/// The scheme of `url`: a letter, then letters, digits, `+`, `-` or `.`, before the first `:`.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Where the authority of `url` starts: right after `scheme://`, as the `url` crate reads it.
/// `None` when there is no authority, e.g. `sqlite:ferrule.db`, or a `://` inside the path or
/// query.
fn authority_start(url: &str) -> Option<usize> {
    let scheme = scheme_of(url)?;
    url[scheme.len()..]
        .starts_with("://")
        .then_some(scheme.len() + 3)
}
