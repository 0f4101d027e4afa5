//! The OpenAPI description of the routes' runs (`api/runs.rs`): their operations and schemas,
//! laid into the document by its parent.

use serde_json::{Map, Value, json};

use super::{ID_PATTERN, error, json_body, ok, op, paging, path, query, schema, unavailable};

/// The run statuses a `status` filter takes.
const RUN_STATUSES: [&str; 6] = [
    "active",
    "waiting",
    "completed",
    "failed",
    "expired",
    "cancelled",
];

/// The schemas of runs.
pub(super) fn schemas(schemas: &mut Map<String, Value>) {
    let time = json!({"type": "string", "format": "date-time"});
    let time_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    let text_or_null = json!({"type": ["string", "null"]});
    let ms = json!({"type": "integer", "minimum": 0});
    let ms_or_null = json!({"type": ["integer", "null"], "minimum": 0});
    schemas.insert("Run".into(), json!({"type": "object",
        "required": ["id", "route", "dedupe_key", "status", "state", "step", "context", "version", "created_at", "updated_at", "finished_at", "waited_ms", "processing_ms", "last_error", "trace"],
        "properties": {
            "trace": schema("Trace"),
            "id": {"type": "string", "pattern": ID_PATTERN},
            "route": {"type": "string"},
            "dedupe_key": {"type": "string"},
            "status": {"type": "string", "enum": RUN_STATUSES},
            "state": {"type": "string", "description": "where the run is, as its route names it (`received`, `awaiting_callback`, `fallback_sent`…)"},
            "step": text_or_null,
            "context": {"description": "the trigger's fields and each step's output under `steps.<name>`"},
            "version": {"type": "integer", "minimum": 1},
            "created_at": time, "updated_at": time, "finished_at": time_or_null,
            "waited_ms": ms, "processing_ms": ms,
            "last_error": text_or_null,
        }}));
    schemas.insert(
        "RunPage".into(),
        json!({"type": "object", "required": ["runs", "next"], "properties": {
        "runs": {"type": "array", "items": schema("Run")},
        "next": {"type": ["string", "null"], "pattern": "^(0|[1-9][0-9]{0,17})$"}}}),
    );
    schemas.insert("RunDetail".into(), json!({"type": "object", "required": ["run", "events", "waits", "messages"], "properties": {
        "run": schema("Run"),
        "events": {"type": "array", "items": {"type": "object", "required": ["seq", "at", "kind", "status", "state"], "properties": {
            "seq": {"type": "integer"}, "at": time,
            "kind": {"type": "string", "enum": ["started", "advanced", "wait_opened", "wait_consumed", "wait_expired", "wait_cancelled"]},
            "status": {"type": "string", "enum": RUN_STATUSES}, "state": {"type": "string"},
            "step": text_or_null, "message": text_or_null, "detail": text_or_null, "duration_ms": ms_or_null}}},
        "waits": {"type": "array", "items": {"type": "object", "required": ["step", "state", "created_at", "expires_at"], "properties": {
            "step": {"type": "string"}, "state": {"type": "string", "enum": ["open", "consumed", "expired", "cancelled"]},
            "created_at": time, "expires_at": time, "closed_at": time_or_null,
            "consumed_by": text_or_null, "action": text_or_null, "allowed": {}}}},
        "messages": {"type": "array", "items": {"type": "object", "required": ["id", "step", "destination", "status", "attempts"], "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN}, "step": {"type": "string"}, "destination": {"type": "string"},
            "status": {"type": "string"}, "attempts": {"type": "integer", "minimum": 0},
            "created_at": time, "updated_at": time, "last_error": text_or_null}}},
    }}));
    schemas.insert("RouteStats".into(), json!({"type": "object", "required": ["route", "window_seconds", "active", "waiting", "finished", "by_state", "success_rate", "processing_ms", "top_failures"], "properties": {
        "route": {"type": "string"}, "window_seconds": {"type": "integer"},
        "active": {"type": "integer"}, "waiting": {"type": "integer"},
        "finished": {"type": "object", "properties": {"completed": {"type": "integer"}, "failed": {"type": "integer"}, "expired": {"type": "integer"}, "cancelled": {"type": "integer"}}},
        "by_state": {"type": "array", "items": {"type": "object", "properties": {"state": {"type": "string"}, "count": {"type": "integer"}}}},
        "success_rate": {"type": ["number", "null"]},
        "processing_ms": {"type": "object", "description": "without the time spent waiting for a person", "properties": {"mean": ms_or_null, "p95": ms_or_null}},
        "top_failures": {"type": "array", "items": {"type": "object", "properties": {"status": {"type": "string"}, "reason": text_or_null, "count": {"type": "integer"}, "last_at": time}}},
    }}));
}

/// The operations on runs, without their security (added from the route table).
pub(super) fn paths() -> Value {
    let store_down = unavailable(
        "the store is unavailable or busy, or its storage is full (`store_unavailable`, `store_busy`, `storage_full`)",
    );
    let run_id = path("id", json!({"type": "string", "pattern": ID_PATTERN}));
    let name = path("name", json!({"type": "string", "minLength": 1}));
    let body_errors = |extra: &str| {
        json!({
            "400": error(&format!("malformed JSON, not an object, an unknown field or a wrong type{extra}")),
            "413": error("the body is over `server.max_body_bytes` (`body_too_large`)"),
            "415": error("not `Content-Type: application/json` (`unsupported_media_type`)"),
        })
    };
    let mut start = op(
        "startRun",
        "Start a run of a route with a JSON body as its `input`",
        body_errors(""),
    );
    start["responses"]["201"] = ok("the new run", schema("Run"));
    start["responses"]["200"] = ok(
        "the run started before under the same `Idempotency-Key` (or dedupe key)",
        schema("Run"),
    );
    start["responses"]["404"] = error("no route of that name is configured");
    start["responses"]["422"] =
        error("the route's dedupe key cannot be made from the input (`invalid_input`)");
    start["responses"]["503"] = store_down.clone();
    start["parameters"] = json!([name, {"name": "Idempotency-Key", "in": "header", "required": false, "description": "the run's dedupe key when the route has no `dedupe` template; one run per key", "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}}, super::traceparent_param()]);
    start["requestBody"] = json_body(json!({"type": "object"}));

    let mut stats = op(
        "routeStats",
        "A route's runs over a window: by status and final state, success rate, processing time without waits, top failure reasons",
        json!({"200": ok("the statistics", schema("RouteStats")),
               "400": error("a bad `window` (`invalid_query`)"),
               "404": error("no route of that name is configured"),
               "503": store_down.clone()}),
    );
    stats["parameters"] = json!([
        name,
        query(
            "window",
            "a duration such as `1h` or `24h` (default 24h, at most a year)",
            json!({"type": "string"})
        )
    ]);

    let paging = paging();
    let mut list = op(
        "listRuns",
        "Runs, newest first",
        json!({"200": ok("a page", schema("RunPage")),
               "400": error("a bad query parameter (`invalid_query`) or cursor"),
               "503": store_down.clone()}),
    );
    let one = format!("({})", RUN_STATUSES.join("|"));
    list["parameters"] = json!([
        query("route", "only this route", json!({"type": "string"})),
        query(
            "state",
            "only runs in this state",
            json!({"type": "string"})
        ),
        query(
            "status",
            "comma-separated statuses",
            json!({"type": "string", "pattern": format!("^({one}(,{one})*)?$")})
        ),
        query(
            "since",
            "only runs started at or after this RFC 3339 time",
            super::time_query()
        ),
        paging[0],
        paging[1],
    ]);

    let mut show = op(
        "getRun",
        "A run with its timeline, waits and messages",
        json!({"200": ok("the run", schema("RunDetail")),
               "400": error("not a run id (`invalid_id`)"),
               "404": error("no such run"),
               "503": store_down.clone()}),
    );
    show["parameters"] = json!([run_id]);

    let mut signal = op(
        "signalRun",
        "Answer a run's open wait with an action, as a button press would",
        body_errors(", or not a run id (`invalid_id`)"),
    );
    signal["responses"]["200"] = ok("the run after the answer", schema("RunDetail"));
    signal["responses"]["404"] = error("no such run");
    signal["responses"]["409"] =
        error("the wait was answered before (`already_handled`) or ran out (`expired`)");
    signal["responses"]["422"] =
        error("the run has no open wait offering that action (`invalid_action`)");
    signal["responses"]["503"] = store_down.clone();
    signal["parameters"] = json!([run_id]);
    signal["requestBody"] = json_body(
        json!({"type": "object", "required": ["action"], "additionalProperties": false, "properties": {"action": {"type": "string"}}}),
    );

    let action = |id: &str, summary: &str, conflict: &str| {
        let mut o = op(
            id,
            summary,
            json!({"200": ok("the run after the change", schema("RunDetail")),
                   "400": error("not a run id (`invalid_id`)"),
                   "404": error("no such run"),
                   "409": error(conflict),
                   "503": store_down.clone()}),
        );
        o["parameters"] = json!([run_id]);
        o
    };
    json!({
        "/v1/routes/{name}/runs": {"post": start},
        "/v1/routes/{name}/stats": {"get": stats},
        "/v1/runs": {"get": list},
        "/v1/runs/{id}": {"get": show},
        "/v1/runs/{id}/signal": {"post": signal},
        "/v1/runs/{id}/retry": {"post": action("retryRun", "Run a failed run's failed step again (a delivered step never runs again)", "the run did not fail (`invalid_state`)")},
        "/v1/runs/{id}/cancel": {"post": action("cancelRun", "Cancel an unfinished run: its pending messages are cancelled, its waits closed", "the run has finished (`invalid_state`)")},
    })
}
