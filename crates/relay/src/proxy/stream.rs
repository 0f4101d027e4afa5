//! Passing a successful answer's body through as it arrives: the breaker's permit is held
//! until the body ends, tokens are read from `usage` on the way, and an upstream failure after
//! the first byte ends the stream (with an SSE `event: error` for event streams).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use ferrule_policy::breaker::OwnedPermit;
use ferrule_policy::bulkhead::OwnedBulkheadPermit;
use ferrule_policy::classify::Usage;
use ferrule_policy::duration::readable;
use ferrule_policy::{Outcome, SharedClock};
use serde_json::{Value, json};

use crate::destination::Destination;
use crate::telemetry::prometheus::{AI_TOKENS, PROXY_CALLS, PROXY_TTFB};

/// How a passed-through body ended, as the `outcome` label of [`PROXY_CALLS`] says it.
const SUCCESS: &str = "success";
const STREAM_FAILED: &str = "stream_failed";
const CANCELLED: &str = "cancelled";

/// Where the token counts are read from, if anywhere.
enum TokenTap {
    /// Not an AI API, or a body too large to read.
    Off,
    /// A JSON body, kept up to a bound and read at the end.
    Json { body: Vec<u8>, max: usize },
    /// An event stream: each `data:` line's `usage` (OpenAI's last chunk, Anthropic's
    /// `message_start` and `message_delta`), the largest count of each kind kept.
    Events { line: Vec<u8>, usage: Usage },
}

impl TokenTap {
    fn feed(&mut self, chunk: &[u8]) {
        match self {
            TokenTap::Off => {}
            TokenTap::Json { body, max } => {
                if body.len() + chunk.len() > *max {
                    *self = TokenTap::Off;
                } else {
                    body.extend_from_slice(chunk);
                }
            }
            TokenTap::Events { line, usage } => {
                for &b in chunk {
                    if b == b'\n' {
                        read_event_line(line, usage);
                        line.clear();
                    } else if line.len() < 64 * 1024 {
                        line.push(b);
                    }
                }
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            TokenTap::Off => None,
            TokenTap::Json { body, .. } => Usage::from_body(body),
            TokenTap::Events { usage, .. } => (*usage != Usage::default()).then_some(*usage),
        }
    }
}

/// Folds the `usage` of one SSE line (`data: {…}`) into `usage`.
fn read_event_line(line: &[u8], usage: &mut Usage) {
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    if !data.windows(7).any(|w| w == b"\"usage\"") {
        return;
    }
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let found = event
        .get("usage")
        .or_else(|| event.get("message").and_then(|m| m.get("usage")))
        .and_then(Usage::from_value);
    if let Some(found) = found {
        usage.input = usage.input.max(found.input);
        usage.output = usage.output.max(found.output);
        usage.cached = usage.cached.max(found.cached);
    }
}

/// A successful answer's body on its way to the caller.
pub(super) struct Passing {
    pub(super) response: reqwest::Response,
    /// The first chunk, read before the answer was committed to.
    pub(super) first: Option<Bytes>,
    /// The breaker's admission, recorded when the body ends.
    pub(super) permit: Option<OwnedPermit>,
    /// The bulkhead's slot, held until the body ends.
    pub(super) slot: Option<OwnedBulkheadPermit>,
    /// The destination that answered.
    pub(super) dest: Arc<Destination>,
    /// The destination the call was addressed to (the calls metric's label).
    pub(super) addressed: String,
    /// Whether the body is an event stream (an error becomes `event: error`).
    pub(super) sse: bool,
    /// The longest wait for the next chunk.
    pub(super) idle: Duration,
    pub(super) clock: SharedClock,
    /// When the call started, for the time to first byte.
    pub(super) started: Instant,
    tap: TokenTap,
    /// The body's length when the answer said it (`content-length`): the caller's connection
    /// stops reading once it has that much, so the body ends there.
    expected: Option<u64>,
    /// Bytes passed so far.
    passed: u64,
    ended: bool,
}

impl Passing {
    /// A body to pass through; `tokens` reads `usage` from it (AI classifiers only), up to
    /// `max_body` bytes for a JSON body.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        response: reqwest::Response,
        first: Option<Bytes>,
        permit: OwnedPermit,
        slot: OwnedBulkheadPermit,
        dest: Arc<Destination>,
        addressed: String,
        sse: bool,
        idle: Duration,
        clock: SharedClock,
        started: Instant,
        tokens: bool,
        max_body: usize,
    ) -> Self {
        let tap = match (tokens, sse) {
            (false, _) => TokenTap::Off,
            (true, true) => TokenTap::Events {
                line: Vec::new(),
                usage: Usage::default(),
            },
            (true, false) => TokenTap::Json {
                body: Vec::new(),
                max: max_body,
            },
        };
        let expected = response.content_length();
        Passing {
            expected,
            passed: 0,
            response,
            first,
            permit: Some(permit),
            slot: Some(slot),
            dest,
            addressed,
            sse,
            idle,
            clock,
            started,
            tap,
            ended: false,
        }
    }

    /// The body for the caller's response.
    pub(super) fn into_body(mut self) -> Body {
        if self.first.is_some() {
            metrics::histogram!(PROXY_TTFB.name, "destination" => self.dest.name.clone()).record(
                self.clock
                    .now()
                    .saturating_duration_since(self.started)
                    .as_secs_f64(),
            );
        }
        if let Some(first) = &self.first {
            self.tap.feed(first);
        }
        let stream = futures_util::stream::unfold(self, |mut s| async move {
            if s.ended {
                return None;
            }
            if let Some(first) = s.first.take() {
                s.passed(&first);
                return Some((Ok(first), s));
            }
            let next = tokio::select! {
                next = s.response.chunk() => next.map_err(|e| e.to_string()),
                () = s.clock.sleep(s.idle) => Err(format!("no data for {}", readable(s.idle))),
            };
            match next {
                Ok(Some(chunk)) => {
                    s.tap.feed(&chunk);
                    s.passed(&chunk);
                    Some((Ok(chunk), s))
                }
                Ok(None) => {
                    s.finish(Outcome::Success, SUCCESS);
                    None
                }
                Err(detail) => {
                    s.finish(Outcome::Transient, STREAM_FAILED);
                    s.dest.health.failure(
                        s.clock.system_now(),
                        format!("proxied stream failed: {detail}"),
                    );
                    tracing::warn!(destination = %s.dest.name, detail = %detail, "an upstream stream failed after its first byte");
                    if s.sse {
                        let error = json!({"error": {"type": "upstream_failed", "message": format!("the upstream stream failed: {detail}")}});
                        let event = format!("event: error\ndata: {error}\n\n");
                        Some((Ok(Bytes::from(event)), s))
                    } else {
                        Some((Err(std::io::Error::other(detail)), s))
                    }
                }
            }
        });
        Body::from_stream(stream)
    }

    /// Counts `chunk` as passed on; the body ends with the last byte its length announced.
    fn passed(&mut self, chunk: &Bytes) {
        self.passed += chunk.len() as u64;
        if self
            .expected
            .is_some_and(|expected| self.passed >= expected)
        {
            self.finish(Outcome::Success, SUCCESS);
        }
    }

    /// Records how the body ended: the breaker's outcome, the calls metric and the tokens.
    fn finish(&mut self, outcome: Outcome, label: &'static str) {
        self.ended = true;
        if let Some(permit) = self.permit.take() {
            permit.record(outcome);
        }
        self.slot = None;
        if outcome.is_success() {
            self.dest.health.success();
        }
        metrics::counter!(PROXY_CALLS.name, "destination" => self.addressed.clone(), "outcome" => label)
            .increment(1);
        if let Some(usage) = self.tap.usage() {
            count_tokens(&self.dest.name, usage);
        }
    }
}

impl Drop for Passing {
    fn drop(&mut self) {
        // The caller went away mid-body: the breaker counts it as ignored (the permit's drop).
        if !self.ended {
            metrics::counter!(PROXY_CALLS.name, "destination" => self.addressed.clone(), "outcome" => CANCELLED)
                .increment(1);
        }
    }
}

/// Adds `usage` to [`AI_TOKENS`] of `destination`.
fn count_tokens(destination: &str, usage: Usage) {
    for (kind, n) in [
        ("input", usage.input),
        ("output", usage.output),
        ("cached", usage.cached),
    ] {
        if n > 0 {
            metrics::counter!(AI_TOKENS.name, "destination" => destination.to_owned(), "kind" => kind)
                .increment(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_both_providers_streams() {
        let mut tap = TokenTap::Events {
            line: Vec::new(),
            usage: Usage::default(),
        };
        // Anthropic: input in message_start, output (cumulative) in message_delta; split
        // across chunks anywhere.
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        for piece in anthropic.as_bytes().chunks(7) {
            tap.feed(piece);
        }
        assert_eq!(
            tap.usage(),
            Some(Usage {
                input: 25,
                output: 15,
                cached: 0
            })
        );
        let mut tap = TokenTap::Events {
            line: Vec::new(),
            usage: Usage::default(),
        };
        tap.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(tap.usage().map(|u| (u.input, u.output)), Some((9, 2)));
    }

    #[test]
    fn a_json_body_past_the_bound_is_not_read() {
        let mut tap = TokenTap::Json {
            body: Vec::new(),
            max: 10,
        };
        tap.feed(b"{\"usage\":{\"prompt_tokens\":1}}");
        assert_eq!(tap.usage(), None);
    }
}
