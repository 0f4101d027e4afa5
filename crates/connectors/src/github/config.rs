//! [`GithubConfig`]: one GitHub destination (a token and where its API is), as written in the
//! relay's TOML.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConnectorError;
use crate::shared::parse_api_base;

/// The public GitHub REST API.
pub const DEFAULT_API_BASE: &str = "https://api.github.com";

/// One GitHub destination: the token it acts with and the API it talks to.
///
/// ```toml
/// token = "github_pat_…"                 # resolved by the relay from env: or file:
/// api_base = "https://api.github.com"    # the default; GitHub Enterprise Server: https://HOST/api/v3
/// user_agent = "ferrule/0.1.0"           # GitHub refuses requests without one
/// timeout = "30s"                        # per request, the default
/// min_write_interval = "1s"              # the pace of writes with this token
/// login = "ferrule-bot"                  # optional: the token's account, for tokens that cannot call GET /user
/// secondary_limit = { first_wait = "60s", max_wait = "30m", max_tries = 6 }
/// ```
///
/// `Debug` and `Serialize` hide the token: a serialised configuration is for showing, not for
/// storing.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// The token the destination acts with, already resolved from `env:` or `file:`.
    pub token: GithubToken,
    /// The REST API (default [`DEFAULT_API_BASE`]); for GitHub Enterprise Server,
    /// `https://HOST/api/v3`. `http` is accepted only for loopback hosts or with `allow_http`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Allow a plain-`http` `api_base` on a non-loopback host (default `false`): the token would
    /// travel unencrypted, so only do this inside a trusted network.
    #[serde(default)]
    pub allow_http: bool,
    /// The `User-Agent` of every request (default `ferrule/<version>`); GitHub refuses requests
    /// without one and asks for the application's name.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// How long one request may take, from connecting to reading the whole response (default
    /// 30 s). An attempt may make several requests (a retry checks what an earlier attempt did).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The least time between one write with this token finishing and the next starting
    /// (default 1 s, GitHub's guidance). The relay enforces it with a
    /// [`WritePace`](super::WritePace).
    #[serde(default = "default_min_write_interval", with = "humantime_serde")]
    pub min_write_interval: Duration,
    /// The login of the token's account, when `GET /user` cannot tell it (a GitHub App
    /// installation token acts as `APP-NAME[bot]`). Used only when a retried review looks for
    /// the one an earlier attempt may have made; when absent, `GET /user` is asked once.
    #[serde(default)]
    pub login: Option<String>,
    /// How long to wait after GitHub's secondary rate limit, and when to give up.
    #[serde(default)]
    pub secondary_limit: SecondaryLimit,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

fn default_user_agent() -> String {
    concat!("ferrule/", env!("CARGO_PKG_VERSION")).to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_min_write_interval() -> Duration {
    Duration::from_secs(1)
}

impl GithubConfig {
    /// A configuration for `token` with every other field at its default.
    pub fn new(token: GithubToken) -> Self {
        GithubConfig {
            token,
            api_base: default_api_base(),
            allow_http: false,
            user_agent: default_user_agent(),
            timeout: default_timeout(),
            min_write_interval: default_min_write_interval(),
            login: None,
            secondary_limit: SecondaryLimit::default(),
        }
    }

    /// Checks every field; the error names the one at fault.
    ///
    /// Refuses an `api_base` that does not parse, is not `http`/`https`, has a query, fragment
    /// or credentials, or is plain `http` on a non-loopback host without `allow_http`; a
    /// `user_agent` that is empty or not a valid header value; a zero `timeout`; a `login` that
    /// is not a GitHub login; and invalid `secondary_limit` settings.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        self.parse_api_base().map(drop)
    }

    /// Validates and returns the API base without a trailing `/`.
    pub(super) fn parse_api_base(&self) -> Result<String, ConnectorError> {
        let api_base = parse_api_base(&self.api_base, self.allow_http, "the token")?;
        if self.user_agent.trim().is_empty() || HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(ConnectorError::invalid(
                "user_agent",
                "must be a non-empty header value (printable ASCII), e.g. your application's name",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConnectorError::invalid("timeout", "must be more than zero"));
        }
        if let Some(login) = &self.login
            && !is_login(login)
        {
            return Err(ConnectorError::invalid(
                "login",
                "must be a GitHub login: letters, digits and `-`, optionally ending in `[bot]`",
            ));
        }
        self.secondary_limit.validate()?;
        Ok(api_base)
    }
}

/// Whether `login` looks like a GitHub account: 1 to 39 letters, digits or `-`, not starting
/// with `-`, or an app's bot account `NAME[bot]`.
fn is_login(login: &str) -> bool {
    let name = login.strip_suffix("[bot]").unwrap_or(login);
    (1..=39).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubConfig")
            .field("token", &self.token)
            .field("api_base", &self.api_base)
            .field("allow_http", &self.allow_http)
            .field("user_agent", &self.user_agent)
            .field("timeout", &self.timeout)
            .field("min_write_interval", &self.min_write_interval)
            .field("login", &self.login)
            .field("secondary_limit", &self.secondary_limit)
            .finish()
    }
}

/// What to do when GitHub answers with its secondary rate limit (403 or 429 without
/// `x-ratelimit-remaining: 0`) and no `retry-after`.
///
/// GitHub's guidance: wait at least a minute, then wait exponentially longer while the limit
/// persists, and give up after a number of tries. The whole token pauses for
/// `first_wait × 2^(n-1)` (at most `max_wait`) after the n-th such answer in a row; a message
/// refused `max_tries` times in a row fails for good.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecondaryLimit {
    /// The wait after the first secondary limit of a run (default 60 s, at least a minute).
    #[serde(with = "humantime_serde")]
    pub first_wait: Duration,
    /// The longest wait, however long the run (default 30 min).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How many secondary limits in a row one message may meet before it fails permanently
    /// (default 6: waits of 1, 2, 4, 8 and 16 minutes, then it gives up).
    pub max_tries: u32,
}

impl Default for SecondaryLimit {
    fn default() -> Self {
        SecondaryLimit {
            first_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(30 * 60),
            max_tries: 6,
        }
    }
}

impl SecondaryLimit {
    /// Checks each setting; the error names it, e.g. `secondary_limit.first_wait`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        if self.first_wait < Duration::from_secs(60) {
            return Err(ConnectorError::invalid(
                "secondary_limit.first_wait",
                "must be at least 60s: GitHub asks to wait at least a minute after a secondary \
                 rate limit",
            ));
        }
        if self.max_wait < self.first_wait {
            return Err(ConnectorError::invalid(
                "secondary_limit.max_wait",
                "must be at least `first_wait`",
            ));
        }
        if self.max_tries == 0 {
            return Err(ConnectorError::invalid(
                "secondary_limit.max_tries",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The wait after the `run`-th secondary limit in a row (from 1): `first_wait` doubled for
    /// each earlier one, at most `max_wait`.
    pub fn wait(&self, run: u32) -> Duration {
        let doublings = run.saturating_sub(1).min(31);
        self.first_wait
            .saturating_mul(1 << doublings)
            .min(self.max_wait)
    }
}

/// How a token is shown in `Debug`, `Serialize` and error text.
const REDACTED: &str = "***";

/// The prefixes GitHub gives its token kinds; not secret, and telling which kind of token a
/// destination uses helps an operator.
const KNOWN_PREFIXES: &[&str] = &["github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"];

/// A GitHub token: a personal access token (classic `ghp_…` or fine-grained `github_pat_…`), a
/// GitHub App installation token (`ghs_…`), an OAuth token, or a GitHub Enterprise Server token.
///
/// Parsing only checks that it can be sent in a header (printable ASCII without spaces). `Debug`
/// and `Serialize` show at most its kind's prefix, and there is deliberately no `Display`.
///
/// ```
/// use ferrule_connectors::github::GithubToken;
///
/// let token: GithubToken = "ghp_16C7e42F292c6912E7710c838347Ae178B4a".parse()?;
/// assert_eq!(format!("{token:?}"), "GithubToken(ghp_***)");
/// assert!("two words".parse::<GithubToken>().is_err());
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct GithubToken(String);

impl GithubToken {
    /// The whole token, for the `Authorization` header.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        text.replace(&self.0, REDACTED)
    }

    /// The token as shown: its kind's prefix, if it has a known one, then `***`.
    fn redacted(&self) -> String {
        let prefix = KNOWN_PREFIXES
            .iter()
            .find(|p| self.0.starts_with(**p))
            .copied()
            .unwrap_or("");
        format!("{prefix}{REDACTED}")
    }
}

impl FromStr for GithubToken {
    type Err = ConnectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let reason = if s.is_empty() {
            "must not be empty"
        } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
            "must be printable ASCII without spaces (check for a trailing newline)"
        } else if KNOWN_PREFIXES.contains(&s) {
            "is only a prefix"
        } else {
            return Ok(GithubToken(s.to_owned()));
        };
        Err(ConnectorError::InvalidSecret {
            field: "token".into(),
            reason: reason.into(),
        })
    }
}

impl fmt::Debug for GithubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GithubToken({})", self.redacted())
    }
}

impl Serialize for GithubToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for GithubToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
