//! A route's chats stored and edited through the API (`/v1/routes/{name}/chats`), on SQLite
//! and PostgreSQL, with the shipped `deploy/routes/github-pr.toml` against the fake Bot API:
//! a mapping set through the API sends the next run's card to its chat, removing it makes the
//! next run take the fallback, a change through one relay reaches another sharing PostgreSQL,
//! bad requests are refused naming the field, a read-only token may only read, every change is
//! in the audit log, and `ferrule routes chats` drives it all from the command line.

use std::time::{Duration, SystemTime};

use ferrule::Config;
use ferrule::config::{ChatMapping, ConfiguredToken, Secret};
use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::routes::{CHAT, MAIL_SECRET, WAIT, World, fixture, setup, wait_for_run};
use crate::support::{Backend, PgSchema, TestRelay, config_in, start_in, start_on};

const PATH: &str = "/v1/routes/github-pr/chats";
/// A named admin token, so the audit log and `updated_by` say who.
const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
const READ_TOKEN: &str = "read-only-token-0123456789";

/// The golden route with one configured chat, for another repository than the mail's
/// (`octo/hello`, which is therefore not mapped), and the `ops` and read-only tokens.
fn setup_unmapped(world: &World) -> impl FnOnce(&mut Config) + use<> {
    let setup = setup(world);
    move |c: &mut Config| {
        setup(c);
        c.routes[0].chats = vec![ChatMapping {
            key: "octo/other".into(),
            chat_id: 7,
        }];
        c.auth
            .tokens
            .push(ConfiguredToken::named("ops", Secret::new(OPS_TOKEN)));
        c.auth.read_only_tokens = vec![Secret::new(READ_TOKEN).into()];
    }
}

/// The configured entry, as listed.
fn configured_other() -> Value {
    json!({"key": "octo/other", "chat_id": 7, "source": "config", "updated_at": null, "updated_by": null, "configured_chat_id": null})
}

/// Posts the review-request mail under a Message-ID of its own (`n`), so it starts a new run;
/// answers the run's id.
async fn post_mail(relay: &TestRelay, n: u32) -> String {
    let mail = String::from_utf8(fixture("github-review-requested.eml")).unwrap();
    let original = "Message-ID: <octo/hello/pull/43@github.com>";
    assert!(mail.contains(original));
    let mail = mail.replace(
        original,
        &format!("Message-ID: <octo/hello/pull/43/issue_event/{n}@github.com>"),
    );
    let response = relay
        .http
        .post(format!("{}/v1/inbound/email/github", relay.base))
        .bearer_auth(MAIL_SECRET)
        .header("content-type", "message/rfc822")
        .body(mail)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["runs"][0]["created"], true, "{body}");
    body["runs"][0]["run"].as_str().unwrap().to_owned()
}

/// `GET /v1/routes/github-pr/chats`'s `chats`.
async fn chats(relay: &TestRelay) -> Value {
    let (status, body) = relay.call(Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["route"], "github-pr");
    body["chats"].clone()
}

/// `PUT` as `ops`; answers the status and body.
async fn put(relay: &TestRelay, body: Value) -> (StatusCode, Value) {
    relay
        .call_with(Method::PUT, PATH, Some(body), Some(OPS_TOKEN), &[])
        .await
}

/// `DELETE ?key=` (percent-encoded) as `ops`.
async fn delete(relay: &TestRelay, key: &str) -> (StatusCode, Value) {
    let key: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    relay
        .call_with(
            Method::DELETE,
            &format!("{PATH}?key={key}"),
            None,
            Some(OPS_TOKEN),
            &[],
        )
        .await
}

/// The audit entries of `action`, newest first.
async fn audited(relay: &TestRelay, action: &str) -> Vec<Value> {
    relay
        .page(&format!("/v1/audit?action={action}"), "entries")
        .await
}

async fn set_then_removed(backend: Backend) {
    let world = World::start().await;
    let relay = start_on(backend, setup_unmapped(&world)).await;
    assert_eq!(chats(&relay).await, json!([configured_other()]));

    // Set through the API: listed by who and when, and the next run's card goes to it.
    let (status, body) = put(&relay, json!({"key": "octo/hello", "chat_id": CHAT})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hello = &body["chats"][0];
    assert_eq!(
        (&hello["key"], &hello["chat_id"], &hello["source"]),
        (&json!("octo/hello"), &json!(CHAT), &json!("api"))
    );
    assert_eq!(hello["updated_by"], "ops");
    assert!(hello["updated_at"].is_string(), "{hello}");
    assert_eq!(hello["configured_chat_id"], Value::Null);
    assert_eq!(body["chats"][1], configured_other());
    assert_eq!(chats(&relay).await, body["chats"]);
    let id = post_mail(&relay, 1).await;
    let sends = world.bot.wait_for_calls("sendMessage", 1, WAIT).await;
    assert_eq!(sends[0].params["chat_id"], CHAT, "{:?}", sends[0].params);
    wait_for_run(&relay, &id, "waiting").await;

    // An API entry replaces a configured one of the same key while it is stored.
    let (status, body) = put(&relay, json!({"key": "octo/other", "chat_id": -100})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chats"][1]["chat_id"], -100);
    assert_eq!(body["chats"][1]["source"], "api");
    assert_eq!(body["chats"][1]["configured_chat_id"], 7);
    let (status, body) = delete(&relay, "octo/other").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["chats"][1],
        configured_other(),
        "the configured one again"
    );

    // Removed: the next run has no chat for octo/hello and takes the fallback.
    let (status, body) = delete(&relay, "octo/hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chats"], json!([configured_other()]));
    let id = post_mail(&relay, 2).await;
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(done["run"]["state"], "fallback_sent", "{done:#}");
    let mails = world.sink.wait_for_mails(1, WAIT).await;
    assert!(
        mails[0]
            .data
            .contains("https://github.com/octo/hello/pull/43")
    );
    assert_eq!(world.bot.calls("sendMessage").len(), 1, "no second card");

    // Each change in the audit log, under the token's name.
    let set = audited(&relay, "route.chat_set").await;
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(set[1]["actor"], "ops");
    assert_eq!(set[1]["target"], "github-pr");
    assert_eq!(
        set[1]["detail"],
        json!({"key": "octo/hello", "chat_id": CHAT})
    );
    let removed = audited(&relay, "route.chat_remove").await;
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(removed[0]["detail"], json!({"key": "octo/hello"}));
}

#[tokio::test]
async fn a_chat_set_through_the_api_is_used_and_once_removed_the_run_takes_the_fallback_on_sqlite()
{
    set_then_removed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_chat_set_through_the_api_is_used_and_once_removed_the_run_takes_the_fallback_on_postgres()
 {
    set_then_removed(Backend::Postgres).await;
}

/// Asserts an error's status, code and field.
fn refused(answer: (StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
}

#[tokio::test]
async fn bad_chat_requests_are_refused_naming_the_field() {
    let world = World::start().await;
    let relay = start_on(Backend::Sqlite, setup_unmapped(&world)).await;
    let ok = json!({"key": "octo/hello", "chat_id": 1});
    // No such route, whatever the method.
    let nowhere = "/v1/routes/nowhere/chats";
    refused(
        relay.call(Method::GET, nowhere, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    refused(
        relay.call(Method::PUT, nowhere, Some(ok.clone())).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    refused(
        relay
            .call(Method::DELETE, &format!("{nowhere}?key=a"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // A key only the configuration maps cannot be removed; one not mapped at all is not found.
    let conflict = delete(&relay, "octo/other").await;
    assert!(
        conflict.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("defined in the configuration"),
        "{}",
        conflict.1
    );
    refused(
        conflict,
        StatusCode::CONFLICT,
        "defined_in_config",
        Some("key"),
    );
    refused(
        delete(&relay, "octo/hello").await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("key"),
    );
    // The key: empty, blank, with a control character or over 200 characters.
    let long = "k".repeat(201);
    for key in ["", "  ", "octo\u{0}hello", "octo\nhello", long.as_str()] {
        refused(
            put(&relay, json!({"key": key, "chat_id": 1})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key",
            Some("key"),
        );
        refused(
            delete(&relay, key).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key",
            Some("key"),
        );
    }
    // 200 characters of several bytes each is a key.
    let (status, body) = put(&relay, json!({"key": "ж".repeat(200), "chat_id": 1})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = delete(&relay, &"ж".repeat(200)).await;
    assert_eq!(status, StatusCode::OK);
    // The body: each field named.
    for (body, field) in [
        (json!({"chat_id": 1}), "key"),
        (json!({"key": 5, "chat_id": 1}), "key"),
        (json!({"key": "octo/hello"}), "chat_id"),
        (json!({"key": "octo/hello", "chat_id": "-100"}), "chat_id"),
        (json!({"key": "octo/hello", "chat_id": 1.5}), "chat_id"),
        (
            json!({"key": "octo/hello", "chat_id": 9_223_372_036_854_775_808_u64}),
            "chat_id",
        ),
        (
            json!({"key": "octo/hello", "chat_id": 1, "chat": 2}),
            "chat",
        ),
    ] {
        refused(
            put(&relay, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(field),
        );
    }
    let (status, body) = relay
        .call(Method::PUT, PATH, Some(json!(["octo/hello", 1])))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    refused(
        relay.call(Method::DELETE, PATH, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
        Some("key"),
    );
    // A read-only token may list, not change.
    let (status, _) = relay
        .call_with(Method::GET, PATH, None, Some(READ_TOKEN), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    refused(
        relay
            .call_with(Method::PUT, PATH, Some(ok), Some(READ_TOKEN), &[])
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    refused(
        relay
            .call_with(
                Method::DELETE,
                &format!("{PATH}?key=octo%2Fother"),
                None,
                Some(READ_TOKEN),
                &[],
            )
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    // Nothing refused was stored or audited.
    assert_eq!(chats(&relay).await, json!([configured_other()]));
    assert_eq!(audited(&relay, "route.chat_set").await.len(), 1);
    assert_eq!(audited(&relay, "route.chat_remove").await.len(), 1);
}

/// Moves `clock` on 5 s at a time until `relay` lists `octo/hello` as `expected` (a chat id, or
/// null for not listed), at most [`WAIT`] of real time.
async fn followed(relay: &TestRelay, clock: &ManualClock, expected: Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = chats(relay).await;
        let hello = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == "octo/hello")
            .map_or(Value::Null, |c| c["chat_id"].clone());
        if hello == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_chat_set_through_one_relay_is_used_by_another_sharing_postgres() {
    let world = World::start().await;
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        setup_unmapped(&world)(&mut config);
        config.store.url = Secret::new(schema.url());
        relays.push(start_in(dir, config, clock.shared()).await);
    }
    let (status, body) = put(&relays[0], json!({"key": "octo/hello", "chat_id": CHAT})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The other relay reads the chats again every 5 s (on the relays' clock), then uses them.
    followed(&relays[1], &clock, json!(CHAT)).await;
    let id = post_mail(&relays[1], 1).await;
    let sends = world.bot.wait_for_calls("sendMessage", 1, WAIT).await;
    assert_eq!(sends[0].params["chat_id"], CHAT, "{:?}", sends[0].params);
    wait_for_run(&relays[1], &id, "waiting").await;
    // Removed through the second: the first stops using it.
    let (status, body) = delete(&relays[1], "octo/hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    followed(&relays[0], &clock, Value::Null).await;
    let id = post_mail(&relays[0], 2).await;
    let done = wait_for_run(&relays[0], &id, "completed").await;
    assert_eq!(done["run"]["state"], "fallback_sent", "{done:#}");
    assert_eq!(world.bot.calls("sendMessage").len(), 1, "no second card");
    for relay in &mut relays {
        relay.stop().await;
    }
    drop(schema);
}

/// A route of the binary's configuration: started through the API, its one step posts the
/// chat of `input.repo` to the `hook` destination.
const ROUTE_TOML: &str = r#"
[[routes]]
name = "notify"
trigger = { kind = "api" }

[[routes.chats]]
key = "octo/hello"
chat_id = -1001

[[routes.steps]]
name = "send"
destination = "hook"
payload = { chat = "{{ chats[input.repo] }}" }
"#;

#[tokio::test]
async fn the_cli_lists_sets_and_removes_a_routes_chats() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::binary::write_config(dir.path(), "http://127.0.0.1:9/", ROUTE_TOML);
    let server = crate::binary::Server::start(&config);
    let run = |args: &[&str]| {
        let out = server.cli(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A row whose words, one space apart, start with `words`.
    let row = |shown: &str, words: &str| {
        shown.lines().any(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .starts_with(words)
        })
    };
    let (ok, shown, err) = run(&["routes", "chats", "notify"]);
    assert!(ok, "{err}");
    assert!(row(&shown, "octo/hello -1001 config -"), "{shown}");

    // A negative chat id is an argument, not an option.
    let (ok, shown, err) = run(&["routes", "chats", "notify", "set", "octo/app", "-100123"]);
    assert!(ok, "{err}");
    assert!(err.contains("octo/app → -100123 set"), "{err}");
    assert!(row(&shown, "octo/app -100123 api by api:"), "{shown}");
    let (ok, shown, err) = run(&["routes", "chats", "notify", "set", "octo/hello", "5"]);
    assert!(ok, "{err}");
    assert!(
        row(&shown, "octo/hello 5 api (config: -1001) by"),
        "{shown}"
    );
    let (ok, shown, err) = run(&["routes", "chats", "notify", "remove", "octo/hello"]);
    assert!(ok, "{err}");
    assert!(row(&shown, "octo/hello -1001 config -"), "{shown}");
    let (ok, shown, _) = run(&["routes", "chats", "notify", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(listed["chats"].as_array().unwrap().len(), 2, "{listed}");

    // Errors name what is wrong.
    let (ok, _, err) = run(&["routes", "chats", "notify", "remove", "octo/hello"]);
    assert!(!ok);
    assert!(err.contains("defined_in_config"), "{err}");
    let (ok, _, err) = run(&["routes", "chats", "notify", "set", "", "1"]);
    assert!(!ok);
    assert!(
        err.contains("invalid_key") && err.contains("`key`"),
        "{err}"
    );
    let (ok, _, err) = run(&["routes", "chats", "notify", "set", "octo/app", "x"]);
    assert!(!ok);
    assert!(err.contains("CHAT_ID"), "{err}");
    let (ok, _, err) = run(&["routes", "chats", "nowhere"]);
    assert!(!ok);
    assert!(err.contains("no route named `nowhere`"), "{err}");
}
