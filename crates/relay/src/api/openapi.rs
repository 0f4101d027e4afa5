//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`.
//!
//! Maintained by hand next to the route table, and generated for the running relay: the
//! destinations a request may name are the configured ones, each with the payload its type
//! accepts. Which operations need the token is read from the route table, so the two cannot
//! disagree; tests check that every route is described, with that security and the errors its
//! extractors answer (400, 413, 415). `scripts/api-check` runs schemathesis against it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ferrule_connectors::AnyConnector;
use serde_json::{Map, Value, json};

mod runs;

use super::{Access, Route};
use crate::config::InboundMode;
use crate::destination::Destination;
use crate::state::AppState;

/// A message id: a ULID, 26 characters of Crockford's base32, either case (what
/// `MessageId::from_str` reads).
const ID_PATTERN: &str = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$";

/// The statuses a message can have.
const STATUSES: [&str; 6] = [
    "queued",
    "delivering",
    "retrying",
    "delivered",
    "dead",
    "cancelled",
];

pub(super) fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub(super) fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema("Error")}}})
}

/// The optional W3C `traceparent` request header of an operation that stores something.
pub(crate) fn traceparent_param() -> Value {
    json!({"name": "traceparent", "in": "header", "required": false,
        "description": "W3C Trace Context: kept with what is stored and sent (a new span id each) on every delivery attempt; an invalid value (any length, any text) is ignored and a new trace started, as the specification says",
        "schema": {"type": "string"}})
}

/// A 503 with its `Retry-After`.
pub(crate) fn unavailable(description: &str) -> Value {
    let mut response = error(description);
    response["headers"] = json!({"Retry-After": {"description": "seconds to wait before trying again", "required": true, "schema": {"type": "integer", "minimum": 0}}});
    response
}

pub(super) fn ok(description: &str, body: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": body}}})
}

pub(super) fn op(id: &str, summary: &str, responses: Value) -> Value {
    json!({"operationId": id, "summary": summary, "responses": responses})
}

/// A time in a query parameter: RFC 3339, or empty for no bound (as absent).
pub(super) fn time_query() -> Value {
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "maxLength": 0, "description": "empty: no bound"},
    ]})
}

pub(super) fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn path(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// The parameters of a paged listing: `cursor` and `limit` (1 to 1000).
pub(super) fn paging() -> [Value; 2] {
    [
        query(
            "cursor",
            "from the previous page's `next`; empty for the first page",
            json!({"type": "string", "pattern": "^(0|[1-9][0-9]{0,17})?$"}),
        ),
        query(
            "limit",
            "page size, 1 to 1000 (default 100)",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
    ]
}

/// A comma-separated list of statuses, or empty for all.
fn statuses() -> Value {
    let one = format!("({})", STATUSES.join("|"));
    json!({"type": "string", "pattern": format!("^({one}(,{one})*)?$")})
}

/// A destination name: one of `names`, or any name when none is configured.
fn one_of_names(names: &[&str]) -> Value {
    if names.is_empty() {
        json!({"type": "string", "minLength": 1})
    } else {
        json!({"type": "string", "enum": names})
    }
}

/// `schema` with the empty string allowed too, for a query filter where empty means none.
pub(super) fn or_empty(mut schema: Value) -> Value {
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.push(json!(""));
    }
    schema
}

/// Any JSON value, every type spelled out.
fn any_json() -> Value {
    json!({"type": ["object", "array", "string", "number", "boolean", "null"], "description": "what is delivered; what a destination accepts depends on its type"})
}

/// `SubmitRequest`: the destination and its payload, one branch per kind of payload the
/// configured destinations accept.
fn submit_request(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    let mut branches: BTreeMap<&str, (Vec<&str>, Value)> = BTreeMap::new();
    for d in destinations.values() {
        let (kind, payload) = match &d.connector {
            AnyConnector::Telegram(_) => ("telegram", schema("TelegramPayload")),
            AnyConnector::Smtp(_) => ("smtp", schema("SmtpPayload")),
            AnyConnector::Github(_) => ("github", schema("GithubPayload")),
            AnyConnector::Http(_) => ("http", schema("HttpCall")),
            _ if d.any_json => ("any", any_json()),
            _ => ("webhook", schema("WebhookPayload")),
        };
        branches
            .entry(kind)
            .or_insert_with(|| (Vec::new(), payload))
            .0
            .push(&d.name);
    }
    let names: Vec<&str> = destinations.keys().map(String::as_str).collect();
    let mut request = json!({
        "type": "object",
        "required": ["destination", "payload"],
        "additionalProperties": false,
        "properties": {
            "destination": one_of_names(&names),
            "payload": any_json(),
            "ordering_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 512, "description": "messages with the same key are delivered one at a time, in order; at most 512 bytes of UTF-8"},
            "deliver_after": {"type": ["string", "null"], "format": "date-time", "description": "no attempt before this time (RFC 3339; a time in the past, 1970 or earlier included, means now)"},
        },
    });
    if !branches.is_empty() {
        request["anyOf"] = branches
            .into_values()
            .map(|(names, payload)| {
                json!({"properties": {"destination": {"enum": names}, "payload": payload}})
            })
            .collect();
    }
    request
}

/// The schemas of the document's components.
fn schemas(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    let string_or_null = json!({"type": ["string", "null"]});
    let time = json!({"type": "string", "format": "date-time"});
    let time_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    let id = json!({"type": "string", "pattern": ID_PATTERN});
    let health = json!({"type": "object", "required": ["status", "consecutive_failures", "consecutive_successes", "failure_threshold", "recovery_threshold", "last_error"], "properties": {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "consecutive_failures": {"type": "integer", "minimum": 0},
        "consecutive_successes": {"type": "integer", "minimum": 0},
        "failure_threshold": {"type": "integer", "minimum": 0},
        "recovery_threshold": {"type": "integer", "minimum": 0},
        "last_error": {"oneOf": [{"type": "null"}, schema("LastError")]},
    }});
    let mut schemas = Map::new();
    schemas.insert("Error".into(), json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "stable and machine-readable, e.g. `unknown_destination`"},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "the request field at fault, when one is"}},
            "additionalProperties": {"description": "more for a client to act on, named where an error has them (e.g. `id`, `status`, `idempotency_key`)"}}}}));
    schemas.insert("SubmitRequest".into(), json!(submit_request(destinations)));
    schemas.insert("HttpCall".into(), json!({"type": "object", "required": ["method", "path"], "additionalProperties": false, "description": "a call to an http destination's API, made by the queue", "properties": {
        "method": {"type": "string", "pattern": "^[A-Z]{1,16}$", "description": "the HTTP method"},
        "path": {"type": "string", "pattern": "^/[A-Za-z0-9._~!$&'()*+,;=:@/?-]*$", "description": "below the destination's base_url, with an optional query; never `..`"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "body": {"description": "a string is sent as is; any other JSON value as JSON"},
    }}));
    schemas.insert("WebhookPayload".into(), json!({"type": ["object", "array"], "description": "the webhook's JSON body: an object or an array (any JSON value with the destination's `any_json = true`)"}));
    schemas.insert("TelegramPayload".into(), json!({"type": "object", "required": ["chat_id"], "description": "a Bot API `sendMessage` (`chat_id`, `text`, `parse_mode`, `reply_markup` with an inline keyboard or `force_reply`, `disable_notification`, `reply_to_message_id` or `reply_parameters`), or `\"method\": \"sendPhoto\"` / `\"sendDocument\"` with a file by URL or base64, or `\"editMessageText\"` / `\"editMessageReplyMarkup\"` (`chat_id`, `message_id`, the new `text` or inline keyboard). Checked by the connector at submit: 422 `invalid_payload` names the field. A text over 4096 characters is split into parts unless the destination refuses long texts; an edit's text is never split"}));
    schemas.insert("SmtpPayload".into(), json!({"type": "object", "required": ["to"], "description": "an e-mail: `to` (required), `cc`, `bcc`, `subject`, `text` and/or `html`, `reply_to`, `in_reply_to`, `references`. Checked by the connector at submit: 422 `invalid_payload` names the field"}));
    schemas.insert("GithubPayload".into(), json!({"type": "object", "required": ["action", "repo", "number"], "properties": {
            "action": {"type": "string", "enum": ["approve", "request_changes", "comment", "merge", "label", "close"]},
            "repo": {"type": "string", "description": "`owner/name`"},
            "number": {"type": "integer", "minimum": 1, "description": "the pull request's or issue's number"},
            "body": {"type": "string", "description": "required for `comment` and `request_changes`"},
            "sha": {"type": "string", "description": "the head commit (40 hex digits) a merge or review applies to"},
            "merge_method": {"type": "string", "enum": ["merge", "squash", "rebase"]},
            "labels": {"type": "array", "items": {"type": "string"}, "description": "for `label`: the labels to add"}},
            "description": "one action on a pull request or issue; checked by the connector at submit, 422 `invalid_payload` names the field (which fields each action takes)"}));
    schemas.insert("Accepted".into(), json!({"type": "object", "required": ["id", "status"], "properties": {
            "id": id, "status": {"type": ["string", "null"], "enum": STATUSES.iter().copied().map(Value::from).chain([Value::Null]).collect::<Vec<_>>(), "description": "`queued` for a new message; for a repeated request, the original's status now, `null` once it was purged"},
            "note": {"type": "string", "description": "why `status` is null"},
            "parts": {"type": "array", "items": id, "description": "every part's id, in delivery order, when a long Telegram text was split"}}}));
    schemas.insert(
        "Cancelled".into(),
        json!({"type": "object", "required": ["id", "status", "previous_status"], "properties": {
            "id": id, "status": {"type": "string", "enum": ["cancelled"]},
            "previous_status": {"type": "string", "enum": ["queued", "retrying", "delivering"]},
            "note": {"type": "string", "description": "present when an attempt was in flight"}}}),
    );
    schemas.insert("Event".into(), json!({"type": "object", "required": ["seq", "at", "status", "attempt", "outcome", "code", "duration_ms", "detail"], "properties": {
            "seq": {"type": "integer", "minimum": 1}, "at": time, "status": {"type": "string", "enum": STATUSES},
            "attempt": {"type": "integer", "minimum": 0},
            "outcome": {"type": ["string", "null"], "enum": ["success", "transient", "retry_after", "permanent", "ignored", null]},
            "code": string_or_null, "duration_ms": {"type": ["integer", "null"], "minimum": 0}, "detail": string_or_null,
            "repeats": {"type": "integer", "minimum": 1, "description": "how many times the event happened in a row: a deferral repeated with the same reason (e.g. behind an open circuit) is one event, `at` the first and `last_at` the latest"},
            "last_at": time_or_null,
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "the message's trace id, sent in every attempt's `traceparent` (each attempt a span of its own)"}}}));
    schemas.insert("Trace".into(), json!({"oneOf": [{"type": "null"}, {"type": "object", "required": ["traceparent", "trace_id"], "description": "the W3C trace the message or run was submitted under: the caller's valid `traceparent`, or one the relay made", "properties": {
            "traceparent": {"type": "string"}, "trace_id": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"}}}]}));
    schemas.insert("Message".into(), json!({"type": "object", "required": ["id", "destination", "status", "attempts", "ordering_key", "idempotency_key", "next_attempt_at", "last_error", "created_at", "updated_at", "delivered_at", "trace"], "properties": {
            "trace": schema("Trace"),
            "id": id, "destination": {"type": "string"}, "status": {"type": "string", "enum": STATUSES},
            "attempts": {"type": "integer", "minimum": 0},
            "payload": {"description": "as submitted (shown for one message, not in lists)"},
            "ordering_key": string_or_null, "idempotency_key": string_or_null,
            "next_attempt_at": time_or_null, "last_error": string_or_null,
            "created_at": time, "updated_at": time, "delivered_at": time_or_null,
            "events": {"type": "array", "items": schema("Event"), "description": "the timeline, oldest first (shown for one message)"},
            "response": {"type": "object", "required": ["status", "headers", "body", "truncated"], "description": "a queued call's answer, the last one (shown for one message to an http destination once answered)", "properties": {
                "status": {"type": "integer"}, "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"description": "JSON when it parses, else text; at most max_response_body bytes"}, "truncated": {"type": "boolean"}}}}}));
    schemas.insert("MessagePage".into(), json!({"type": "object", "required": ["messages", "next"], "properties": {
            "messages": {"type": "array", "items": schema("Message")},
            "next": {"type": ["string", "null"], "pattern": "^(0|[1-9][0-9]{0,17})$", "description": "the cursor of the next page; null on the last"},
            "payload_search_since": {"type": "string", "format": "date-time", "description": "present when `payload_contains` narrowed the range: the creation time the search started from (7 days before its end)"}}}));
    let names: Vec<&str> = destinations.keys().map(String::as_str).collect();
    let destination_or_null = match one_of_names(&names) {
        Value::Object(mut name) if name.contains_key("enum") => {
            let mut values = name["enum"].as_array().cloned().unwrap_or_default();
            values.push(Value::Null);
            name.insert("type".into(), json!(["string", "null"]));
            name.insert("enum".into(), Value::Array(values));
            Value::Object(name)
        }
        _ => string_or_null.clone(),
    };
    schemas.insert("ReplayRequest".into(), json!({"type": "object", "additionalProperties": false, "properties": {
            "destination": destination_or_null, "error_contains": string_or_null,
            "ids": {"type": ["array", "null"], "maxItems": 1000, "items": id},
            "dry_run": {"type": "boolean"}},
            "description": "either `ids` or a filter (`destination`, `error_contains`), not both",
            "anyOf": [
                {"properties": {"ids": {"type": "null"}}},
                {"required": ["ids"], "properties": {"ids": {"type": "array"}, "destination": {"type": "null"}, "error_contains": {"type": "null"}}},
            ]}));
    schemas.insert("ReplayReport".into(), json!({"type": "object", "required": ["count", "ids", "dry_run"], "properties": {
            "count": {"type": "integer", "minimum": 0}, "ids": {"type": "array", "items": id}, "dry_run": {"type": "boolean"}}}));
    schemas.insert(
        "PurgeRequest".into(),
        json!({"type": "object", "required": ["ids"], "additionalProperties": false, "properties": {
            "ids": {"type": "array", "maxItems": 1000, "items": id},
            "destination": destination_or_null, "error_contains": string_or_null}}),
    );
    schemas.insert("Purged".into(), json!({"type": "object", "required": ["purged"], "properties": {
            "purged": {"type": "integer", "minimum": 0},
            "matched": {"type": "integer", "minimum": 0, "description": "with `dry_run=true`: how many match (nothing is deleted)"},
            "dry_run": {"type": "boolean"}}}));
    schemas.insert("BreakerState".into(), json!({"type": "string", "enum": ["closed", "open", "half_open", "forced_open", "disabled"]}));
    schemas.insert("Breaker".into(), json!({"type": "object", "required": ["name", "state", "failure_rate", "slow_call_rate", "calls", "failed_calls", "slow_calls", "consecutive_failures", "remaining_open_ms", "open_wait_ms", "probes_in_flight", "total_calls", "total_rejected", "total_transitions"], "properties": {
            "name": {"type": "string"}, "state": schema("BreakerState"),
            "failure_rate": {"type": "number", "minimum": 0, "maximum": 1}, "slow_call_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "calls": {"type": "integer", "minimum": 0}, "failed_calls": {"type": "integer", "minimum": 0}, "slow_calls": {"type": "integer", "minimum": 0},
            "consecutive_failures": {"type": "integer", "minimum": 0},
            "remaining_open_ms": {"type": ["integer", "null"], "minimum": 1, "description": "milliseconds left before a probe may run (rounded up); null unless open"},
            "open_wait_ms": {"type": "integer", "minimum": 0, "description": "how long the circuit stays open when it next opens, in milliseconds"}, "probes_in_flight": {"type": "integer", "minimum": 0},
            "total_calls": {"type": "integer", "minimum": 0}, "total_rejected": {"type": "integer", "minimum": 0}, "total_transitions": {"type": "integer", "minimum": 0}}}));
    schemas.insert("Override".into(), json!({"type": "object", "required": ["state", "set_at", "set_by"], "properties": {
            "state": {"type": "string", "enum": ["forced_open", "disabled"]}, "set_at": time,
            "set_by": {"type": "string", "description": "the name of the caller's token (for an unnamed configured token `api:` and the first 8 hex digits of its SHA-256), or `relay` when the relay set it (credentials rejected)"},
            "reason": {"type": "string"}}}));
    schemas.insert("SharedCircuit".into(), json!({"type": "object", "required": ["epoch", "held", "probe_at", "probing"], "description": "what this relay last read of the circuit shared by the relays on one PostgreSQL database (`breaker.shared = true`)", "properties": {
            "epoch": {"type": "integer", "minimum": 0, "description": "the shared row's epoch: it moves on every publication and every claimed probe"},
            "held": {"type": "boolean", "description": "this relay holds its breaker open for the shared circuit"},
            "probe_at": {"oneOf": [{"type": "null"}, time.clone()], "description": "when a probe may start, while held"},
            "probing": {"type": "boolean", "description": "a relay has claimed the probe and not yet reported its verdict"}}}));
    schemas.insert("DestinationBreaker".into(), json!({"type": "object", "required": ["destination", "breaker", "override", "shared"], "properties": {"destination": {"type": "string"}, "breaker": schema("Breaker"), "override": {"oneOf": [{"type": "null"}, schema("Override")]}, "shared": {"oneOf": [{"type": "null"}, schema("SharedCircuit")]}}}));
    schemas.insert("Breakers".into(), json!({"type": "object", "required": ["breakers"], "properties": {"breakers": {"type": "array", "items": schema("DestinationBreaker")}}}));
    schemas.insert("Destinations".into(), json!({"type": "object", "required": ["destinations"], "properties": {"destinations": {"type": "array", "items": {"type": "object", "required": ["name", "type", "endpoint", "breaker", "health"], "properties": {
            "name": {"type": "string"}, "type": {"type": "string", "enum": ["webhook", "telegram", "smtp", "github", "http"]},
            "endpoint": {"type": "string", "description": "the webhook URL without its query, the Bot API base or `smtp://host:port`"},
            "breaker": schema("BreakerState"), "health": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "paused": schema("Pause")}}}}}));
    schemas.insert("LastError".into(), json!({"type": "object", "required": ["at", "message"], "properties": {"at": time, "message": {"type": "string"}}}));
    schemas.insert("Health".into(), json!(health));
    schemas.insert("HealthCheck".into(), json!({"description": "A destination's active health check (`[destinations.health_check]`), when it has one.", "allOf": [schema("Health")], "required": ["critical", "interval_ms", "last_passed"], "properties": {
        "critical": {"type": "boolean"}, "interval_ms": {"type": "integer", "minimum": 1000},
        "last_passed": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["at", "detail"], "properties": {"at": time, "detail": {"type": "string"}}}]}}}));
    schemas.insert("StoreLoad".into(), json!({"type": "object", "description": "The store's load: its operation timeout and the operations that ran past it (answered `store_busy`), its writer's queue, and on PostgreSQL its connection pool (`null` on SQLite, which has one writer connection and a fixed set of readers).", "required": ["backend", "operation_timeout_ms", "operation_timeouts", "writer_queue", "writer_queue_capacity", "pool"], "properties": {
        "backend": {"type": "string", "enum": ["sqlite", "postgres"]},
        "operation_timeout_ms": {"type": "integer", "minimum": 1}, "operation_timeouts": {"type": "integer", "minimum": 0},
        "writer_queue": {"type": "integer", "minimum": 0}, "writer_queue_capacity": {"type": "integer", "minimum": 0},
        "pool": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["in_use", "idle", "max", "acquires", "acquire_timeouts", "wait_micros_total", "wait_micros_max"], "properties": {
            "in_use": {"type": "integer", "minimum": 0}, "idle": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 1},
            "acquires": {"type": "integer", "minimum": 0}, "acquire_timeouts": {"type": "integer", "minimum": 0},
            "wait_micros_total": {"type": "integer", "minimum": 0}, "wait_micros_max": {"type": "integer", "minimum": 0}}}]}}}));
    schemas.insert("Status".into(), json!({"type": "object", "required": ["status", "version", "started_at", "uptime_seconds", "counters", "email_sources", "queue_depth", "dead_letter_depth", "store", "dependencies", "last_error"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "unhealthy", "draining"], "description": "`degraded`: a breaker open, forced open or half-open, or a destination (or its inbound side) unhealthy; `unhealthy`: the store is (a full disk included); `draining`: shutting down"},
            "version": {"type": "string"}, "started_at": time, "uptime_seconds": {"type": "integer", "minimum": 0},
            "counters": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}, "required": ["submitted", "delivered", "retried", "dead", "deferred", "panics", "inbound", "inbound_duplicates", "inbound_emails", "inbound_email_duplicates", "inbound_emails_refused"]},
            "email_sources": {"type": "array", "items": {"type": "string"}, "description": "the `[[inbound.email]]` sources, by name"},
            "queue_depth": {"type": "integer", "minimum": 0}, "dead_letter_depth": {"type": "integer", "minimum": 0},
            "store": schema("StoreLoad"),
            "dependencies": {"type": "object", "required": ["store", "destinations"], "properties": {
                "store": {"allOf": [schema("Health")], "properties": {"storage_full": {"type": "object", "required": ["since", "refused_writes", "reason"], "properties": {"since": time, "refused_writes": {"type": "integer"}, "reason": {"type": "string"}}}}},
                "destinations": {"type": "object", "additionalProperties": {"type": "object", "required": ["breaker", "health"], "properties": {
                    "breaker": schema("Breaker"), "health": schema("Health"), "paused": schema("Pause"),
                    "inbound": {"type": "object", "required": ["mode", "health"], "properties": {"mode": {"type": "string", "enum": ["webhook", "polling"]}, "health": schema("Health")}},
                    "health_check": schema("HealthCheck"),
                    "rate_limit": schema("RateLimitState")}}}}},
            "last_error": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["dependency", "at", "message"], "properties": {"dependency": {"type": "string"}, "at": time, "message": {"type": "string"}}}]}}}));
    schemas.insert("RateLimitState".into(), json!({"type": "object", "description": "What a destination's send limits are doing now, when it has one (`rate_limit`, a Telegram bot's windows, a GitHub write pace): the deliveries they deferred in the last minute, in this relay, and when the latest refusal said the next slot frees (`null` once that has passed).", "required": ["deferred_last_minute", "next_slot_at"], "properties": {
            "deferred_last_minute": {"type": "integer", "minimum": 0},
            "next_slot_at": {"oneOf": [{"type": "null"}, time]},
            "telegram": {"type": "object", "description": "a Telegram bot's windows now", "required": ["bot_used", "bot_limit", "bot_per_ms", "chats_waiting", "line"], "properties": {
                "bot_used": {"type": "integer", "minimum": 0, "description": "places taken in the bot's window (sends finished within it, or in flight)"},
                "bot_limit": {"type": "integer", "minimum": 1}, "bot_per_ms": {"type": "integer", "minimum": 1},
                "chats_waiting": {"type": "integer", "minimum": 0, "description": "chats and groups whose own window is full: their next message waits"},
                "line": {"type": "integer", "minimum": 0, "description": "messages the bot's window refused, waiting for their place in its line"}}}}}));
    schemas.insert("Inbound".into(), json!({"type": "object", "required": ["id", "source", "external_id", "payload", "received_at"], "properties": {
            "id": {"type": "string"}, "source": {"type": "string", "description": "`telegram:{destination}` or `email:{source}`"},
            "external_id": {"type": "string", "description": "the Telegram update_id, or the mail's Message-ID (else `sha256:` and the message's SHA-256)"},
            "payload": {"description": "the update as received, or a mail's `{\"summary\", \"github\"}` (the raw message is not kept)"}, "received_at": time}}));
    schemas.insert("InboundPage".into(), json!({"type": "object", "required": ["events", "next"], "properties": {"events": {"type": "array", "items": schema("Inbound")}, "next": {"type": ["string", "null"], "pattern": "^(0|[1-9][0-9]{0,17})$"}}}));
    schemas.insert("Recorded".into(), json!({"type": "object", "required": ["id", "duplicate"], "properties": {"id": {"type": "string"}, "duplicate": {"type": "boolean"},
            "forward": {"type": "string", "description": "e-mail: the forwarded message's id, when the mail is new and its source has `forward_to`"}}}));
    schemas.insert("Probe".into(), json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}));
    runs::schemas(&mut schemas);
    Value::Object(schemas)
}

/// The schemas of [`schemas`] and those of the API's other parts.
fn all_schemas(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    let mut all = schemas(destinations);
    extend(&mut all, super::audit::openapi_schemas());
    extend(&mut all, super::alerts::openapi_schemas());
    extend(&mut all, super::pause::openapi_schemas());
    extend(&mut all, super::chats::openapi_schemas());
    extend(&mut all, super::stats::openapi_schemas());
    extend(&mut all, super::schedules::openapi_schemas());
    all
}

/// The operations, keyed by path and method, without their security (added from the routes).
fn operations(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    let names: Vec<&str> = destinations.keys().map(String::as_str).collect();
    let webhook_inbound: Vec<&str> = destinations
        .values()
        .filter(|d| {
            d.inbound
                .as_ref()
                .is_some_and(|i| i.mode == InboundMode::Webhook)
        })
        .map(|d| d.name.as_str())
        .collect();
    let paging = paging();
    let search = super::search::openapi_parameters();
    let store_down = unavailable(
        "the store is unavailable or busy, or its storage is full (`store_unavailable`, `store_busy`, `storage_full`)",
    );
    let filter = [
        query(
            "destination",
            "only this destination: a configured one (or one stored messages still name); empty for every destination",
            or_empty(one_of_names(&names)),
        ),
        query(
            "error_contains",
            "only messages whose last error contains this text",
            json!({"type": "string"}),
        ),
    ];
    let body_errors = |extra: &str| {
        json!({
            "400": error(&format!("malformed JSON, not an object, an unknown field or a wrong type{extra}")),
            "413": error("the body is over `server.max_body_bytes` (`body_too_large`)"),
            "415": error("not `Content-Type: application/json` (`unsupported_media_type`)"),
        })
    };
    let mut submit = op(
        "submitMessage",
        "Submit a message",
        json!({
            "202": ok("stored durably", schema("Accepted")),
            "200": ok("the same request again under its Idempotency-Key: nothing stored; the original message's id and its status now (`delivered`, `dead`, …; `null` with a `note` once the original was purged while its key is still taken)", schema("Accepted")),
            "400": error("malformed JSON, not an object, an unknown or missing field, a bad `ordering_key`, `deliver_after` or `Idempotency-Key`"),
            "409": error("the Idempotency-Key was used for a different request (`idempotency_conflict`: destination, payload, ordering key or `deliver_after` differ; key order and whitespace do not count); nothing stored. `error.idempotency_key` and `error.id` (the original message) name both"),
            "422": error("an unknown destination (`unknown_destination`), or a payload the destination refuses (`invalid_payload`, with `error.field`, e.g. `payload.chat_id`): a webhook takes an object or an array unless `any_json = true`; a Telegram text over the limit when the destination's `long_texts = \"refuse\"`; a `deliver_after` further ahead than `server.max_deliver_after` (`out_of_range`, `error.field` `deliver_after`)"),
            "503": unavailable("not stored; try again after `Retry-After`: the queue of due work is full (`queue_full`, `server.max_queue_depth`; messages scheduled ahead do not count), too many messages wait for their `deliver_after` (`scheduled_full`, `server.max_scheduled`), the storage is full (`storage_full`), the store is unavailable or busy (`store_unavailable`, `store_busy`), or the relay is shutting down (`shutting_down`)"),
        }),
    );
    submit["description"] = json!(
        "Telegram and SMTP payloads are checked by the destination's connector before they are stored. A Telegram text over 4096 characters (a caption over 1024) is split, unless the destination refuses long texts, into ordered parts stored together in one transaction with the chat as ordering key: `id` is the first part and `parts` lists every part's id in delivery order. A Telegram message without an `ordering_key` is ordered by its chat."
    );
    submit["parameters"] = json!([{"name": "Idempotency-Key", "in": "header", "required": false,
        "description": "unique per destination within the idempotency window, and kept with a fingerprint of the request: the same request again answers 200, a different one 409. 1 to 512 visible ASCII characters (spaces inside). The parts of a split text get `KEY`, `KEY#2`, `KEY#3`, … so a repeated submission finds every part",
        "schema": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[!-~]([ -~]*[!-~])?$"}}, traceparent_param()]);
    submit["requestBody"] = json_body(schema("SubmitRequest"));
    let mut more = body_errors("");
    more.as_object_mut().map(|m| m.remove("400"));
    extend(&mut submit["responses"], more);

    let mut list = op(
        "listMessages",
        "List messages, newest first",
        json!({"200": ok("a page", schema("MessagePage")), "400": error("a bad query parameter (`invalid_query`) or cursor"), "422": error("a destination filter naming no configured destination (`unknown_destination`), unless stored messages still name it"), "503": store_down.clone()}),
    );
    list["parameters"] = json!([
        query(
            "status",
            "comma-separated statuses, e.g. `queued,retrying`; empty for all",
            statuses()
        ),
        filter[0].clone(),
        search[0].clone(),
        search[1].clone(),
        search[2].clone(),
        search[3].clone(),
        search[4].clone(),
        paging[0],
        paging[1],
    ]);
    let id = json!({"type": "string", "pattern": ID_PATTERN});
    let mut show = op(
        "getMessage",
        "A message with its payload and timeline",
        json!({"200": ok("the message", schema("Message")), "400": error("not a message id (`invalid_id`)"), "404": error("no such message"), "503": store_down.clone()}),
    );
    show["parameters"] = json!([path("id", id.clone())]);
    let mut cancel = op(
        "cancelMessage",
        "Cancel a message not delivered yet",
        json!({
            "200": ok("cancelled", schema("Cancelled")),
            "400": error("not a message id (`invalid_id`)"),
            "404": error("no such message"),
            "409": error("the message is already delivered, dead or cancelled (`invalid_state`); `error.status` says which"),
            "503": store_down.clone(),
        }),
    );
    cancel["description"] = json!(
        "A queued, retrying or delivering message becomes `cancelled` and is never attempted again (a replay can queue it anew). A delivering message's attempt is already on its way and may still reach the destination: the relay abandons it at its next lease heartbeat and records nothing of it."
    );
    cancel["parameters"] = json!([path("id", id.clone())]);
    let mut replay_one = op(
        "replayMessage",
        "Queue a delivered, dead or cancelled message again",
        json!({"200": ok("queued", schema("Accepted")), "400": error("not a message id (`invalid_id`)"), "404": error("no such message"), "409": error("the message is still pending (`invalid_state`)"), "503": store_down.clone()}),
    );
    replay_one["parameters"] = json!([path("id", id)]);
    let mut dead = op(
        "listDeadLetters",
        "List dead letters, newest first",
        json!({"200": ok("a page", schema("MessagePage")), "400": error("a bad query parameter (`invalid_query`) or cursor"), "422": error("a destination filter naming no configured destination (`unknown_destination`), unless stored messages still name it"), "503": store_down.clone()}),
    );
    dead["parameters"] = json!([
        filter[0].clone(),
        filter[1].clone(),
        search[0].clone(),
        search[1].clone(),
        search[2].clone(),
        search[3].clone(),
        search[4].clone(),
        paging[0],
        paging[1],
    ]);
    let mut replay_dead = op(
        "replayDeadLetters",
        "Queue dead letters again, by filter or by id",
        json!({"200": ok("what was queued again, or would be with `dry_run`", schema("ReplayReport")), "404": error("one of `ids` names no message"), "409": error("one of `ids` names a message that is not dead (`invalid_state`)"), "422": error("the filter names a destination that is not configured (`unknown_destination`)"), "503": store_down.clone()}),
    );
    extend(
        &mut replay_dead["responses"],
        body_errors(
            ", `ids` with a filter, or more than 1000 ids, or one that is not a message id (`invalid_id`)",
        ),
    );
    replay_dead["requestBody"] = json_body(schema("ReplayRequest"));
    let mut purge = op(
        "purgeDeadLetters",
        "Delete the dead letters that match the filter, or every one with `all=true`",
        json!({"200": ok("how many were deleted, or with `dry_run=true` how many match", schema("Purged")), "400": error("no filter and no `all=true` (`filter_required`), `all=true` with a filter, or a bad query parameter (`invalid_query`)"), "422": error("a destination filter naming no configured destination (`unknown_destination`), unless stored messages still name it"), "503": store_down.clone()}),
    );
    purge["parameters"] = json!([
        filter[0].clone(),
        filter[1].clone(),
        query(
            "all",
            "`true`: every dead letter (required when no filter is given)",
            json!({"type": "boolean"})
        ),
        query(
            "dry_run",
            "`true`: only count what would be deleted",
            json!({"type": "boolean"})
        ),
    ]);
    let mut purge_ids = op(
        "purgeDeadLettersById",
        "Delete the named dead letters that still match the filter",
        json!({"200": ok("how many were deleted", schema("Purged")), "422": error("a destination filter naming no configured destination (`unknown_destination`), unless stored messages still name it"), "503": store_down.clone()}),
    );
    extend(
        &mut purge_ids["responses"],
        body_errors(", more than 1000 ids, or one that is not a message id (`invalid_id`)"),
    );
    purge_ids["requestBody"] = json_body(schema("PurgeRequest"));
    let mut action = op(
        "changeBreaker",
        "An operator's override of a destination's circuit breaker",
        json!({"200": ok("the breaker after the change, with its override", schema("DestinationBreaker")), "400": error("a bad query parameter (`invalid_query`)"), "404": error("no such destination or action"), "503": store_down.clone()}),
    );
    action["description"] = json!(
        "`force-open` and `disable` are stored as the destination's override (who, when, why) before the breaker changes, so they survive a restart and reach every relay sharing the store (within 5 s on PostgreSQL); `reset` deletes it and closes the breaker. A destination that rejects the relay's credentials (a Telegram 401) is forced open the same way, `set_by: \"relay\"`."
    );
    action["parameters"] = json!([
        path("destination", one_of_names(&names)),
        path(
            "action",
            json!({"type": "string", "enum": ["reset", "force-open", "disable"]})
        ),
        query(
            "reason",
            "why, kept with the override (at most 500 characters)",
            json!({"type": "string", "maxLength": 500})
        ),
    ]);
    let mut inbound = op(
        "listInbound",
        "Recorded inbound events (Telegram updates, e-mail), newest first",
        json!({"200": ok("a page", schema("InboundPage")), "400": error("a bad query parameter (`invalid_query`) or cursor"), "503": store_down}),
    );
    inbound["parameters"] = json!([
        query(
            "source",
            "only this source, e.g. `telegram:support-bot` or `email:github`",
            json!({"type": "string"})
        ),
        paging[0],
        paging[1],
    ]);
    let mut telegram_webhook = op(
        "receiveTelegramUpdate",
        "Receive one Telegram update",
        json!({
            "200": ok("stored (with its forward), or a redelivery acknowledged and ignored (`duplicate: true`)", schema("Recorded")),
            "400": error("malformed JSON, or not a Telegram update (`invalid_update`, with `error.field`)"),
            "401": error("a missing or wrong `X-Telegram-Bot-Api-Secret-Token`"),
            "404": error("no Telegram destination of that name receives updates by webhook"),
            "413": error("the body is over `server.max_body_bytes` (`body_too_large`)"),
            "503": unavailable("shutting down, or the store is unavailable, busy (`store_busy`) or its storage full; Telegram retries"),
        }),
    );
    telegram_webhook["description"] = json!(
        "Where Telegram posts a bot's updates once `ferrule telegram set-webhook` has set it. Not behind the bearer token: the update must carry the destination's `inbound.secret_token` in `X-Telegram-Bot-Api-Secret-Token` (compared in constant time). Each `update_id` is recorded once per destination; a new update is forwarded to `inbound.forward_to` in the same transaction, and a `callback_query` is answered with `answerCallbackQuery` right after it is stored."
    );
    telegram_webhook["parameters"] = json!([
        path("destination", one_of_names(&webhook_inbound)),
        {"name": "X-Telegram-Bot-Api-Secret-Token", "in": "header", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9_-]+$"}},
        traceparent_param(),
    ]);
    telegram_webhook["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["update_id"], "properties": {"update_id": {"type": "integer"}}, "description": "a Telegram Update"}}}});
    let inbound_email = inbound_email();
    let proxied = proxy_operations(destinations);
    json!({
        "/v1/messages": {"post": submit, "get": list},
        "/v1/messages/{id}": {"get": show, "delete": cancel},
        "/v1/messages/{id}/replay": {"post": replay_one},
        "/v1/dead-letters": {"get": dead, "delete": purge},
        "/v1/dead-letters/replay": {"post": replay_dead},
        "/v1/dead-letters/purge": {"post": purge_ids},
        "/v1/breakers": {"get": op("listBreakers", "Every destination's circuit breaker", json!({"200": ok("the breakers", schema("Breakers"))}))},
        "/v1/breakers/{destination}/{action}": {"post": action},
        "/v1/destinations": {"get": op("listDestinations", "The configured destinations", json!({"200": ok("the destinations", schema("Destinations"))}))},
        "/v1/inbound": {"get": inbound},
        "/v1/inbound/email/{source}": {"post": inbound_email},
        "/v1/telegram/{destination}/webhook": {"post": telegram_webhook},
        "/v1/proxy/{destination}/{path}": proxied,
        "/v1/openapi.json": {"get": op("getOpenApi", "This document", json!({"200": ok("OpenAPI 3.1", json!({"type": "object", "required": ["openapi", "info", "paths"]}))}))},
        "/livez": {"get": op("livez", "The process is up", json!({"200": ok("alive: `{\"status\": \"ok\"}`", schema("Probe"))}))},
        "/readyz": {"get": op("readyz", "The store answers, its disk is not full and the relay is not draining", json!({"200": ok("ready: `{\"status\": \"ready\"}`", schema("Probe")), "503": unavailable("not ready: `shutting_down`, `store_unavailable` (including no answer within `health.store_timeout`) or `storage_full`")}))},
        "/status": {"get": op("status", "The overall `status` (`ok`, `degraded`, `unhealthy`, `draining`), uptime, counters, depths, breakers (durations in milliseconds), dependency health, the last error", json!({"200": ok("the relay's status", schema("Status"))}))},
        "/metrics": {"get": op("metrics", "Metrics in the Prometheus text format (docs/OBSERVABILITY.md lists them)", json!({"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}))},
    })
}

/// `ANY /v1/proxy/{destination}/{path}`, one operation per method, without their security.
fn proxy_operations(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    let http: Vec<&str> = destinations
        .values()
        .filter(|d| matches!(d.connector, AnyConnector::Http(_)))
        .map(|d| d.name.as_str())
        .collect();
    let mut operations = Map::new();
    for (method, id) in [
        ("get", "proxyGet"),
        ("post", "proxyPost"),
        ("put", "proxyPut"),
        ("patch", "proxyPatch"),
        ("delete", "proxyDelete"),
    ] {
        let mut proxied = op(
            id,
            "Call an http destination through the relay's policies",
            json!({
                "default": {"description": "the upstream's answer, passed through (hop-by-hop headers removed), with `X-Ferrule-Attempts` and `X-Ferrule-Destination`"},
                "400": error("a bad `X-Ferrule-Deadline` (`invalid_header`), a path that climbs out of the base URL (`invalid_path`) or a body that could not be read (`invalid_body`)"),
                "404": error("no http destination of that name (`not_found`)"),
                "429": error("the destination's rate limit, or the provider's, would outlast the deadline (`rate_limited`), nor could a fallback answer"),
                "502": error("no answer from the destination or its fallbacks (`upstream_unreachable`)"),
                "503": unavailable("the destination's circuit is open (`circuit_open`) or its bulkhead full (`bulkhead_full`), and so are its fallbacks'"),
                "504": error("an attempt timed out (`upstream_timeout`) or the deadline passed (`deadline_exceeded`)"),
            }),
        );
        proxied["description"] = json!(
            "Forwards the method, path (below the destination's `base_url`), query, body and end-to-end headers to the destination, with its configured headers (credentials) in place of the caller's `Authorization`. Retries idempotent methods, calls with an `Idempotency-Key` (forwarded unchanged) and, with `retry_post`, any call, within a retry budget; falls back to the destination's `fallback` list; streams answers (SSE, chunked) as they arrive, retrying only before the first byte."
        );
        proxied["parameters"] = json!([
            path("destination", one_of_names(&http)),
            path("path", json!({"type": "string"})),
            {"name": "X-Ferrule-Deadline", "in": "header", "required": false, "description": "the call's deadline, if shorter than the destination's: `5s`, `250ms`, or whole seconds", "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,8}(s|ms)?$"}},
        ]);
        operations.insert(method.to_owned(), proxied);
    }
    Value::Object(operations)
}

/// `POST /v1/inbound/email/{source}`, without its security (added from the routes).
fn inbound_email() -> Value {
    let form = |field: &str, service: &str| json!({"type": "object", "required": [field], "properties": {field: {"type": "string", "contentMediaType": "message/rfc822", "description": format!("the raw message, as {service} posts it; other fields are ignored")}}});
    let raw = json!({"schema": {"type": "string", "contentMediaType": "message/rfc822"}});
    let forms =
        json!({"schema": {"oneOf": [form("email", "SendGrid"), form("body-mime", "Mailgun")]}});
    let mut email = op(
        "receiveEmail",
        "Receive one e-mail",
        json!({
            "200": ok("recorded (and forwarded), or recorded before under the same key and ignored (`duplicate: true`)", schema("Recorded")),
            "400": error("a form without a boundary, unreadable, or without an `email` or `body-mime` field (`invalid_form`, `error.field`: `email`)"),
            "404": error("no e-mail source of that name is configured"),
            "413": error("the body is over the source's `max_size` (`body_too_large`)"),
            "415": error("neither `message/rfc822`, `application/octet-stream`, `multipart/form-data` nor `application/x-www-form-urlencoded` (`unsupported_media_type`)"),
            "422": error("not a mail the relay can record, with the reason (`invalid_email`): no header section, no `From:` address, a multipart body without its boundary"),
            "503": unavailable("nothing was recorded: shutting down, or the store is unavailable, busy (`store_busy`) or its storage full; mail services post again"),
        }),
    );
    email["description"] = json!(
        "Where an inbound-mail service (SendGrid Inbound Parse in raw mode, Mailgun's MIME forward, a Cloudflare Email Worker) posts a mail for the `[[inbound.email]]` source `{source}`. Each mail is recorded once per `Message-ID` (else per SHA-256 of the message) under source `email:{source}`, with its summary (from, to, cc, subject, date, message id, in-reply-to, the text body trimmed) and, for a GitHub notification, its context (repository, pull request or issue, number, event, reason, sender, state, labels, link); the raw message is not kept. A new mail is forwarded to the source's `forward_to` in the same transaction as `{\"source\", \"email\", \"github\"}`."
    );
    email["parameters"] = json!([
        path(
            "source",
            json!({"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"})
        ),
        traceparent_param()
    ]);
    email["requestBody"] = json!({"required": true, "content": {
        "message/rfc822": raw, "application/octet-stream": raw,
        "multipart/form-data": forms, "application/x-www-form-urlencoded": forms,
    }});
    email
}

/// Adds the entries of `more` to the object `into`.
fn extend(into: &mut Value, more: Value) {
    if let (Some(into), Value::Object(more)) = (into.as_object_mut(), more) {
        into.extend(more);
    }
}

/// The document for a relay with `destinations`, serving `routes`.
pub fn document_for(destinations: &BTreeMap<String, Arc<Destination>>, routes: &[Route]) -> Value {
    let mut paths = operations(destinations);
    extend(&mut paths, super::audit::openapi_paths());
    extend(&mut paths, super::alerts::openapi_paths());
    let names: Vec<&str> = destinations.keys().map(String::as_str).collect();
    extend(
        &mut paths,
        super::pause::openapi_paths(one_of_names(&names)),
    );
    extend(&mut paths, runs::paths());
    extend(&mut paths, super::chats::openapi_paths());
    extend(&mut paths, super::stats::openapi_paths());
    extend(
        &mut paths,
        super::schedules::openapi_paths(json!({"type": "string", "minLength": 1})),
    );
    let unauthorized = error("a missing or invalid bearer token");
    let forbidden = error("a read-only token (`forbidden`): this route needs an admin token");
    for route in routes {
        let method = route.method.as_str().to_ascii_lowercase();
        let Some(operation) = paths
            .get_mut(super::openapi_path(route.path))
            .and_then(|p| p.get_mut(&method))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let responses = |operation: &mut Map<String, Value>| {
            operation
                .entry("responses")
                .or_insert_with(|| Value::Object(Map::new()))
                .take()
        };
        match route.access {
            Access::Public => {
                operation.insert("security".into(), json!([]));
            }
            Access::Read | Access::Write => {
                let mut all = responses(operation);
                all["401"] = unauthorized.clone();
                if route.access == Access::Write {
                    all["403"] = forbidden.clone();
                }
                operation.insert("responses".into(), all);
            }
            Access::EmailSource => {
                let mut all = responses(operation);
                all["401"] = error(
                    "neither an admin token nor the source's secret, as a bearer token or a basic-auth password",
                );
                all["403"] = error("a read-only token (`forbidden`)");
                operation.insert("responses".into(), all);
                operation.insert("security".into(), json!([{"bearer": []}, {"basic": []}]));
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ferrule relay", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic", "description": "`POST /v1/inbound/email/{source}` only: the source's secret (or an admin token) as the password, any user name"},
            },
            "schemas": all_schemas(destinations),
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

/// The document for a relay with `destinations`, serving every route of [`super::routes`].
pub fn document(destinations: &BTreeMap<String, Arc<Destination>>) -> Value {
    document_for(destinations, &super::routes())
}

/// `GET /v1/openapi.json`: the document, with the configured e-mail sources as the
/// `{source}` a mail may be posted to, and the configured schedules and routes as the `{name}`
/// of their operations (a route's: its chats).
pub(crate) async fn serve(State(state): State<AppState>) -> Json<Value> {
    let mut doc = document(&state.destinations);
    let sources: Vec<&str> = state.email_sources.keys().map(String::as_str).collect();
    if !sources.is_empty() {
        doc["paths"]["/v1/inbound/email/{source}"]["post"]["parameters"][0]["schema"] =
            one_of_names(&sources);
    }
    let schedules: Vec<&str> = state
        .schedules
        .iter()
        .map(|s| s.config.name.as_str())
        .collect();
    if !schedules.is_empty() {
        for action in ["pause", "resume", "trigger"] {
            doc["paths"][format!("/v1/schedules/{{name}}/{action}")]["post"]["parameters"][0]["schema"] =
                one_of_names(&schedules);
        }
    }
    let routes: Vec<&str> = state
        .routes
        .iter()
        .map(|r| r.config.name.as_str())
        .collect();
    if !routes.is_empty() {
        for method in ["get", "put", "delete"] {
            doc["paths"]["/v1/routes/{name}/chats"][method]["parameters"][0]["schema"] =
                one_of_names(&routes);
        }
    }
    Json(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&BTreeMap::new())
    }

    #[test]
    fn every_route_is_described_with_an_operation_id() {
        let doc = doc();
        let mut ids = std::collections::BTreeSet::new();
        for route in super::super::routes() {
            let method = route.method.as_str().to_ascii_lowercase();
            let operation = &doc["paths"][super::super::openapi_path(route.path)][&method];
            assert!(
                operation.is_object(),
                "{} {} is missing from the OpenAPI document",
                route.method,
                route.path
            );
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
        // What the document says about auth matches the route table.
        for route in super::super::routes() {
            let op = &doc["paths"][super::super::openapi_path(route.path)]
                [route.method.as_str().to_ascii_lowercase()];
            let public = op["security"] == json!([]);
            assert_eq!(
                public,
                route.access == super::super::Access::Public,
                "{route:?}: security {}",
                op["security"]
            );
            assert_eq!(
                op["responses"]["403"].is_object(),
                matches!(
                    route.access,
                    super::super::Access::Write | super::super::Access::EmailSource
                ),
                "{route:?}: a 403 is described exactly on the routes that need an admin token"
            );
            if route.access != super::super::Access::Public {
                assert!(op["responses"]["401"].is_object(), "{route:?}: no 401");
            }
        }
        let described: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            described,
            super::super::routes().len(),
            "the document describes a route that does not exist"
        );
    }

    #[test]
    fn security_follows_the_route_table() {
        let doc = doc();
        for route in super::super::routes() {
            let operation = &doc["paths"][super::super::openapi_path(route.path)]
                [route.method.as_str().to_ascii_lowercase()];
            match route.access {
                Access::Public => assert_eq!(operation["security"], json!([]), "{route:?}"),
                Access::EmailSource => {
                    let schemes = json!([{"bearer": []}, {"basic": []}]);
                    assert_eq!(operation["security"], schemes, "{route:?}");
                    assert!(operation["responses"]["401"].is_object(), "{route:?}");
                }
                Access::Read | Access::Write => {
                    assert!(operation.get("security").is_none(), "{route:?}");
                    assert!(operation["responses"]["401"].is_object(), "{route:?}");
                }
            }
        }
        assert_eq!(doc["paths"]["/livez"]["get"]["security"], json!([]));
    }

    #[test]
    fn json_bodies_document_400_413_and_415() {
        let doc = doc();
        for (path, operation) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operation.as_object().unwrap() {
                let body = operation["requestBody"]["content"].get("application/json");
                let bearer = operation.get("security").is_none();
                if body.is_some() && bearer {
                    for status in ["400", "413", "415"] {
                        assert!(
                            operation["responses"][status].is_object(),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
                let queried = operation["parameters"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
                if queried {
                    assert!(operation["responses"]["400"].is_object(), "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn the_id_pattern_is_what_message_ids_parse_from() {
        let alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz";
        for c in alphabet.chars() {
            let id: String = std::iter::repeat_n(c, 26).collect();
            assert!(id.parse::<ferrule_store::MessageId>().is_ok(), "{id}");
        }
        for c in "ILOUilou-_ ".chars() {
            let id = format!("{c}{}", "0".repeat(25));
            assert!(id.parse::<ferrule_store::MessageId>().is_err(), "{id}");
        }
        assert!("0".repeat(25).parse::<ferrule_store::MessageId>().is_err());
        assert!(ID_PATTERN.contains("0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}"));
    }
}
