//! [`SmtpConfig`]: one SMTP destination, as written in the relay's TOML.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::payload::is_dot_atom;
use crate::ConnectorError;

/// How secrets are shown in `Debug` and `Serialize`.
const REDACTED: &str = "***";

/// How the connection to the server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text only, for a trusted relay on the same host or network. Credentials and
    /// messages cross the network unencrypted. Default port 25.
    None,
    /// Plain text first, then `STARTTLS`, which is required: a server that does not offer it is
    /// refused. Default port 587 (submission).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", RFC 8314). Default port 465 (submissions).
    Tls,
}

impl TlsMode {
    /// The port used when the configuration names none.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// The SMTP password, already resolved by the relay (from `env:` or `file:`).
///
/// `Debug` and `Serialize` show `***`; only [`SmtpPassword::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpPassword(String);

impl SmtpPassword {
    /// Wraps a resolved password.
    pub fn new(password: impl Into<String>) -> Self {
        SmtpPassword(password.into())
    }

    /// The password itself, for the SMTP `AUTH` exchange.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SmtpPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SmtpPassword {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for SmtpPassword {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SmtpPassword)
    }
}

/// The connection pool of one SMTP destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpPoolConfig {
    /// The most idle connections kept open for reuse (default 4). It does not cap concurrent
    /// deliveries: the relay's bulkhead does; connections beyond this are closed after use.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// How long an idle connection is kept before it is closed (default 60 s).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for SmtpPoolConfig {
    fn default() -> Self {
        SmtpPoolConfig {
            max_size: default_max_size(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_size() -> u32 {
    4
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One SMTP destination.
///
/// ```toml
/// host = "smtp.example.com"
/// port = 587                                # default by `tls`: 25, 587 or 465
/// tls = "starttls"                          # none | starttls (the default) | tls
/// tls_root_ca = "/etc/ferrule/mail-ca.pem"  # optional: also trust these CA certificates
/// username = "relay@example.com"            # optional; needs `password`
/// password = "…"                            # resolved by the relay from env: or file:
/// from = "ferrule <relay@example.com>"
/// message_id_domain = "relay.example.com"   # default: the domain of `from`
/// hello_name = "relay.example.com"          # EHLO name; default: `message_id_domain`
/// timeout = "30s"                           # per attempt, the default
/// pool = { max_size = 4, idle_timeout = "60s" }
/// ```
///
/// `Debug` and `Serialize` hide the password.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name or IP address.
    pub host: String,
    /// The server's port; without one, [`TlsMode::default_port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How the connection is secured (default `starttls`).
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file with one or more CA certificates to trust for this server, besides the
    /// platform's roots: for a server whose certificate a private CA issued. Read when the
    /// configuration is validated and when the connector is built; refused with
    /// `tls = "none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_root_ca: Option<PathBuf>,
    /// The user to authenticate as (`AUTH PLAIN` or `LOGIN`); needs `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SmtpPassword>,
    /// The sender mailbox: the `From` header and the envelope sender (`MAIL FROM`).
    pub from: String,
    /// The domain in generated `Message-ID`s, `<{message id}@{domain}>`; default: the domain
    /// of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id_domain: Option<String>,
    /// The name the connector gives in `EHLO`; default: the message id domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_name: Option<String>,
    /// How long one attempt may take, from taking a connection to the server's final reply
    /// (default 30 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The connection pool.
    #[serde(default)]
    pub pool: SmtpPoolConfig,
}

/// A configuration after validation: the parsed and defaulted values.
pub(super) struct Parsed {
    /// How lettre secures the connection, with the extra roots of `tls_root_ca`.
    pub(super) tls: Tls,
    pub(super) from: Mailbox,
    pub(super) port: u16,
    pub(super) message_id_domain: String,
    pub(super) hello_name: String,
}

impl SmtpConfig {
    /// A configuration for `host` sending as `from`, with every other field at its default.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        SmtpConfig {
            host: host.into(),
            port: None,
            tls: TlsMode::default(),
            tls_root_ca: None,
            username: None,
            password: None,
            from: from.into(),
            message_id_domain: None,
            hello_name: None,
            timeout: default_timeout(),
            pool: SmtpPoolConfig::default(),
        }
    }

    /// The port connected to: `port`, or the default of the TLS mode.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Checks every field; the error names the one at fault.
    ///
    /// Refuses an empty or malformed host, port 0, a `tls_root_ca` that cannot be read, holds
    /// no certificate or a malformed one, or comes with `tls = "none"`, a username without a
    /// password (or the other way round), a `from` that is not a mailbox, a message id domain
    /// or EHLO name that is not a plain domain (`dot-atom` text), a zero timeout, and a pool of
    /// size 0 or with a zero idle timeout.
    ///
    /// Reads the `tls_root_ca` file and builds the TLS settings, so that a configuration
    /// check finds a missing file, or a TLS mode that cannot be set up on this host (no system
    /// CA certificates and no `tls_root_ca`: an error naming `tls`).
    pub fn validate(&self) -> Result<(), ConnectorError> {
        self.parse().map(drop)
    }

    pub(super) fn parse(&self) -> Result<Parsed, ConnectorError> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err(ConnectorError::invalid("host", "must not be empty"));
        }
        if host.contains(|c: char| c.is_whitespace() || c.is_control() || "/@<>".contains(c)) {
            return Err(ConnectorError::invalid(
                "host",
                "must be a host name or an IP address",
            ));
        }
        if self.port == Some(0) {
            return Err(ConnectorError::invalid("port", "must not be 0"));
        }
        let tls = self.tls_settings(host)?;
        match (&self.username, &self.password) {
            (Some(user), _) if user.is_empty() => {
                return Err(ConnectorError::invalid("username", "must not be empty"));
            }
            (Some(_), None) => {
                return Err(ConnectorError::InvalidSecret {
                    field: "password".into(),
                    reason: "is required when `username` is set".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConnectorError::invalid(
                    "username",
                    "is required when `password` is set",
                ));
            }
            _ => {}
        }
        if let Some(user) = &self.username
            && user.contains(['\r', '\n', '\0'])
        {
            return Err(ConnectorError::invalid(
                "username",
                "must not contain line breaks or NUL",
            ));
        }
        if let Some(password) = &self.password
            && password.expose().contains(['\r', '\n', '\0'])
        {
            return Err(ConnectorError::InvalidSecret {
                field: "password".into(),
                reason: "must not contain line breaks or NUL".into(),
            });
        }
        if self.from.contains(|c: char| c.is_control()) {
            return Err(ConnectorError::invalid(
                "from",
                "must not contain line breaks or control characters",
            ));
        }
        let from: Mailbox = self.from.trim().parse().map_err(|e| {
            ConnectorError::invalid(
                "from",
                format!("not a mailbox ({e}); use `addr@domain` or `Name <addr@domain>`"),
            )
        })?;
        let message_id_domain = match &self.message_id_domain {
            Some(domain) if is_dot_atom(domain) => domain.clone(),
            Some(_) => {
                return Err(ConnectorError::invalid(
                    "message_id_domain",
                    "must be a domain such as `relay.example.com`",
                ));
            }
            None if is_dot_atom(from.email.domain()) => from.email.domain().to_owned(),
            None => {
                return Err(ConnectorError::invalid(
                    "message_id_domain",
                    "the domain of `from` cannot be used in a Message-ID; set `message_id_domain`",
                ));
            }
        };
        let hello_name = match &self.hello_name {
            Some(name) if is_dot_atom(name) => name.clone(),
            Some(_) => {
                return Err(ConnectorError::invalid(
                    "hello_name",
                    "must be a domain such as `relay.example.com`",
                ));
            }
            None => message_id_domain.clone(),
        };
        if self.timeout.is_zero() {
            return Err(ConnectorError::invalid("timeout", "must be more than zero"));
        }
        if self.pool.max_size == 0 {
            return Err(ConnectorError::invalid(
                "pool.max_size",
                "must be at least 1",
            ));
        }
        if self.pool.idle_timeout.is_zero() {
            return Err(ConnectorError::invalid(
                "pool.idle_timeout",
                "must be more than zero",
            ));
        }
        Ok(Parsed {
            tls,
            from,
            port: self.effective_port(),
            message_id_domain,
            hello_name,
        })
    }

    /// The lettre TLS settings for `host`: the mode, with the roots of `tls_root_ca` added.
    fn tls_settings(&self, host: &str) -> Result<Tls, ConnectorError> {
        let roots = match (&self.tls_root_ca, self.tls) {
            (None, _) => Vec::new(),
            (Some(_), TlsMode::None) => {
                return Err(ConnectorError::invalid(
                    "tls_root_ca",
                    "has no use with `tls = \"none\"`; set `tls` to `starttls` or `tls`",
                ));
            }
            (Some(path), _) => read_root_ca(path)?,
        };
        let parameters = || {
            let mut builder = TlsParameters::builder(host.to_owned());
            for root in &roots {
                builder = builder.add_root_certificate(root.clone());
            }
            builder.build().map_err(|e| match &self.tls_root_ca {
                // With extra roots, building fails only on a certificate rustls cannot use.
                Some(path) => ConnectorError::invalid(
                    "tls_root_ca",
                    format!(
                        "{}: a certificate is not usable as a root: {e}",
                        path.display()
                    ),
                ),
                // Without extra roots, only when the platform's roots cannot be loaded.
                None => ConnectorError::invalid(
                    "tls",
                    format!(
                        "cannot set up TLS ({e}); without system CA certificates, name the \
                         server's CA in `tls_root_ca`"
                    ),
                ),
            })
        };
        Ok(match self.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(parameters()?),
            TlsMode::Tls => Tls::Wrapper(parameters()?),
        })
    }
}

/// The certificates of the PEM file at `path`, each as lettre takes it; at least one.
fn read_root_ca(path: &Path) -> Result<Vec<Certificate>, ConnectorError> {
    let invalid = |reason: String| {
        ConnectorError::invalid("tls_root_ca", format!("{}: {reason}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot be read ({e})")))?;
    let ders = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("is not valid PEM ({e})")))?;
    if ders.is_empty() {
        return Err(invalid(
            "holds no certificate (no `-----BEGIN CERTIFICATE-----` section)".to_owned(),
        ));
    }
    ders.into_iter()
        .map(|der| {
            Certificate::from_der(der.to_vec())
                .map_err(|e| invalid(format!("holds a malformed certificate ({e})")))
        })
        .collect()
}
