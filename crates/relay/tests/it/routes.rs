//! Routes end to end, through the real HTTP API, on SQLite and PostgreSQL: the shipped
//! `deploy/routes/github-pr.toml` against the fake Bot API, the fake GitHub and the SMTP sink.
//! A GitHub review-request mail starts one run (twice posted, still one); its card carries the
//! wait's token in every button; a press approves on GitHub once however often it is pressed,
//! edits the card and replies by mail in the thread; a press by someone not allowed, or after
//! the wait ran out, changes nothing; Telegram down sends the fallback mail; GitHub down fails
//! the run with the reason in its timeline.

use std::time::Duration;

use ferrule::Config;
use ferrule::config::{
    DestinationConfig, DestinationKind, EmailSourceConfig, InboundConfig, InboundMode, RouteConfig,
    Secret,
};
use ferrule_connectors::testing::fake_github::{FakeGithub, Script, TOKEN as GITHUB_TOKEN};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, BotReply, FakeBotApi};
use crate::smtp::smtp;
use crate::smtp_sink::SmtpSink;
use crate::support::{Backend, TestRelay, start_on};

pub(crate) const WAIT: Duration = Duration::from_secs(15);
const SECRET_TOKEN: &str = "route-webhook-secret";
pub(crate) const MAIL_SECRET: &str = "mail-secret_0123456789";
/// The chat the card goes to.
pub(crate) const CHAT: i64 = 4242;
/// The user allowed to press.
const ALLOWED: i64 = 1001;

/// The stand-ins a route run talks to.
pub(crate) struct World {
    pub(crate) bot: FakeBotApi,
    pub(crate) github: FakeGithub,
    pub(crate) sink: SmtpSink,
}

impl World {
    pub(crate) async fn start() -> World {
        World {
            bot: FakeBotApi::start().await,
            github: FakeGithub::start().await,
            sink: SmtpSink::start().await,
        }
    }
}

/// The shipped golden-path route, its chat mapped to [`CHAT`] and [`ALLOWED`] the one who may
/// press.
fn golden_route() -> RouteConfig {
    #[derive(Deserialize)]
    struct File {
        routes: Vec<RouteConfig>,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/routes/github-pr.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut file: File = toml::from_str(&text).unwrap();
    let mut route = file.routes.remove(0);
    route.chats[0].chat_id = CHAT;
    for step in &mut route.steps {
        if !step.allowed_users.is_empty() {
            step.allowed_users = vec![ALLOWED];
        }
    }
    route
}

/// The relay's config: `telegram` (webhook updates), `github`, `mail`, the `github` mail
/// source and the golden route, each destination retrying after 1 s at most 3 times.
pub(crate) fn setup(world: &World) -> impl FnOnce(&mut Config) + use<> {
    let bot = world.bot.base.clone();
    let github = world.github.base();
    let port = world.sink.port;
    move |c: &mut Config| {
        let retry = json!({"backoff": {"kind": "fixed", "delay": "200ms"}, "jitter": "none", "max_attempts": 3});
        c.destinations.push(DestinationConfig {
            name: "telegram".into(),
            kind: DestinationKind::Telegram,
            bot_token: Some(Secret::new(BOT_TOKEN)),
            api_base: Some(bot),
            timeout: Some(Duration::from_secs(2)),
            retry: Some(retry.clone()),
            inbound: Some(InboundConfig {
                mode: InboundMode::Webhook,
                secret_token: Some(Secret::new(SECRET_TOKEN)),
                forward_to: None,
                callback_answer: None,
                poll_timeout: None,
            }),
            ..DestinationConfig::default()
        });
        c.destinations.push(DestinationConfig {
            name: "github".into(),
            kind: DestinationKind::Github,
            token: Some(Secret::new(GITHUB_TOKEN)),
            api_base: Some(github),
            user_agent: Some("ferrule-tests".into()),
            timeout: Some(Duration::from_secs(5)),
            min_write_interval: Some(Duration::from_millis(1)),
            retry: Some(retry.clone()),
            ..DestinationConfig::default()
        });
        let mut mail = smtp("mail", port);
        mail.retry = Some(retry);
        c.destinations.push(mail);
        c.inbound.email.push(EmailSourceConfig {
            name: "github".into(),
            secret: Some(Secret::new(MAIL_SECRET)),
            forward_to: None,
            max_size: None,
        });
        c.routes.push(golden_route());
    }
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/mail/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Posts the review-request mail; answers the run id and whether it was new.
async fn post_mail(relay: &TestRelay) -> (String, bool) {
    let response = relay
        .http
        .post(format!("{}/v1/inbound/email/github", relay.base))
        .bearer_auth(MAIL_SECRET)
        .header("content-type", "message/rfc822")
        .body(fixture("github-review-requested.eml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let run = &body["runs"][0];
    assert_eq!(run["route"], "github-pr", "{body}");
    (
        run["run"].as_str().unwrap().to_owned(),
        run["created"].as_bool().unwrap(),
    )
}

/// `GET /v1/runs/{id}`.
async fn run(relay: &TestRelay, id: &str) -> Value {
    let (status, body) = relay
        .call(Method::GET, &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the run's status is `status`; answers its detail.
pub(crate) async fn wait_for_run(relay: &TestRelay, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let detail = run(relay, id).await;
        if detail["run"]["status"] == status {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never became {status}: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The card the bot sent: its buttons' callback data by action.
async fn card(world: &World) -> Vec<(String, String)> {
    let sends = world.bot.wait_for_calls("sendMessage", 1, WAIT).await;
    let keyboard = &sends[0].params["reply_markup"]["inline_keyboard"][0];
    keyboard
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let data = b["callback_data"].as_str().unwrap().to_owned();
            let action = data.rsplit_once(':').unwrap().1.to_owned();
            (action, data)
        })
        .collect()
}

fn data_of(card: &[(String, String)], action: &str) -> String {
    card.iter().find(|(a, _)| a == action).unwrap().1.clone()
}

/// A press of the button with `data` by `user`, as Telegram posts it.
async fn press(relay: &TestRelay, update_id: i64, user: i64, data: &str) -> Value {
    let update = json!({"update_id": update_id, "callback_query": {
        "id": format!("q{update_id}"),
        "from": {"id": user, "is_bot": false, "first_name": "Ada", "username": "ada"},
        "data": data,
        "message": {"message_id": 1, "date": 1, "chat": {"id": CHAT, "type": "private"}}}});
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/telegram/telegram/webhook",
            Some(update),
            None,
            &[("X-Telegram-Bot-Api-Secret-Token", SECRET_TOKEN)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The texts the presses were answered with, in order.
async fn answers(world: &World, n: usize) -> Vec<String> {
    world
        .bot
        .wait_for_calls("answerCallbackQuery", n, WAIT)
        .await
        .iter()
        .map(|r| r.params["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn approvals(github: &FakeGithub) -> usize {
    github
        .lines()
        .iter()
        .filter(|l| l.starts_with("POST /repos/octo/hello/pulls/43/reviews"))
        .count()
}

async fn approve_path(backend: Backend) {
    let world = World::start().await;
    let relay = start_on(backend, setup(&world)).await;
    let (id, created) = post_mail(&relay).await;
    assert!(created);
    // The same mail again (the mail service retried): the same run.
    let (again, created) = post_mail(&relay).await;
    assert_eq!((again.as_str(), created), (id.as_str(), false));

    let card = card(&world).await;
    let actions: Vec<&str> = card.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["approve", "comment", "merge"]);
    assert!(card.iter().all(|(_, d)| d.len() <= 64));
    let sent = &world.bot.calls("sendMessage")[0].params;
    assert_eq!(sent["chat_id"], CHAT);
    assert!(
        sent["text"]
            .as_str()
            .unwrap()
            .contains("https://github.com/octo/hello/pull/43"),
        "{sent}"
    );
    let waiting = wait_for_run(&relay, &id, "waiting").await;
    assert_eq!(waiting["run"]["state"], "awaiting_callback");

    press(&relay, 1, ALLOWED, &data_of(&card, "approve")).await;
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(done["run"]["state"], "completed", "{done:#}");
    assert_eq!(approvals(&world.github), 1);
    // The card edited to say who did what.
    let edits = world.bot.wait_for_calls("editMessageText", 1, WAIT).await;
    let text = edits[0].params["text"].as_str().unwrap();
    assert!(text.contains("approve by @ada: done"), "{text}");
    // The reply in the notification's thread, to the team, never to GitHub's reply address.
    let mails = world.sink.wait_for_mails(1, WAIT).await;
    assert_eq!(mails[0].to, ["team@example.com"]);
    assert_eq!(
        mails[0].header("In-Reply-To").as_deref(),
        Some("<octo/hello/pull/43@github.com>")
    );
    // A second press, and Telegram posting the first again: answered, nothing done twice.
    press(&relay, 2, ALLOWED, &data_of(&card, "approve")).await;
    press(&relay, 1, ALLOWED, &data_of(&card, "approve")).await;
    let texts = answers(&world, 3).await;
    assert_eq!(texts, ["Received", "Already handled", "Already handled"]);
    assert_eq!(approvals(&world.github), 1);

    // The timeline: each step once, in order, with the press.
    let detail = run(&relay, &id).await;
    let states: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    for state in [
        "processed",
        "awaiting_callback",
        "callback_received",
        "github_action_executed",
        "confirmed",
        "completed",
    ] {
        assert!(states.contains(&state), "{state} missing from {states:?}");
    }
    // The reply's own state is in the detail of the change that also ended the run.
    let last = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["detail"], "step `reply` succeeded: email_reply_sent",
        "{last}"
    );
    let wait = &detail["waits"][0];
    assert_eq!(wait["state"], "consumed");
    assert_eq!(wait["action"], "approve");
    assert_eq!(wait["consumed_by"], ALLOWED.to_string());
    let steps: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] != "ferrule:timer")
        .map(|m| m["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["card", "approve", "confirm", "reply"]);
    // Listed, and counted in the route's statistics without the wait.
    let runs = relay
        .page("/v1/runs?route=github-pr&state=completed", "runs")
        .await;
    assert_eq!(runs.len(), 1);
    let (status, stats) = relay
        .call(Method::GET, "/v1/routes/github-pr/stats?window=1h", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["finished"]["completed"], 1);
    assert_eq!(stats["success_rate"], 1.0);
    // Counted (the metrics are the test process's, shared by every test: at least).
    let (_, text) = relay.call(Method::GET, "/metrics", None).await;
    let text = text.as_str().unwrap().to_owned();
    for (series, least) in [
        ("ferrule_runs_started_total{route=\"github-pr\"}", 1.0),
        (
            "ferrule_runs_finished_total{route=\"github-pr\",status=\"completed\"}",
            1.0,
        ),
        (
            "ferrule_route_steps_total{route=\"github-pr\",outcome=\"delivered\"}",
            4.0,
        ),
        ("ferrule_route_presses_total{result=\"accepted\"}", 1.0),
        (
            "ferrule_route_presses_total{result=\"already_handled\"}",
            2.0,
        ),
    ] {
        assert!(
            crate::support::metric(&text, series) >= least,
            "{series}\n{text}"
        );
    }
}

#[tokio::test]
async fn approve_path_runs_each_step_once_on_sqlite() {
    approve_path(Backend::Sqlite).await;
}

#[tokio::test]
async fn approve_path_runs_each_step_once_on_postgres() {
    approve_path(Backend::Postgres).await;
}

async fn refusals(backend: Backend) {
    let world = World::start().await;
    let relay = start_on(backend, setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let card = card(&world).await;
    wait_for_run(&relay, &id, "waiting").await;
    // Someone not allowed: refused, the run still waits.
    press(&relay, 1, 999, &data_of(&card, "merge")).await;
    assert_eq!(
        answers(&world, 1).await,
        ["You are not allowed to answer this"]
    );
    assert_eq!(run(&relay, &id).await["run"]["status"], "waiting");
    // Data that is no token of ours: answered, nothing happens.
    press(&relay, 2, ALLOWED, "AAAAAAAAAAAAAAAAAAAAAA:approve").await;
    // An API signal with an action the card does not offer.
    let (status, body) = relay
        .call(
            Method::POST,
            &format!("/v1/runs/{id}/signal"),
            Some(json!({"action": "rebase"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_action");
    // Cancelled: the wait closes; a press afterwards is "Expired" and changes nothing.
    let (status, body) = relay
        .call(Method::POST, &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["run"]["status"], "cancelled");
    press(&relay, 3, ALLOWED, &data_of(&card, "approve")).await;
    let texts = answers(&world, 3).await;
    assert_eq!(
        texts[1], "",
        "not a route's button: the destination's own answer (none)"
    );
    assert_eq!(texts[2], "Expired");
    assert_eq!(approvals(&world.github), 0);
    let (status, _) = relay
        .call(Method::POST, &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_press_by_someone_not_allowed_or_after_the_end_changes_nothing_on_sqlite() {
    refusals(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_press_by_someone_not_allowed_or_after_the_end_changes_nothing_on_postgres() {
    refusals(Backend::Postgres).await;
}

async fn telegram_down(backend: Backend) {
    let world = World::start().await;
    world.bot.script(
        &CHAT.to_string(),
        [BotReply::Down, BotReply::Down, BotReply::Down],
    );
    let relay = start_on(backend, setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(done["run"]["state"], "fallback_sent", "{done:#}");
    let mails = world.sink.wait_for_mails(1, WAIT).await;
    assert!(
        mails[0]
            .data
            .contains("https://github.com/octo/hello/pull/43")
    );
    assert!(
        done["run"]["last_error"]
            .as_str()
            .unwrap()
            .contains("step `card` failed"),
        "{done:#}"
    );
    // The card's message is dead; its wait never saw a press.
    let card = done["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["step"] == "card")
        .unwrap()
        .clone();
    assert_eq!(card["status"], "dead");
    assert_eq!(card["attempts"], 3);
    assert_eq!(approvals(&world.github), 0);
}

#[tokio::test]
async fn telegram_down_sends_the_fallback_mail_on_sqlite() {
    telegram_down(Backend::Sqlite).await;
}

#[tokio::test]
async fn telegram_down_sends_the_fallback_mail_on_postgres() {
    telegram_down(Backend::Postgres).await;
}

async fn github_down(backend: Backend) {
    let world = World::start().await;
    for _ in 0..3 {
        world.github.script(
            "POST /repos/octo/hello/pulls/43/reviews",
            Script::Reply(502, vec![], json!({"message": "Server Error"})),
        );
    }
    let relay = start_on(backend, setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let card = card(&world).await;
    wait_for_run(&relay, &id, "waiting").await;
    press(&relay, 1, ALLOWED, &data_of(&card, "approve")).await;
    let failed = wait_for_run(&relay, &id, "failed").await;
    let error = failed["run"]["last_error"].as_str().unwrap();
    assert!(error.contains("step `approve` failed"), "{error}");
    assert!(error.contains("502"), "{error}");
    let events = failed["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["detail"].as_str().is_some_and(|d| d.contains("502"))),
        "the reason is in the timeline: {failed:#}"
    );
    let approve = failed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["step"] == "approve")
        .unwrap()
        .clone();
    assert_eq!(
        (approve["status"].as_str(), approve["attempts"].as_u64()),
        (Some("dead"), Some(3))
    );
    // Retried by an operator once GitHub is back: the step runs again and the run completes.
    let (status, body) = relay
        .call(Method::POST, &format!("/v1/runs/{id}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(done["run"]["state"], "completed");
    assert_eq!(approvals(&world.github), 4, "three 502s, then the approval");
}

#[tokio::test]
async fn github_down_fails_the_run_with_the_reason_then_a_retry_completes_it_on_sqlite() {
    github_down(Backend::Sqlite).await;
}

#[tokio::test]
async fn github_down_fails_the_run_with_the_reason_then_a_retry_completes_it_on_postgres() {
    github_down(Backend::Postgres).await;
}

/// A message from [`ALLOWED`] replying to message `to` with `text`.
async fn reply_to(relay: &TestRelay, update_id: i64, to: i64, text: &str) {
    let update = json!({"update_id": update_id, "message": {
        "message_id": 100 + update_id, "date": 1, "text": text,
        "chat": {"id": CHAT, "type": "private"},
        "from": {"id": ALLOWED, "is_bot": false, "first_name": "Ada", "username": "ada"},
        "reply_to_message": {"message_id": to, "date": 1, "chat": {"id": CHAT, "type": "private"}}}});
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/telegram/telegram/webhook",
            Some(update),
            None,
            &[("X-Telegram-Bot-Api-Secret-Token", SECRET_TOKEN)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn comment_path(backend: Backend) {
    let world = World::start().await;
    let relay = start_on(backend, setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let card = card(&world).await;
    wait_for_run(&relay, &id, "waiting").await;
    press(&relay, 1, ALLOWED, &data_of(&card, "comment")).await;
    // The prompt asks for a reply, under the card.
    let sends = world.bot.wait_for_calls("sendMessage", 2, WAIT).await;
    let prompt = &sends[1].params;
    assert_eq!(
        prompt["reply_markup"],
        json!({"force_reply": true}),
        "{prompt}"
    );
    assert_eq!(prompt["reply_parameters"]["message_id"], 1);
    let waiting = wait_for_run(&relay, &id, "waiting").await;
    assert_eq!(waiting["run"]["state"], "awaiting_comment");
    // A message that replies to something else is no comment.
    reply_to(&relay, 2, 77, "unrelated").await;
    reply_to(&relay, 3, 1, "Looks good, ship it").await;
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(
        done["run"]["context"]["steps"]["comment"]["text"],
        "Looks good, ship it"
    );
    let comments: Vec<_> = world
        .github
        .requests()
        .into_iter()
        .filter(|r| r.line() == "POST /repos/octo/hello/issues/43/comments")
        .collect();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body["body"]
            .as_str()
            .unwrap()
            .contains("Looks good, ship it"),
        "{}",
        comments[0].body
    );
    // The same reply delivered again changes nothing.
    reply_to(&relay, 3, 1, "Looks good, ship it").await;
    assert_eq!(
        run(&relay, &id).await["run"]["version"],
        done["run"]["version"]
    );
}

#[tokio::test]
async fn comment_path_posts_the_reply_to_the_prompt_on_sqlite() {
    comment_path(Backend::Sqlite).await;
}

#[tokio::test]
async fn comment_path_posts_the_reply_to_the_prompt_on_postgres() {
    comment_path(Backend::Postgres).await;
}

async fn merge_conflict(backend: Backend) {
    let world = World::start().await;
    world.github.script(
        "PUT /repos/octo/hello/pulls/43/merge",
        Script::Reply(
            409,
            vec![],
            json!({"message": "Head branch was modified. Review and try the merge again."}),
        ),
    );
    let relay = start_on(backend, setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let card = card(&world).await;
    wait_for_run(&relay, &id, "waiting").await;
    press(&relay, 1, ALLOWED, &data_of(&card, "merge")).await;
    // The card is edited to say so, with the buttons offered again under a new token.
    let edits = world.bot.wait_for_calls("editMessageText", 1, WAIT).await;
    let edit = &edits[0].params;
    assert!(
        edit["text"].as_str().unwrap().contains("Merging failed"),
        "{edit}"
    );
    let again: Vec<String> = edit["reply_markup"]["inline_keyboard"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["callback_data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again.len(), 3);
    assert_ne!(again[2], data_of(&card, "merge"), "a new wait, a new token");
    wait_for_run(&relay, &id, "waiting").await;
    // The old card's buttons are spent.
    press(&relay, 2, ALLOWED, &data_of(&card, "merge")).await;
    press(&relay, 3, ALLOWED, &again[2]).await;
    let done = wait_for_run(&relay, &id, "completed").await;
    assert_eq!(done["run"]["state"], "completed", "{done:#}");
    let texts = answers(&world, 3).await;
    assert_eq!(texts, ["Received", "Already handled", "Received"]);
    let merges = world
        .github
        .lines()
        .iter()
        .filter(|l| *l == "PUT /repos/octo/hello/pulls/43/merge")
        .count();
    assert_eq!(merges, 2, "the refused merge and the merge");
    assert!(world.github.state().thread("octo/hello", 43).merged);
    let edits = world.bot.wait_for_calls("editMessageText", 2, WAIT).await;
    let text = edits[1].params["text"].as_str().unwrap();
    assert!(text.contains("merge by @ada: done"), "{text}");
}

#[tokio::test]
async fn merge_refused_offers_the_buttons_again_on_sqlite() {
    merge_conflict(Backend::Sqlite).await;
}

#[tokio::test]
async fn merge_refused_offers_the_buttons_again_on_postgres() {
    merge_conflict(Backend::Postgres).await;
}

#[tokio::test]
async fn a_press_after_the_wait_ran_out_is_expired_and_the_timer_ends_the_run() {
    let world = World::start().await;
    let clock = ferrule_policy::ManualClock::with_system_time(std::time::SystemTime::now());
    let relay =
        crate::support::start_clock(std::sync::Arc::new(clock.clone()), setup(&world)).await;
    let (id, _) = post_mail(&relay).await;
    let card = card(&world).await;
    wait_for_run(&relay, &id, "waiting").await;
    // A day and a second later (the card's timeout is a day): the press is too late, even
    // before the timer has run.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    press(&relay, 1, ALLOWED, &data_of(&card, "approve")).await;
    assert_eq!(answers(&world, 1).await, ["Expired"]);
    assert_eq!(approvals(&world.github), 0);
    // The timer falls due: the card says so and the run ends expired.
    let deadline = tokio::time::Instant::now() + WAIT;
    let detail = loop {
        let detail = run(&relay, &id).await;
        if detail["run"]["status"] == "expired" {
            break detail;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail:#}");
        clock.advance(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(detail["run"]["state"], "expired");
    assert_eq!(detail["waits"][0]["state"], "expired");
    let edits = world.bot.wait_for_calls("editMessageText", 1, WAIT).await;
    assert!(
        edits[0].params["text"]
            .as_str()
            .unwrap()
            .contains("No answer in time")
    );
    assert_eq!(approvals(&world.github), 0);
}

/// The relay's configuration for the real binary: [`setup`]'s destinations, the mail source
/// and the shipped route, as TOML.
fn binary_config(world: &World) -> String {
    let route = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/routes/github-pr.toml"
    ))
    .unwrap()
    .replace("-1001234567890", &CHAT.to_string())
    .replace("[1001, 1002]", &format!("[{ALLOWED}]"));
    format!(
        r#"
[[destinations]]
name = "telegram"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{bot}"
timeout = "2s"
retry = {{ backoff = {{ kind = "fixed", delay = "200ms" }}, jitter = "none", max_attempts = 5 }}
inbound = {{ mode = "webhook", secret_token = "{SECRET_TOKEN}" }}

[[destinations]]
name = "github"
type = "github"
token = "{GITHUB_TOKEN}"
api_base = "{github}"
user_agent = "ferrule-tests"
min_write_interval = "1ms"
retry = {{ backoff = {{ kind = "fixed", delay = "200ms" }}, jitter = "none", max_attempts = 5 }}

[[destinations]]
name = "mail"
type = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "ferrule <relay@example.com>"
retry = {{ backoff = {{ kind = "fixed", delay = "200ms" }}, jitter = "none", max_attempts = 5 }}

[[inbound.email]]
name = "github"
secret = "{MAIL_SECRET}"

{route}
"#,
        bot = world.bot.base,
        github = world.github.base(),
        port = world.sink.port,
    )
}

/// `GET /v1/runs/{id}` of the binary at `base`.
async fn run_at(base: &str, id: &str) -> Value {
    crate::binary::get(base, &format!("/v1/runs/{id}")).await
}

/// Waits until `done` holds for the run at `base`.
async fn wait_at(base: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let detail = run_at(base, id).await;
        if done(&detail) {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id}: never {what}: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the run's message of `step` was delivered.
fn delivered(detail: &Value, step: &str) -> bool {
    detail["messages"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["step"] == step && m["status"] == "delivered")
    })
}

/// Kills the binary with SIGKILL and starts it again on the same store.
fn kill_and_restart(server: &mut crate::binary::Server, config: &std::path::Path) {
    server.signal("-9");
    server.wait_exit(WAIT);
    *server = crate::binary::Server::start(config);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_at_every_step_boundary_completes_with_each_side_effect_once() {
    let world = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::binary::write_config(dir.path(), "http://127.0.0.1:9/", &binary_config(&world));
    let mut server = crate::binary::Server::start(&config);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/inbound/email/github", server.base))
        .bearer_auth(MAIL_SECRET)
        .header("content-type", "message/rfc822")
        .body(fixture("github-review-requested.eml"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let id = body["runs"][0]["run"].as_str().unwrap().to_owned();

    // 1. The card sent and recorded: killed while the run waits.
    wait_at(&server.base, &id, "waiting", |d| {
        d["run"]["status"] == "waiting"
    })
    .await;
    kill_and_restart(&mut server, &config);
    let card = card(&world).await;
    // 2. The press consumed, the GitHub action queued (perhaps on its way): killed.
    let update = json!({"update_id": 1, "callback_query": {"id": "q1",
        "from": {"id": ALLOWED, "is_bot": false, "first_name": "Ada", "username": "ada"},
        "data": data_of(&card, "approve"),
        "message": {"message_id": 1, "date": 1, "chat": {"id": CHAT, "type": "private"}}}});
    let pressed = reqwest::Client::new()
        .post(format!("{}/v1/telegram/telegram/webhook", server.base))
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET_TOKEN)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);
    wait_at(&server.base, &id, "pressed", |d| {
        d["waits"][0]["state"] == "consumed"
    })
    .await;
    kill_and_restart(&mut server, &config);
    // 3. Approved on GitHub and recorded: killed (the card's edit perhaps on its way).
    wait_at(&server.base, &id, "approved", |d| delivered(d, "approve")).await;
    kill_and_restart(&mut server, &config);
    // 4. The card edited and recorded: killed (the reply perhaps on its way).
    wait_at(&server.base, &id, "confirmed", |d| delivered(d, "confirm")).await;
    kill_and_restart(&mut server, &config);
    // 5. Completed: killed once more, and nothing runs again.
    let done = wait_at(&server.base, &id, "completed", |d| {
        d["run"]["status"] == "completed"
    })
    .await;
    kill_and_restart(&mut server, &config);
    let after = run_at(&server.base, &id).await;
    assert_eq!(after["run"]["version"], done["run"]["version"]);

    // Each side effect once, as its receiver sees it.
    assert_eq!(world.bot.calls("sendMessage").len(), 1, "one card");
    let reviews = world.github.state().thread("octo/hello", 43).reviews.len();
    assert_eq!(reviews, 1, "one approval");
    let mails = world.sink.wait_for_mails(1, WAIT).await;
    let ids: std::collections::BTreeSet<_> = mails.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids.len(), 1, "one reply (a resend keeps its Message-ID)");
    // One message per step, each delivered; the timeline ends completed.
    let steps: Vec<(&str, &str)> = after["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] != "ferrule:timer")
        .map(|m| (m["step"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("card", "delivered"),
            ("approve", "delivered"),
            ("confirm", "delivered"),
            ("reply", "delivered")
        ]
    );
    // The CLI shows it.
    let listed = server.cli(&["runs", "list", "--route", "github-pr"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains(&id) && listed.contains("completed"),
        "{listed}"
    );
    let shown = server.cli(&["runs", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    for text in ["wait_consumed", "approve", "email_reply_sent", "delivered"] {
        assert!(shown.contains(text), "{text} missing: {shown}");
    }
}

#[tokio::test]
async fn a_circuit_open_past_fallback_after_sends_the_fallback_without_spending_retries() {
    let world = World::start().await;
    let clock = ferrule_policy::ManualClock::with_system_time(std::time::SystemTime::now());
    let relay =
        crate::support::start_clock(std::sync::Arc::new(clock.clone()), setup(&world)).await;
    let (status, body) = relay
        .call(Method::POST, "/v1/breakers/telegram/force-open", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (id, _) = post_mail(&relay).await;
    // The card waits behind the open circuit; past the route's fallback_after (10 minutes)
    // the step gives up and the fallback mail goes out.
    let deadline = tokio::time::Instant::now() + WAIT;
    let detail = loop {
        let detail = run(&relay, &id).await;
        if detail["run"]["status"] == "completed" {
            break detail;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail:#}");
        // Time runs until the card gives up; the fallback mail then goes out in real time
        // (its attempt is timed on the same clock).
        let card_dead = detail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["step"] == "card" && m["status"] == "dead");
        if !card_dead {
            clock.advance(Duration::from_secs(30));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(detail["run"]["state"], "fallback_sent");
    let card = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["step"] == "card" && m["destination"] == "telegram")
        .unwrap()
        .clone();
    assert_eq!(card["status"], "dead");
    assert!(
        card["last_error"]
            .as_str()
            .unwrap()
            .contains("fallback_after"),
        "{card}"
    );
    assert!(
        world.bot.calls("sendMessage").is_empty(),
        "never attempted: the circuit was open"
    );
    let mails = world.sink.wait_for_mails(1, WAIT).await;
    assert!(
        mails[0]
            .data
            .contains("https://github.com/octo/hello/pull/43")
    );
}
