//! The dashboard at `/ui`: sign-in and sessions, CSRF and read-only refusals, escaping of
//! hostile payloads, the audit log of its actions, and its assets' caching.

use std::time::Duration;

use ferrule::config::{ConfiguredToken, Secret};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::receiver::{Receiver, Reply};
use crate::support::{TOKEN, TestRelay, start, webhook};

const READ_ONLY: &str = "read-only-token-0123456789abcdef";

async fn relay(receiver: &Receiver) -> TestRelay {
    let url = receiver.url.clone();
    start(|c| {
        c.auth.tokens = vec![ConfiguredToken::named("ops", Secret::new(TOKEN))];
        c.auth.read_only_tokens = vec![ConfiguredToken::named("viewer", Secret::new(READ_ONLY))];
        c.destinations.push(webhook("hooks", &url));
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the hidden `csrf` field in `html`.
fn csrf_in(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of the `Set-Cookie` header setting `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(
        relay: &TestRelay,
        token: &str,
        headers: &[(&str, &str)],
    ) -> (Browser, String) {
        let http = client();
        let page = http
            .get(format!("{}/ui/login", relay.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let login = set_cookie(&page, "ferrule_login").expect("a sign-in cookie");
        let login = login.split(';').next().unwrap().to_owned();
        let csrf = csrf_in(&page.text().await.unwrap());
        let mut request = http
            .post(format!("{}/ui/login", relay.base))
            .header(COOKIE, &login)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[
                ("token", token),
                ("csrf", &csrf),
                ("next", "/ui/destinations"),
            ]));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert_eq!(answer.headers()[LOCATION], "/ui/destinations");
        let set = set_cookie(&answer, "ferrule_session").expect("a session cookie");
        let cookie = set.split(';').next().unwrap().to_owned();
        let mut browser = Browser {
            http,
            base: relay.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let (status, html) = browser.get("/ui/destinations").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        browser.csrf = csrf_in(&html);
        (browser, set)
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(fields))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn pages_need_a_session_and_send_a_visitor_to_the_sign_in_page() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let http = client();
    for path in [
        "/ui",
        "/ui/messages?status=dead",
        "/ui/dead-letters",
        "/ui/audit",
    ] {
        let r = http
            .get(format!("{}{path}", relay.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(to.starts_with("/ui/login?next=%2Fui"), "{path} → {to}");
    }
    // A session cookie the relay never made is no session.
    let r = http
        .get(format!("{}/ui", relay.base))
        .header(COOKIE, "ferrule_session=made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // htmx is told where to go instead of getting the sign-in page in a fragment.
    let r = http
        .get(format!("{}/ui", relay.base))
        .header("HX-Request", "true")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["hx-redirect"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login")
    );
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_expiring_cookie_and_every_page_answers() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let (browser, cookie) = Browser::sign_in(&relay, TOKEN, &[]).await;
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    assert!(cookie.contains("Path=/ui"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let (_, behind_tls) = Browser::sign_in(&relay, TOKEN, &[("X-Forwarded-Proto", "https")]).await;
    assert!(behind_tls.contains("; Secure"), "{behind_tls}");

    let id = relay.submit("hooks", json!({"n": 1})).await;
    relay
        .wait_for_status(&id, "delivered", Duration::from_secs(10))
        .await;
    for path in [
        "/ui",
        "/ui?range=24h",
        "/ui?range=7d",
        "/ui/destinations",
        "/ui/messages",
        "/ui/messages?status=delivered&destination=hooks&range=1h",
        "/ui/messages?payload_contains=%22n%22",
        &format!("/ui/messages/{id}"),
        "/ui/dead-letters",
        "/ui/dead-letters/preview?op=replay",
        "/ui/runs",
        "/ui/runs?show=failed",
        "/ui/inbound",
        "/ui/alerts",
        "/ui/audit",
    ] {
        let (status, html) = browser.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(html.contains("Sign out"), "{path}");
    }
    let (_, html) = browser.get("/ui/messages?status=delivered").await;
    assert!(html.contains(&id), "the delivered message is listed");
    // A bad filter is said on the page, naming what is wrong.
    let (status, html) = browser.get("/ui/messages?destination=nope").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("nope"), "{html}");
    // A wrong token is refused with the form again.
    let http = client();
    let page = http
        .get(format!("{}/ui/login", relay.base))
        .send()
        .await
        .unwrap();
    let login = set_cookie(&page, "ferrule_login").unwrap();
    let csrf = csrf_in(&page.text().await.unwrap());
    let r = http
        .post(format!("{}/ui/login", relay.base))
        .header(COOKIE, login.split(';').next().unwrap())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("token", "wrong"), ("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "ferrule_session").is_none());
    // Signing out ends the session.
    let (status, _) = browser.post("/ui/logout", &[("csrf", &browser.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = browser
        .http
        .get(format!("{}/ui", relay.base))
        .header(COOKIE, &browser.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let (browser, _) = Browser::sign_in(&relay, TOKEN, &[]).await;
    for csrf in ["", "not-the-token"] {
        let (status, html) = browser
            .post("/ui/destinations/hooks/pause", &[("csrf", csrf)])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
        assert!(html.contains("csrf"), "{html}");
    }
    let (_, body) = relay
        .call(reqwest::Method::GET, "/v1/destinations", None)
        .await;
    assert!(body["destinations"][0]["paused"].is_null(), "{body}");
    // The sign-in form has its own token, in a cookie: without it, no session.
    let http = client();
    let r = http
        .post(format!("{}/ui/login", relay.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("token", TOKEN), ("csrf", "guess")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&r, "ferrule_session").is_none());
}

#[tokio::test]
async fn a_read_only_token_sees_every_page_without_buttons_and_the_server_refuses_its_posts() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(400));
    let relay = relay(&receiver).await;
    let id = relay.submit("hooks", json!({"n": 1})).await;
    relay
        .wait_for_status(&id, "dead", Duration::from_secs(10))
        .await;
    let (browser, _) = Browser::sign_in(&relay, READ_ONLY, &[]).await;
    let (_, html) = browser.get("/ui/destinations").await;
    assert!(html.contains("viewer"), "the token's name is shown");
    assert!(
        !html.contains("Pause delivery"),
        "no buttons for a read-only token"
    );
    let (_, html) = browser.get(&format!("/ui/messages/{id}")).await;
    assert!(!html.contains(r#"id="replay""#));
    let (_, html) = browser.get("/ui/dead-letters/preview?op=replay").await;
    assert!(html.contains("read-only"), "{html}");
    assert!(!html.contains(r#"id="confirm""#));
    for (path, fields) in [
        (
            "/ui/destinations/hooks/pause",
            vec![("csrf", browser.csrf.as_str())],
        ),
        (
            "/ui/destinations/hooks/force-open",
            vec![("csrf", browser.csrf.as_str())],
        ),
        (
            &*format!("/ui/messages/{id}/replay"),
            vec![("csrf", browser.csrf.as_str())],
        ),
        (
            "/ui/dead-letters/bulk",
            vec![
                ("csrf", browser.csrf.as_str()),
                ("op", "replay"),
                ("expected", "1"),
            ],
        ),
    ] {
        let (status, html) = browser.post(path, &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
        assert!(html.contains("read-only"), "{html}");
    }
    let message = relay.message(&id).await;
    assert_eq!(message["status"], "dead");
    let breaker = relay.breaker("hooks").await;
    assert!(breaker["override"].is_null(), "{breaker}");
}

#[tokio::test]
async fn a_hostile_payload_is_shown_escaped_never_run() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let hostile = "<script>alert('owned')</script><img src=x onerror=alert(1)>";
    let id = relay.submit("hooks", json!({"text": hostile})).await;
    let (browser, _) = Browser::sign_in(&relay, TOKEN, &[]).await;
    let (status, html) = browser.get(&format!("/ui/messages/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(html.contains("&#60;script&#62;alert("), "{html}");
    // The search box echoes what was typed, escaped too.
    let (_, html) = browser
        .get("/ui/messages?payload_contains=%3Cscript%3Ealert&range=1h")
        .await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains(&id), "the search finds it");
}

#[tokio::test]
async fn dashboard_actions_are_done_and_recorded_in_the_audit_log_under_the_tokens_name() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(400), Reply::Status(400)]);
    let relay = relay(&receiver).await;
    let first = relay.submit("hooks", json!({"n": 1})).await;
    let second = relay.submit("hooks", json!({"n": 2})).await;
    for id in [&first, &second] {
        relay
            .wait_for_status(id, "dead", Duration::from_secs(10))
            .await;
    }
    let (browser, _) = Browser::sign_in(&relay, TOKEN, &[]).await;
    let csrf = browser.csrf.clone();
    let (status, _) = browser
        .post(
            "/ui/destinations/hooks/pause",
            &[("csrf", &csrf), ("reason", "deploy")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = browser.get("/ui/destinations").await;
    assert!(html.contains("paused by ops"), "{html}");
    assert!(html.contains("is paused"), "the flash says what happened");
    let (status, _) = browser
        .post("/ui/destinations/hooks/resume", &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The bulk replay: preview, confirm, job.
    let (_, html) = browser
        .get("/ui/dead-letters/preview?op=replay&destination=hooks")
        .await;
    assert!(html.contains("<strong>2</strong> dead letters"), "{html}");
    let (status, _) = browser
        .post(
            "/ui/dead-letters/bulk",
            &[
                ("csrf", &csrf),
                ("op", "replay"),
                ("expected", "2"),
                ("destination", "hooks"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    for id in [&first, &second] {
        relay
            .wait_for_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    let (_, html) = browser.get("/ui/jobs/1").await;
    assert!(html.contains("Finished"), "{html}");
    let entries = relay.page("/v1/audit", "entries").await;
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("ops", "destination.pause")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("ops", "destination.resume")),
        "{actions:?}"
    );
    let replay = entries
        .iter()
        .find(|e| e["action"] == "dead_letters.replay")
        .expect("the bulk replay is recorded");
    assert_eq!(replay["actor"], "ops");
    assert_eq!(replay["count"], 2);
    assert_eq!(replay["detail"]["via"], "dashboard");
    assert_eq!(replay["detail"]["filter"]["destination"], "hooks");
    let (_, html) = browser.get("/ui/audit").await;
    assert!(html.contains("dead_letters.replay"), "{html}");
}

#[tokio::test]
async fn assets_are_embedded_with_an_etag_and_a_long_cache_lifetime() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let http = client();
    let r = http
        .get(format!("{}/ui/assets/htmx.min.js", relay.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(r.text().await.unwrap().contains("htmx"));
    let r = http
        .get(format!("{}/ui/assets/htmx.min.js", relay.base))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = http
        .get(format!("{}/ui/assets/nope.js", relay.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_charts_and_destination_figures_are_drawn_from_the_rollups() {
    use ferrule_store::{RollupBatch, Store};
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let state = &relay.running.as_ref().unwrap().state;
    let now = std::time::SystemTime::now();
    let mut batch = RollupBatch::new();
    for i in 0..9u64 {
        let at = now - Duration::from_secs(60 * i);
        batch.delivered(
            at,
            "hooks",
            Duration::from_millis(20 + i),
            Duration::from_millis(50),
        );
    }
    batch.retried(now, "hooks", Duration::from_millis(900), "status 503");
    batch.dead_lettered(now, "hooks", Duration::from_millis(900), true, "status 400");
    state.store.add_rollups(&batch).await.unwrap();
    let (browser, _) = Browser::sign_in(&relay, TOKEN, &[]).await;
    for range in ["1h", "24h", "7d"] {
        let (status, html) = browser.get(&format!("/ui?range={range}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<svg"), "{range}: {html}");
        assert!(html.contains(r#"class="c-delivered""#), "{range}");
        assert!(html.contains(r#"class="c-dead""#), "{range}");
        assert!(
            html.contains("(11 in total"),
            "{range}: every outcome counted once"
        );
    }
    // The live panel alone, as htmx asks for it.
    let r = browser
        .http
        .get(format!("{}/ui?range=1h", relay.base))
        .header(COOKIE, &browser.cookie)
        .header("HX-Request", "true")
        .send()
        .await
        .unwrap();
    let fragment = r.text().await.unwrap();
    assert!(
        fragment.contains("<svg") && !fragment.contains("<html"),
        "{fragment}"
    );
    let (_, html) = browser.get("/ui/destinations").await;
    assert!(html.contains("90.0 %"), "9 delivered of 10 ended: {html}");
    assert!(html.contains("9 delivered, 11 attempts"), "{html}");
}

#[tokio::test]
async fn the_alerts_page_lists_the_alert_log_by_filter() {
    let receiver = Receiver::start().await;
    let relay = relay(&receiver).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    for subject in ["hooks", "other"] {
        state
            .alerts
            .raise(ferrule::alerts::Alert::health_check_failing(
                subject,
                "connection refused",
                std::time::SystemTime::now(),
            ))
            .await;
    }
    state
        .alerts
        .raise(ferrule::alerts::Alert::dead_letters(
            9,
            2,
            std::time::SystemTime::now(),
        ))
        .await;
    let (browser, _) = Browser::sign_in(&relay, READ_ONLY, &[]).await;
    let (status, html) = browser.get("/ui/alerts").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(
        html.matches("health_check.failing</td>").count(),
        2,
        "{html}"
    );
    assert!(html.contains("dead_letters.threshold</td>"), "{html}");
    assert!(html.contains("not sent: no alert destination"), "{html}");
    let (_, html) = browser
        .get("/ui/alerts?kind=health_check.failing&subject=other")
        .await;
    assert_eq!(
        html.matches("health_check.failing</td>").count(),
        1,
        "{html}"
    );
    assert!(!html.contains("dead_letters.threshold</td>"), "{html}");
    // A bad filter is said on the page, naming what is wrong.
    let (status, html) = browser.get("/ui/alerts?since=yesterday").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("`since` `yesterday`"), "{html}");
}

/// Polls `GET /status` (every 20 ms, at most 10 s) until `check` holds; answers it.
async fn status_until(
    relay: &TestRelay,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = relay.call(reqwest::Method::GET, "/status", None).await;
        if check(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {body:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn destinations_show_their_limits_live_and_the_overview_names_what_is_not_healthy() {
    let flaky = Receiver::start().await;
    flaky.script([Reply::Status(500)]);
    let limited = Receiver::start().await;
    let api = crate::fake_bot_api::FakeBotApi::start().await;
    let (flaky_url, limited_url, api_base) =
        (flaky.url.clone(), limited.url.clone(), api.base.clone());
    let relay = start(|c| {
        c.auth.tokens = vec![ConfiguredToken::named("ops", Secret::new(TOKEN))];
        c.destinations
            .push(crate::delivery::fast_retry("hooks", &flaky_url, "20ms", 5));
        let mut slow = webhook("slow", &limited_url);
        slow.rate_limit = Some(json!({"limit": 1, "per": "1h"}));
        c.destinations.push(slow);
        c.destinations.push(ferrule::config::DestinationConfig {
            name: "bot".into(),
            kind: ferrule::config::DestinationKind::Telegram,
            bot_token: Some(Secret::new(crate::fake_bot_api::BOT_TOKEN)),
            api_base: Some(api_base),
            ..Default::default()
        });
    })
    .await;
    // One failure then a delivery: `hooks` is degraded, which alone leaves the overall `ok`.
    let id = relay.submit("hooks", json!({"n": 1})).await;
    relay
        .wait_for_status(&id, "delivered", Duration::from_secs(10))
        .await;
    // The limit admits one an hour: the second message is deferred.
    for n in 0..2 {
        relay.submit("slow", json!({"n": n})).await;
    }
    let status = status_until(&relay, "a deferral for the limit", |s| {
        s["dependencies"]["destinations"]["slow"]["rate_limit"]["deferred_last_minute"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    })
    .await;
    let destinations = &status["dependencies"]["destinations"];
    assert!(
        destinations["slow"]["rate_limit"]["next_slot_at"].is_string(),
        "{status:#}"
    );
    assert!(
        destinations["hooks"].get("rate_limit").is_none(),
        "no limit, no state"
    );
    let telegram = &destinations["bot"]["rate_limit"]["telegram"];
    assert_eq!(telegram["bot_used"], 0, "{status:#}");
    assert!(telegram["bot_limit"].as_u64().unwrap() >= 1, "{status:#}");
    assert_eq!(telegram["chats_waiting"], 0);
    assert_eq!(destinations["hooks"]["health"]["status"], "degraded");
    assert_eq!(status["status"], "ok", "{status:#}");

    let (browser, _) = Browser::sign_in(&relay, TOKEN, &[]).await;
    let (_, html) = browser.get("/ui/destinations").await;
    assert!(html.contains("id=\"destination-slow\""), "{html}");
    assert!(
        html.contains("deferred in the last minute; next slot in"),
        "{html}"
    );
    assert!(html.contains("Telegram windows"), "{html}");
    assert!(html.contains("bot window 0 of"), "{html}");
    let (_, html) = browser.get("/ui").await;
    assert!(html.contains("id=\"overall\">ok<"), "{html}");
    assert!(html.contains("1 destination degraded"), "{html}");
    assert!(
        html.contains(
            "<a href=\"/ui/destinations#destination-hooks\" class=\"s-degraded\">hooks</a>"
        ),
        "{html}"
    );
}
