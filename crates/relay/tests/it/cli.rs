//! The CLI as a person or a script uses it, against the real binary: where it finds the
//! relay, what it prints for people, its exit codes, and the questions it asks before it
//! changes many dead letters.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::{BIN, Server, get, submit, write_config};
use crate::receiver::{Receiver, Reply};
use crate::support::TOKEN;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a line of `shown` starts with `start` and ends with `end` (a labelled field, a
/// table row).
fn has_line(shown: &str, start: &str, end: &str) -> bool {
    shown
        .lines()
        .any(|l| l.starts_with(start) && l.trim_end().ends_with(end))
}

/// Submits `n` messages that the receiver answers with 400, and waits until they are dead.
async fn dead_letters(server: &Server, receiver: &Receiver, n: usize) -> Vec<String> {
    receiver.script(std::iter::repeat_n(Reply::Status(400), n));
    let mut ids = Vec::new();
    for i in 0..n {
        let (_, body) = submit(&server.base, json!({"n": i})).await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        while get(&server.base, &format!("/v1/messages/{id}")).await["status"] != "dead" {
            assert!(Instant::now() < deadline, "{id} did not die");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ids
}

async fn dead_count(server: &Server) -> usize {
    get(&server.base, "/v1/dead-letters").await["messages"]
        .as_array()
        .unwrap()
        .len()
}

/// `ferrule ARGS --config FILE` with the token but no `FERRULE_SERVER`.
fn with_config(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FERRULE_SERVER")
        .env("FERRULE_TOKEN", TOKEN)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_finds_the_relay_at_the_configs_listen_address_and_exits_by_its_state() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"0.0.0.0:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let mut server = Server::start_with_env(&config, &[("FERRULE_SERVER__SHUTDOWN_DELAY", "30s")]);

    let out = with_config(&config, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = stdout(&out);
    let first = shown.lines().next().unwrap();
    assert!(
        first.starts_with("ferrule ")
            && first.ends_with(&format!(" at http://127.0.0.1:{port}: ok")),
        "{shown}"
    );
    assert!(shown.contains("DEPENDENCY  HEALTH"), "{shown}");

    let out = with_config(&config, &["breakers", "force-open", "hook"]);
    assert!(stdout(&out).contains("hook         forced open"), "{out:?}");
    let out = with_config(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1), "degraded: {out:?}");
    let shown = stdout(&out);
    assert!(
        shown.lines().next().unwrap().ends_with(": degraded"),
        "{shown}"
    );
    assert!(
        has_line(&shown, "hook ", "unhealthy  forced open  -"),
        "{shown}"
    );
    let out = with_config(&config, &["breakers", "list"]);
    assert!(stdout(&out).starts_with("DESTINATION  STATE"), "{out:?}");
    assert!(stdout(&out).contains("forced open"), "{out:?}");
    let out = with_config(&config, &["breakers", "reset", "hook"]);
    assert!(stdout(&out).contains("hook         closed"), "{out:?}");
    assert_eq!(with_config(&config, &["status"]).status.code(), Some(0));
    let out = with_config(&config, &["breakers", "disable", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no destination named `nope`"),
        "{out:?}"
    );

    // Shutting down: draining until the delay has passed (a second signal ends it).
    server.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = with_config(&config, &["status"]);
        if out.status.code() != Some(0) {
            break out;
        }
        assert!(Instant::now() < deadline, "never draining: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stdout(&out).lines().next().unwrap().ends_with(": draining"),
        "{out:?}"
    );
    let out = with_config(&config, &["status", "--json"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], "draining");
    server.signal("-TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let out = with_config(&config, &["status"]);
    assert_eq!(out.status.code(), Some(3), "unreachable: {out:?}");
    assert!(
        stderr(&out).contains(&format!(
            "cannot reach the relay at http://127.0.0.1:{port}"
        )),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_and_dead_letters_read_as_tables_and_timelines_and_page() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let server = Server::start(&config);
    let ids = dead_letters(&server, &receiver, 3).await;

    let out = server.cli(&["messages", "list", "--limit", "2"]);
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("  STATUS  DESTINATION  ATTEMPTS  CREATED"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with(&ids[2]) && lines[1].contains("  dead  "),
        "{shown}"
    );
    let note = stderr(&out);
    let cursor = note
        .split("--cursor ")
        .nth(1)
        .unwrap_or_else(|| panic!("no next page in {note}"))
        .trim();
    let out = server.cli(&["messages", "list", "--limit", "2", "--cursor", cursor]);
    let shown = stdout(&out);
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(
        shown.lines().nth(1).unwrap().starts_with(&ids[0]),
        "{shown}"
    );
    assert!(stderr(&out).starts_with("1 message shown"), "{out:?}");

    let out = server.cli(&["messages", "list", "--status", "delivered", "-d", "hook"]);
    assert_eq!(stdout(&out), "", "{out:?}");
    let out = server.cli(&["messages", "list", "--status", "lost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid_query: unknown status `lost`"),
        "{out:?}"
    );

    let out = server.cli(&["messages", "show", &ids[0]]);
    let shown = stdout(&out);
    assert!(
        has_line(&shown, "status  ", "  dead (1 attempt)"),
        "{shown}"
    );
    assert!(has_line(&shown, "payload  ", "  {\"n\":0}"), "{shown}");
    let timeline: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("TIME"))
        .collect();
    assert!(
        timeline[0].contains("STATUS") && timeline[0].ends_with("DETAIL"),
        "{shown}"
    );
    assert!(
        timeline
            .iter()
            .any(|l| l.contains("  dead ") && l.contains("  400  ")),
        "{shown}"
    );

    let out = server.cli(&["dlq", "list"]);
    let shown = stdout(&out);
    assert!(
        shown.starts_with("ID") && shown.lines().next().unwrap().contains("  DIED  "),
        "{shown}"
    );
    let row = shown.lines().nth(1).unwrap();
    let year = format!("{}-", &row[row.find("  20").unwrap() + 2..][..4]);
    assert_eq!(
        row.matches(&year).count(),
        2,
        "created and died times: {row}"
    );
    assert!(stderr(&out).starts_with("3 dead letters shown"), "{out:?}");

    let out = server.cli(&["dlq", "replay", "-d", "unknown", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("unknown_destination: no destination named `unknown` is configured"),
        "{out:?}"
    );

    let out = server.cli(&["messages", "replay", &ids[0]]);
    assert_eq!(stdout(&out).trim(), format!("{} queued", ids[0]), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&server.base, &format!("/v1/messages/{}", ids[0])).await["status"] != "delivered" {
        assert!(
            Instant::now() < deadline,
            "the replayed message was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `ferrule ARGS` on a pseudo-terminal (util-linux `script`), typing `answer`.
fn on_a_terminal(server: &Server, args: &str, answer: &str) -> String {
    use std::io::Write;

    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{BIN} {args}"), "/dev/null"])
        .env("FERRULE_SERVER", &server.base)
        .env("FERRULE_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the CLI on a terminal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_purge_needs_a_filter_and_asks_on_a_terminal_and_refuses_without_one() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let server = Server::start(&config);
    dead_letters(&server, &receiver, 2).await;

    let out = server.cli(&["dlq", "purge"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("needs a filter (--destination, --error-contains) or --all"),
        "{out:?}"
    );
    let out = server.cli(&["dlq", "purge", "-d", "hook"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains(
            "refusing to purge 2 dead letters of `hook` without confirmation: stdin is not a terminal; pass --yes"
        ),
        "{out:?}"
    );
    let out = server.cli(&["dlq", "purge", "--all", "--dry-run"]);
    assert_eq!(
        stdout(&out).trim(),
        "2 dead letters would be purged (dry run: nothing changed)"
    );
    let out = server.cli(&["dlq", "replay"]);
    assert!(
        stderr(&out).contains("refusing to replay 2 dead letters"),
        "{out:?}"
    );
    assert_eq!(
        dead_count(&server).await,
        2,
        "nothing purged or replayed yet"
    );

    let shown = on_a_terminal(&server, "dlq purge -d hook", "n\n");
    assert!(
        shown.contains("Purge 2 dead letters of `hook`? [y/N]"),
        "{shown}"
    );
    assert!(
        shown.contains("not confirmed: nothing was purged"),
        "{shown}"
    );
    assert_eq!(dead_count(&server).await, 2);
    let shown = on_a_terminal(&server, "dlq purge --all", "y\n");
    assert!(shown.contains("Purge 2 dead letters? [y/N]"), "{shown}");
    assert!(shown.contains("2 dead letters purged"), "{shown}");
    assert_eq!(dead_count(&server).await, 0);
}
