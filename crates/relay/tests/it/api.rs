//! The HTTP API through the real router: auth, submit, idempotency, every bad input.

use std::time::Duration;

use ferrule::StartOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, TOKEN, send_whole_then_read, start, webhook};

/// A destination whose receiver is never reached in these tests (deliveries are scheduled an
/// hour ahead), so message state stays put.
fn idle(config: &mut ferrule::Config) {
    config
        .destinations
        .push(webhook("billing-hook", "http://127.0.0.1:9/hook"));
}

fn later() -> String {
    ferrule::time::rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
}

/// Starts the relay with `config` as given, on the system clock, without a banner.
async fn start_as_given(config: ferrule::Config) -> ferrule::Running {
    let options = StartOptions {
        clock: ferrule_policy::clock::system(),
        banner: false,
    };
    ferrule::start(config, options).await.unwrap()
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// A read-only token the access tests configure.
const READ_TOKEN: &str = "read-only-token-0123456789";

#[tokio::test]
async fn every_route_asks_for_the_token_its_access_level_needs() {
    use ferrule::api::{Access, routes};
    let relay = start(|config| {
        idle(config);
        config.auth.read_only_tokens = vec![ferrule::config::Secret::new(READ_TOKEN).into()];
        config
            .inbound
            .email
            .push(ferrule::config::EmailSourceConfig {
                name: "github".into(),
                ..Default::default()
            });
    })
    .await;
    let concrete = |path: &str| {
        path.replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{destination}", "billing-hook")
            .replace("{action}", "reset")
            .replace("{source}", "github")
    };
    for route in routes() {
        let path = concrete(route.path);
        let method = route.method.clone();
        let (anonymous, body) = relay
            .call_with(method.clone(), &path, None, None, &[])
            .await;
        let (read, read_body) = relay
            .call_with(method.clone(), &path, None, Some(READ_TOKEN), &[])
            .await;
        let (wrong, _) = relay
            .call_with(
                method.clone(),
                &path,
                None,
                Some("wrong-token-0123456789"),
                &[],
            )
            .await;
        match route.access {
            Access::Public => {
                assert_ne!(anonymous, StatusCode::UNAUTHORIZED, "{route:?}: {body}");
            }
            Access::Read => {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{route:?}");
                assert_error(&body, "unauthorized");
                assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{route:?}");
                // Let through: answered by the handler (a made-up id is a 404).
                assert!(
                    read != StatusCode::UNAUTHORIZED && read != StatusCode::FORBIDDEN,
                    "{route:?}: {read} {read_body}"
                );
            }
            // The e-mail route also takes its source's secret (tests/it/email.rs).
            Access::Write | Access::EmailSource => {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{route:?}");
                assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{route:?}");
                assert_eq!(read, StatusCode::FORBIDDEN, "{route:?}: {read_body}");
                assert_error(&read_body, "forbidden");
                let (admin, body) = relay.call_with(method, &path, None, Some(TOKEN), &[]).await;
                assert!(
                    admin != StatusCode::UNAUTHORIZED && admin != StatusCode::FORBIDDEN,
                    "{route:?}: {admin} {body}"
                );
            }
        }
    }
    // Probes and the description need no token at all.
    for path in ["/livez", "/readyz", "/v1/openapi.json"] {
        let (status, body) = relay.call_with(Method::GET, path, None, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // A read-only token reads everything and changes nothing.
    let (status, _) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "billing-hook", "payload": {}})),
            Some(READ_TOKEN),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = relay
        .call_with(Method::GET, "/v1/messages", None, Some(READ_TOKEN), &[])
        .await;
    assert_eq!(page["messages"], json!([]), "nothing was stored: {page}");
    let (status, metrics) = relay
        .call_with(Method::GET, "/metrics", None, Some(READ_TOKEN), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.as_str().unwrap_or("").contains("ferrule_"),
        "{metrics}"
    );
}

#[tokio::test]
async fn submit_is_202_and_the_message_shows_its_timeline() {
    let relay = start(idle).await;
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "billing-hook", "payload": {"n": 1}, "ordering_key": "k", "deliver_after": later()})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap();
    let message = relay.message(id).await;
    assert_eq!(message["status"], "queued");
    assert_eq!(message["payload"], json!({"n": 1}));
    assert_eq!(message["ordering_key"], "k");
    assert_eq!(message["attempts"], 0);
    assert_eq!(message["events"][0]["status"], "queued");
    let (status, page) = relay
        .call(
            Method::GET,
            "/v1/messages?status=queued&destination=billing-hook",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["messages"][0]["id"], id);
    let (_, page) = relay
        .call(Method::GET, "/v1/messages?status=dead", None)
        .await;
    assert_eq!(page["messages"], json!([]));
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_200_and_the_original() {
    let relay = start(idle).await;
    let body =
        json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": later()});
    let headers = [("idempotency-key", "order-42")];
    let (first, a) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(body.clone()),
            Some(TOKEN),
            &headers,
        )
        .await;
    let (second, b) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(body),
            Some(TOKEN),
            &headers,
        )
        .await;
    assert_eq!(first, StatusCode::ACCEPTED);
    assert_eq!(second, StatusCode::OK);
    assert_eq!(a, b, "the original body");
    let (_, page) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "nothing enqueued"
    );
}

/// A webhook payload is a JSON object or array unless its destination says `any_json = true`:
/// a bare `null` or string is nearly always a client's mistake.
#[tokio::test]
async fn a_scalar_webhook_payload_is_422_unless_the_destination_allows_any_json() {
    let relay = start(|c| {
        idle(c);
        let mut any = webhook("any-hook", "http://127.0.0.1:9/hook");
        any.any_json = Some(true);
        c.destinations.push(any);
    })
    .await;
    let submit = |destination: &str, payload: &Value| {
        let body =
            json!({"destination": destination, "payload": payload, "deliver_after": later()});
        relay.call(Method::POST, "/v1/messages", Some(body))
    };
    for payload in [json!(null), json!("text"), json!(1.5), json!(false)] {
        let (status, body) = submit("billing-hook", &payload).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{payload}: {body}"
        );
        assert_error(&body, "invalid_payload");
        assert_eq!(body["error"]["field"], "payload", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("any_json = true"), "{body}");
        let (status, body) = submit("any-hook", &payload).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{payload}: {body}");
    }
    for payload in [json!({}), json!([1, 2])] {
        let (status, body) = submit("billing-hook", &payload).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{payload}: {body}");
    }
}

/// Found with Python's `urllib` and `requests`, which send the whole body before reading: a
/// 12 MiB submit got a broken pipe, not the 413 curl (waiting for `100 Continue`) was shown.
/// The rest of the body is read and discarded after the answer, so the client reads it, and
/// the connection serves the next request.
#[tokio::test]
async fn an_oversized_body_sent_whole_before_reading_still_gets_its_413() {
    let relay = start(idle).await;
    let body = vec![b' '; 12 * 1024 * 1024];
    for (token, status, code) in [
        (Some(TOKEN), 413, "body_too_large"),
        (None, 401, "unauthorized"),
    ] {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: relay\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (got, answer, again) = send_whole_then_read(&relay.base, &head, &body).await;
        assert_eq!(got, status, "{answer}");
        assert_error(&answer, code);
        assert_eq!(again, Some(200), "the connection serves the next request");
    }
}

#[tokio::test]
async fn every_bad_submission_gets_its_status_and_a_json_error() {
    let relay = start(|c| {
        idle(c);
        c.server.max_body_bytes = 1024;
    })
    .await;
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "nope", "payload": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "unknown_destination");

    let raw = |text: &'static str| {
        relay
            .http
            .post(format!("{}/v1/messages", relay.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(text)
            .send()
    };
    let response = raw("{\"destination\": ").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_error(&response.json().await.unwrap(), "malformed_json");
    let response = raw("{\"destination\": \"billing-hook\"}").await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "missing payload"
    );
    assert_error(&response.json().await.unwrap(), "invalid_request");
    let response = raw("{\"destination\": \"billing-hook\", \"payload\": 1, \"extra\": 2}")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "unknown field");

    let big = json!({"destination": "billing-hook", "payload": "x".repeat(4096)});
    let (status, body) = relay.call(Method::POST, "/v1/messages", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "body_too_large");

    let response = relay
        .http
        .post(format!("{}/v1/messages", relay.base))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&response.json().await.unwrap(), "unsupported_media_type");

    for (field, value) in [
        ("deliver_after", json!("tomorrow")),
        ("ordering_key", json!("")),
    ] {
        let mut body = json!({"destination": "billing-hook", "payload": {"n": 1}});
        body[field] = value;
        let (status, body) = relay.call(Method::POST, "/v1/messages", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_error(&body, "invalid_request");
    }
    let long_key = "k".repeat(600);
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "billing-hook", "payload": {"n": 1}})),
            Some(TOKEN),
            &[("idempotency-key", &long_key)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let relay = start(|c| {
        idle(c);
        c.server.max_queue_depth = 2;
    })
    .await;
    // Due now: the receiver is never reached, so they stay pending (retrying).
    let body = json!({"destination": "billing-hook", "payload": {"n": 1}});
    for _ in 0..2 {
        let (status, _) = relay
            .call(Method::POST, "/v1/messages", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let response = relay
        .http
        .post(format!("{}/v1/messages", relay.base))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_error(&response.json().await.unwrap(), "queue_full");
}

#[tokio::test]
async fn bad_ids_queries_and_routes_get_json_errors() {
    let relay = start(idle).await;
    let cases = [
        (
            Method::GET,
            "/v1/messages/not-an-id",
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::GET,
            "/v1/messages/01KAAAAAAAAAAAAAAAAAAAAAAA",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/messages?status=lost",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/messages?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/messages?limit=many",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/messages",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/breakers/nope/reset",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/breakers/billing-hook/explode",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/messages/01KAAAAAAAAAAAAAAAAAAAAAAA/replay",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // Found by schemathesis: what the document now says is invalid, the relay refuses.
        (
            Method::GET,
            "/v1/messages?status=queued,",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/messages?status=%20queued",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/messages?cursor=%1B%C2%AA",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/inbound?cursor=-1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    for (method, path, expected, code) in cases {
        let (status, body) = relay.call(method.clone(), path, None).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_error(&body, code);
    }
    // A pending message cannot be replayed.
    let (_, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": later()})),
        )
        .await;
    let id = body["id"].as_str().unwrap();
    let (status, body) = relay
        .call(Method::POST, &format!("/v1/messages/{id}/replay"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "invalid_state");
}

/// The document describes this relay: the destinations a submission may name, each with the
/// payload its type takes, and `/v1/destinations` says each one's type.
#[tokio::test]
async fn the_openapi_document_names_the_configured_destinations() {
    let relay = start(|c| {
        idle(c);
        let mut chat = webhook("ops-chat", "");
        chat.kind = ferrule::config::DestinationKind::Telegram;
        chat.url = String::new();
        chat.secret = None;
        chat.allow_private = false;
        chat.bot_token = Some(ferrule::config::Secret::new("123456789:test-token"));
        c.destinations.push(chat);
    })
    .await;
    let (status, doc) = relay.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let submit = &doc["components"]["schemas"]["SubmitRequest"];
    assert_eq!(
        submit["properties"]["destination"]["enum"],
        json!(["billing-hook", "ops-chat"])
    );
    let branches: Vec<(Value, Value)> = submit["anyOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["properties"]["destination"]["enum"].clone(),
                b["properties"]["payload"]["$ref"].clone(),
            )
        })
        .collect();
    assert!(branches.contains(&(
        json!(["billing-hook"]),
        json!("#/components/schemas/WebhookPayload")
    )));
    assert!(branches.contains(&(
        json!(["ops-chat"]),
        json!("#/components/schemas/TelegramPayload")
    )));
    let (_, destinations) = relay.call(Method::GET, "/v1/destinations", None).await;
    let types: Vec<&str> = destinations["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["webhook", "telegram"], "{destinations}");
}

/// Found by schemathesis: an `Idempotency-Key` with a tab was taken (`to_str` lets tabs
/// through), though the document allows printable ASCII only.
#[tokio::test]
async fn an_idempotency_key_with_a_control_character_is_400() {
    let relay = start(idle).await;
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": later()})),
            Some(TOKEN),
            &[("idempotency-key", "order\t42")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_request");
}

#[tokio::test]
async fn the_first_start_generates_a_token_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config_in(&dir);
    config.auth.tokens.clear();
    let first = start_as_given(config.clone()).await;
    let token = first.generated_token.clone().expect("a token is generated");
    assert!(token.starts_with("frl_"));
    let base = format!("http://{}", first.addr);
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{base}/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    first.shutdown();
    first.wait().await.unwrap();
    let db = std::fs::read(dir.path().join("ferrule.db")).unwrap();
    let wal = std::fs::read(dir.path().join("ferrule.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the plain token must not be stored"
        );
    }
    let second = start_as_given(config).await;
    assert_eq!(second.generated_token, None, "shown only once");
    let base = format!("http://{}", second.addr);
    let status = http
        .get(format!("{base}/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK, "the generated token still works");
    second.shutdown();
    second.wait().await.unwrap();
}

#[tokio::test]
async fn a_json_array_body_is_refused_not_taken_for_its_fields() {
    // serde reads a struct from an array of its fields in order; the API documents objects.
    let relay = start(idle).await;
    for (path, body) in [
        ("/v1/messages", json!(["billing-hook", {"n": 1}])),
        (
            "/v1/messages",
            json!([{"destination": "billing-hook", "payload": 1}]),
        ),
        ("/v1/dead-letters/replay", json!([])),
        (
            "/v1/dead-letters/purge",
            json!([["01KAAAAAAAAAAAAAAAAAAAAAAA"]]),
        ),
    ] {
        let (status, response) = relay.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {response}");
        assert_error(&response, "invalid_request");
        let message = response["error"]["message"].as_str().unwrap();
        assert!(message.contains("JSON object"), "{message}");
    }
    let (_, page) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(page["messages"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn every_destination_filter_naming_no_destination_is_422() {
    let relay = start(idle).await;
    let cases = [
        (Method::GET, "/v1/messages?destination=biling-hook", None),
        (
            Method::GET,
            "/v1/dead-letters?destination=biling-hook",
            None,
        ),
        (
            Method::DELETE,
            "/v1/dead-letters?destination=biling-hook",
            None,
        ),
        (
            Method::POST,
            "/v1/dead-letters/replay",
            Some(json!({"destination": "biling-hook"})),
        ),
        (
            Method::POST,
            "/v1/dead-letters/purge",
            Some(json!({"ids": [], "destination": "biling-hook"})),
        ),
    ];
    for (method, path, body) in cases {
        let (status, answer) = relay.call(method.clone(), path, body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {answer}"
        );
        assert_error(&answer, "unknown_destination");
        assert_eq!(answer["error"]["field"], "destination", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`biling-hook`"),
            "{answer}"
        );
    }
    let (status, body) = relay
        .call(Method::GET, "/v1/messages?destination=billing-hook", None)
        .await;
    assert_eq!(status, StatusCode::OK, "a configured one: {body}");
}

#[tokio::test]
async fn messages_of_a_destination_taken_out_of_the_config_stay_listable_but_not_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config_in(&dir);
    idle(&mut config);
    let first = start_as_given(config.clone()).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/messages", first.addr))
        .bearer_auth(TOKEN)
        .json(
            &json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": later()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    first.shutdown();
    first.wait().await.unwrap();

    config.destinations.clear();
    let relay = support::start_in(dir, config, ferrule_policy::clock::system()).await;
    let (status, body) = relay
        .call(Method::GET, "/v1/messages?destination=billing-hook", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/dead-letters/replay",
            Some(json!({"destination": "billing-hook"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_error(&body, "unknown_destination");
}

/// Posts `body` (raw JSON text) with `key` as its `Idempotency-Key`.
async fn submit_text(relay: &support::TestRelay, body: &str, key: &str) -> (StatusCode, Value) {
    let response = relay
        .http
        .post(format!("{}/v1/messages", relay.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_different_request_under_a_used_key_is_409_idempotency_conflict() {
    let relay = start(idle).await;
    let at = later();
    let first = format!(
        r#"{{"destination": "billing-hook", "payload": {{"n": 1, "tags": ["a", "b"]}}, "deliver_after": "{at}"}}"#
    );
    let (status, original) = submit_text(&relay, &first, "order-42").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{original}");
    let id = original["id"].as_str().unwrap();
    // Key order, whitespace and escapes are not a different request.
    let same = format!(
        "{{\"deliver_after\":\"{at}\",\n \"payload\":{{\"tags\":[\"\\u0061\",\"b\"],\"n\":1}},\"destination\":\"billing-hook\"}}"
    );
    let (status, again) = submit_text(&relay, &same, "order-42").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, json!({"id": id, "status": "queued"}));
    // Each field the client sets makes a different request.
    for different in [
        format!(
            r#"{{"destination": "billing-hook", "payload": {{"n": 2, "tags": ["a", "b"]}}, "deliver_after": "{at}"}}"#
        ),
        format!(
            r#"{{"destination": "billing-hook", "payload": {{"n": 1, "tags": ["b", "a"]}}, "deliver_after": "{at}"}}"#
        ),
        format!(
            r#"{{"destination": "billing-hook", "payload": {{"n": 1, "tags": ["a", "b"]}}, "deliver_after": "{at}", "ordering_key": "k"}}"#
        ),
        format!(
            r#"{{"destination": "billing-hook", "payload": {{"n": 1, "tags": ["a", "b"]}}, "deliver_after": "{}"}}"#,
            later()
        ),
    ] {
        let (status, body) = submit_text(&relay, &different, "order-42").await;
        assert_eq!(status, StatusCode::CONFLICT, "{different}: {body}");
        assert_error(&body, "idempotency_conflict");
        assert_eq!(body["error"]["id"], id, "{body}");
        assert_eq!(body["error"]["idempotency_key"], "order-42", "{body}");
        assert_eq!(body["error"]["field"], "Idempotency-Key", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("order-42") && message.contains(id),
            "{message}"
        );
    }
    let (_, page) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn a_repeated_request_answers_with_the_originals_current_status() {
    let receiver = crate::receiver::Receiver::start().await;
    receiver.script([crate::receiver::Reply::Status(400)]);
    let url = receiver.url.clone();
    let relay = start(|c| {
        c.destinations.push(webhook("hook", &url));
        c.destinations.push(webhook("other-hook", &url));
    })
    .await;
    let dead = json!({"destination": "hook", "payload": {"n": 1}});
    let (status, first) = submit_text(&relay, &dead.to_string(), "a").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = first["id"].as_str().unwrap().to_owned();
    relay
        .wait_for_status(&id, "dead", Duration::from_secs(10))
        .await;
    let delivered = json!({"destination": "other-hook", "payload": {"n": 2}});
    let (_, second) = submit_text(&relay, &delivered.to_string(), "b").await;
    let id2 = second["id"].as_str().unwrap().to_owned();
    relay
        .wait_for_status(&id2, "delivered", Duration::from_secs(10))
        .await;
    for (body, key, expected) in [
        (&dead, "a", json!({"id": id, "status": "dead"})),
        (&delivered, "b", json!({"id": id2, "status": "delivered"})),
    ] {
        let (status, again) = submit_text(&relay, &body.to_string(), key).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, expected);
    }
    // Purged, the original has no status left, and the key is still taken.
    let (status, purged) = relay
        .call(Method::DELETE, "/v1/dead-letters?all=true", None)
        .await;
    assert_eq!(
        (status, purged["purged"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (status, again) = submit_text(&relay, &dead.to_string(), "a").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], Value::Null, "{again}");
    assert!(
        again["note"].as_str().unwrap().contains("purged"),
        "{again}"
    );
    assert_eq!(receiver.hits().len(), 2, "nothing sent again");
}

#[tokio::test]
async fn scheduled_messages_count_toward_max_scheduled_not_the_queue_depth() {
    let relay = start(|c| {
        idle(c);
        c.server.max_queue_depth = 2;
        c.server.max_scheduled = 2;
    })
    .await;
    let scheduled =
        json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": later()});
    let due = json!({"destination": "billing-hook", "payload": {"n": 2}});
    for body in [&scheduled, &scheduled, &due, &due] {
        let (status, answer) = relay
            .call(Method::POST, "/v1/messages", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}: {answer}");
    }
    for (body, code, retry_after) in [
        (&scheduled, "scheduled_full", "60"),
        (&due, "queue_full", "5"),
    ] {
        let response = relay
            .http
            .post(format!("{}/v1/messages", relay.base))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(response.headers()["retry-after"], retry_after);
        assert_error(&response.json().await.unwrap(), code);
    }
    // The same counts read back from the store.
    let (_, status) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status["queue_depth"], 2, "{status:#}");
    assert_eq!(status["scheduled_depth"], 2, "{status:#}");
}

#[tokio::test]
async fn deliver_after_beyond_max_deliver_after_is_422_naming_it() {
    let relay = start(|c| {
        idle(c);
        c.server.max_deliver_after = std::time::Duration::from_secs(7200);
    })
    .await;
    let at = |secs| {
        ferrule::time::rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
    };
    for deliver_after in ["9999-12-31T23:59:59Z".to_owned(), at(3 * 3600)] {
        let body = json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": deliver_after});
        let (status, answer) = relay.call(Method::POST, "/v1/messages", Some(body)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{deliver_after}: {answer}"
        );
        assert_error(&answer, "out_of_range");
        assert_eq!(answer["error"]["field"], "deliver_after", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("server.max_deliver_after"),
            "{answer}"
        );
    }
    let body =
        json!({"destination": "billing-hook", "payload": {"n": 1}, "deliver_after": at(3600)});
    let (status, answer) = relay.call(Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (_, page) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn a_message_not_delivered_yet_is_cancelled_and_a_finished_one_is_409() {
    let receiver = crate::receiver::Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(webhook("hook", &url))).await;
    let soon = ferrule::time::rfc3339(std::time::SystemTime::now() + Duration::from_millis(300));
    let (_, queued) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "hook", "payload": {"n": 1}, "deliver_after": soon})),
        )
        .await;
    let id = queued["id"].as_str().unwrap();
    let (status, answer) = relay
        .call(Method::DELETE, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"id": id, "status": "cancelled", "previous_status": "queued"})
    );
    let message = relay.message(id).await;
    assert_eq!(message["status"], "cancelled");
    let last = message["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "cancelled");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("cancelled by api:"),
        "{last}"
    );
    // Past its deliver_after, it is still never sent; one due then is.
    let delivered = relay.submit("hook", json!({"n": 2})).await;
    relay
        .wait_for_status(&delivered, "delivered", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.hits().len(), 1, "the cancelled message was sent");
    for (target, now) in [(id, "cancelled"), (delivered.as_str(), "delivered")] {
        let (status, answer) = relay
            .call(Method::DELETE, &format!("/v1/messages/{target}"), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_error(&answer, "invalid_state");
        assert_eq!(answer["error"]["status"], now, "{answer}");
    }
    for (path, expected, code) in [
        (
            "/v1/messages/01KAAAAAAAAAAAAAAAAAAAAAAA",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/messages/not-an-id",
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
    ] {
        let (status, answer) = relay.call(Method::DELETE, path, None).await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert_error(&answer, code);
    }
    // A replay queues a cancelled message anew.
    let (status, _) = relay
        .call(Method::POST, &format!("/v1/messages/{id}/replay"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    relay
        .wait_for_status(id, "delivered", Duration::from_secs(10))
        .await;
}
