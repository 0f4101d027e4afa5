//! `GET`, `PUT` and `DELETE /v1/routes/{name}/chats`: a route's chat mappings, the configured
//! `[[routes.chats]]` with those set through the API over them (see
//! [`crate::routes::chats`]), and their part of the OpenAPI document.
//!
//! A key holds `/` (`owner/repo`), so it travels in the body (`PUT`) or the query (`DELETE`),
//! never in the path.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ferrule_store::chats::MAX_KEY_CHARS;
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::openapi::{error, ok, op, schema, unavailable};
use crate::audit::{self, Action};
use crate::routes::Route;
use crate::routes::chats::ChatEntry;
use crate::state::AppState;
use crate::time::rfc3339;

/// The route named `name`, or 404.
fn route<'a>(state: &'a AppState, name: &str) -> Result<&'a Route, ApiError> {
    state
        .routes
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no route named `{name}` is configured")))
}

/// How the API shows one entry.
fn entry_json(e: &ChatEntry) -> Value {
    json!({
        "key": e.key,
        "chat_id": e.chat_id,
        "source": e.source.as_str(),
        "updated_at": e.stored.as_ref().map(|s| rfc3339(s.updated_at)),
        "updated_by": e.stored.as_ref().map(|s| s.updated_by.clone()),
        "configured_chat_id": e.configured,
    })
}

/// `{"route", "chats"}`: every entry of the route, as its runs use them now.
fn answer(route: &Route) -> Json<Value> {
    let chats: Vec<Value> = route.chats.entries().iter().map(entry_json).collect();
    Json(json!({"route": route.config.name, "chats": chats}))
}

/// 422 `invalid_key` unless `key` is 1 to [`MAX_KEY_CHARS`] characters, not only blanks, and
/// without control characters.
fn check_key(key: &str) -> Result<(), ApiError> {
    let chars = key.chars().count();
    let reason = if key.trim().is_empty() {
        "`key` must not be empty".to_owned()
    } else if key.chars().any(char::is_control) {
        "`key` must not contain control characters".to_owned()
    } else if chars > MAX_KEY_CHARS {
        format!("`key` is {chars} characters; the maximum is {MAX_KEY_CHARS}")
    } else {
        return Ok(());
    };
    Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key", reason).with_field("key"))
}

/// 400 `invalid_request` naming `field`.
fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message).with_field(field)
}

/// The body of `PUT /v1/routes/{name}/chats`, each field checked by name.
fn parse_body(body: &serde_json::Map<String, Value>) -> Result<(String, i64), ApiError> {
    if let Some(unknown) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "key" | "chat_id"))
    {
        return Err(invalid(
            unknown,
            format!("unknown field `{unknown}`; expected `key` and `chat_id`"),
        ));
    }
    let key = match body.get("key") {
        None => return Err(invalid("key", "missing field `key`")),
        Some(Value::String(key)) => key.clone(),
        Some(_) => return Err(invalid("key", "`key` must be a string")),
    };
    let chat_id = match body.get("chat_id") {
        None => return Err(invalid("chat_id", "missing field `chat_id`")),
        Some(v) => integer(v).ok_or_else(|| {
            invalid(
                "chat_id",
                "`chat_id` must be an integer (a Telegram chat id, e.g. -1001234567890)",
            )
        })?,
    };
    check_key(&key)?;
    Ok((key, chat_id))
}

/// `v` as an i64: an integer, or a number with no fraction that a double holds exactly (JSON
/// Schema's `integer` counts `-100.0` as one).
fn integer(v: &Value) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
            .map(|f| f as i64)
    })
}

/// `GET /v1/routes/{name}/chats`: the route's chat mappings, each with its `source`.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(answer(route(&state, &name)?))
}

/// `PUT /v1/routes/{name}/chats` with `{"key", "chat_id"}`: stores the mapping (replacing a
/// configured one of the same key for as long as it is stored), uses it from the next run on,
/// and records it in the audit log.
pub(crate) async fn set(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let route = route(&state, &name)?;
    let (key, chat_id) = parse_body(&body)?;
    state.written(
        state
            .routes
            .set_chat(&state.store, route, &key, chat_id, &caller)
            .await,
    )?;
    tracing::info!(route = %name, key, chat_id, %caller, "route chat set through the API");
    let entry = audit::entry(&caller, Action::RouteChatSet)
        .target(&name)
        .detail(json!({"key": key, "chat_id": chat_id}));
    audit::record(&state.store, entry).await;
    Ok(answer(route))
}

/// Query of `DELETE /v1/routes/{name}/chats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveQuery {
    #[serde(default)]
    key: Option<String>,
}

/// `DELETE /v1/routes/{name}/chats?key=`: removes the mapping set through the API (the
/// configured one, if any, is used again) and records it in the audit log. 409
/// `defined_in_config` for a key only the configuration maps, 404 for a key not mapped.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> Result<Json<Value>, ApiError> {
    let route = route(&state, &name)?;
    let Some(key) = q.key else {
        return Err(
            ApiError::bad_request("invalid_query", "missing query parameter `key`")
                .with_field("key"),
        );
    };
    check_key(&key)?;
    let removed = state.written(state.routes.remove_chat(&state.store, route, &key).await)?;
    if !removed {
        if route.chats.is_configured(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "defined_in_config",
                format!(
                    "`{key}` is defined in the configuration ([[routes.chats]] of `{name}`); \
                     only a mapping set through the API can be removed (a PUT replaces it)"
                ),
            )
            .with_field("key"));
        }
        return Err(
            ApiError::not_found(format!("route `{name}` maps no chat for `{key}`"))
                .with_field("key"),
        );
    }
    tracing::info!(route = %name, key, %caller, "route chat removed through the API");
    let entry = audit::entry(&caller, Action::RouteChatRemove)
        .target(&name)
        .detail(json!({"key": key}));
    audit::record(&state.store, entry).await;
    Ok(answer(route))
}

/// The chats routes' paths in the OpenAPI document, without their security (added from the
/// routes).
pub(crate) fn openapi_paths() -> Value {
    let store_down = unavailable(
        "the store is unavailable or busy, or its storage is full (`store_unavailable`, `store_busy`, `storage_full`); try again after `Retry-After`",
    );
    let name = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}});
    // Not only blanks, no control character.
    let pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";
    let key = json!({"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": pattern, "description": "what is mapped, e.g. a repository `owner/repo`: 1 to 200 characters, not only blanks, no control characters"});
    let mut list = op(
        "listRouteChats",
        "A route's chat mappings: the configuration's and those set through the API",
        json!({"200": ok("every mapping, by key, as runs use them now", schema("RouteChats")),
               "404": error("no route of that name is configured")}),
    );
    list["parameters"] = json!([name.clone()]);
    let mut set = op(
        "setRouteChat",
        "Map a key to a chat for a route's templates (`chats[key]`)",
        json!({
            "200": ok("stored and used from the next run on; every mapping of the route", schema("RouteChats")),
            "400": error("malformed JSON, not an object, a missing or unknown field or a wrong type (`malformed_json`, `invalid_request`, with `field`)"),
            "404": error("no route of that name is configured"),
            "413": error("the body is over `server.max_body_bytes` (`body_too_large`)"),
            "415": error("not `Content-Type: application/json` (`unsupported_media_type`)"),
            "422": error("a blank key, one with a control character or one over 200 characters (`invalid_key`, `field`: `key`)"),
            "503": store_down.clone(),
        }),
    );
    set["description"] = json!(
        "Replaces a mapping of the same key, the configuration's included (for as long as this one is stored). Other relays sharing a PostgreSQL store use it within 5 s. Recorded in the audit log."
    );
    set["parameters"] = json!([name.clone()]);
    set["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
    "type": "object", "required": ["key", "chat_id"], "additionalProperties": false,
    "properties": {
        "key": key.clone(),
        "chat_id": {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX, "description": "the Telegram chat id, e.g. -1001234567890"},
    }}}}});
    let mut remove = op(
        "removeRouteChat",
        "Remove a chat mapping set through the API (the configuration's, if any, is used again)",
        json!({
            "200": ok("removed; every mapping of the route", schema("RouteChats")),
            "400": error("no `key`, or an unknown query parameter (`invalid_query`)"),
            "404": error("no route of that name is configured, or it maps no chat for the key"),
            "409": error("the key is mapped by the configuration only (`defined_in_config`, `field`: `key`): change the configuration, or replace it with a PUT"),
            "422": error("a blank key, one with a control character or one over 200 characters (`invalid_key`, `field`: `key`)"),
            "503": store_down,
        }),
    );
    remove["description"] = json!("Recorded in the audit log.");
    remove["parameters"] = json!([name, {"name": "key", "in": "query", "required": true, "description": "the key to remove", "schema": key}]);
    json!({"/v1/routes/{name}/chats": {"get": list, "put": set, "delete": remove}})
}

/// The chats routes' schemas in the OpenAPI document.
pub(crate) fn openapi_schemas() -> Value {
    json!({
        "RouteChat": {"type": "object", "required": ["key", "chat_id", "source", "updated_at", "updated_by", "configured_chat_id"], "properties": {
            "key": {"type": "string"},
            "chat_id": {"type": "integer", "description": "the chat templates get as `chats[key]`"},
            "source": {"type": "string", "enum": ["config", "api"], "description": "`[[routes.chats]]`, or set through the API (which wins over the configuration)"},
            "updated_at": {"type": ["string", "null"], "format": "date-time", "description": "when set through the API; null for the configuration's"},
            "updated_by": {"type": ["string", "null"], "description": "the token name that set it through the API"},
            "configured_chat_id": {"type": ["integer", "null"], "description": "the configuration's chat this entry replaces, if any"}}},
        "RouteChats": {"type": "object", "required": ["route", "chats"], "properties": {
            "route": {"type": "string"},
            "chats": {"type": "array", "items": schema("RouteChat")}}},
    })
}
