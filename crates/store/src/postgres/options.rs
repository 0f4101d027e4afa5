//! Connection options for the PostgreSQL backend: URL parsing, pool size, schema, timeouts.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::{Result, StoreError};

/// How to reach the PostgreSQL database and which schema holds the store's tables.
///
/// Parsed from a URL such as
/// `postgres://user:secret@db.example:5432/ferrule?schema=relay&pool_size=16&connect_timeout=5`.
/// `schema`, `pool_size` and `connect_timeout` (seconds) are the store's own parameters; every
/// other part of the URL is passed to the driver as it is.
#[derive(Clone)]
pub struct PgOptions {
    pub(crate) connect: PgConnectOptions,
    /// The URL with any password replaced by `***`, for messages and logs.
    pub(crate) redacted_url: String,
    /// Schema holding the tables; created at open if missing (`public`).
    pub schema: String,
    /// Most connections the store's pool opens (16). The LISTEN connection is extra.
    pub pool_size: u32,
    /// How long opening a connection may take before the server counts as unreachable (5 s).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.redacted_url)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Longest PostgreSQL identifier.
const MAX_IDENTIFIER: usize = 63;

impl PgOptions {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let redacted_url = redact(url);
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: redacted_url.clone(),
            reason,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "expected a URL starting with postgres:// or postgresql://".into(),
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut schema = "public".to_owned();
        let mut pool_size = 16;
        let mut connect_timeout = Duration::from_secs(5);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => schema = value.to_owned(),
                "pool_size" => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "pool_size must be a number from 1 to 1000, got `{value}`"
                            ))
                        })?;
                }
                "connect_timeout" => {
                    let secs: f64 = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "connect_timeout must be seconds between 0 and 3600, got `{value}`"
                            ))
                        })?;
                    connect_timeout = Duration::from_secs_f64(secs);
                }
                _ => passed.push(pair),
            }
        }
        let driver_url = if passed.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        let connect =
            PgConnectOptions::from_str(&driver_url).map_err(|e| invalid(e.to_string()))?;
        if connect.get_database().is_none() {
            return Err(invalid("the URL names no database".into()));
        }
        let options = PgOptions {
            connect,
            redacted_url,
            schema: String::new(),
            pool_size,
            connect_timeout,
        };
        options.with_schema(schema)
    }

    /// The same options with another schema (checked: lowercase letters, digits and `_`,
    /// starting with a letter or `_`, at most 63 bytes).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Result<Self> {
        let schema = schema.into();
        let valid = !schema.is_empty()
            && schema.len() <= MAX_IDENTIFIER
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit()
            && !schema.starts_with("pg_");
        if !valid {
            return Err(StoreError::InvalidOption {
                field: "schema",
                reason: format!(
                    "`{schema}` is not a plain lowercase identifier of at most {MAX_IDENTIFIER} bytes (and must not start with pg_)"
                ),
            });
        }
        self.schema = schema;
        Ok(self)
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// `host:port` of the server (or the socket path), for messages.
    pub fn target(&self) -> String {
        match self.connect.get_socket() {
            Some(path) => path.display().to_string(),
            None => format!("{}:{}", self.connect.get_host(), self.connect.get_port()),
        }
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.connect.get_database().unwrap_or_default()
    }

    /// Driver options for the store's connections: `search_path` set to the schema.
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        self.connect
            .clone()
            .options([("search_path", self.schema.as_str())])
            .application_name("ferrule")
    }
}

/// `url` with the password (between `user:` and `@`) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_parameters_and_passes_the_rest() {
        let o = PgOptions::from_url(
            "postgres://u:pw@localhost:6543/db?schema=relay&pool_size=4&connect_timeout=0.5&sslmode=disable",
        )
        .unwrap();
        assert_eq!(o.schema, "relay");
        assert_eq!(o.pool_size, 4);
        assert_eq!(o.connect_timeout, Duration::from_millis(500));
        assert_eq!(o.target(), "localhost:6543");
        assert_eq!(o.database(), "db");
        assert_eq!(
            o.redacted_url(),
            "postgres://u:***@localhost:6543/db?schema=relay&pool_size=4&connect_timeout=0.5&sslmode=disable"
        );
    }

    #[test]
    fn bad_urls_are_typed_errors_without_the_password() {
        for url in [
            "mysql://u@h/db",
            "postgres://u:secret@h/db?pool_size=0",
            "postgres://u:secret@h/db?connect_timeout=-1",
            "postgres://u:secret@h:notaport/db",
            "postgres://u:secret@h",
        ] {
            let err = PgOptions::from_url(url).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{url}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = PgOptions::from_url("postgres://h/db?schema=Robert');DROP").unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
    }
}
