//! `[inbound]`: what the relay receives from outside that is not a destination's, today the
//! e-mail sources of `[[inbound.email]]`, and their checks.

use std::collections::BTreeSet;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};

use super::{Config, DestinationKind, Secret, SecretDigest};

/// The default largest mail a source takes: 10 MiB.
pub const DEFAULT_MAX_MAIL_SIZE: usize = 10 * 1024 * 1024;

/// The largest `max_size` accepted: 50 MiB, above what the common inbound-mail services
/// post (SendGrid 30 MB, Mailgun and Cloudflare Email Routing 25 MB). A mail is held in
/// memory while it is read.
pub const MAX_MAIL_SIZE: usize = 50 * 1024 * 1024;

/// `[inbound]`. (Telegram's updates are configured on their destination, in
/// `[destinations.inbound]`, [`InboundConfig`](super::InboundConfig).)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundSection {
    /// `[[inbound.email]]`: where mail is posted, one source per service or purpose.
    pub email: Vec<EmailSourceConfig>,
}

/// One `[[inbound.email]]` source: mail posted to `POST /v1/inbound/email/{name}`.
///
/// ```toml
/// [[inbound.email]]
/// name = "github"                      # the {source} in the path; 1-64 of a-z 0-9 _ -
/// secret = "env:GITHUB_MAIL_SECRET"    # optional: accepted besides an admin API token
/// forward_to = "app-hook"              # optional: a webhook destination
/// max_size = 10485760                  # optional: bytes (default 10 MiB, at most 50 MiB)
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSourceConfig {
    /// The source's name: the `{source}` in the path, and `email:{name}` in the store.
    pub name: String,
    /// A credential this source's poster may use instead of an admin API token, as a bearer
    /// token or a basic-auth password; 16 to 256 of `A-Z a-z 0-9 - . _ ~`, so it can sit in
    /// a URL's user info. Inline or `env:` / `file:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A webhook destination each new mail is enqueued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    /// The largest request body taken, in bytes: the raw message, or the whole form
    /// (default 10 MiB, at most 50 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<usize>,
}

/// An e-mail source, checked, with its secret read and kept only as a digest.
#[derive(Debug, Clone)]
pub struct EmailSource {
    /// The name in the path.
    pub name: String,
    /// The source's own credential, if it has one.
    pub secret: Option<SecretDigest>,
    /// The destination new mail is enqueued to.
    pub forward_to: Option<String>,
    /// The largest request body taken, in bytes.
    pub max_size: usize,
}

impl Config {
    /// The `[[inbound.email]]` sources, checked; the error names the field, e.g.
    /// `inbound.email[0].forward_to`.
    pub fn email_sources(&self) -> Result<Vec<EmailSource>, ConfigError> {
        let mut names = BTreeSet::new();
        let mut sources = Vec::with_capacity(self.inbound.email.len());
        for (i, source) in self.inbound.email.iter().enumerate() {
            let resolved = self.email_source(i, source)?;
            if !names.insert(resolved.name.clone()) {
                return Err(ConfigError::new(
                    format!("inbound.email[{i}].name"),
                    format!("`{}` is used by an earlier source", resolved.name),
                ));
            }
            sources.push(resolved);
        }
        Ok(sources)
    }

    fn email_source(
        &self,
        i: usize,
        source: &EmailSourceConfig,
    ) -> Result<EmailSource, ConfigError> {
        let at = |field: &str| format!("inbound.email[{i}].{field}");
        let name = source.name.as_str();
        if !(1..=64).contains(&name.len())
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
        {
            return Err(ConfigError::new(
                at("name"),
                "must be 1 to 64 of `a-z`, `0-9`, `_` and `-` (it is a path segment)",
            ));
        }
        let secret = match &source.secret {
            None => None,
            Some(secret) => {
                let value = secret.expose(&at("secret"))?;
                check_source_secret(&value).map_err(|m| ConfigError::new(at("secret"), m))?;
                Some(SecretDigest::of(&value))
            }
        };
        let forward_to = source.forward_to.as_deref().map(str::trim);
        if let Some(target) = forward_to {
            self.destination_of_kind(&at("forward_to"), target, DestinationKind::Webhook)?;
        }
        let max_size = source.max_size.unwrap_or(DEFAULT_MAX_MAIL_SIZE);
        if !(1..=MAX_MAIL_SIZE).contains(&max_size) {
            return Err(ConfigError::new(
                at("max_size"),
                format!("must be 1 to {MAX_MAIL_SIZE} bytes (50 MiB)"),
            ));
        }
        Ok(EmailSource {
            name: name.to_owned(),
            secret,
            forward_to: forward_to.map(str::to_owned),
            max_size,
        })
    }
}

/// Checks a source's secret: 16 to 256 of `A-Z a-z 0-9 - . _ ~`, the characters a URL's user
/// info carries as they are (`https://mail:<secret>@relay.example.com/…`).
pub fn check_source_secret(value: &str) -> Result<(), String> {
    if !(16..=256).contains(&value.len()) {
        return Err(format!("must be 16 to 256 characters, not {}", value.len()));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(
            "may contain only `A-Z`, `a-z`, `0-9`, `-`, `.`, `_` and `~` (so it can sit in a \
             URL's user info unescaped)"
                .into(),
        );
    }
    Ok(())
}
