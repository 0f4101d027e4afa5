//! The JSON shapes the API answers with, built from the store's records.

use ferrule_store::{Event, Message, MessageDetail};
use serde::Serialize;
use serde_json::Value;

use crate::time::rfc3339;

/// A message as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView {
    id: String,
    destination: String,
    status: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
    ordering_key: Option<String>,
    idempotency_key: Option<String>,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventView>>,
    /// A queued call's answer (`http` destinations), shown with the full message.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Value>,
    /// The W3C trace the message was submitted under; `null` for one stored without.
    trace: Option<TraceView>,
}

/// The trace a message or run was submitted under.
#[derive(Debug, Serialize)]
pub(crate) struct TraceView {
    /// The `traceparent` as stored (the caller's, or the one the relay made).
    traceparent: String,
    /// Its trace id: what every attempt's `traceparent` and the log lines carry.
    trace_id: Option<String>,
}

impl TraceView {
    /// The view of a stored `traceparent`.
    pub(crate) fn of(traceparent: Option<String>) -> Option<Self> {
        traceparent.map(|traceparent| TraceView {
            trace_id: crate::telemetry::trace::TraceParent::parse(&traceparent)
                .map(|t| t.trace_id().to_owned()),
            traceparent,
        })
    }
}

/// One timeline row.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    seq: u32,
    at: String,
    status: &'static str,
    attempt: u32,
    outcome: Option<&'static str>,
    code: Option<String>,
    duration_ms: Option<u64>,
    detail: Option<String>,
    /// How many times the event happened in a row (a deferral repeated behind an open
    /// circuit is one event); 1 for most.
    repeats: u32,
    /// When the latest repeat happened; `null` when `repeats` is 1.
    last_at: Option<String>,
    /// The message's trace id, which the attempt sent (each attempt with a span of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

impl MessageView {
    /// A list entry: no payload, no timeline.
    pub(crate) fn summary(m: Message) -> Self {
        Self::build(m, false, None)
    }

    /// The full message with its timeline.
    pub(crate) fn detail(d: MessageDetail) -> Self {
        let trace_id = TraceView::of(d.message.traceparent.clone()).and_then(|t| t.trace_id);
        let events = d
            .events
            .into_iter()
            .map(|e| EventView {
                trace_id: trace_id.clone(),
                ..EventView::from(e)
            })
            .collect();
        let mut view = Self::build(d.message, true, Some(events));
        view.response = d.response;
        view
    }

    fn build(m: Message, payload: bool, events: Option<Vec<EventView>>) -> Self {
        MessageView {
            id: m.id.to_string(),
            destination: m.destination,
            status: m.status.as_str(),
            attempts: m.attempts,
            payload: payload.then_some(m.payload),
            ordering_key: m.ordering_key,
            idempotency_key: m.idempotency_key,
            next_attempt_at: m.status.is_pending().then(|| rfc3339(m.next_attempt_at)),
            last_error: m.last_error,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            delivered_at: m.delivered_at.map(rfc3339),
            events,
            response: None,
            trace: TraceView::of(m.traceparent),
        }
    }
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            seq: e.seq,
            at: rfc3339(e.at),
            status: e.status.as_str(),
            attempt: e.attempt,
            outcome: e.outcome.map(|o| o.as_str()),
            code: e.code,
            duration_ms: e
                .duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            detail: e.detail,
            repeats: e.repeats,
            last_at: e.last_at.map(rfc3339),
            trace_id: None,
        }
    }
}
