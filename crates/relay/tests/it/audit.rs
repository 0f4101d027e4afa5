//! The audit log: every operator action through the API recorded with the caller's token
//! name, listed at `GET /v1/audit` by filter and page, on both stores.

use std::time::Duration;

use ferrule::config::{ConfiguredToken, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{Backend, TestRelay, start_on, webhook};

const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

async fn as_ops(relay: &TestRelay, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = relay
        .call_with(method, path, body, Some(OPS_TOKEN), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer
}

async fn audit(relay: &TestRelay, query: &str) -> Vec<Value> {
    let (status, page) = relay
        .call_with(
            Method::GET,
            &format!("/v1/audit{query}"),
            None,
            Some(VIEWER_TOKEN),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn operator_actions_are_audited_with_the_token_name_on_sqlite() {
    operator_actions_are_audited_with_the_token_name(Backend::Sqlite).await;
}

#[tokio::test]
async fn operator_actions_are_audited_with_the_token_name_on_postgres() {
    operator_actions_are_audited_with_the_token_name(Backend::Postgres).await;
}

async fn operator_actions_are_audited_with_the_token_name(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(400));
    let url = receiver.url.clone();
    let relay = start_on(backend, |c| {
        c.auth
            .tokens
            .push(ConfiguredToken::named("ops", Secret::new(OPS_TOKEN)));
        c.auth
            .read_only_tokens
            .push(ConfiguredToken::named("viewer", Secret::new(VIEWER_TOKEN)));
        c.destinations.push(webhook("hook", &url));
    })
    .await;

    // Two dead letters (a 400 is permanent), replayed, dead again, purged.
    let ids = [
        relay.submit("hook", json!({"n": 1})).await,
        relay.submit("hook", json!({"n": 2})).await,
    ];
    for id in &ids {
        relay.wait_for_status(id, "dead", WAIT).await;
    }
    let dry = json!({"destination": "hook", "dry_run": true});
    let report = as_ops(&relay, Method::POST, "/v1/dead-letters/replay", Some(dry)).await;
    assert_eq!(report["count"], 2);
    assert!(
        audit(&relay, "").await.is_empty(),
        "a dry run is not recorded"
    );
    // A read-only token may read the log but not act.
    let (status, _) = relay
        .call_with(
            Method::POST,
            "/v1/dead-letters/replay",
            Some(json!({"destination": "hook"})),
            Some(VIEWER_TOKEN),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let replay = json!({"destination": "hook"});
    as_ops(
        &relay,
        Method::POST,
        "/v1/dead-letters/replay",
        Some(replay),
    )
    .await;
    for id in &ids {
        relay.wait_for_status(id, "dead", WAIT).await;
    }
    let purged = as_ops(
        &relay,
        Method::DELETE,
        "/v1/dead-letters?destination=hook",
        None,
    )
    .await;
    assert_eq!(purged["purged"], 2);

    // Breakers, by the name of the token.
    as_ops(
        &relay,
        Method::POST,
        "/v1/breakers/hook/force-open?reason=deploy",
        None,
    )
    .await;
    as_ops(&relay, Method::POST, "/v1/breakers/hook/reset", None).await;

    // A message scheduled ahead, cancelled by the test's unnamed token.
    let later = ferrule::time::rfc3339(std::time::SystemTime::now() + Duration::from_secs(86_400));
    let (status, submitted) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "hook", "payload": {"n": 3}, "deliver_after": later})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let scheduled = submitted["id"].as_str().unwrap().to_owned();
    let (status, _) = relay
        .call(Method::DELETE, &format!("/v1/messages/{scheduled}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let entries = audit(&relay, "").await;
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    let unnamed = entries[0]["actor"].as_str().unwrap();
    assert!(unnamed.starts_with("api:"), "{unnamed}");
    assert_eq!(
        seen,
        [
            (unnamed, "message.cancel"),
            ("ops", "breaker.reset"),
            ("ops", "breaker.force_open"),
            ("ops", "dead_letters.purge"),
            ("ops", "dead_letters.replay"),
        ],
        "newest first: {entries:#?}"
    );
    assert_eq!(entries[0]["target"], scheduled.as_str());
    assert_eq!(entries[0]["count"], 1);
    assert_eq!(entries[1]["target"], "hook");
    assert_eq!(entries[2]["detail"], json!({"reason": "deploy"}));
    assert_eq!(entries[3]["count"], 2);
    assert_eq!(
        entries[3]["detail"],
        json!({"filter": {"destination": "hook"}, "all": false})
    );
    assert_eq!(entries[4]["count"], 2);
    assert_eq!(
        entries[4]["detail"],
        json!({"filter": {"destination": "hook"}})
    );
    assert!(
        ferrule::time::parse_rfc3339(entries[4]["at"].as_str().unwrap()).is_some(),
        "{}",
        entries[4]
    );

    // Filters and pages.
    assert_eq!(audit(&relay, "?actor=ops").await.len(), 4);
    let replays = audit(&relay, "?action=dead_letters.replay").await;
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0]["seq"], entries[4]["seq"]);
    assert!(
        audit(&relay, "?since=9999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    let (_, first) = relay
        .call_with(
            Method::GET,
            "/v1/audit?limit=3",
            None,
            Some(VIEWER_TOKEN),
            &[],
        )
        .await;
    let next = first["next"].as_str().unwrap();
    let rest = audit(&relay, &format!("?limit=3&cursor={next}")).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1]["seq"], entries[4]["seq"]);

    // Bad filters name their field.
    for (query, field) in [
        ("?action=breaker.explode", "action"),
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
    ] {
        let (status, body) = relay
            .call(Method::GET, &format!("/v1/audit{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}
