//! Message search over HTTP: `GET /v1/messages` and `GET /v1/dead-letters` by idempotency key,
//! ordering key, time range and payload text, which needs a bounded range.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{TestRelay, start, webhook};

const WAIT: Duration = Duration::from_secs(10);

async fn ids(relay: &TestRelay, path: &str) -> Vec<String> {
    let (status, page) = relay.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {page}");
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn submit(relay: &TestRelay, payload: Value, key: &str, ordering: &str) -> String {
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "hook", "payload": payload, "ordering_key": ordering})),
            Some(crate::support::TOKEN),
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn encode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn messages_and_dead_letters_are_found_by_key_time_and_payload_text() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(400));
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(webhook("hook", &url))).await;
    let before = ferrule::time::rfc3339(SystemTime::now() - Duration::from_secs(60));
    let a = submit(&relay, json!({"text": "<b>invoice 42</b>"}), "k-a", "c-1").await;
    let b = submit(&relay, json!({"text": "receipt"}), "k-b", "c-2").await;
    for id in [&a, &b] {
        relay.wait_for_status(id, "dead", WAIT).await;
    }
    let after = ferrule::time::rfc3339(SystemTime::now() + Duration::from_secs(60));
    let range = format!("since={}&until={}", encode(&before), encode(&after));

    assert_eq!(
        ids(&relay, "/v1/messages?idempotency_key=k-a").await,
        [a.as_str()]
    );
    assert_eq!(
        ids(&relay, "/v1/messages?ordering_key=c-2").await,
        [b.as_str()]
    );
    assert_eq!(
        ids(
            &relay,
            &format!("/v1/messages?{range}&payload_contains=invoice%2042")
        )
        .await,
        [a.as_str()]
    );
    assert_eq!(
        ids(
            &relay,
            &format!("/v1/dead-letters?{range}&payload_contains=receipt")
        )
        .await,
        [b.as_str()]
    );
    assert_eq!(
        ids(&relay, &format!("/v1/dead-letters?{range}")).await,
        [b.as_str(), a.as_str()]
    );
    let later = encode(&after);
    assert!(
        ids(&relay, &format!("/v1/messages?since={later}"))
            .await
            .is_empty()
    );

    // A text search without a bounded range searches the last 7 days of it and says so:
    // without `since` or `until` (now is its end), and with a range wider than 7 days.
    for path in ["/v1/messages", "/v1/dead-letters"] {
        let (status, body) = relay
            .call(
                Method::GET,
                &format!("{path}?payload_contains=invoice%2042"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["messages"][0]["id"], a.as_str(), "{body}");
        let start = ferrule::time::parse_rfc3339(body["payload_search_since"].as_str().unwrap())
            .expect("payload_search_since is a time");
        let week = Duration::from_secs(7 * 86_400);
        let age = SystemTime::now().duration_since(start).unwrap();
        assert!(
            age >= week && age < week + Duration::from_secs(60),
            "{body}"
        );
        let (status, body) = relay
            .call(
                Method::GET,
                &format!("{path}?since=2026-01-01T00:00:00Z&until=2026-01-09T00:00:00Z&payload_contains=x"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["payload_search_since"], "2026-01-02T00:00:00.000Z",
            "{body}"
        );
    }
    let (_, body) = relay
        .call(
            Method::GET,
            &format!("/v1/messages?{range}&payload_contains=x"),
            None,
        )
        .await;
    assert!(body.get("payload_search_since").is_none(), "{body}");

    // Bad values are refused naming the field.
    for (query, field) in [
        ("since=yesterday".to_owned(), "since"),
        ("until=soon".to_owned(), "until"),
        (
            format!("idempotency_key={}", "k".repeat(513)),
            "idempotency_key",
        ),
    ] {
        for path in ["/v1/messages", "/v1/dead-letters"] {
            let (status, body) = relay
                .call(Method::GET, &format!("{path}?{query}"), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}?{query}: {body}");
            assert_eq!(body["error"]["code"], "invalid_query", "{body}");
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
}
