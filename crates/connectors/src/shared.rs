//! What the HTTP connectors share: checking an API base URL and configured extra headers,
//! reading a bounded body, and quoting what came back as one short line for a result's detail.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt::Write as _;
use std::net::IpAddr;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::ConnectorError;

/// Parses a destination's configured extra `headers` into a map of sensitive values (they
/// often carry credentials: kept out of debug output and HPACK tables).
///
/// Refuses, naming `headers.{name}`, a name or value that is not valid, a name listed twice
/// (names are case-insensitive), and a name `reserved` says the connector sets itself, with
/// `reserved_reason` as the message.
pub(crate) fn parse_extra_headers(
    headers: &BTreeMap<String, String>,
    reserved: impl Fn(&HeaderName) -> bool,
    reserved_reason: &'static str,
) -> Result<HeaderMap, ConnectorError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let field = || format!("headers.{name}");
        let parsed: HeaderName = name
            .parse()
            .map_err(|_| ConnectorError::invalid(field(), "not a valid header name"))?;
        if reserved(&parsed) {
            return Err(ConnectorError::invalid(field(), reserved_reason));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| ConnectorError::invalid(field(), "not a valid header value"))?;
        value.set_sensitive(true);
        if map.insert(parsed, value).is_some() {
            return Err(ConnectorError::invalid(
                field(),
                "listed twice (header names are case-insensitive)",
            ));
        }
    }
    Ok(map)
}

/// The most characters of a description or body quoted in a detail.
pub(crate) const DETAIL_CHARS: usize = 200;

/// Checks an API base URL and returns it without a trailing `/`.
///
/// Refuses one that does not parse, is not `http`/`https`, has a query or fragment or carries
/// credentials, or is plain `http` on a non-loopback host without `allow_http`: `credential`
/// (e.g. "the bot token") would travel unencrypted.
pub(crate) fn parse_api_base(
    api_base: &str,
    allow_http: bool,
    credential: &str,
) -> Result<String, ConnectorError> {
    let url = Url::parse(api_base).map_err(|e| ConnectorError::InvalidUrl {
        field: "api_base".into(),
        source: Box::new(e),
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback(&url) => {}
        "http" => {
            return Err(ConnectorError::invalid(
                "api_base",
                format!(
                    "plain http would send {credential} unencrypted; use https, a loopback \
                     host, or set `allow_http = true`"
                ),
            ));
        }
        other => {
            return Err(ConnectorError::invalid(
                "api_base",
                format!("scheme `{other}` is not supported; use https"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConnectorError::invalid(
            "api_base",
            "must not have a query or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConnectorError::invalid(
            "api_base",
            format!("must not carry credentials; {credential} is the credential"),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `true` when the URL's host is `localhost` or a loopback IP literal.
fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Reads the whole body, up to `max` bytes.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() >= max {
            bytes.truncate(max);
            break;
        }
    }
    Ok(bytes)
}

/// `text` on one line (runs of whitespace and control characters become one space), trimmed,
/// at most [`DETAIL_CHARS`] characters.
pub(crate) fn quote(text: &str) -> String {
    quote_within(text, DETAIL_CHARS)
}

/// [`quote`] with room for `max` characters.
pub(crate) fn quote_within(text: &str, max: usize) -> String {
    let mut line = String::new();
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        if line.len() > 4 * max {
            break;
        }
    }
    truncate(&line, max)
}

/// What went wrong with a request that got no answer, as "could not connect: …" or "request
/// failed: …" and the chain of causes, without reqwest's own line: it repeats the URL, which
/// may hold a token in its path or query. At most twice [`DETAIL_CHARS`] characters.
pub(crate) fn transport_detail(err: &reqwest::Error) -> String {
    let mut detail = String::from(if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    });
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(detail, ": {cause}");
        source = cause.source();
    }
    truncate(&detail, 2 * DETAIL_CHARS)
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_makes_one_bounded_line() {
        assert_eq!(quote("  a\r\n\tb  c "), "a b c");
        let long = "é".repeat(DETAIL_CHARS + 5);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), DETAIL_CHARS + 1);
        assert!(quoted.ends_with('…'));
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
    }

    #[test]
    fn api_base_is_checked_and_trimmed() {
        let parse = |url: &str, allow_http| parse_api_base(url, allow_http, "the token");
        assert_eq!(
            parse("https://ghe.example.com/api/v3/", false).unwrap(),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(
            parse("http://[::1]:8080", false).unwrap(),
            "http://[::1]:8080"
        );
        assert!(parse("http://example.com", true).is_ok());
        let err = parse("http://example.com", false).unwrap_err();
        assert!(err.to_string().contains("the token unencrypted"), "{err}");
        for bad in [
            "ftp://example.com",
            "https://example.com/?a=1",
            "https://u:p@example.com",
            "not a url",
        ] {
            assert_eq!(parse(bad, false).unwrap_err().field(), Some("api_base"));
        }
    }
}
