//! The store's operation timeout and pool figures: a lock held by another connection makes
//! operations answer `store_busy` instead of hanging, and nothing accepted is lost.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sqlx::Connection as _;

use crate::support::{Backend, TOKEN, TestRelay, start_on, webhook};

#[tokio::test]
async fn a_lock_held_elsewhere_answers_store_busy_and_loses_nothing() {
    let relay = start_on(Backend::Postgres, |c| {
        c.store.operation_timeout = Duration::from_millis(300);
        c.destinations
            .push(webhook("hook", "http://127.0.0.1:9/hook"));
    })
    .await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(submit_retrying_busy(&relay, serde_json::json!({"n": i})).await);
    }
    let schema = relay.pg.as_ref().unwrap();
    let mut locker = sqlx::PgConnection::connect(schema.base()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE \"{}\".messages IN ACCESS EXCLUSIVE MODE",
        schema.name()
    )))
    .execute(&mut locker)
    .await
    .unwrap();

    // A guard against a hang only: the answer is due after the 300 ms operation timeout.
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        relay
            .http
            .post(format!("{}/v1/messages", relay.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"destination": "hook", "payload": {"n": "locked"}}))
            .send(),
    )
    .await
    .expect("the submit is answered, not left hanging")
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_busy", "{body}");

    let (status, body) = relay
        .call(Method::GET, &format!("/v1/messages/{}", accepted[0]), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "store_busy", "{body}");

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();

    for id in &accepted {
        let path = format!("/v1/messages/{id}");
        retrying_busy(&relay, Method::GET, &path, None, StatusCode::OK).await;
    }
    submit_retrying_busy(&relay, serde_json::json!({"n": "after"})).await;
    let (status, status_body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    let store = &status_body["store"];
    assert_eq!(store["backend"], "postgres", "{store}");
    assert_eq!(store["operation_timeout_ms"], 300, "{store}");
    assert!(
        store["operation_timeouts"].as_u64().unwrap() >= 2,
        "{store}"
    );
    let pool = &store["pool"];
    let (in_use, idle, max) = (
        pool["in_use"].as_u64().unwrap(),
        pool["idle"].as_u64().unwrap(),
        pool["max"].as_u64().unwrap(),
    );
    assert_eq!(max, 16, "the default pool_size: {pool}");
    assert!(in_use + idle <= max, "{pool}");
    assert!(idle >= 1, "connections came back to the pool: {pool}");
    assert!(pool["acquires"].as_u64().unwrap() >= 6, "{pool}");
    assert!(
        pool["wait_micros_max"].as_u64().unwrap()
            >= pool["wait_micros_total"].as_u64().unwrap() / pool["acquires"].as_u64().unwrap(),
        "{pool}"
    );

    let metrics = relay
        .http
        .get(format!("{}/metrics", relay.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "ferrule_store_pool_connections{state=\"in_use\"}",
        "ferrule_store_pool_connections{state=\"idle\"}",
        "ferrule_store_pool_max_connections 16",
        "ferrule_store_pool_wait_seconds_bucket",
        "ferrule_store_pool_acquire_timeouts_total",
        "ferrule_store_operation_timeouts_total",
        "ferrule_store_writer_queue_depth",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    drop(relay);
}

#[tokio::test]
async fn sqlite_reports_its_writer_queue_and_no_pool() {
    let relay = start_on(Backend::Sqlite, |_| {}).await;
    let (status, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    let store = &body["store"];
    assert_eq!(store["backend"], "sqlite", "{store}");
    assert_eq!(store["operation_timeout_ms"], 10_000, "{store}");
    assert_eq!(store["writer_queue_capacity"], 4096, "{store}");
    assert!(store["pool"].is_null(), "{store}");
}

/// `method path` with `body`, retried as a client would while the store answers `store_busy`
/// (a 300 ms operation timeout can make even an unlocked statement late on a loaded machine):
/// the first other answer, which must be `expect`.
async fn retrying_busy(
    relay: &TestRelay,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    expect: StatusCode,
) -> serde_json::Value {
    for _ in 0..20 {
        let (status, answer) = relay.call(method.clone(), path, body.clone()).await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(status, expect, "{answer}");
            return answer;
        }
        assert_eq!(answer["error"]["code"], "store_busy", "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store stayed busy through 20 tries of {method} {path}");
}

/// Submits `payload` to `hook`, retrying while the store is busy: the new message's id.
async fn submit_retrying_busy(relay: &TestRelay, payload: serde_json::Value) -> String {
    let body = serde_json::json!({"destination": "hook", "payload": payload});
    let answer = retrying_busy(
        relay,
        Method::POST,
        "/v1/messages",
        Some(body),
        StatusCode::ACCEPTED,
    )
    .await;
    answer["id"].as_str().unwrap().to_owned()
}
