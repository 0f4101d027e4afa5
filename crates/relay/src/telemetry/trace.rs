//! W3C Trace Context: the `traceparent` a request or an inbound event carries, checked as the
//! specification says (<https://www.w3.org/TR/trace-context/#traceparent-header>), one made
//! when none (or an invalid one) came, and a new span of the same trace for each attempt.

use std::fmt;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header's name.
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent`: a trace id, the caller's span (parent) id and the trace flags.
///
/// ```
/// use ferrule::telemetry::trace::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let attempt = tp.child();
/// assert_eq!(attempt.trace_id(), tp.trace_id());
/// assert_ne!(attempt.span_id(), tp.span_id());
/// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    span_id: String,
    flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` when it is invalid (the caller then starts a new
    /// trace, as the specification says). Version `00` must be exactly 55 characters; a
    /// later version is read by the version-00 layout of its first 55 characters, which must
    /// be followed by `-` or nothing; version `ff`, upper-case hex, an all-zero trace id or
    /// span id are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = &value[..2];
        if !is_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && bytes.len() != 55 {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace_id, span_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        if !is_hex(trace_id) || !is_hex(span_id) || !is_hex(flags) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new trace: random trace and span ids, sampled.
    pub fn generate() -> Self {
        TraceParent {
            trace_id: random_hex::<16>(),
            span_id: random_hex::<8>(),
            flags: 0x01,
        }
    }

    /// The trace from `headers`' `traceparent` when it is valid, else a new one; with whether
    /// it came from the caller.
    pub fn from_headers(headers: &HeaderMap) -> (Self, bool) {
        match headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
        {
            Some(tp) => (tp, true),
            None => (Self::generate(), false),
        }
    }

    /// The stored `traceparent` of a message or run, or a new trace when it has none (one
    /// stored before traces were kept) or it does not parse.
    pub fn stored_or_new(stored: Option<&str>) -> Self {
        stored.and_then(Self::parse).unwrap_or_else(Self::generate)
    }

    /// The same trace with a new span id: what one attempt sends.
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: random_hex::<8>(),
            flags: self.flags,
        }
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The 16 hex digits of the span (parent) id.
    pub fn span_id(&self) -> &str {
        &self.span_id
    }
}

impl fmt::Display for TraceParent {
    /// The version-00 header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

tokio::task_local! {
    /// The trace of the request being handled.
    static CURRENT: TraceParent;
}

/// The trace of the request being handled (see [`layer`]); a new trace outside a request
/// (an update fetched by polling, a background task).
pub fn current() -> TraceParent {
    CURRENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| TraceParent::generate())
}

/// Runs `work` under `trace`: what it stores is kept with that trace (see [`current`]).
pub async fn scope<F: Future>(trace: TraceParent, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// Middleware: every API request runs under a trace — the caller's valid `traceparent`, or a
/// new one — readable with [`current`] by what it stores (a message, an inbound event's
/// forward, a run), and in a `request` span whose `trace_id` every log line of the request
/// carries.
pub async fn layer(request: Request, next: Next) -> Response {
    let (trace, _) = TraceParent::from_headers(request.headers());
    let span = tracing::info_span!("request", trace_id = %trace.trace_id());
    #[cfg(feature = "otel")]
    super::otel::link(&span, &trace);
    CURRENT
        .scope(trace, next.run(request))
        .instrument(span)
        .await
}

/// Lower-case hex digits only (the specification refuses upper case).
fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `N` random bytes as lower-case hex, never all zero.
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    if bytes.iter().all(|&b| b == 0) {
        bytes[N - 1] = 1;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(tp.span_id(), "00f067aa0ba902b7");
        assert_eq!(TraceParent::parse(&format!(" {VALID}\t")), Some(tp));
    }

    #[test]
    fn invalid_headers_are_refused_as_the_specification_says() {
        for bad in [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_the_version_00_layout() {
        let tp =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next")
                .unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(tp.to_string().starts_with("00-"));
    }

    #[test]
    fn generated_ones_are_valid_and_children_keep_the_trace() {
        let tp = TraceParent::generate();
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp.clone()));
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.span_id(), tp.span_id());
        assert_ne!(TraceParent::generate().trace_id(), tp.trace_id());
    }
}
