//! Three `ferrule serve` processes on one PostgreSQL database of the test's own, which the test
//! stops and starts again in the middle: a shared breaker (`breaker.shared = true`) opened by
//! one process stops the others, survives the store's restart, lets exactly one process probe,
//! closes everywhere on the probe's verdict, and is shared again after the restart.
//!
//! Real processes run on the real clock: the breaker opens for 3 s, and every wait below polls
//! with a deadline.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{Server, get, submit, write_config};
use crate::private_postgres::PrivatePostgres;
use crate::receiver::{Receiver, Reply};

/// The destination's shared breaker: one failure opens it for 3 s.
const BREAKER: &str = r#"breaker = { window = { count = 1 }, min_calls = 1, failure_rate = 0.5, open_for = "3s", slow_call_duration = "off", shared = true }"#;

/// How long any one step may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// `hook`'s entry of `GET /v1/breakers` on `server`.
async fn breaker(server: &Server) -> Value {
    let body = get(&server.base, "/v1/breakers").await;
    body["breakers"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["destination"] == "hook"))
        .cloned()
        .unwrap_or_else(|| panic!("no breaker for hook: {body:#}"))
}

/// Polls until `check` holds for every server's breaker view; panics with the views after
/// [`WAIT`].
async fn until_all(servers: &[Server], what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut views = Vec::new();
        for server in servers {
            views.push(breaker(server).await);
        }
        if views.iter().all(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every relay {what}: {views:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `server`'s `/readyz` answers `status`.
async fn until_ready(server: &Server, status: StatusCode) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = client
            .get(format!("{}/readyz", server.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status());
        if got.as_ref().is_ok_and(|s| *s == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz is {got:?}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits to `hook` through `server`; answers the message id.
async fn send(server: &Server, n: u64) -> String {
    let (status, body) = submit(&server.base, json!({"n": n})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn three_processes_share_a_breaker_across_a_store_restart() {
    let pg = PrivatePostgres::start();
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(500));
    let url = pg.url();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<Server> = dirs
        .iter()
        .map(|dir| {
            let config = write_config(dir.path(), &receiver.url, BREAKER);
            // Retries 2 s apart: past the 0.5 s in which the others follow an opened circuit,
            // so a failed message's retry is not sent by a relay that has not followed yet.
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(
                &config,
                text.replace(r#"delay = "50ms""#, r#"delay = "2s""#),
            )
            .unwrap();
            Server::start_with_env(&config, &[("FERRULE_STORE__URL", &url)])
        })
        .collect();

    // One process's failure opens the circuit on all three, each holding it for the shared row.
    let first = send(&servers[0], 0).await;
    receiver.wait_for_hits(1, WAIT).await;
    until_all(&servers, "holds the circuit open", |b| {
        b["breaker"]["state"] == "open" && b["shared"]["held"] == true
    })
    .await;
    let epoch = breaker(&servers[0]).await["shared"]["epoch"].clone();
    // The others have messages too, held back while the circuit is open.
    let mut ids = vec![first];
    ids.push(send(&servers[1], 1).await);
    ids.push(send(&servers[2], 2).await);
    assert_eq!(
        receiver.hits().len(),
        1,
        "no traffic while the circuit is open"
    );

    // The store goes away and comes back while the circuit is open; every process notices.
    pg.down();
    for server in &servers {
        until_ready(server, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    // The receiver has recovered: it holds the first request it gets (the probe).
    let (answer, gate) = tokio::sync::watch::channel(false);
    receiver.script([Reply::Held(gate, 200)]);
    receiver.otherwise(Reply::Status(200));
    pg.up();
    for server in &servers {
        until_ready(server, StatusCode::OK).await;
    }

    // At the end of the open period exactly one process probes; the others, each with a
    // message due, wait for its verdict.
    receiver.wait_for_hits(2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.hits().len(), 2, "one probe, not one per process");
    until_all(&servers, "shows the probe", |b| {
        b["shared"]["probing"] == true
    })
    .await;
    answer.send(true).unwrap();

    // Its verdict closes the circuit everywhere, and every message goes out once.
    until_all(&servers, "closed", |b| b["breaker"]["state"] == "closed").await;
    let deadline = Instant::now() + WAIT;
    for id in &ids {
        loop {
            let m = get(&servers[0].base, &format!("/v1/messages/{id}")).await;
            if m["status"] == "delivered" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} not delivered: {m:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let hits = receiver.hits();
    let mut delivered: Vec<String> = hits[1..].iter().map(|h| h.header("webhook-id")).collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected, "each message delivered once");

    // Sharing goes on after the restart: a failure through another process opens the
    // circuit on all three again, in a later epoch.
    receiver.otherwise(Reply::Status(500));
    send(&servers[2], 3).await;
    receiver.wait_for_hits(5, WAIT).await;
    until_all(&servers, "holds the reopened circuit", |b| {
        b["breaker"]["state"] == "open"
            && b["shared"]["held"] == true
            && b["shared"]["epoch"].as_u64() > epoch.as_u64()
    })
    .await;
    assert_eq!(receiver.hits().len(), 5);
}
