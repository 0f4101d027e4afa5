//! [`ConnectorError`]: why a connector could not be built from its configuration; and
//! [`PayloadError`]: why a message payload is refused.

use std::borrow::Cow;
use std::net::IpAddr;

/// A boxed error kept as the cause of a [`ConnectorError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of connector constructors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// Why a connector could not be built.
///
/// Every variant about configuration names the field at fault ([`ConnectorError::field`]).
/// Messages never contain a secret, and never repeat a whole URL (webhook URLs often carry a
/// token in their path or query).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// A configuration value is refused.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field at fault, as a dotted path (e.g. `headers.webhook-id`).
        field: Cow<'static, str>,
        /// Why the value is refused.
        reason: Cow<'static, str>,
    },

    /// A URL does not parse.
    #[error("invalid `{field}`: not a valid URL")]
    InvalidUrl {
        /// The field holding the URL.
        field: Cow<'static, str>,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },

    /// A secret is malformed. The message says what is wrong, never what the secret is.
    #[error("invalid `{field}`: {reason}")]
    InvalidSecret {
        /// The field holding the secret.
        field: Cow<'static, str>,
        /// What is wrong with it.
        reason: Cow<'static, str>,
    },

    /// The target is a private, loopback or otherwise non-public address, and the destination
    /// does not allow those.
    #[error(
        "`{field}` points at {addr}, a {range} address; set `allow_private = true` to allow it"
    )]
    PrivateTarget {
        /// The field holding the target.
        field: Cow<'static, str>,
        /// The refused address.
        addr: IpAddr,
        /// Which kind of non-public range it falls in, e.g. `loopback`.
        range: &'static str,
    },

    /// The underlying client (HTTP, SMTP, …) could not be built.
    #[error("could not build the client")]
    Client {
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

impl ConnectorError {
    /// An [`Invalid`](ConnectorError::Invalid) error about `field`.
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConnectorError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The configuration field at fault, as a dotted path, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConnectorError::Invalid { field, .. }
            | ConnectorError::InvalidUrl { field, .. }
            | ConnectorError::InvalidSecret { field, .. }
            | ConnectorError::PrivateTarget { field, .. } => Some(field),
            ConnectorError::Client { .. } => None,
        }
    }

    /// Prefixes the field path: `url` within `destinations.orders` becomes
    /// `destinations.orders.url`.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        match &mut self {
            ConnectorError::Invalid { field, .. }
            | ConnectorError::InvalidUrl { field, .. }
            | ConnectorError::InvalidSecret { field, .. }
            | ConnectorError::PrivateTarget { field, .. } => {
                *field = format!("{prefix}.{field}").into();
            }
            ConnectorError::Client { .. } => {}
        }
        self
    }
}

/// Why a message payload is refused: the field at fault (a path such as `to[1]` or
/// `reply_markup.inline_keyboard[0][1].callback_data`) and the reason. The relay answers 422
/// with it at submit time.
///
/// ```
/// use ferrule_connectors::smtp::validate_payload;
///
/// let err = validate_payload(r#"{"to": ["a@example.com", "nobody"], "subject": "hi", "text": "x"}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "to[1]");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct PayloadError {
    field: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl PayloadError {
    /// An error about `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        PayloadError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field at fault, as a path; `payload` when the whole document is.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the field is refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn names_the_field_and_prefixes_it() {
        let err = ConnectorError::invalid("timeout", "must be more than zero");
        assert_eq!(err.field(), Some("timeout"));
        assert_eq!(err.to_string(), "invalid `timeout`: must be more than zero");
        let err = err.within("destinations.orders");
        assert_eq!(err.field(), Some("destinations.orders.timeout"));

        let err = ConnectorError::PrivateTarget {
            field: "url".into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            range: "loopback",
        };
        assert_eq!(
            err.to_string(),
            "`url` points at 127.0.0.1, a loopback address; set `allow_private = true` to allow it"
        );
    }

    #[test]
    fn keeps_the_source() {
        let cause = std::io::Error::other("no TLS roots");
        let err = ConnectorError::Client {
            source: Box::new(cause),
        };
        assert_eq!(err.field(), None);
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("no TLS roots")
        );
        let err = ConnectorError::InvalidUrl {
            field: "url".into(),
            source: "relative URL without a base".into(),
        }
        .within("destinations.orders");
        assert_eq!(
            err.to_string(),
            "invalid `destinations.orders.url`: not a valid URL"
        );
        assert!(err.source().is_some());
    }
}
