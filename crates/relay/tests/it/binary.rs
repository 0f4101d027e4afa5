//! The real `ferrule` binary: lifecycle (SIGTERM drain, kill -9 and restart), the CLI
//! commands against a running server, and `config check`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{SECRET, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_ferrule");

/// A config file for the binary in `dir`, with one webhook destination to `url`.
pub(crate) fn write_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("ferrule.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "5s"
[store]
url = "sqlite://{db}"
synchronous = "normal"
[auth]
tokens = ["{TOKEN}"]
[dispatcher]
poll_interval = "50ms"
[[destinations]]
name = "hook"
type = "webhook"
url = "{url}"
secret = "{SECRET}"
allow_private = true
timeout = "10s"
retry = {{ backoff = {{ kind = "fixed", delay = "50ms" }}, jitter = "none" }}
{extra}
"#,
        db = dir.join("ferrule.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `ferrule serve`.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    pub(crate) stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `ferrule serve --config path` and waits until it prints where it listens.
    pub(crate) fn start(config: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "ferrule serve exited: {}",
                stderr.lock().unwrap()
            );
            if let Some(rest) = line.trim().split("listening on ").nth(1) {
                break rest.to_owned();
            }
        };
        std::thread::spawn(move || {
            let mut rest = String::new();
            while out.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        Server {
            child,
            base,
            stderr,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `limit`) and returns its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a CLI command against this server.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("FERRULE_SERVER", &self.base)
            .env("FERRULE_TOKEN", TOKEN)
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn submit(base: &str, payload: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"destination": "hook", "payload": payload}))
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_delivered(base: &str, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in ids {
        loop {
            let m = get(base, &format!("/v1/messages/{id}")).await;
            if m["status"] == "delivered" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} not delivered: {m:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_deliveries_and_exits_zero() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Slow(Duration::from_millis(800), 200)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let mut server = Server::start(&config);
    let (status, body) = submit(&server.base, json!({"n": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["id"].as_str().unwrap().to_owned();
    receiver.wait_for_hits(1, Duration::from_secs(10)).await;
    server.signal("-TERM");
    let code = tokio::task::spawn_blocking(move || {
        let code = server.wait_exit(Duration::from_secs(10));
        (code, server.stderr.lock().unwrap().clone())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1);
    assert!(code.1.contains("draining"), "{}", code.1);
    // The in-flight delivery finished before exit: after a restart it is delivered, not retried.
    let server = Server::start(&config);
    let m = get(&server.base, &format!("/v1/messages/{id}")).await;
    assert_eq!(m["status"], "delivered", "{m:#}");
    assert_eq!(receiver.hits().len(), 1);
}

/// Found by the chaos harness: a SIGTERM sent right after the "listening on" line killed the
/// process (no handler was installed yet) instead of draining it.
#[test]
fn sigterm_right_after_the_banner_still_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    for _ in 0..10 {
        let mut server = Server::start(&config);
        server.signal("-TERM");
        let code = server.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", server.stderr.lock().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_a_restart_delivers_everything_that_was_acked() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Slow(Duration::from_secs(30), 200));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let mut server = Server::start(&config);
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, body) = submit(&server.base, json!({"n": n})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    receiver.wait_for_hits(1, Duration::from_secs(10)).await;
    server.signal("-KILL");
    server.wait_exit(Duration::from_secs(10));
    receiver.otherwise(Reply::Status(200));
    let server = Server::start(&config);
    wait_delivered(&server.base, &ids).await;
    assert!(
        server
            .stderr
            .lock()
            .unwrap()
            .contains("recovered stale leases")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_talks_to_a_running_relay() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(400), Reply::Status(400)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let server = Server::start(&config);
    let send_keyed = |payload: &str| {
        server.cli(&[
            "send",
            "-d",
            "hook",
            "-p",
            payload,
            "--idempotency-key",
            "k",
        ])
    };
    let out = send_keyed(r#"{"n": 1}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 26, "{id}");
    let again = send_keyed(r#"{"n": 1}"#);
    assert!(String::from_utf8_lossy(&again.stdout).contains("duplicate"));
    let out = server.cli(&["send", "-d", "hook", "-p", r#"{"n": 2}"#]);
    let id2 = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Both answers were 400: the messages are dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = get(&server.base, &format!("/v1/messages/{id2}")).await;
        if m["status"] == "dead"
            && get(&server.base, &format!("/v1/messages/{id}")).await["status"] == "dead"
        {
            break;
        }
        assert!(Instant::now() < deadline, "{m:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = server.cli(&["messages", "show", &id]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "dead");
    // A repeat says what became of the original; a different payload under its key is refused.
    let again = send_keyed(r#"{"n": 1}"#);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains(&format!("{id} (duplicate")), "{said}");
    assert!(said.contains("it is dead"), "{said}");
    let conflict = send_keyed(r#"{"n": 99}"#);
    assert!(!conflict.status.success());
    let said = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        said.contains("409") && said.contains("idempotency_conflict") && said.contains(&id),
        "{said}"
    );
    let out = server.cli(&["dlq", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id) && listed.contains(&id2), "{listed}");
    let out = server.cli(&["dlq", "replay", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 dead letters would be replayed"));
    let out = server.cli(&["dlq", "replay"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 dead letters replayed"),
        "{out:?}"
    );
    wait_delivered(&server.base, &[id.clone(), id2.clone()]).await;
    let out = server.cli(&["status"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["counters"]["submitted"], 2, "{status:#}");
    assert_eq!(status["counters"]["delivered"], 2, "{status:#}");
    assert_eq!(status["counters"]["dead"], 2, "{status:#}");
    let out = server.cli(&["dlq", "purge"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 dead letters purged"));
    // Three more die; purge removes them (chunk by chunk, by id) and only them.
    receiver.script([Reply::Status(400), Reply::Status(400), Reply::Status(400)]);
    let mut dead = Vec::new();
    for n in 3..6 {
        let out = server.cli(&["send", "-d", "hook", "-p", &format!(r#"{{"n": {n}}}"#)]);
        dead.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &dead {
        while get(&server.base, &format!("/v1/messages/{id}")).await["status"] != "dead" {
            assert!(Instant::now() < deadline, "{id} did not die");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let out = server.cli(&["dlq", "purge", "--destination", "hook"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 dead letters purged"),
        "{out:?}"
    );
    assert_eq!(
        get(&server.base, "/v1/dead-letters").await["messages"],
        serde_json::json!([])
    );
    assert_eq!(
        get(&server.base, &format!("/v1/messages/{id}")).await["status"],
        "delivered",
        "delivered messages are not purged"
    );
    // Errors: no token, unknown destination, bad JSON, no server.
    let out = Command::new(BIN)
        .args(["status", "--server", &server.base])
        .env_remove("FERRULE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = server.cli(&["send", "-d", "nope", "-p", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_destination"));
    let out = server.cli(&["send", "-d", "hook", "-p", "{nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = Command::new(BIN)
        .args(["status", "--server", "http://127.0.0.1:9", "--token", TOKEN])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the relay"));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_cancel_cancels_a_queued_message_and_names_why_it_cannot_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    let server = Server::start(&config);
    let later = ferrule::time::rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    let out = server.cli(&["send", "-d", "hook", "-p", "1", "--deliver-after", &later]);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = server.cli(&["messages", "cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{id} cancelled (was queued)")
    );
    let again = server.cli(&["messages", "cancel", &id]);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("409") && said.contains("invalid_state") && said.contains("is cancelled"),
        "{said}"
    );
    assert_eq!(
        get(&server.base, &format!("/v1/messages/{id}")).await["status"],
        "cancelled"
    );
}

#[test]
fn config_check_fails_on_an_smtp_root_ca_that_is_missing_or_holds_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate in here\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (root, expected) in [
        (&missing, "cannot be read"),
        (&empty, "holds no certificate"),
    ] {
        let smtp = format!(
            "[[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nhost = \"smtp.example.com\"\n\
             from = \"relay@example.com\"\ntls_root_ca = \"{}\"\n",
            root.display()
        );
        let config = write_config(dir.path(), "https://example.com/hook", &smtp);
        let out = Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("destinations[1].tls_root_ca") && stderr.contains(expected),
            "{stderr}"
        );
        assert!(stderr.contains(&root.display().to_string()), "{stderr}");
    }
}

#[test]
fn config_check_prints_redacted_config_or_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "https://example.com/hook", "");
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("name = \"hook\""), "{shown}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains(&SECRET[6..]),
        "{shown}"
    );
    // Environment variables override the file, with `__` for nesting.
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("FERRULE_SERVER__LISTEN", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen = \"127.0.0.1:9999\""));
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_config(bad_dir.path(), "ftp://example.com", "");
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("destinations[0].url"));
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("FERRULE_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "FERRULE_CONFIG names the file");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("FERRULE_SERVER__LISTEN", "nowhere")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let out = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
