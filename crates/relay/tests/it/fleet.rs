//! Three `ferrule serve` processes on one PostgreSQL database of the test's own, which the test
//! stops and starts again in the middle:
//!
//! - a shared breaker (`breaker.shared = true`) opened by one process stops the others,
//!   survives the store's restart, lets exactly one process probe, closes everywhere on the
//!   probe's verdict, and is shared again after the restart;
//! - a Telegram bot's limits, shared by the three (the default on PostgreSQL), hold across the
//!   restart: a hundred chats at once draw no 429 from a fake Bot API enforcing the windows,
//!   and every message is sent once.
//!
//! Real processes run on the real clock: the breaker opens for 3 s, and every wait below polls
//! with a deadline.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrule::testing::fake_bot_api::FakeBotApi;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{Server, get, submit, wait_delivered, write_config};
use crate::fake_bot_api::BOT_TOKEN;
use crate::private_postgres::PrivatePostgres;
use crate::receiver::{Receiver, Reply};
use crate::support::TOKEN;
use crate::telegram::{chat_id, scaled_limits};

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
    wait_delivered(&servers[0].base, &ids, WAIT).await;
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

/// A config in `dir` for a relay on the store at `url` with one Telegram destination, `chat`,
/// to the Bot API at `api_base`, on the scaled limits of [`scaled_limits`] (shared by default
/// on PostgreSQL).
fn telegram_config(dir: &Path, url: &str, api_base: &str) -> PathBuf {
    let path = dir.join("ferrule.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_delay = "0s"
drain_timeout = "5s"
[store]
url = "{url}"
[auth]
tokens = ["{TOKEN}"]
[dispatcher]
poll_interval = "50ms"
[[destinations]]
name = "chat"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api_base}"
timeout = "2s"
retry = {{ backoff = {{ kind = "fixed", delay = "1s" }}, jitter = "none", max_attempts = 5 }}
limits = {{ per_chat = {{ limit = 10, per = "1s" }}, per_group = {{ limit = 2, per = "500ms" }}, per_bot = {{ limit = 100, per = "250ms" }} }}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_bots_limits_across_a_store_restart() {
    let pg = PrivatePostgres::start();
    // The bot's window holds 100 sends per 250 ms, each chat's 10 per second, each group's 2
    // per 500 ms: 300 sends meet all three.
    let (fake_limits, _) = scaled_limits();
    let api = FakeBotApi::start(BOT_TOKEN, fake_limits).await.unwrap();
    let url = pg.url();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<Server> = dirs
        .iter()
        .map(|dir| Server::start(&telegram_config(dir.path(), &url, api.base())))
        .collect();

    // A hundred chats at once, each chat's three messages in order through one process.
    const CHATS: i64 = 100;
    const PER_CHAT: usize = 3;
    let client = reqwest::Client::new();
    let submitters = (0..CHATS).map(|chat| {
        let base = servers[usize::try_from(chat).unwrap() % servers.len()]
            .base
            .clone();
        let client = client.clone();
        async move {
            let mut ids = Vec::new();
            for n in 0..PER_CHAT {
                let body = json!({"destination": "chat",
                    "payload": {"chat_id": chat_id(chat), "text": format!("{chat}/{n}")}});
                let response = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                let body: Value = response.json().await.unwrap();
                ids.push(body["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    });
    let ids: BTreeSet<String> = futures_util::future::join_all(submitters)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = ids.len();

    // The store stops and starts while the sends are going out.
    api.wait_for_sends(total / 3, WAIT).await;
    pg.down();
    for server in &servers {
        until_ready(server, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    let during = api.sends().len();
    pg.up();
    for server in &servers {
        until_ready(server, StatusCode::OK).await;
    }

    // Everything goes out once, within every window the fake enforces, and is recorded.
    api.wait_for_sends(total, 2 * WAIT).await;
    let deadline = Instant::now() + 2 * WAIT;
    loop {
        let page = get(&servers[0].base, "/v1/messages?status=delivered&limit=1000").await;
        let delivered: BTreeSet<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if delivered == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} delivered",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.refusals(), [], "no 429 across the restart");
    let sent = api.sends();
    let texts: BTreeSet<&str> = sent
        .iter()
        .map(|s| s.params["text"].as_str().unwrap())
        .collect();
    assert_eq!(sent.len(), total, "one send per message");
    assert_eq!(texts.len(), total, "every message exactly once");
    assert!(during < total, "the restart came before the last send");
}
