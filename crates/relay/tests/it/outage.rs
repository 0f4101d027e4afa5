//! The probes during a store outage: `/readyz` and `/status` answer within
//! `health.store_timeout` while PostgreSQL does not answer at all, and `/livez` stays 200.
//!
//! The shared PostgreSQL server is not stopped: the relay reaches it through a TCP proxy in the
//! test that can be paused. Paused, it keeps every connection open and accepts new ones but
//! forwards nothing, like a server that hangs or a network that drops packets.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::support::{Backend, PausableProxy, TestRelay, start_on};

/// Sends `GET path`, answering the status, the body and how long the answer took.
async fn timed(relay: &TestRelay, path: &str) -> (StatusCode, serde_json::Value, Duration) {
    let started = Instant::now();
    let (status, body) = relay.call(Method::GET, path, None).await;
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_status_answer_promptly_while_postgres_hangs() {
    let store_timeout = Duration::from_millis(500);
    // The answer may take the deadline plus scheduling on a busy machine, never the pool's
    // acquire timeout (5 s) or forever.
    let prompt = store_timeout + Duration::from_millis(1500);
    let proxy = PausableProxy::to_test_postgres().await;
    let relay = start_on(Backend::Postgres, |config| {
        let mut url = url::Url::parse(&config.store.url.expose("store.url").unwrap()).unwrap();
        url.set_port(Some(proxy.addr().port())).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        config.store.url = ferrule::config::Secret::new(url.to_string());
        config.health.store_timeout = store_timeout;
    })
    .await;

    let (status, body, _) = timed(&relay, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    proxy.pause();
    for _ in 0..3 {
        let (status, body, took) = timed(&relay, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert_eq!(
            body["error"]["message"], "the store did not answer within 500ms",
            "{body}"
        );
        assert!(took < prompt, "/readyz took {took:?}");
        assert!(
            took >= store_timeout,
            "/readyz answered before its deadline: {took:?}"
        );

        let (status, body, took) = timed(&relay, "/status").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(took < prompt, "/status took {took:?}");
        let store = &body["dependencies"]["store"];
        assert_ne!(store["status"], "healthy", "{store}");
        assert_eq!(
            store["last_error"]["message"], "depths: the store did not answer within 500ms",
            "{store}"
        );

        let (status, _, took) = timed(&relay, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(took < prompt, "/metrics took {took:?}");

        let (status, body, took) = timed(&relay, "/livez").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(took < Duration::from_millis(500), "/livez took {took:?}");
    }
    let (_, body, _) = timed(&relay, "/status").await;
    assert_eq!(
        body["dependencies"]["store"]["status"], "unhealthy",
        "{body}"
    );
    assert_eq!(body["status"], "unhealthy", "{body}");

    proxy.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body, _) = timed(&relay, "/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after the store came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body, _) = timed(&relay, "/livez").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
