//! The GitHub connector against the fake GitHub REST API of [`crate::testing::fake_github`],
//! on 127.0.0.1: it keeps pull requests, reviews and comments, records every request, and
//! answers from a script when told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferrule_policy::Outcome;
use ferrule_policy::clock::Clock;
use humantime_serde::re::humantime;
use serde_json::json;
use tokio::net::TcpListener;

use super::*;
use crate::testing::fake_github::{
    FakeGithub, HEAD, LOGIN, MERGE_SHA, Script, State, TOKEN, Thread,
};
use crate::{AnyConnector, Connector, Delivery, DeliveryResult, Signal};

/// The part of [`TOKEN`] that must never show.
const SECRET: &str = "16C7e42F292c6912E7710c838347Ae178B4a";
const OTHER_SHA: &str = "0000000000000000000000000000000000000abc";
const PR: &str = "/repos/octo/app/pulls/42";
const ISSUE: &str = "/repos/octo/app/issues/42";
const SECONDARY: &str =
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
const MINUTE: Duration = Duration::from_secs(60);

/// octo/app#42, the pull request the tests act on.
fn pr(state: &mut State) -> &mut Thread {
    state.thread("octo/app", 42)
}

fn connector(fake: &FakeGithub, edit: impl FnOnce(&mut GithubConfig)) -> GithubConnector {
    let mut config = GithubConfig::new(TOKEN.parse().unwrap());
    config.api_base = fake.base();
    config.user_agent = "ferrule-tests".into();
    edit(&mut config);
    GithubConnector::new(config, fake.clock.shared()).unwrap()
}

/// A message id (a ULID) created now on the fake's clock.
fn message_id(fake: &FakeGithub) -> String {
    ulid::Ulid::from_datetime(fake.clock.system_now()).to_string()
}

/// Delivers attempt `attempt` of `payload` and checks that the token stays out of the result.
async fn deliver(
    github: &GithubConnector,
    id: &str,
    payload: &str,
    attempt: u32,
) -> DeliveryResult {
    let result = github
        .deliver(&Delivery {
            message_id: id,
            destination: "github",
            payload,
            attempt,
            traceparent: None,
        })
        .await;
    assert!(
        !format!("{result:?}").contains(SECRET),
        "token in {result:?}"
    );
    result
}

fn payload(action: &str, extra: &str) -> String {
    format!(r#"{{"action": "{action}", "repo": "octo/app", "number": 42{extra}}}"#)
}

#[tokio::test]
async fn first_attempts_make_exactly_the_actions_request_with_githubs_headers() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    let id = message_id(&fake);
    let marker = format!("<!-- ferrule:{id} -->");
    let cases = [
        (
            payload("approve", &format!(r#", "sha": "{HEAD}""#)),
            format!("POST {PR}/reviews"),
            json!({"event": "APPROVE", "commit_id": HEAD}),
            "approved octo/app#42 (review 1)",
            json!({"id": 1, "html_url": "https://github.com/octo/app/pull/42#pullrequestreview-1", "state": "APPROVED"}),
        ),
        (
            payload("request_changes", r#", "body": "Add a test.""#),
            format!("POST {PR}/reviews"),
            json!({"event": "REQUEST_CHANGES", "body": format!("Add a test.\n\n{marker}")}),
            "requested changes on octo/app#42 (review 2)",
            json!({"id": 2, "html_url": "https://github.com/octo/app/pull/42#pullrequestreview-2", "state": "CHANGES_REQUESTED"}),
        ),
        (
            payload("comment", r#", "body": "Deploying.""#),
            format!("POST {ISSUE}/comments"),
            json!({"body": format!("Deploying.\n\n{marker}")}),
            "commented on octo/app#42 (comment 3)",
            json!({"id": 3, "html_url": "https://github.com/octo/app/pull/42#issuecomment-3"}),
        ),
        (
            payload("label", r#", "labels": ["approved", "ship it"]"#),
            format!("POST {ISSUE}/labels"),
            json!({"labels": ["approved", "ship it"]}),
            "labelled octo/app#42: approved, ship it",
            json!({"labels": ["approved", "ship it"]}),
        ),
        (
            payload(
                "merge",
                &format!(r#", "sha": "{HEAD}", "merge_method": "squash""#),
            ),
            format!("PUT {PR}/merge"),
            json!({"sha": HEAD, "merge_method": "squash"}),
            "merged octo/app#42 (commit e5bd3914e2e596debea16f433f57875b5b90bcd6)",
            json!({"merged": true, "sha": MERGE_SHA}),
        ),
        (
            payload("close", ""),
            format!("PATCH {ISSUE}"),
            json!({"state": "closed"}),
            "closed octo/app#42",
            json!({"state": "closed"}),
        ),
    ];
    for (i, (payload, line, body, detail, output)) in cases.into_iter().enumerate() {
        let result = deliver(&github, &id, &payload, 1).await;
        assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
        assert_eq!(result.detail, detail);
        assert_eq!(result.signal, None);
        assert_eq!(result.output, Some(output), "{line}");
        let requests = fake.requests();
        assert_eq!(
            requests.len(),
            i + 1,
            "one request per first attempt: {:?}",
            fake.lines()
        );
        let request = &requests[i];
        assert_eq!(request.line(), line);
        assert_eq!(request.body, body);
        assert_eq!(request.header("accept"), "application/vnd.github+json");
        assert_eq!(request.header("x-github-api-version"), "2022-11-28");
        assert_eq!(request.header("user-agent"), "ferrule-tests");
        assert_eq!(request.header("content-type"), "application/json");
    }
    {
        let mut state = fake.state();
        let pr = pr(&mut state);
        assert!(pr.merged && pr.closed);
        assert_eq!(pr.labels, ["approved", "ship it"]);
    }
    assert_eq!(
        fake.requests()
            .iter()
            .map(|r| r.header("authorization").to_owned())
            .collect::<Vec<_>>(),
        vec![format!("Bearer {TOKEN}"); 6]
    );
}

#[tokio::test]
async fn a_merge_whose_answer_never_came_is_found_merged_and_not_merged_again() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |c| c.timeout = Duration::from_secs(10));
    fake.script(&format!("PUT {PR}/merge"), Script::ActThenHang);
    let id = message_id(&fake);
    let merge = payload("merge", &format!(r#", "sha": "{HEAD}""#));
    let attempt = tokio::spawn({
        let (github, id, merge) = (github.clone(), id.clone(), merge.clone());
        async move { deliver(&github, &id, &merge, 1).await }
    });
    // GitHub merged, and its answer never comes.
    fake.wait_for_requests(1).await;
    fake.clock.advance(Duration::from_secs(10));
    let first = attempt.await.unwrap();
    assert_eq!(first.outcome, Outcome::Transient);
    assert_eq!(
        first.detail,
        "timed out after 10s; GitHub may have acted, so a retry looks first"
    );
    assert_eq!(first.duration, Duration::from_secs(10));
    assert!(pr(&mut fake.state()).merged);

    let retry = deliver(&github, &id, &merge, 2).await;
    assert_eq!(retry.outcome, Outcome::Success, "{}", retry.detail);
    assert_eq!(retry.code, Some(204));
    assert_eq!(
        retry.detail,
        "already merged octo/app#42 as e5bd3914e2e596debea16f433f57875b5b90bcd6 (GET …/merge \
         answered 204), by an earlier attempt or by someone else; not merged again"
    );
    assert_eq!(
        retry.output,
        Some(json!({"merged": true, "sha": MERGE_SHA, "already": true}))
    );
    assert_eq!(
        fake.lines(),
        [
            format!("PUT {PR}/merge"),
            format!("GET {PR}/merge"),
            format!("GET {PR}")
        ],
        "exactly one merge"
    );
}

#[tokio::test]
async fn a_merge_found_done_succeeds_without_its_commit_when_that_read_fails() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    pr(&mut fake.state()).merged = true;
    fake.script(
        &format!("GET {PR}"),
        Script::Reply(502, Vec::new(), json!({"message": "Server Error"})),
    );
    let merge = payload("merge", "");
    let retry = deliver(&github, &message_id(&fake), &merge, 2).await;
    assert_eq!(retry.outcome, Outcome::Success, "{}", retry.detail);
    assert_eq!(retry.signal, None);
    assert_eq!(
        retry.output,
        Some(json!({"merged": true, "already": true})),
        "the merge is done; only its commit is unknown"
    );
    assert!(
        retry.detail.starts_with("already merged octo/app#42 (GET"),
        "{}",
        retry.detail
    );
    assert_eq!(
        fake.lines(),
        [format!("GET {PR}/merge"), format!("GET {PR}")],
        "never merged again"
    );
}

#[tokio::test]
async fn a_retried_merge_that_finds_it_unmerged_merges() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    fake.script(&format!("PUT {PR}/merge"), Script::Drop);
    let id = message_id(&fake);
    let merge = payload("merge", "");
    let first = deliver(&github, &id, &merge, 1).await;
    assert_eq!(first.outcome, Outcome::Transient, "{}", first.detail);
    assert!(
        first.detail.starts_with("request failed"),
        "{}",
        first.detail
    );
    let retry = deliver(&github, &id, &merge, 2).await;
    assert_eq!(retry.outcome, Outcome::Success, "{}", retry.detail);
    assert_eq!(
        fake.lines(),
        [
            format!("PUT {PR}/merge"),
            format!("GET {PR}/merge"),
            format!("PUT {PR}/merge")
        ]
    );
    assert_eq!(fake.requests()[2].body, json!({}));
}

#[tokio::test]
async fn an_approval_whose_answer_never_came_is_not_made_twice() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    // An approval by the same account a day before this message: not this message's.
    pr(&mut fake.state()).reviews.push(json!({
        "id": 900, "user": {"login": LOGIN}, "body": "", "state": "APPROVED", "commit_id": OTHER_SHA,
        "submitted_at": humantime::format_rfc3339_seconds(fake.clock.system_now() - 24 * 60 * MINUTE).to_string(),
    }));
    fake.state().page_size = 1;
    let id = message_id(&fake);
    let approve = payload("approve", "");

    // The first attempt failed before GitHub acted: the retry finds no approval of its own and
    // approves, reading every page of reviews on the way.
    fake.script(
        &format!("POST {PR}/reviews"),
        Script::Reply(502, Vec::new(), json!({"message": "Server Error"})),
    );
    assert_eq!(
        deliver(&github, &id, &approve, 1).await.outcome,
        Outcome::Transient
    );
    fake.script(&format!("POST {PR}/reviews"), Script::ActThenHang);
    let attempt = tokio::spawn({
        let (github, id, approve) = (github.clone(), id.clone(), approve.clone());
        async move { deliver(&github, &id, &approve, 2).await }
    });
    fake.wait_for_requests(4).await;
    fake.clock.advance(Duration::from_secs(30));
    assert_eq!(attempt.await.unwrap().outcome, Outcome::Transient);
    assert_eq!(pr(&mut fake.state()).reviews.len(), 2);

    // The third attempt finds the second's approval (on page 2) and makes no other.
    let third = deliver(&github, &id, &approve, 3).await;
    assert_eq!(third.outcome, Outcome::Success, "{}", third.detail);
    assert_eq!(third.code, Some(200));
    assert_eq!(
        third.detail,
        "already approved octo/app#42 as ferrule-bot (review 1), by an earlier attempt; not \
         reviewed again"
    );
    assert_eq!(
        third.output,
        Some(json!({
            "id": 1,
            "html_url": "https://github.com/octo/app/pull/42#pullrequestreview-1",
            "state": "APPROVED",
            "already": true,
        }))
    );
    assert_eq!(
        pr(&mut fake.state()).reviews.len(),
        2,
        "exactly one approval"
    );
    assert_eq!(
        fake.lines(),
        [
            format!("POST {PR}/reviews"),
            "GET /user".to_owned(),
            format!("GET {PR}/reviews"),
            format!("POST {PR}/reviews"),
            // GET /user is asked once.
            format!("GET {PR}/reviews"),
            format!("GET {PR}/reviews"),
        ]
    );
    let requests = fake.requests();
    assert!(requests[4].uri.ends_with("/reviews?per_page=100"));
    assert!(requests[5].uri.ends_with("/reviews?per_page=100&page=2"));
}

#[tokio::test]
async fn a_retried_review_counts_the_same_commit_or_its_marker() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |c| c.login = Some(LOGIN.into()));
    // On `sha`: an approval of that commit by this account is the one.
    pr(&mut fake.state()).reviews.push(json!({
        "id": 5, "user": {"login": "someone-else"}, "body": "", "state": "APPROVED", "commit_id": HEAD,
    }));
    pr(&mut fake.state()).reviews.push(json!({
        "id": 6, "user": {"login": "Ferrule-Bot"}, "body": "", "state": "APPROVED", "commit_id": HEAD,
    }));
    let id = message_id(&fake);
    let on_head = payload("approve", &format!(r#", "sha": "{HEAD}""#));
    let result = deliver(&github, &id, &on_head, 2).await;
    assert_eq!(result.outcome, Outcome::Success);
    assert!(result.detail.contains("(review 6)"), "{}", result.detail);
    // A configured login: no GET /user.
    assert_eq!(fake.lines(), [format!("GET {PR}/reviews")]);

    // Another commit: approve.
    let on_other = payload("approve", &format!(r#", "sha": "{OTHER_SHA}""#));
    let result = deliver(&github, &id, &on_other, 2).await;
    assert_eq!(result.detail, "approved octo/app#42 (review 1)");

    // With a body, only the marker counts — and a dismissed review of its own still does.
    let asked = payload("request_changes", r#", "body": "Add a test.""#);
    let result = deliver(&github, &id, &asked, 2).await;
    assert_eq!(result.detail, "requested changes on octo/app#42 (review 2)");
    pr(&mut fake.state()).reviews.last_mut().unwrap()["state"] = json!("DISMISSED");
    let result = deliver(&github, &message_id(&fake), &asked, 2).await;
    assert_eq!(
        result.detail, "requested changes on octo/app#42 (review 3)",
        "another message's review is not this one's"
    );
    let result = deliver(&github, &id, &asked, 3).await;
    assert!(
        result
            .detail
            .starts_with("already requested changes on octo/app#42"),
        "{}",
        result.detail
    );
    assert_eq!(pr(&mut fake.state()).reviews.len(), 5);
}

#[tokio::test]
async fn a_comment_whose_answer_never_came_is_found_by_its_marker() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    pr(&mut fake.state())
        .comments
        .push(json!({"id": 70, "user": {"login": LOGIN}, "body": "An older one"}));
    fake.script(&format!("POST {ISSUE}/comments"), Script::ActThenHang);
    let id = message_id(&fake);
    let comment = payload("comment", r#", "body": "Merging after lunch.""#);
    let attempt = tokio::spawn({
        let (github, id, comment) = (github.clone(), id.clone(), comment.clone());
        async move { deliver(&github, &id, &comment, 1).await }
    });
    fake.wait_for_requests(1).await;
    fake.clock.advance(Duration::from_secs(30));
    assert_eq!(attempt.await.unwrap().outcome, Outcome::Transient);

    let retry = deliver(&github, &id, &comment, 2).await;
    assert_eq!(retry.outcome, Outcome::Success, "{}", retry.detail);
    assert_eq!(
        retry.detail,
        "already commented on octo/app#42 (comment 1, with this message's marker), by an \
         earlier attempt; not commented again"
    );
    assert_eq!(
        retry.output,
        Some(json!({
            "id": 1,
            "html_url": "https://github.com/octo/app/pull/42#issuecomment-1",
            "already": true,
        }))
    );
    assert_eq!(
        pr(&mut fake.state()).comments.len(),
        2,
        "exactly one comment"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    // Only comments since the message was created (less five minutes) are asked for.
    let since = humantime::format_rfc3339_seconds(
        fake.clock.system_now() - 5 * MINUTE - Duration::from_secs(30),
    );
    assert_eq!(
        requests[1].uri,
        format!("{ISSUE}/comments?per_page=100&since={since}")
    );

    // A retry of another message's comment does not take this one for its own.
    let other = message_id(&fake);
    let result = deliver(&github, &other, &comment, 2).await;
    assert_eq!(result.detail, "commented on octo/app#42 (comment 2)");
}

#[tokio::test]
async fn message_ids_of_unbelievable_times_rule_nothing_out_by_date() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |c| c.login = Some(LOGIN.into()));
    // An approval by this account from long ago.
    pr(&mut fake.state()).reviews.push(json!({
        "id": 9, "user": {"login": LOGIN}, "body": "", "state": "APPROVED", "commit_id": HEAD,
        "submitted_at": "2020-01-01T00:00:00Z",
    }));
    let comment = payload("comment", r#", "body": "hi""#);
    // 1970, the far future, not a ULID.
    for id in [
        "00000000000000000000000000",
        "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "not-a-ulid",
    ] {
        let before = fake.requests().len();
        let result = deliver(&github, id, &comment, 2).await;
        assert_eq!(result.outcome, Outcome::Success, "{id}: {}", result.detail);
        assert_eq!(
            fake.requests()[before].uri,
            format!("{ISSUE}/comments?per_page=100"),
            "{id}: no `since`"
        );
        // Without a date to go by, any approval by this account counts: never approve twice.
        let result = deliver(&github, id, &payload("approve", ""), 2).await;
        assert!(
            result.detail.starts_with("already approved"),
            "{id}: {}",
            result.detail
        );
    }
}

#[tokio::test]
async fn a_rejected_token_is_unauthorized_and_never_shown() {
    let fake = FakeGithub::start().await;
    let mut config = GithubConfig::new("ghp_wrongwrongwrong".parse().unwrap());
    config.api_base = fake.base();
    let github = GithubConnector::new(config, fake.clock.shared()).unwrap();
    let result = deliver(&github, "01", &payload("close", ""), 1).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(401));
    assert_eq!(result.signal, Some(Signal::Unauthorized));
    assert_eq!(
        result.detail,
        "GitHub 401: Bad credentials; the token was rejected"
    );
    assert!(!result.detail.contains("wrongwrong"));
}

#[tokio::test]
async fn a_plain_403_is_permanent_with_a_permissions_hint_and_no_signal() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    fake.script(
        &format!("PUT {PR}/merge"),
        Script::Reply(
            403,
            vec![("x-ratelimit-remaining", "4990".into())],
            json!({"message": "Resource not accessible by integration"}),
        ),
    );
    let result = deliver(&github, "01", &payload("merge", ""), 1).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.signal, None);
    assert_eq!(
        result.detail,
        "GitHub 403: Resource not accessible by integration; the token may not do this here \
         (its permissions, its access to the repository, or an organisation policy)"
    );

    // GET /user refused to an installation token: say how to fix it.
    fake.script(
        "GET /user",
        Script::Reply(
            403,
            Vec::new(),
            json!({"message": "Resource not accessible by integration"}),
        ),
    );
    let result = deliver(&github, "01", &payload("approve", ""), 2).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(
        result
            .detail
            .starts_with("checking what an earlier attempt did: GitHub 403:")
            && result
                .detail
                .ends_with("set `login` to the account it acts as"),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn the_secondary_limit_pauses_the_token_a_minute_then_doubles_then_gives_up() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |c| c.secondary_limit.max_tries = 3);
    let comment = payload("comment", r#", "body": "hi""#);
    let limited = || {
        Script::Reply(
            403,
            vec![("x-ratelimit-remaining", "4000".into())],
            json!({"message": SECONDARY}),
        )
    };
    for _ in 0..3 {
        fake.script(&format!("POST {ISSUE}/comments"), limited());
    }
    let id = message_id(&fake);
    let first = deliver(&github, &id, &comment, 1).await;
    assert_eq!(first.outcome, Outcome::RetryAfter(MINUTE));
    assert_eq!(first.signal, Some(Signal::PauseDestination(MINUTE)));
    assert_eq!(first.code, Some(403));
    assert_eq!(
        first.detail,
        format!(
            "GitHub 403: {SECONDARY}; a secondary rate limit (1 in a row): the token pauses for 1m"
        )
    );
    // Another message meets it too: the token's run goes on.
    let other = deliver(&github, &message_id(&fake), &comment, 1).await;
    assert_eq!(other.signal, Some(Signal::PauseDestination(2 * MINUTE)));
    // The first message's third in a row: it gives up, and the token still pauses.
    fake.script(&format!("GET {ISSUE}/comments"), limited());
    let third = deliver(&github, &id, &comment, 2).await;
    assert_eq!(
        third.outcome,
        Outcome::RetryAfter(4 * MINUTE),
        "{}",
        third.detail
    );
    let last = deliver(&github, &id, &comment, 3).await;
    assert_eq!(last.outcome, Outcome::Permanent);
    assert_eq!(last.signal, Some(Signal::PauseDestination(8 * MINUTE)));
    assert!(
        last.detail.ends_with("a secondary rate limit 3 times in a row for this message: giving up (the token pauses for 8m)"),
        "{}",
        last.detail
    );
    // An answer ends the run: the next limit waits a minute again.
    assert_eq!(
        deliver(&github, &message_id(&fake), &comment, 1)
            .await
            .outcome,
        Outcome::Success
    );
    fake.script(&format!("POST {ISSUE}/comments"), limited());
    let again = deliver(&github, &message_id(&fake), &comment, 1).await;
    assert_eq!(again.outcome, Outcome::RetryAfter(MINUTE));
}

#[tokio::test]
async fn rate_limits_honour_retry_after_then_the_reset() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    let close = payload("close", "");
    let reset = |secs: u64| {
        let now = fake
            .clock
            .system_now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        (now.as_secs() + secs).to_string()
    };
    let cases = [
        // A secondary limit with retry-after.
        (
            403,
            vec![("retry-after", "30".to_owned())],
            json!({"message": SECONDARY}),
            Duration::from_secs(30),
        ),
        // 429 without any header: the secondary limit's minute.
        (
            429,
            Vec::new(),
            json!({"message": "Too Many Requests"}),
            MINUTE,
        ),
        // The primary limit: until the reset.
        (
            403,
            vec![
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset(1200)),
            ],
            json!({"message": "API rate limit exceeded for user ID 7."}),
            Duration::from_secs(1200),
        ),
        (
            429,
            vec![
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset(90)),
            ],
            json!({"message": "API rate limit exceeded for user ID 7."}),
            Duration::from_secs(90),
        ),
        // retry-after before the reset.
        (
            403,
            vec![
                ("retry-after", "15".to_owned()),
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset(1200)),
            ],
            json!({"message": "API rate limit exceeded for user ID 7."}),
            Duration::from_secs(15),
        ),
    ];
    for (status, headers, body, wait) in cases {
        fake.script(
            &format!("PATCH {ISSUE}"),
            Script::Reply(status, headers, body),
        );
        let result = deliver(&github, &message_id(&fake), &close, 1).await;
        assert_eq!(
            result.outcome,
            Outcome::RetryAfter(wait),
            "{}",
            result.detail
        );
        assert_eq!(result.signal, Some(Signal::PauseDestination(wait)));
        assert_eq!(result.code, Some(i32::from(status)));
        // Each answer met by another message than the last; a success in between ends a run.
        assert_eq!(
            deliver(&github, "01", &close, 1).await.outcome,
            Outcome::Success
        );
    }
    let primary = {
        fake.script(
            &format!("PATCH {ISSUE}"),
            Script::Reply(
                403,
                vec![
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset(1200)),
                ],
                json!({"message": "API rate limit exceeded for user ID 7."}),
            ),
        );
        deliver(&github, "01", &close, 1).await
    };
    assert_eq!(
        primary.detail,
        "GitHub 403: API rate limit exceeded for user ID 7.; the token's hourly quota is spent: \
         its writes pause for 20m"
    );
}

#[tokio::test]
async fn errors_github_will_not_change_its_mind_about_are_permanent_with_its_message() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    let merge = payload("merge", &format!(r#", "sha": "{OTHER_SHA}""#));
    // 409: the head moved since `sha`.
    let result = deliver(&github, "01", &merge, 1).await;
    assert_eq!(
        (result.outcome, result.code),
        (Outcome::Permanent, Some(409))
    );
    assert_eq!(
        result.detail,
        "GitHub 409: Head branch was modified. Review and try the merge again.; not merged: the \
         pull request's head is no longer the `sha` given"
    );
    // 405: not mergeable.
    pr(&mut fake.state()).merged = true;
    let result = deliver(&github, "01", &payload("merge", ""), 1).await;
    assert_eq!(
        (result.outcome, result.code),
        (Outcome::Permanent, Some(405))
    );
    assert_eq!(
        result.detail,
        "GitHub 405: Pull Request is not mergeable; not merged: GitHub cannot merge it as it is \
         (conflicts, required checks or reviews, or a draft)"
    );
    let scripted = [
        (
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequestReview", "code": "custom", "message": "Can not approve your own pull request"}]}),
            "GitHub 422: Validation Failed: Can not approve your own pull request",
        ),
        (
            404,
            json!({"message": "Not Found"}),
            "GitHub 404: Not Found",
        ),
        (
            410,
            json!({"message": "Issues are disabled for this repo"}),
            "GitHub 410: Issues are disabled for this repo",
        ),
    ];
    for (status, body, detail) in scripted {
        fake.script(
            &format!("POST {PR}/reviews"),
            Script::Reply(status, Vec::new(), body),
        );
        let result = deliver(&github, "01", &payload("approve", ""), 1).await;
        assert_eq!(result.outcome, Outcome::Permanent, "{status}");
        assert_eq!(result.code, Some(i32::from(status)));
        assert_eq!(result.detail, detail);
        assert_eq!(result.signal, None);
        assert_eq!(result.output, None, "a failure has no output");
    }
    // A payload that does not validate never reaches GitHub.
    let requests = fake.requests().len();
    let result = deliver(&github, "01", &payload("merge", r#", "labels": ["x"]"#), 1).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(
        result.detail,
        "invalid payload: invalid `labels`: does not apply to `merge`; it is for label"
    );
    assert_eq!(fake.requests().len(), requests);
}

#[tokio::test]
async fn server_errors_and_network_failures_are_transient() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |_| {});
    let label = payload("label", r#", "labels": ["a"]"#);
    fake.script(
        &format!("POST {ISSUE}/labels"),
        Script::Raw(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    );
    let result = deliver(&github, "01", &label, 1).await;
    assert_eq!(
        (result.outcome, result.code),
        (Outcome::Transient, Some(502))
    );
    assert_eq!(
        result.detail,
        "GitHub 502: not a GitHub answer: <html><body><h1>502 Bad Gateway</h1></body></html>"
    );
    fake.script(
        &format!("POST {ISSUE}/labels"),
        Script::Reply(503, Vec::new(), json!({"message": "Service Unavailable"})),
    );
    assert_eq!(
        deliver(&github, "01", &label, 1).await.outcome,
        Outcome::Transient
    );
    fake.script(&format!("POST {ISSUE}/labels"), Script::Drop);
    let result = deliver(&github, "01", &label, 1).await;
    assert_eq!((result.outcome, result.code), (Outcome::Transient, None));
    // A failure while looking before acting is transient too, and acts on nothing.
    fake.script(
        &format!("GET {PR}/merge"),
        Script::Reply(500, Vec::new(), json!({"message": "oops"})),
    );
    let result = deliver(&github, "01", &payload("merge", ""), 2).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(
        result.detail,
        "checking what an earlier attempt did: GitHub 500: oops"
    );
    assert!(!pr(&mut fake.state()).merged);

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = GithubConfig::new(TOKEN.parse().unwrap());
    config.api_base = format!("http://127.0.0.1:{port}");
    let github = GithubConnector::new(config, fake.clock.shared()).unwrap();
    let result = deliver(&github, "01", &label, 1).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert!(
        result.detail.starts_with("could not connect"),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn pages_outside_the_api_base_are_not_followed() {
    let fake = FakeGithub::start().await;
    let github = connector(&fake, |c| c.login = Some(LOGIN.into()));
    fake.script(
        &format!("GET {PR}/reviews"),
        Script::Reply(
            200,
            vec![(
                "link",
                "<https://evil.example/reviews?page=2>; rel=\"next\"".into(),
            )],
            json!([]),
        ),
    );
    let result = deliver(&github, "01", &payload("approve", ""), 2).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(
        result.detail,
        "checking what an earlier attempt did: the next page is outside `api_base`, and the \
         token is not sent there; not repeated, in case it was done"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_token_never_shows_in_debug_serialize_details_or_errors() {
    let fake = FakeGithub::start().await;
    let mut config = GithubConfig::new(TOKEN.parse().unwrap());
    config.api_base = fake.base();
    let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        shown.contains("GithubToken(ghp_***)") && shown.contains(r#""token":"ghp_***""#),
        "{shown}"
    );
    let github = GithubConnector::new(config, fake.clock.shared()).unwrap();
    let any = AnyConnector::from(github.clone());
    assert!(!format!("{github:?} {any:?}").contains(SECRET));
    // A proxy that echoes the request's headers in its error page.
    fake.script(
        &format!("PATCH {ISSUE}"),
        Script::Reply(
            400,
            Vec::new(),
            json!({"message": format!("bad header Authorization: Bearer {TOKEN}")}),
        ),
    );
    let result = deliver(&github, "01", &payload("close", ""), 1).await;
    assert_eq!(
        result.detail,
        "GitHub 400: bad header Authorization: Bearer ***"
    );
    // Errors naming the token field never repeat it.
    let err = serde_json::from_value::<GithubToken>(json!("ghp_sEcReT with space")).unwrap_err();
    assert!(!err.to_string().contains("sEcReT"), "{err}");
}

#[tokio::test]
async fn any_connector_delegates_to_github() {
    let fake = FakeGithub::start().await;
    let any = AnyConnector::from(connector(&fake, |_| {}));
    let result = any
        .deliver(&Delivery {
            message_id: "01",
            destination: "github",
            payload: &payload("close", ""),
            attempt: 1,
            traceparent: None,
        })
        .await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert!(pr(&mut fake.state()).closed);
}

/// Twenty messages written at once through one token, each asking the pace first and waiting
/// (on the manual clock, as the relay's deferral would) when refused.
#[tokio::test]
async fn twenty_concurrent_writers_go_one_at_a_time_a_second_apart() {
    let fake = FakeGithub::start().await;
    fake.state().write_takes = Duration::from_millis(300);
    let github = connector(&fake, |_| {});
    let pace = Arc::new(WritePace::new(
        github.min_write_interval(),
        fake.clock.shared(),
    ));
    let clock = fake.clock.clone();
    let refusals = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    // Writers asleep on a refusal.
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for n in 0..20 {
        let (github, pace, clock) = (github.clone(), pace.clone(), clock.clone());
        let (refusals, waiting) = (refusals.clone(), waiting.clone());
        let id = format!("message-{n:02}");
        writers.push(tokio::spawn(async move {
            let label = payload("label", &format!(r#", "labels": ["l{n}"]"#));
            loop {
                match pace.try_acquire(&id) {
                    Ok(permit) => {
                        let result = deliver(&github, &id, &label, 1).await;
                        drop(permit);
                        return result;
                    }
                    Err(refused) => {
                        *refusals.lock().unwrap().entry(id.clone()).or_default() += 1;
                        waiting.fetch_add(1, Ordering::SeqCst);
                        clock.sleep(refused.wait).await;
                        waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Move time only when every writer waits on the clock — refused, or its write held by the
    // fake — so that nothing else can happen before the next wake-up. (The test runs on one
    // thread: the real millisecond lets every woken task run first.)
    while writers.iter().any(|w| !w.is_finished()) {
        let running = writers.iter().filter(|w| !w.is_finished()).count();
        if waiting.load(Ordering::SeqCst) + fake.state().writes_in_flight == running {
            clock.advance_to_next_sleep();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for writer in writers {
        assert_eq!(writer.await.unwrap().outcome, Outcome::Success);
    }
    let mut state = fake.state();
    assert_eq!(pr(&mut state).labels.len(), 20);
    assert_eq!(state.most_writes_in_flight, 1, "never two writes in flight");
    let starts: Vec<Instant> = state.requests.iter().map(|r| r.at).collect();
    for pair in starts.windows(2) {
        // Each started a second after the one before finished (300 ms after it started).
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(1300),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    let total = *starts.last().unwrap() - starts[0];
    assert!(
        total < Duration::from_secs(27),
        "{total:?}: no herd, no gaps"
    );
    let refusals = refusals.lock().unwrap();
    let most = refusals.values().max().copied().unwrap_or(0);
    assert!(
        most <= 2,
        "a writer waits in line, not in a herd: {refusals:?}"
    );
}

/// A change to a configuration, for validation cases.
type Edit = dyn Fn(&mut GithubConfig);

#[test]
fn config_defaults_and_validation() {
    let config: GithubConfig = toml::from_str(&format!("token = \"{TOKEN}\"")).unwrap();
    assert_eq!(config.api_base, DEFAULT_API_BASE);
    assert_eq!(
        config.user_agent,
        concat!("ferrule/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.min_write_interval, Duration::from_secs(1));
    assert_eq!(config.login, None);
    assert_eq!(config.secondary_limit, SecondaryLimit::default());
    assert_eq!(config.secondary_limit.first_wait, MINUTE);
    assert_eq!(config.secondary_limit.max_tries, 6);
    config.validate().unwrap();

    let full: GithubConfig = toml::from_str(&format!(
        r#"
        token = "{TOKEN}"
        api_base = "https://ghe.example.com/api/v3/"
        user_agent = "acme-bot"
        timeout = "10s"
        min_write_interval = "3s"
        login = "acme-app[bot]"
        secondary_limit = {{ first_wait = "2m", max_tries = 3 }}
        "#
    ))
    .unwrap();
    assert_eq!(
        full.parse_api_base().unwrap(),
        "https://ghe.example.com/api/v3"
    );
    assert_eq!(full.min_write_interval, Duration::from_secs(3));
    assert_eq!(full.secondary_limit.first_wait, 2 * MINUTE);
    assert_eq!(full.secondary_limit.max_wait, 30 * MINUTE);
    assert_eq!(full.login.as_deref(), Some("acme-app[bot]"));

    let field = |edit: &Edit| {
        let mut config = GithubConfig::new(TOKEN.parse().unwrap());
        edit(&mut config);
        config.validate().unwrap_err().field().map(str::to_owned)
    };
    let cases: [(&Edit, &str); 9] = [
        (
            &|c| c.api_base = "http://ghe.example.com".into(),
            "api_base",
        ),
        (
            &|c| c.api_base = "https://ghe.example.com/?x=1".into(),
            "api_base",
        ),
        (&|c| c.user_agent = " ".into(), "user_agent"),
        (&|c| c.user_agent = "bot\n".into(), "user_agent"),
        (&|c| c.timeout = Duration::ZERO, "timeout"),
        (&|c| c.login = Some("not a login".into()), "login"),
        (
            &|c| c.secondary_limit.first_wait = Duration::from_secs(59),
            "secondary_limit.first_wait",
        ),
        (
            &|c| c.secondary_limit.max_wait = Duration::from_secs(30),
            "secondary_limit.max_wait",
        ),
        (
            &|c| c.secondary_limit.max_tries = 0,
            "secondary_limit.max_tries",
        ),
    ];
    for (edit, expected) in cases {
        assert_eq!(field(edit).as_deref(), Some(expected));
    }
    assert!(toml::from_str::<GithubConfig>(&format!("token = \"{TOKEN}\"\ncolour = 1")).is_err());
    for bad in ["", "ghp_", "two words", "trailing\n"] {
        let err = bad.parse::<GithubToken>().unwrap_err();
        assert_eq!(err.field(), Some("token"), "{bad:?}");
    }
    // Tokens of every kind are accepted, and show only their kind.
    for (token, shown) in [
        (
            "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuv",
            "GithubToken(github_pat_***)",
        ),
        (
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
            "GithubToken(ghs_***)",
        ),
        (
            "0123456789abcdef0123456789abcdef01234567",
            "GithubToken(***)",
        ),
    ] {
        assert_eq!(
            format!("{:?}", token.parse::<GithubToken>().unwrap()),
            shown
        );
    }
    let a = connector_for(TOKEN, "https://api.github.com");
    assert!(a.shares_token_with(&connector_for(TOKEN, "https://api.github.com/")));
    assert!(!a.shares_token_with(&connector_for(TOKEN, "https://ghe.example.com/api/v3")));
    assert!(!a.shares_token_with(&connector_for("ghp_other", "https://api.github.com")));
}

fn connector_for(token: &str, api_base: &str) -> GithubConnector {
    let mut config = GithubConfig::new(token.parse().unwrap());
    config.api_base = api_base.into();
    GithubConnector::new(config, ferrule_policy::clock::system()).unwrap()
}
