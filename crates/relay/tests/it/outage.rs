//! The probes during a store outage: `/readyz` and `/status` answer within
//! `health.store_timeout` while PostgreSQL does not answer at all, and `/livez` stays 200.
//!
//! The shared PostgreSQL server is not stopped: the relay reaches it through a TCP proxy in the
//! test that can be paused. Paused, it keeps every connection open and accepts new ones but
//! forwards nothing, like a server that hangs or a network that drops packets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{Backend, TestRelay, start_on};

/// A TCP proxy to `upstream` that forwards nothing while paused.
struct PausableProxy {
    addr: SocketAddr,
    paused: Arc<watch::Sender<bool>>,
}

impl PausableProxy {
    async fn start(upstream: SocketAddr) -> PausableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(watch::Sender::new(false));
        let gate = paused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.subscribe();
                tokio::spawn(async move {
                    if wait_open(&mut gate.clone()).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(forward(client_read, server_write, gate.clone()));
                    tokio::spawn(forward(server_read, client_write, gate));
                });
            }
        });
        PausableProxy { addr, paused }
    }

    fn pause(&self) {
        self.paused.send_replace(true);
    }

    fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn wait_open(gate: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    gate.wait_for(|paused| !*paused).await.map(drop)
}

/// Copies `from` to `to`, holding every chunk while the proxy is paused.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_open(&mut gate).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

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
    let base = std::env::var("FERRULE_TEST_POSTGRES_URL")
        .expect("FERRULE_TEST_POSTGRES_URL must name a PostgreSQL database (scripts/test sets it)");
    let base = url::Url::parse(&base).unwrap();
    let upstream = tokio::net::lookup_host((
        base.host_str().unwrap(),
        base.port_or_known_default().unwrap(),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = PausableProxy::start(upstream).await;
    let relay = start_on(Backend::Postgres, |config| {
        let mut url = url::Url::parse(&config.store.url.expose("store.url").unwrap()).unwrap();
        url.set_port(Some(proxy.addr.port())).unwrap();
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
