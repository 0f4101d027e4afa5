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

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ferrule");

/// A config file for the binary in `dir`, with one webhook destination to `url`.
pub(crate) fn write_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("ferrule.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_delay = "0s"
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
    /// Everything it printed on stdout (the banner), as it arrives.
    pub(crate) stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `ferrule serve --config path` and waits until it prints where it listens.
    pub(crate) fn start(config: &Path) -> Server {
        Self::start_full(config, &[], &[])
    }

    /// [`Server::start`] with extra environment variables (e.g. `FERRULE_SERVER__…`).
    pub(crate) fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_full(config, &[], env)
    }

    /// [`Server::start`] with more arguments after `--config path`.
    pub(crate) fn start_with(config: &Path, args: &[&str]) -> Server {
        Self::start_full(config, args, &[])
    }

    /// [`Server::start`] with more arguments and extra environment variables.
    pub(crate) fn start_full(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .env_remove("NO_COLOR")
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
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "ferrule serve exited: {}",
                stderr.lock().unwrap()
            );
            stdout.lock().unwrap().push_str(&line);
            if let Some(rest) = line.trim().split("listening on ").nth(1) {
                break rest.to_owned();
            }
        };
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Server {
            child,
            base,
            stderr,
            stdout,
        }
    }

    /// Waits (at most 10 s) until stdout holds `text`, and returns all of it.
    pub(crate) fn wait_for_stdout(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.stdout.lock().unwrap().clone();
            if out.contains(text) {
                return out;
            }
            assert!(Instant::now() < deadline, "no {text:?} in stdout: {out}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `limit`) and returns its exit code.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
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
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
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

/// `GET path` with the test token, as JSON.
pub(crate) async fn get(base: &str, path: &str) -> Value {
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

/// Polls `GET /v1/messages/{id}` on `base` until each of `ids` is delivered; panics with the
/// message after `limit`.
pub(crate) async fn wait_delivered(base: &str, ids: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
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

#[tokio::test(flavor = "multi_thread")]
async fn during_the_shutdown_delay_sigterm_answers_503_shutting_down_then_drains() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Slow(Duration::from_millis(800), 200)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    // Long enough for a loaded machine to get a request in after the signal is handled.
    let mut server = Server::start_with_env(&config, &[("FERRULE_SERVER__SHUTDOWN_DELAY", "2s")]);
    let (status, body) = submit(&server.base, json!({"n": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["id"].as_str().unwrap().to_owned();
    receiver.wait_for_hits(1, Duration::from_secs(10)).await;
    server.signal("-TERM");
    // The listener stays open for the delay; what it answers says the relay is going away.
    // (A submission that arrives before the signal is handled is stored as usual.)
    let client = reqwest::Client::new();
    let mut refused = None;
    let mut accepted = 0;
    while refused.is_none() {
        let response = client
            .post(format!("{}/v1/messages", server.base))
            .bearer_auth(TOKEN)
            .json(&json!({"destination": "hook", "payload": {"late": true}}))
            .send()
            .await
            .expect("the listener is open during the shutdown delay");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response);
        } else {
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            accepted += 1;
        }
    }
    let refused = refused.unwrap();
    assert!(refused.headers().contains_key("retry-after"), "{refused:?}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    let ready = client
        .get(format!("{}/readyz", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let code = server.wait_exit(Duration::from_secs(10));
        (code, server.stderr.lock().unwrap().clone())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("shutdown delay"), "{stderr}");
    // The delivery in flight drained before exit, and the refused submission was not stored.
    let server = Server::start(&config);
    let m = get(&server.base, &format!("/v1/messages/{id}")).await;
    assert_eq!(m["status"], "delivered", "{m:#}");
    let all = get(&server.base, "/v1/messages").await;
    assert_eq!(
        all["messages"].as_array().unwrap().len(),
        1 + accepted,
        "{all:#}"
    );
}

#[test]
fn a_second_signal_skips_the_rest_of_the_shutdown_delay() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    let mut server = Server::start_with_env(&config, &[("FERRULE_SERVER__SHUTDOWN_DELAY", "1h")]);
    server.signal("-TERM");
    // The second signal must come after the first was handled: wait for its log line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr.lock().unwrap().contains("shutdown requested") {
        assert!(
            Instant::now() < deadline,
            "{}",
            server.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal("-INT");
    let code = server.wait_exit(Duration::from_secs(10));
    let stderr = server.stderr.lock().unwrap().clone();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("skipping the rest of the shutdown delay"),
        "{stderr}"
    );
}

/// Logs that end up in a pipe (journald, a file) carry no colour codes, and durations in them
/// are plain milliseconds, not Rust's debug form (`delay=Some(50ms)`).
#[tokio::test(flavor = "multi_thread")]
async fn human_logs_into_a_pipe_have_no_colour_codes_or_debug_values() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let server = Server::start_with(&config, &["--log-format", "human"]);
    let (status, body) = submit(&server.base, json!({"n": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_delivered(
        &server.base,
        &[body["id"].as_str().unwrap().to_owned()],
        Duration::from_secs(15),
    )
    .await;
    let logs = server.stderr.lock().unwrap().clone();
    assert!(logs.contains("attempt failed; retry scheduled"), "{logs}");
    assert!(logs.contains("delay_ms=50 "), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "colour codes in piped logs: {logs:?}"
    );
    assert!(!logs.contains("Some("), "{logs}");
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
    wait_delivered(&server.base, &ids, Duration::from_secs(15)).await;
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
    let out = server.cli(&["messages", "show", &id, "--json"]);
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
    let out = server.cli(&["dlq", "replay", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 dead letters replayed"),
        "{out:?}"
    );
    wait_delivered(
        &server.base,
        &[id.clone(), id2.clone()],
        Duration::from_secs(15),
    )
    .await;
    let out = server.cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["counters"]["submitted"], 2, "{status:#}");
    assert_eq!(status["counters"]["delivered"], 2, "{status:#}");
    assert_eq!(status["counters"]["dead"], 2, "{status:#}");
    let out = server.cli(&["dlq", "purge", "--all", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 dead letters: nothing to purge"),
        "{out:?}"
    );
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
    let out = server.cli(&["dlq", "purge", "--destination", "hook", "--yes"]);
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
    assert_eq!(out.status.code(), Some(3), "unknown: {out:?}");
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
    assert_eq!(out.status.code(), Some(3), "unknown: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the relay"));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_cancel_cancels_a_queued_message_and_names_why_it_cannot_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    let server = Server::start(&config);
    let later = ferrule::time::rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    let out = server.cli(&[
        "send",
        "-d",
        "hook",
        "-p",
        r#"{"n": 1}"#,
        "--deliver-after",
        &later,
    ]);
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

#[test]
fn the_banners_curl_line_submits_when_pasted_into_a_shell() {
    let receiver_dir = tempfile::tempdir().unwrap();
    // Deliveries are not the point: the destination is never reached within the test.
    let config = write_config(receiver_dir.path(), "http://127.0.0.1:9/hook", "");
    let server = Server::start(&config);
    let banner = server.wait_for_stdout("-d '");
    let line = banner
        .lines()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl line in the banner: {banner}"));
    assert!(
        line.contains(r#"-H "Authorization: Bearer $FERRULE_TOKEN""#),
        "{line}"
    );
    let out = Command::new("sh")
        .args(["-c", line])
        .env("FERRULE_TOKEN", TOKEN)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(answer["status"], "queued", "{answer}");
}

#[test]
fn a_start_that_cannot_listen_generates_no_token_and_the_next_shows_one() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let write = |listen: &str| {
        let path = dir.path().join("ferrule.toml");
        let text = format!(
            "[server]\nlisten = \"{listen}\"\n[store]\nurl = \"sqlite://{}\"\n",
            dir.path().join("ferrule.db").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = write(&taken.local_addr().unwrap().to_string());
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("generated admin API token"),
        "a token shown by a start that failed"
    );
    drop(taken);
    let config = write("127.0.0.1:0");
    let server = Server::start(&config);
    let banner = server.wait_for_stdout("curl ");
    let token = banner
        .lines()
        .skip_while(|l| !l.starts_with("generated admin API token"))
        .nth(1)
        .unwrap_or_else(|| panic!("the next start shows no token: {banner}"))
        .trim();
    assert!(banner.contains(&format!("Bearer {token}\"")), "{banner}");
}

/// Runs `ferrule config check` on `toml` (a store in `dir` is added) and returns its exit code,
/// stdout and stderr.
fn config_check(dir: &Path, toml: &str) -> (Option<i32>, String, String) {
    let path = dir.join("check.toml");
    let text = format!(
        "[store]\nurl = \"sqlite://{}\"\n{toml}",
        dir.join("ferrule.db").display()
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_the_field_in_one_style_and_read_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let hook = format!(
        "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsecret = \"{SECRET}\"\n"
    );
    let bot = "[[destinations]]\nname = \"bot\"\ntype = \"telegram\"\nbot_token = \"42:abc\"\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{hook}bogus = 1\n"),
            "destinations[0].bogus",
            "unknown field `bogus`; expected one of `name`",
        ),
        (
            hook.replace("\"webhook\"", "\"webhok\""),
            "destinations[0].type",
            "unknown value `webhok`; expected one of `webhook`, `telegram`, `smtp`",
        ),
        (
            hook.replace("\"https://hooks.example.com/x\"", "5"),
            "destinations[0].url",
            "expected a string, found",
        ),
        (
            hook.replace("https://hooks", "ftp://hooks"),
            "destinations[0].url",
            "must be an http:// or https:// URL",
        ),
        (
            hook.replace("hooks.example.com", "127.0.0.1"),
            "destinations[0].url",
            "points at 127.0.0.1, a loopback address",
        ),
        (
            hook.replace("hooks.example.com/x", "hooks example"),
            "destinations[0].url",
            "not a valid URL",
        ),
        (
            format!("{hook}retry = {{ max_attempts = \"x\" }}\n"),
            "destinations[0].retry.max_attempts",
            "expected u32",
        ),
        (
            format!("{hook}retry = {{ max_attempts = 0 }}\n"),
            "destinations[0].retry.max_attempts",
            "must be at least 1",
        ),
        (
            format!("{hook}[destinations.retry]\nbackoff = {{ kind = \"nope\" }}\n"),
            "destinations[0].retry.backoff.kind",
            "unknown variant `nope`",
        ),
        (
            format!("{hook}[destinations.retry]\nbogus = 3\n"),
            "destinations[0].retry.bogus",
            "unknown field `bogus`",
        ),
        (
            format!("{hook}breaker = {{ window = {{ count = 0 }} }}\n"),
            "destinations[0].breaker.window.count",
            "must be at least 1",
        ),
        (
            format!("{hook}timeout = \"abc\"\n"),
            "destinations[0].timeout",
            "expected a duration",
        ),
        (
            hook.replace(SECRET, "abc"),
            "destinations[0].secret",
            "must start with `whsec_`",
        ),
        (
            format!("{hook}unsigned = true\n"),
            "destinations[0].unsigned",
            "cannot be set together with `secret`",
        ),
        (
            format!("{hook}headers = {{ Webhook-Id = \"x\" }}\n"),
            "destinations[0].headers",
            "is set by the relay",
        ),
        (
            format!("{hook}headers = \"X-Api-Key: k\"\n"),
            "destinations[0].headers",
            "expected a map, found a string",
        ),
        (
            format!("{hook}host = \"smtp.example.com\"\n"),
            "destinations[0].host",
            "belongs to `type = \"smtp\"` destinations",
        ),
        (
            format!("{hook}[[destinations]]\nname = \"bot\"\ntype = \"telegram\"\n"),
            "destinations[1].bot_token",
            "is required for a telegram destination",
        ),
        (
            format!("{hook}{bot}wrong = 1\n"),
            "destinations[1].wrong",
            "unknown field `wrong`",
        ),
        (
            format!("{hook}{bot}[destinations.inbound]\nmode = \"webhook\"\n"),
            "destinations[1].inbound.secret_token",
            "is required with mode = \"webhook\"",
        ),
        (
            format!("{hook}{bot}[destinations.inbound]\nmode = \"push\"\n"),
            "destinations[1].inbound.mode",
            "unknown value `push`",
        ),
        (
            format!(
                "{hook}[[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nhost = \"h\"\nfrom = \"not a mailbox\"\n"
            ),
            "destinations[1].from",
            "not a mailbox",
        ),
        (
            format!("{hook}{hook}"),
            "destinations[1].name",
            "`hook` is used by an earlier destination",
        ),
        (
            "[server]\nlisten = 5\n".into(),
            "server.listen",
            "expected a string, found",
        ),
        (
            "[auth]\ntokens = [\"short\"]\n".into(),
            "auth.tokens[0]",
            "at least 16 characters",
        ),
    ];
    for (toml, field, message) in cases {
        let (code, _, stderr) = config_check(dir.path(), &toml);
        assert_eq!(code, Some(2), "{toml}\n{stderr}");
        let prefix = format!("error: invalid configuration: `{field}`: ");
        let rest = stderr
            .trim_end()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}…, got {stderr:?}"));
        assert!(rest.contains(message), "{message:?} not in {stderr:?}");
        assert!(
            !rest.contains('\n'),
            "one line, no repeated cause: {stderr:?}"
        );
        let last = field.rsplit(['.', ']']).next().unwrap();
        assert!(
            !rest.starts_with(&format!("`{last}`"))
                && !rest.starts_with(&format!("invalid `{last}`")),
            "the field named twice: {stderr:?}"
        );
        assert!(
            !rest.contains("``") && rest.matches('`').count() % 2 == 0,
            "garbled quotes: {stderr:?}"
        );
        assert!(
            !stderr.contains("destinations.0") && !stderr.contains("destinations.1"),
            "{stderr:?}"
        );
    }
}

#[test]
fn an_unsigned_webhook_is_warned_about_unless_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let hook = "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\n";
    let (code, _, stderr) = config_check(dir.path(), hook);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: `destinations[0].secret` is not set: webhook destination `hook` sends unsigned requests"),
        "{stderr}"
    );
    let (code, _, stderr) = config_check(dir.path(), &format!("{hook}unsigned = true\n"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (_, _, stderr) = config_check(dir.path(), &format!("{hook}secret = \"{SECRET}\"\n"));
    assert!(!stderr.contains("warning"), "{stderr}");
    // `serve` says it once, at WARN, when it starts.
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}\"\n[auth]\ntokens = [\"{TOKEN}\"]\n{hook}",
            dir.path().join("serve.db").display()
        ),
    )
    .unwrap();
    let server = Server::start(&config);
    server.wait_for_stdout("curl ");
    let logs = server.stderr.lock().unwrap().clone();
    assert_eq!(
        logs.matches("`destinations[0].secret` is not set").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("WARN"), "{logs}");
}

#[test]
fn config_check_prints_each_destinations_effective_policies() {
    let dir = tempfile::tempdir().unwrap();
    let (code, shown, stderr) = config_check(
        dir.path(),
        &format!(
            "[defaults]\ntimeout = \"7s\"\nretry = {{ max_attempts = 4 }}\nrate_limit = {{ limit = 50 }}\n\
             [[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsecret = \"{SECRET}\"\n\
             breaker = {{ min_calls = 3 }}\n"
        ),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let doc: toml::Table = toml::from_str(&shown).unwrap();
    let dest = &doc["destinations"][0];
    assert_eq!(dest["timeout"].as_str(), Some("7s"), "{shown}");
    assert_eq!(
        dest["retry"]["max_attempts"].as_integer(),
        Some(4),
        "{shown}"
    );
    assert_eq!(
        dest["retry"]["backoff"]["kind"].as_str(),
        Some("exponential")
    );
    assert_eq!(
        dest["breaker"]["min_calls"].as_integer(),
        Some(3),
        "its own"
    );
    assert_eq!(
        dest["breaker"]["failure_rate"].as_float(),
        Some(0.5),
        "the default's"
    );
    assert_eq!(
        dest["rate_limit"]["limit"].as_integer(),
        Some(50),
        "{shown}"
    );
    assert_eq!(
        dest["bulkhead"]["max_concurrent"].as_integer(),
        Some(256),
        "{shown}"
    );
}

/// The occurrence times of schedule `name`'s messages to `hook`, from their idempotency keys,
/// as the API lists them (each once per message).
async fn occurrence_keys(base: &str, name: &str) -> Vec<String> {
    let page = get(base, "/v1/messages?destination=hook&limit=1000").await;
    let prefix = format!("schedule:{name}:");
    let mut keys: Vec<String> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            m["idempotency_key"]
                .as_str()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_at_the_moment_of_firing_each_occurrence_exists_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9/hook",
        r#"
[[schedules]]
name = "tick"
cron = "* * * * * *"
destination = "hook"
catch_up = "all"
catch_up_window = "1h"
"#,
    );
    // Killed six times just after a second turns, when the relay records the occurrence due
    // then (its message and row in one transaction), each time started again at once.
    for round in 0..6u64 {
        let mut server = Server::start(&config);
        let first =
            get(&server.base, "/v1/schedules").await["schedules"][0]["last"]["scheduled_for"]
                .clone();
        // Wait for an occurrence after this start, then for the next second to turn.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let last =
                get(&server.base, "/v1/schedules").await["schedules"][0]["last"]["scheduled_for"]
                    .clone();
            if last != first && !last.is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "no occurrence fired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let to_next_second = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        tokio::time::sleep(to_next_second + Duration::from_millis(round * 2)).await;
        server.signal("-KILL");
        server.wait_exit(Duration::from_secs(10));
    }
    // The last start catches up what the kills missed, and goes on.
    let server = Server::start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let listed = get(&server.base, "/v1/schedules").await;
        let last = listed["schedules"][0]["last"]["scheduled_for"]
            .as_str()
            .map(str::to_owned);
        let keys = occurrence_keys(&server.base, "tick").await;
        // Every occurrence up to the latest recorded one has its message.
        if let Some(last) = last
            && keys.last() == Some(&last)
        {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not catch up: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "an occurrence fired twice: {keys:?}"
    );
    // No second between the first and the last occurrence is missing: catch_up = "all".
    let seconds: Vec<i64> = keys
        .iter()
        .map(|k| {
            let t = ferrule::time::parse_rfc3339(k).unwrap();
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
        })
        .collect();
    assert!(
        seconds.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in the occurrences: {keys:?}"
    );
    assert!(keys.len() >= 6, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ferrule_processes_on_one_postgres_fire_each_occurrence_once() {
    let schema = crate::support::PgSchema::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9/hook",
        r#"
[[schedules]]
name = "tick"
cron = "* * * * * *"
destination = "hook"
catch_up = "all"
"#,
    );
    let url = schema.url();
    let env = [("FERRULE_STORE__URL", url.as_str())];
    let a = Server::start_with_env(&config, &env);
    let b = Server::start_with_env(&config, &env);
    // Eight occurrences recorded after both started.
    let deadline = Instant::now() + Duration::from_secs(20);
    let keys = loop {
        let keys = occurrence_keys(&a.base, "tick").await;
        if keys.len() >= 8 {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "an occurrence fired twice: {keys:?}"
    );
    // Both relays tried each occurrence; each counts only those it recorded first.
    let fired = |text: &str| {
        crate::support::metric(
            text,
            r#"ferrule_schedule_occurrences_total{schedule="tick",outcome="fired"}"#,
        )
    };
    let metrics = |base: &str| {
        let base = base.to_owned();
        async move {
            reqwest::Client::new()
                .get(format!("{base}/metrics"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let (ma, mb) = (metrics(&a.base).await, metrics(&b.base).await);
    let keys = occurrence_keys(&a.base, "tick").await;
    let counted = fired(&ma) + fired(&mb);
    // Read after the keys: an occurrence recorded in between is counted but not yet listed.
    assert!(
        counted as usize >= keys.len().saturating_sub(1) && counted as usize <= keys.len() + 2,
        "counted {counted}, listed {}",
        keys.len()
    );
    drop((a, b));
}
