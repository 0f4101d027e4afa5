//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`.
//!
//! Maintained by hand next to the route table; a test checks that every route in
//! [`routes`](super::routes) appears here with its method.

use axum::Json;
use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn op(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "responses": responses})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
}

fn path(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The document.
pub fn document() -> Value {
    let page = json!({"$ref": "#/components/schemas/MessagePage"});
    let unauthorized = error_response("missing or invalid bearer token");
    let mut submit = op(
        "Submit a message",
        json!({
            "202": ok_json("stored durably", json!({"$ref": "#/components/schemas/Accepted"})),
            "200": ok_json("the same request again under its Idempotency-Key: nothing enqueued; the original message's id and its status now (`delivered`, `dead`, …; `null` with a `note` once the original was purged while its key is still taken)", json!({"$ref": "#/components/schemas/Accepted"})),
            "400": error_response("malformed JSON or invalid field"),
            "401": unauthorized,
            "409": error_response("`idempotency_conflict`: the Idempotency-Key was used for a different request (destination, payload, ordering key or deliver_after differ; key order and whitespace do not count); nothing enqueued. `error.idempotency_key` and `error.id` (the original message) name both"),
            "413": error_response("body over the limit"),
            "422": error_response("unknown destination, or a payload the destination's connector refuses (`invalid_payload`, with `error.field` naming it, e.g. `payload.chat_id`); a Telegram text over the limit when the destination's `long_texts = \"refuse\"`; `out_of_range` with `error.field` `deliver_after` when it is further ahead than `server.max_deliver_after` (30 days by default)"),
            "503": error_response("not stored; try again after `Retry-After`: the queue of due work is full (`queue_full`, `server.max_queue_depth`; messages scheduled ahead do not count), too many messages wait for their `deliver_after` (`scheduled_full`, `server.max_scheduled`), the relay's storage is full (`storage_full`), the store is unavailable or busy (`store_unavailable`, `store_busy`), or the relay is shutting down (`shutting_down`)"),
        }),
    );
    submit["description"] = json!(
        "Telegram and SMTP payloads are checked by the destination's connector before they are stored. A Telegram text over 4096 characters (a caption over 1024) is split, unless the destination refuses long texts, into ordered parts stored together in one transaction with the chat as ordering key: `id` is the first part and `parts` lists every part's id in delivery order. A Telegram message without an `ordering_key` is ordered by its chat."
    );
    submit["parameters"] = json!([{"name": "Idempotency-Key", "in": "header", "required": false, "description": "unique per destination within the idempotency window, and kept with a fingerprint of the request: the same request again answers 200, a different one 409. The parts of a split text get `KEY`, `KEY#2`, `KEY#3`, … so a repeated submission finds every part", "schema": {"type": "string", "maxLength": 512}}]);
    submit["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}}});
    let mut list = op(
        "List messages, newest first",
        json!({"200": ok_json("a page", page.clone()), "400": error_response("bad query"), "401": unauthorized}),
    );
    list["parameters"] = json!([
        query("status", "comma-separated statuses"),
        query("destination", "destination name"),
        query("cursor", "from the previous page's `next`"),
        query("limit", "1 to 1000 (default 100)"),
    ]);
    let mut show = op(
        "A message with its timeline",
        json!({"200": ok_json("the message", json!({"$ref": "#/components/schemas/Message"})), "400": error_response("not a message id"), "401": unauthorized, "404": error_response("no such message")}),
    );
    show["parameters"] = json!([path("id")]);
    let mut cancel = op(
        "Cancel a message not delivered yet",
        json!({
            "200": ok_json("cancelled", json!({"$ref": "#/components/schemas/Cancelled"})),
            "400": error_response("not a message id"),
            "401": unauthorized,
            "404": error_response("no such message"),
            "409": error_response("`invalid_state`: the message is already delivered, dead or cancelled; `error.status` says which"),
        }),
    );
    cancel["description"] = json!(
        "A queued, retrying or delivering message becomes `cancelled` and is never attempted again (a replay can queue it anew). A delivering message's attempt is already on its way and may still reach the destination: the relay abandons it at its next lease heartbeat and records nothing of it."
    );
    cancel["parameters"] = json!([path("id")]);
    let mut replay_one = op(
        "Re-queue a terminal message",
        json!({"200": ok_json("queued", json!({"$ref": "#/components/schemas/Accepted"})), "404": error_response("no such message"), "409": error_response("the message is still pending"), "401": unauthorized}),
    );
    replay_one["parameters"] = json!([path("id")]);
    let mut dead = op(
        "List dead letters",
        json!({"200": ok_json("a page", page), "401": unauthorized}),
    );
    dead["parameters"] = json!([
        query("destination", "destination name"),
        query("error_contains", "text in the last error"),
        query("cursor", "paging cursor"),
        query("limit", "1 to 1000")
    ]);
    let mut replay_dead = op(
        "Replay dead letters by filter or ids",
        json!({"200": ok_json("what was (or would be) re-queued", json!({"$ref": "#/components/schemas/ReplayReport"})), "400": error_response("bad request"), "401": unauthorized}),
    );
    replay_dead["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReplayRequest"}}}});
    let mut purge = op(
        "Delete dead letters matching the filter",
        json!({"200": ok_json("how many", json!({"type": "object", "properties": {"purged": {"type": "integer"}}})), "401": unauthorized}),
    );
    purge["parameters"] = json!([
        query("destination", "destination name"),
        query("error_contains", "text in the last error")
    ]);
    let mut purge_ids = op(
        "Delete the named dead letters that still match the filter",
        json!({"200": ok_json("how many", json!({"type": "object", "properties": {"purged": {"type": "integer"}}})), "400": error_response("bad request"), "401": unauthorized}),
    );
    purge_ids["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PurgeRequest"}}}});
    let breaker = json!({"$ref": "#/components/schemas/Breaker"});
    let mut action = op(
        "Operator override of a breaker",
        json!({"200": ok_json("the breaker", breaker.clone()), "400": error_response("bad query"), "404": error_response("unknown destination or action"), "401": unauthorized, "503": error_response("the store refused or did not answer: nothing changed")}),
    );
    action["description"] = json!(
        "`force-open` and `disable` are stored as the destination's override (who, when, why) before the breaker changes, so they survive a restart and reach every relay sharing the store (within 5 s on PostgreSQL); `reset` deletes it and closes the breaker. A destination that rejects the relay's credentials (a Telegram 401) is forced open the same way, `set_by: \"relay\"`."
    );
    action["parameters"] = json!([path("destination"), {"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["reset", "force-open", "disable"]}}, query("reason", "why, kept with the override (at most 500 characters)")]);
    let mut inbound = op(
        "Recorded inbound events (Telegram updates), newest first",
        json!({"200": ok_json("a page", json!({"$ref": "#/components/schemas/InboundPage"})), "400": error_response("bad query or cursor"), "401": unauthorized}),
    );
    inbound["parameters"] = json!([
        query("source", "only this source, e.g. `telegram:support-bot`"),
        query("cursor", "from the previous page's `next`"),
        query("limit", "1 to 1000 (default 100)"),
    ]);
    let mut telegram_webhook = op(
        "Receive one Telegram update",
        json!({
            "200": ok_json("stored (with its forward), or a redelivery acknowledged and ignored (`duplicate: true`)", json!({"type": "object", "properties": {"id": {"type": "string"}, "duplicate": {"type": "boolean"}}})),
            "400": error_response("malformed JSON, or not a Telegram update (`invalid_update`, with `error.field`)"),
            "401": error_response("missing or wrong `X-Telegram-Bot-Api-Secret-Token`"),
            "404": error_response("no telegram destination of that name receives updates by webhook"),
            "413": error_response("body over the limit"),
            "503": error_response("shutting down, or the store is unavailable or its storage full; Telegram retries"),
        }),
    );
    telegram_webhook["description"] = json!(
        "Where Telegram posts a bot's updates once `ferrule telegram set-webhook` has set it. Not behind the bearer token: the update must carry the destination's `inbound.secret_token` in `X-Telegram-Bot-Api-Secret-Token` (compared in constant time). Each `update_id` is recorded once per destination; a new update is forwarded to `inbound.forward_to` in the same transaction, and a `callback_query` is answered with `answerCallbackQuery` right after it is stored."
    );
    telegram_webhook["security"] = json!([]);
    telegram_webhook["parameters"] = json!([path("destination"), {"name": "X-Telegram-Bot-Api-Secret-Token", "in": "header", "required": true, "schema": {"type": "string"}}]);
    telegram_webhook["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["update_id"], "properties": {"update_id": {"type": "integer"}}, "description": "a Telegram Update"}}}});
    let any_object = json!({"type": "object"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ferrule relay", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "description": "the request field at fault, when one is"}}, "additionalProperties": {"description": "more for a client to act on, named where an error has them (e.g. `id`, `status`)"}}}},
                "SubmitRequest": {"type": "object", "required": ["destination", "payload"], "additionalProperties": false, "properties": {
                    "destination": {"type": "string"}, "payload": {}, "ordering_key": {"type": "string"}, "deliver_after": {"type": "string", "format": "date-time"}}},
                "Accepted": {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": ["string", "null"], "description": "`queued` for a new message; for a repeated request, the original's status now, `null` once it was purged"}, "note": {"type": "string", "description": "why `status` is null"}, "parts": {"type": "array", "items": {"type": "string"}, "description": "every part's id, in delivery order, when a long Telegram text was split"}}},
                "Breaker": {"type": "object", "properties": {"destination": {"type": "string"}, "breaker": {"type": "object", "description": "the breaker's status: state (closed, open, half_open, forced_open, disabled), rates, counts"}, "override": {"oneOf": [{"$ref": "#/components/schemas/Override"}, {"type": "null"}]}}},
                "Override": {"type": "object", "required": ["state", "set_at", "set_by"], "properties": {"state": {"type": "string", "enum": ["forced_open", "disabled"]}, "set_at": {"type": "string", "format": "date-time"}, "set_by": {"type": "string", "description": "`api:` and the first 8 hex digits of the caller's token's SHA-256, or `relay` when the relay set it (credentials rejected)"}, "reason": {"type": "string"}}},
                "Cancelled": {"type": "object", "required": ["id", "status"], "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["cancelled"]}, "previous_status": {"type": "string", "enum": ["queued", "retrying", "delivering"]}, "note": {"type": "string", "description": "present when an attempt was in flight"}}},
                "Event": {"type": "object", "properties": {"seq": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "status": {"type": "string"}, "attempt": {"type": "integer"}, "outcome": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}, "duration_ms": {"type": ["integer", "null"]}, "detail": {"type": ["string", "null"]}, "repeats": {"type": "integer", "minimum": 1, "description": "how many times the event happened in a row: a deferral repeated with the same reason (e.g. behind an open circuit) is one event, `at` the first and `last_at` the latest"}, "last_at": {"type": ["string", "null"], "format": "date-time"}}},
                "Message": {"type": "object", "properties": {
                    "id": {"type": "string"}, "destination": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "delivering", "retrying", "delivered", "dead", "cancelled"]},
                    "attempts": {"type": "integer"}, "payload": {}, "ordering_key": {"type": ["string", "null"]},
                    "idempotency_key": {"type": ["string", "null"]}, "next_attempt_at": {"type": ["string", "null"]},
                    "last_error": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                    "delivered_at": {"type": ["string", "null"]}, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
                "MessagePage": {"type": "object", "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}, "next": {"type": ["string", "null"]}}},
                "ReplayRequest": {"type": "object", "additionalProperties": false, "properties": {"destination": {"type": "string"}, "error_contains": {"type": "string"}, "ids": {"type": "array", "items": {"type": "string"}}, "dry_run": {"type": "boolean"}}},
                "PurgeRequest": {"type": "object", "required": ["ids"], "additionalProperties": false, "properties": {"ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"}}, "destination": {"type": "string"}, "error_contains": {"type": "string"}}},
                "Inbound": {"type": "object", "properties": {"id": {"type": "string"}, "source": {"type": "string"}, "external_id": {"type": "string", "description": "the Telegram update_id"}, "payload": {"description": "the event as received"}, "received_at": {"type": "string", "format": "date-time"}}},
                "InboundPage": {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Inbound"}}, "next": {"type": ["string", "null"]}}},
                "ReplayReport": {"type": "object", "properties": {"count": {"type": "integer"}, "ids": {"type": "array", "items": {"type": "string"}}, "dry_run": {"type": "boolean"}}},
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/messages": {"post": submit, "get": list},
            "/v1/messages/{id}": {"get": show, "delete": cancel},
            "/v1/messages/{id}/replay": {"post": replay_one},
            "/v1/dead-letters": {"get": dead, "delete": purge},
            "/v1/dead-letters/replay": {"post": replay_dead},
            "/v1/dead-letters/purge": {"post": purge_ids},
            "/v1/breakers": {"get": op("Every destination's circuit breaker, with its override", json!({"200": ok_json("breakers", json!({"type": "object", "properties": {"breakers": {"type": "array", "items": breaker}}})), "401": unauthorized}))},
            "/v1/breakers/{destination}/{action}": {"post": action},
            "/v1/destinations": {"get": op("Configured destinations", json!({"200": ok_json("destinations", any_object.clone()), "401": unauthorized}))},
            "/v1/inbound": {"get": inbound},
            "/v1/telegram/{destination}/webhook": {"post": telegram_webhook},
            "/v1/openapi.json": {"get": op("This document", json!({"200": ok_json("OpenAPI 3.1", any_object.clone())}))},
            "/livez": {"get": {"summary": "The process is up", "security": [], "responses": {"200": ok_json("alive", any_object.clone())}}},
            "/readyz": {"get": op("Store reachable and not draining", json!({"200": ok_json("ready", any_object.clone()), "503": error_response("not ready: `shutting_down`, `store_unavailable` (including no answer within `health.store_timeout`) or `storage_full` (writes are refused for lack of space)"), "401": unauthorized}))},
            "/status": {"get": op("Uptime, counters, depths, breakers, dependency health, last error", json!({"200": ok_json("status", any_object), "401": unauthorized}))},
            "/metrics": {"get": op("Prometheus text format", json!({"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": unauthorized}))},
        }
    })
}

/// `GET /v1/openapi.json`.
pub(crate) async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let doc = document();
        for route in super::super::routes() {
            let method = route.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][route.path][&method].is_object(),
                "{} {} is missing from the OpenAPI document",
                route.method,
                route.path
            );
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
}
