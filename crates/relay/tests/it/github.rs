//! GitHub destinations end to end: the real relay and router against the fake GitHub REST API
//! of `ferrule_connectors::testing` on 127.0.0.1. Each action is exactly its one request;
//! actions are checked at submit (422 naming the field) and ordered per pull request; a
//! rejected token forces the breakers of its destinations open and alerts; rate limits pause
//! every destination of the token without a breaker failure; an action whose answer was lost is
//! retried and done once; twenty writes at once go one at a time, a second apart; what GitHub
//! refuses for good is a dead letter with its reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrule::config::{DestinationConfig, DestinationKind, Secret};
use ferrule_connectors::testing::fake_github::{FakeGithub, HEAD, LOGIN, Script, TOKEN};
use ferrule_policy::{Clock, ManualClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_bot_api::BOT_TOKEN;
use crate::receiver::Receiver;
use crate::support::{TestRelay, start, start_clock, webhook};

const WAIT: Duration = Duration::from_secs(10);
const PR: &str = "/repos/octo/app/pulls/42";
const ISSUE: &str = "/repos/octo/app/issues/42";
const SECONDARY: &str =
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

/// A GitHub destination `name` acting with the fake's token on `api_base`: 10 s per request,
/// retrying after 1 s without jitter.
pub(crate) fn github(name: &str, api_base: &str) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Github,
        token: Some(Secret::new(TOKEN)),
        api_base: Some(api_base.into()),
        user_agent: Some("ferrule-tests".into()),
        timeout: Some(Duration::from_secs(10)),
        retry: Some(json!({
            "backoff": {"kind": "fixed", "delay": "1s"},
            "jitter": "none",
            "max_attempts": 5,
        })),
        ..DestinationConfig::default()
    }
}

/// [`github`] writing a millisecond apart, for tests on the system clock that are not about
/// the pace.
fn quick_github(name: &str, api_base: &str) -> DestinationConfig {
    DestinationConfig {
        min_write_interval: Some(Duration::from_millis(1)),
        ..github(name, api_base)
    }
}

/// `action` on pull request `number` of octo/app, with the fields of `extra`.
pub(crate) fn on(number: u64, action: &str, extra: Value) -> Value {
    let mut payload = json!({"action": action, "repo": "octo/app", "number": number});
    if let (Some(payload), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        payload.extend(extra);
    }
    payload
}

/// `action` on octo/app#42.
fn action(action: &str, extra: Value) -> Value {
    on(42, action, extra)
}

/// A manual clock whose wall clock starts now, on a whole second (GitHub's reset times are
/// whole seconds).
pub(crate) fn manual_clock() -> ManualClock {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    ManualClock::with_system_time(UNIX_EPOCH + Duration::from_secs(now.as_secs()))
}

/// Moves `clock` on by `step`, giving the relay a few real milliseconds after each step, until
/// `done` holds; fails after `limit` of the clock's time.
pub(crate) async fn drive(
    clock: &ManualClock,
    step: Duration,
    limit: Duration,
    done: impl Fn() -> bool,
) {
    let start = clock.elapsed();
    while !done() {
        assert!(
            clock.elapsed() - start < limit,
            "not done after {limit:?} on the clock"
        );
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The details of a message's events, in order.
fn details(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits (in real time) until message `id` has an event whose detail starts with `prefix`.
async fn wait_for_event(relay: &TestRelay, id: &str, prefix: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = relay.message(id).await;
        if details(&message).iter().any(|d| d.starts_with(prefix)) {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{prefix}` event: {message:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Each destination's breaker state, by name.
async fn breaker_states(relay: &TestRelay) -> Vec<(String, Value)> {
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["destination"].as_str().unwrap().to_owned(),
                b["breaker"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_action_reaches_github_as_exactly_its_one_request() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    let relay = start(|c| c.destinations.push(quick_github("gh", &base))).await;
    let payloads = [
        action("approve", json!({"sha": HEAD})),
        action("request_changes", json!({"body": "Add a test."})),
        action("comment", json!({"body": "Deploying."})),
        action("label", json!({"labels": ["approved", "ship it"]})),
        action("merge", json!({"sha": HEAD, "merge_method": "squash"})),
        action("close", json!({})),
    ];
    let mut ids = Vec::new();
    for payload in payloads {
        ids.push(relay.submit("gh", payload).await);
    }
    for id in &ids {
        let message = relay.wait_for_status(id, "delivered", WAIT).await;
        assert_eq!(message["attempts"], 1, "{message:#}");
        assert_eq!(message["ordering_key"], "octo/app#42", "{message:#}");
    }
    let marked = |text: &str, id: &str| format!("{text}\n\n<!-- ferrule:{id} -->");
    let expected = [
        (
            format!("POST {PR}/reviews"),
            json!({"event": "APPROVE", "commit_id": HEAD}),
        ),
        (
            format!("POST {PR}/reviews"),
            json!({"event": "REQUEST_CHANGES", "body": marked("Add a test.", &ids[1])}),
        ),
        (
            format!("POST {ISSUE}/comments"),
            json!({"body": marked("Deploying.", &ids[2])}),
        ),
        (
            format!("POST {ISSUE}/labels"),
            json!({"labels": ["approved", "ship it"]}),
        ),
        (
            format!("PUT {PR}/merge"),
            json!({"sha": HEAD, "merge_method": "squash"}),
        ),
        (format!("PATCH {ISSUE}"), json!({"state": "closed"})),
    ];
    let requests = fake.requests();
    assert_eq!(requests.len(), expected.len(), "{:?}", fake.lines());
    for (request, (line, body)) in requests.iter().zip(expected) {
        assert_eq!(request.line(), line, "in the order submitted");
        assert_eq!(request.body, body, "{line}");
        assert_eq!(request.header("authorization"), format!("Bearer {TOKEN}"));
        assert_eq!(request.header("user-agent"), "ferrule-tests");
        assert_eq!(request.header("accept"), "application/vnd.github+json");
        assert_eq!(request.header("x-github-api-version"), "2022-11-28");
    }
    let merge = relay.message(&ids[4]).await;
    assert!(
        details(&merge)
            .iter()
            .any(|d| d == "merged octo/app#42 (commit e5bd3914e2e596debea16f433f57875b5b90bcd6)"),
        "{merge:#}"
    );
    let mut state = fake.state();
    let pr = state.thread("octo/app", 42);
    assert!(pr.merged && pr.closed);
    assert_eq!(pr.labels, ["approved", "ship it"]);
}

#[tokio::test]
async fn an_action_github_would_refuse_is_answered_422_naming_the_field() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    let relay = start(|c| c.destinations.push(quick_github("gh", &base))).await;
    let cases = [
        (
            json!({"action": "approve", "repo": "octo", "number": 1}),
            "payload.repo",
            "must be `owner/name`",
        ),
        (
            json!({"action": "delete", "repo": "octo/app", "number": 1}),
            "payload.action",
            "one of approve, request_changes, comment, merge, label, close",
        ),
        (
            json!({"action": "merge", "repo": "octo/app", "number": 0}),
            "payload.number",
            "a positive integer",
        ),
        (
            json!({"action": "comment", "repo": "octo/app", "number": 1}),
            "payload.body",
            "required for `comment`",
        ),
        (
            json!({"action": "merge", "repo": "octo/app", "number": 1, "merge_method": "ff"}),
            "payload.merge_method",
            "must be merge, squash or rebase",
        ),
        (
            json!({"action": "comment", "repo": "octo/app", "number": 1, "body": "x", "sha": HEAD}),
            "payload.sha",
            "does not apply to `comment`",
        ),
        (
            json!({"action": "label", "repo": "octo/app", "number": 1, "labels": ["a", ""]}),
            "payload.labels[1]",
            "must not be blank",
        ),
    ];
    for (payload, field, reason) in cases {
        let (status, body) = relay
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"destination": "gh", "payload": payload})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{field}: {message}");
    }
    let (_, listed) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(listed["messages"], json!([]), "nothing stored");
    assert!(fake.requests().is_empty(), "nothing sent");
}

#[tokio::test]
async fn actions_are_ordered_per_pull_request_unless_the_client_names_a_key() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    let relay = start(|c| c.destinations.push(quick_github("gh", &base))).await;
    // GitHub's names ignore case: one pull request, one key.
    let id = relay
        .submit(
            "gh",
            json!({"action": "close", "repo": "Octo/App", "number": 7}),
        )
        .await;
    assert_eq!(relay.message(&id).await["ordering_key"], "octo/app#7");
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "gh", "payload": on(7, "close", json!({})), "ordering_key": "release-7"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(relay.message(id).await["ordering_key"], "release-7");
}

#[tokio::test]
async fn a_rejected_token_forces_open_the_breakers_of_its_destinations_and_alerts_once_each() {
    let fake = FakeGithub::start().await;
    let alerts = Receiver::start().await;
    let (base, alerts_url) = (fake.base(), alerts.url.clone());
    let relay = start(|c| {
        // Two destinations with one token, as for two teams' repositories.
        for name in ["gh", "gh-infra"] {
            let mut d = quick_github(name, &base);
            d.token = Some(Secret::new("ghp_revokedRevokedRevoked0123456789abc"));
            c.destinations.push(d);
        }
        c.destinations.push(webhook("ops-hook", &alerts_url));
        c.alerts.webhook = Some("ops-hook".into());
    })
    .await;
    let id = relay.submit("gh", action("close", json!({}))).await;
    let message = relay.wait_for_status(&id, "dead", WAIT).await;
    let last_error = message["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("GitHub 401: Bad credentials; the token was rejected"),
        "{last_error}"
    );
    for (name, breaker) in breaker_states(&relay).await {
        let expected = if name == "ops-hook" {
            "closed"
        } else {
            "forced_open"
        };
        assert_eq!(breaker["state"], expected, "{name}: {breaker}");
    }
    let mut sent: Vec<Value> = alerts
        .wait_for_hits(2, WAIT)
        .await
        .iter()
        .map(|hit| serde_json::from_slice(&hit.body).unwrap())
        .collect();
    sent.sort_by_key(|alert| alert["subject"].as_str().unwrap().to_owned());
    let subjects: Vec<&str> = sent
        .iter()
        .map(|a| a["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["gh", "gh-infra"]);
    for alert in &sent {
        assert_eq!(alert["type"], "github.unauthorized", "{alert:#}");
        let subject = alert["subject"].as_str().unwrap();
        assert!(
            alert["text"]
                .as_str()
                .unwrap()
                .contains(&format!("POST /v1/breakers/{subject}/reset")),
            "{alert:#}"
        );
    }
    // Later messages of either destination wait behind the forced-open circuits: nothing more
    // is sent or alerted.
    let next = relay.submit("gh-infra", on(7, "close", json!({}))).await;
    let message = wait_for_event(&relay, &next, "circuit forced_open").await;
    assert_eq!(message["attempts"], 0, "{message:#}");
    assert_eq!(fake.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 2);
}

/// The first write meets `reply`; the whole token must pause for `pause` (a second
/// destination with the same token too), without a breaker failure, then both deliver.
async fn a_rate_limit_pauses_the_token(reply: impl FnOnce(SystemTime) -> Script, pause: Duration) {
    let clock = manual_clock();
    let fake = FakeGithub::start_on(clock.clone()).await;
    fake.script(&format!("POST {ISSUE}/comments"), reply(clock.system_now()));
    let base = fake.base();
    let relay = start_clock(clock.shared(), |c| {
        for name in ["gh", "gh-same-token"] {
            let mut d = github(name, &base);
            // One counted failure would open these breakers.
            d.breaker = Some(json!({
                "window": {"count": 2}, "min_calls": 1, "failure_rate": 0.5, "open_for": "600s",
            }));
            c.destinations.push(d);
        }
    })
    .await;
    let first = relay
        .submit("gh", action("comment", json!({"body": "hi"})))
        .await;
    relay.wait_for_status(&first, "retrying", WAIT).await;
    for (name, breaker) in breaker_states(&relay).await {
        assert_eq!(breaker["state"], "closed", "{name}: {breaker}");
        assert_eq!(breaker["failed_calls"], 0, "{name}: {breaker}");
    }
    // The token's other destination waits too, without spending an attempt.
    let second = relay
        .submit("gh-same-token", on(7, "close", json!({})))
        .await;
    let message = wait_for_event(&relay, &second, "paused").await;
    assert_eq!(message["attempts"], 0, "{message:#}");
    clock.advance(pause - Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.requests().len(), 1, "nothing sent during the pause");
    // Then both go: the comment looks for its marker first, then writes.
    drive(
        &clock,
        Duration::from_millis(100),
        Duration::from_secs(30),
        || fake.state().requests.len() >= 4,
    )
    .await;
    relay.wait_for_status(&first, "delivered", WAIT).await;
    relay.wait_for_status(&second, "delivered", WAIT).await;
    let requests = fake.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= pause && waited < pause + Duration::from_secs(3),
        "{waited:?} after the limit, for a pause of {pause:?}"
    );
    let mut state = fake.state();
    assert_eq!(state.thread("octo/app", 42).comments.len(), 1);
    assert!(state.thread("octo/app", 7).closed);
}

#[tokio::test]
async fn rate_limits_pause_every_destination_of_the_token_without_a_breaker_failure() {
    let secondary = |headers: Vec<(&'static str, String)>| {
        move |_: SystemTime| Script::Reply(403, headers, json!({"message": SECONDARY}))
    };
    // The secondary limit without `retry-after`: GitHub asks for at least a minute.
    a_rate_limit_pauses_the_token(secondary(Vec::new()), Duration::from_secs(60)).await;
    // With `retry-after`, its wait.
    a_rate_limit_pauses_the_token(
        secondary(vec![("retry-after", "30".into())]),
        Duration::from_secs(30),
    )
    .await;
    // A 429 is a secondary limit too.
    a_rate_limit_pauses_the_token(
        |_| Script::Reply(429, Vec::new(), json!({"message": "Too Many Requests"})),
        Duration::from_secs(60),
    )
    .await;
    // The hourly quota spent: until its reset.
    a_rate_limit_pauses_the_token(
        |now| {
            let reset = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 120;
            Script::Reply(
                403,
                vec![
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                json!({"message": "API rate limit exceeded for user ID 7."}),
            )
        },
        Duration::from_secs(120),
    )
    .await;
}

#[tokio::test]
async fn an_action_whose_answer_was_lost_is_retried_and_done_exactly_once() {
    // Each action's write: GitHub acts, and its answer never comes. Then what the retry looks
    // at, what it finds, and what octo/app#42 has: merged, reviews, comments.
    let cases = [
        (
            action("merge", json!({"sha": HEAD})),
            format!("PUT {PR}/merge"),
            // Found merged: the pull request is read for its merge commit, the step's output.
            vec![format!("GET {PR}/merge"), format!("GET {PR}")],
            "already merged octo/app#42 as e5bd3914e2e596debea16f433f57875b5b90bcd6",
            (true, 0, 0),
        ),
        (
            action("approve", json!({"sha": HEAD})),
            format!("POST {PR}/reviews"),
            vec!["GET /user".to_owned(), format!("GET {PR}/reviews")],
            "already approved octo/app#42 as ferrule-bot",
            (false, 1, 0),
        ),
        (
            action("comment", json!({"body": "Merging after lunch."})),
            format!("POST {ISSUE}/comments"),
            vec![format!("GET {ISSUE}/comments")],
            "already commented on octo/app#42",
            (false, 0, 1),
        ),
    ];
    for (payload, write, looks, found, effects) in cases {
        let clock = manual_clock();
        let fake = FakeGithub::start_on(clock.clone()).await;
        fake.script(&write, Script::ActThenHang);
        let base = fake.base();
        let relay = start_clock(clock.shared(), |c| {
            c.destinations.push(github("gh", &base));
        })
        .await;
        let id = relay.submit("gh", payload).await;
        fake.wait_for_requests(1).await;
        // The request times out after 10 s; the retry, a second later, looks before it acts.
        drive(
            &clock,
            Duration::from_millis(500),
            Duration::from_secs(60),
            || fake.state().requests.len() > looks.len(),
        )
        .await;
        let message = relay.wait_for_status(&id, "delivered", WAIT).await;
        assert_eq!(message["attempts"], 2, "{message:#}");
        let details = details(&message);
        assert!(
            details.iter().any(|d| d
                .contains("timed out after 10s; GitHub may have acted, so a retry looks first")),
            "{write}: {details:#?}"
        );
        assert!(
            details.last().unwrap().starts_with(found),
            "{write}: {details:#?}"
        );
        let mut lines = vec![write.clone()];
        lines.extend(looks);
        assert_eq!(fake.lines(), lines, "one write: exactly one side effect");
        let mut state = fake.state();
        let pr = state.thread("octo/app", 42);
        assert_eq!(
            (pr.merged, pr.reviews.len(), pr.comments.len()),
            effects,
            "{write}"
        );
        if let Some(review) = pr.reviews.first() {
            assert_eq!(review["user"]["login"], LOGIN);
        }
    }
}

#[tokio::test]
async fn a_retry_has_time_to_look_before_it_acts() {
    let clock = manual_clock();
    let fake = FakeGithub::start_on(clock.clone()).await;
    // A slow GitHub: 6 s a request, within the 10 s each may take, so a retry's look and write
    // take 12 s together.
    {
        let mut state = fake.state();
        state.read_takes = Duration::from_secs(6);
        state.write_takes = Duration::from_secs(6);
    }
    fake.script(
        &format!("POST {ISSUE}/comments"),
        Script::Reply(502, Vec::new(), json!({"message": "Server Error"})),
    );
    let base = fake.base();
    let relay = start_clock(clock.shared(), |c| c.destinations.push(github("gh", &base))).await;
    let id = relay
        .submit("gh", action("comment", json!({"body": "hi"})))
        .await;
    drive(
        &clock,
        Duration::from_millis(500),
        Duration::from_secs(60),
        || fake.state().thread("octo/app", 42).comments.len() == 1,
    )
    .await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(message["attempts"], 2, "{message:#}");
    assert_eq!(
        fake.lines(),
        [
            format!("POST {ISSUE}/comments"),
            format!("GET {ISSUE}/comments"),
            format!("POST {ISSUE}/comments")
        ]
    );
}

#[tokio::test]
async fn twenty_writes_at_once_go_one_at_a_time_a_second_apart() {
    let clock = manual_clock();
    let fake = FakeGithub::start_on(clock.clone()).await;
    // Each write keeps GitHub busy for 300 ms of the clock.
    fake.state().write_takes = Duration::from_millis(300);
    let base = fake.base();
    // Two destinations with one token: GitHub paces the token.
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(github("gh", &base));
        c.destinations.push(github("gh-same-token", &base));
    })
    .await;
    // Twenty pull requests, so that no ordering key holds any of them back.
    let submits = (1..=20).map(|n| {
        let destination = if n % 2 == 0 { "gh" } else { "gh-same-token" };
        relay.submit(destination, on(n, "comment", json!({"body": "ok"})))
    });
    let ids = futures_util::future::join_all(submits).await;
    drive(
        &clock,
        Duration::from_millis(100),
        Duration::from_secs(120),
        || {
            let state = fake.state();
            state
                .threads
                .values()
                .map(|t| t.comments.len())
                .sum::<usize>()
                >= 20
        },
    )
    .await;
    {
        let state = fake.state();
        assert_eq!(state.most_writes_in_flight, 1, "never two writes in flight");
        let starts: Vec<_> = state.requests.iter().map(|r| r.at).collect();
        assert_eq!(starts.len(), 20, "one request each");
        for pair in starts.windows(2) {
            // Each starts a second after the one before finished (300 ms after it started).
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(1300), "{gap:?}");
        }
    }
    let mut deferred = 0;
    for id in &ids {
        let message = relay.wait_for_status(id, "delivered", WAIT).await;
        assert_eq!(message["attempts"], 1, "{message:#}");
        if details(&message)
            .iter()
            .any(|d| d.starts_with("rate limited: github write pace"))
        {
            deferred += 1;
        }
    }
    assert!(
        deferred >= 19,
        "waits are deferrals in the store: {deferred}"
    );
}

#[tokio::test]
async fn what_github_refuses_for_good_is_a_dead_letter_with_its_reason() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    let relay = start(|c| c.destinations.push(quick_github("gh", &base))).await;
    let other_sha = "0000000000000000000000000000000000000abc";
    let cases = [
        (
            Some((
                format!("PUT {PR}/merge"),
                405,
                json!({"message": "Pull Request is not mergeable"}),
            )),
            action("merge", json!({})),
            "GitHub 405: Pull Request is not mergeable; not merged: GitHub cannot merge it as it \
             is (conflicts, required checks or reviews, or a draft)",
        ),
        // The fake's head is not `other_sha`: GitHub's own 409.
        (
            None,
            action("merge", json!({"sha": other_sha})),
            "GitHub 409: Head branch was modified. Review and try the merge again.; not merged: \
             the pull request's head is no longer the `sha` given",
        ),
        (
            Some((
                format!("POST {PR}/reviews"),
                422,
                json!({"message": "Validation Failed", "errors": [{"resource": "PullRequestReview", "code": "custom", "message": "Can not approve your own pull request"}]}),
            )),
            action("approve", json!({})),
            "GitHub 422: Validation Failed: Can not approve your own pull request",
        ),
    ];
    for (n, (script, payload, reason)) in cases.into_iter().enumerate() {
        if let Some((line, status, body)) = script {
            fake.script(&line, Script::Reply(status, Vec::new(), body));
        }
        let id = relay.submit("gh", payload).await;
        let message = relay.wait_for_status(&id, "dead", WAIT).await;
        assert_eq!(message["attempts"], 1, "{message:#}");
        let last_error = message["last_error"].as_str().unwrap();
        assert!(last_error.ends_with(reason), "{last_error}");
        assert_eq!(fake.requests().len(), n + 1, "not retried");
    }
    assert!(!fake.state().thread("octo/app", 42).merged);
}

#[tokio::test]
async fn the_destinations_list_shows_each_type() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    let relay = start(|c| {
        c.destinations
            .push(webhook("hook", "http://127.0.0.1:9/hook"));
        c.destinations.push(DestinationConfig {
            name: "chat".into(),
            kind: DestinationKind::Telegram,
            bot_token: Some(Secret::new(BOT_TOKEN)),
            api_base: Some("http://127.0.0.1:9".into()),
            ..DestinationConfig::default()
        });
        c.destinations.push(crate::smtp::smtp("mail", 9));
        c.destinations.push(github("gh", &base));
    })
    .await;
    let (status, body) = relay.call(Method::GET, "/v1/destinations", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let types: Vec<(&str, &str)> = body["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("chat", "telegram"),
            ("gh", "github"),
            ("hook", "webhook"),
            ("mail", "smtp")
        ]
    );
    let gh = &body["destinations"][1];
    assert_eq!(gh["endpoint"], base, "{gh}");
}
