//! Active health checks (`[destinations.health_check]`) of a real relay against stand-ins: a
//! webhook receiver's health URL, the fake Bot API (`getMe`), the SMTP sink (`NOOP`) and the
//! fake GitHub (`GET /rate_limit`); what they do to `/status`, `/metrics`, the alerts and the
//! breaker.

use std::time::{Duration, SystemTime};

use ferrule::config::{DestinationConfig, DestinationKind, HealthCheckConfig, Secret};
use ferrule_connectors::testing::fake_github::{FakeGithub, Script};
use ferrule_policy::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, FakeBotApi};
use crate::receiver::{Receiver, Reply};
use crate::smtp::smtp;
use crate::smtp_sink::SmtpSink;
use crate::support::{TOKEN, TestRelay, metric, start, start_clock, webhook};

const WAIT: Duration = Duration::from_secs(10);

/// The relay's `/metrics` text.
async fn metrics(relay: &TestRelay) -> String {
    relay
        .http
        .get(format!("{}/metrics", relay.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A check every second: unhealthy after two failures, healthy again after one pass.
fn check(url: Option<String>) -> HealthCheckConfig {
    HealthCheckConfig {
        url,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        failure_threshold: 2,
        recovery_threshold: 1,
        ..HealthCheckConfig::default()
    }
}

/// `/status` once the check of `destination` has run `n` times in all (passed or failed).
async fn after_checks(relay: &TestRelay, destination: &str, n: u64) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // The count first: a check's status is recorded before it is counted.
        let text = metrics(relay).await;
        let (_, status) = relay.call(Method::GET, "/status", None).await;
        let runs: f64 = ["pass", "fail"]
            .iter()
            .map(|r| {
                metric(
                    &text,
                    &format!(
                        "ferrule_health_checks_total{{destination=\"{destination}\",result=\"{r}\"}}"
                    ),
                )
            })
            .sum();
        if runs >= n as f64 {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} checks of {destination} did not run: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn check_of<'a>(status: &'a Value, destination: &str) -> &'a Value {
    &status["dependencies"]["destinations"][destination]["health_check"]
}

#[tokio::test]
async fn a_failing_check_makes_the_relay_unhealthy_alerts_once_and_recovers() {
    let health = Receiver::start().await;
    health.otherwise(Reply::Status(503));
    let ops = Receiver::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let url = health.url.clone();
    let ops_url = ops.url.clone();
    let relay = start_clock(clock.clone().shared(), |c| {
        let mut hook = webhook("checked-hook", "http://127.0.0.1:9/hook");
        hook.health_check = Some(check(Some(url)));
        c.destinations.push(hook);
        c.destinations.push(webhook("ops-hook", &ops_url));
        c.alerts.webhook = Some("ops-hook".into());
    })
    .await;
    // The first check runs at start: one failure is degraded.
    let status = after_checks(&relay, "checked-hook", 1).await;
    assert_eq!(status["status"], "degraded", "{status:#}");
    let hook = check_of(&status, "checked-hook");
    assert_eq!(hook["status"], "degraded", "{status:#}");
    assert_eq!(hook["critical"], true);
    assert_eq!(hook["last_error"]["message"], "answered 503", "{status:#}");
    assert_eq!(health.hits().len(), 1);
    // The second, a check interval later, makes it unhealthy: a critical check makes the
    // relay unhealthy, and one alert goes out.
    clock.advance(Duration::from_secs(1));
    let status = after_checks(&relay, "checked-hook", 2).await;
    assert_eq!(status["status"], "unhealthy", "{status:#}");
    assert_eq!(check_of(&status, "checked-hook")["status"], "unhealthy");
    assert_eq!(
        status["last_error"]["dependency"], "checked-hook.health_check",
        "{status:#}"
    );
    let text = metrics(&relay).await;
    assert_eq!(
        metric(
            &text,
            "ferrule_health_check_up{destination=\"checked-hook\"}"
        ),
        0.0
    );
    let alert = &ops.wait_for_hits(1, WAIT).await[0];
    let alert: Value = serde_json::from_slice(&alert.body).unwrap();
    assert_eq!(alert["type"], "health_check.failing", "{alert}");
    assert_eq!(alert["subject"], "checked-hook");
    // Failing again alerts nothing more.
    clock.advance(Duration::from_secs(1));
    after_checks(&relay, "checked-hook", 3).await;
    // The receiver comes back: one pass (recovery_threshold 1) makes it healthy.
    health.otherwise(Reply::Status(200));
    clock.advance(Duration::from_secs(1));
    let status = after_checks(&relay, "checked-hook", 4).await;
    assert_eq!(status["status"], "ok", "{status:#}");
    let hook = check_of(&status, "checked-hook");
    assert_eq!(hook["status"], "healthy");
    assert_eq!(hook["last_passed"]["detail"], "answered 200", "{status:#}");
    let text = metrics(&relay).await;
    assert_eq!(
        metric(
            &text,
            "ferrule_health_check_up{destination=\"checked-hook\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "ferrule_health_checks_total{destination=\"checked-hook\",result=\"fail\"}"
        ),
        3.0
    );
    let alerts = ops.wait_for_hits(2, WAIT).await;
    let kinds: Vec<String> = alerts
        .iter()
        .map(|h| {
            serde_json::from_slice::<Value>(&h.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["health_check.failing", "health_check.recovered"]);
    // Checks are not deliveries: the hook's delivery counters did not move.
    assert_eq!(
        metric(
            &text,
            "ferrule_deliveries_total{destination=\"checked-hook\",outcome=\"transient\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_non_critical_check_only_degrades_the_relay() {
    let health = Receiver::start().await;
    health.otherwise(Reply::Status(500));
    let url = health.url.clone();
    let relay = start(|c| {
        let mut hook = webhook("soft-hook", "http://127.0.0.1:9/hook");
        hook.health_check = Some(HealthCheckConfig {
            failure_threshold: 1,
            critical: false,
            ..check(Some(url))
        });
        c.destinations.push(hook);
    })
    .await;
    let status = after_checks(&relay, "soft-hook", 1).await;
    assert_eq!(
        check_of(&status, "soft-hook")["status"],
        "unhealthy",
        "{status:#}"
    );
    assert_eq!(status["status"], "degraded", "{status:#}");
}

#[tokio::test]
async fn a_passing_check_lets_deliveries_resume_before_the_open_period_ends() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(500));
    let health = Receiver::start().await;
    health.otherwise(Reply::Status(503));
    let clock = ManualClock::with_system_time(SystemTime::now());
    let (url, health_url) = (receiver.url.clone(), health.url.clone());
    let relay = start_clock(clock.clone().shared(), |c| {
        let mut hook = webhook("early-hook", &url);
        hook.retry =
            Some(json!({"backoff": {"kind": "fixed", "delay": "100ms"}, "jitter": "none"}));
        // One failure opens the circuit for an hour.
        hook.breaker = Some(json!({
            "window": {"count": 1}, "min_calls": 1, "failure_rate": 0.5,
            "open_for": "1h", "max_open_for": "1h", "open_backoff": 1.0,
        }));
        hook.health_check = Some(check(Some(health_url)));
        c.destinations.push(hook);
    })
    .await;
    let id = relay.submit("early-hook", json!({"n": 1})).await;
    receiver.wait_for_hits(1, WAIT).await;
    relay.wait_for_status(&id, "retrying", WAIT).await;
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    assert_eq!(
        breakers["breakers"][0]["breaker"]["state"], "open",
        "{breakers}"
    );
    // The receiver recovers. Its health check still fails for a while: each failing check
    // holds the circuit open, and no delivery is spent as a probe.
    receiver.otherwise(Reply::Status(200));
    for n in 2..=4 {
        clock.advance(Duration::from_secs(1));
        after_checks(&relay, "early-hook", n).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        receiver.hits().len(),
        1,
        "no delivery while the check fails"
    );
    // The check passes: the circuit half-opens now, not in an hour, and the message goes.
    health.otherwise(Reply::Status(200));
    let mut seconds = 0;
    while relay.message(&id).await["status"] != "delivered" {
        assert!(seconds < 10, "not delivered 10 s after the check passed");
        clock.advance(Duration::from_secs(1));
        seconds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.hits().len(), 2);
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    assert_eq!(
        breakers["breakers"][0]["breaker"]["state"], "closed",
        "{breakers}"
    );
}

#[tokio::test]
async fn telegram_smtp_and_github_are_checked_with_getme_noop_and_rate_limit() {
    let bot = FakeBotApi::start().await;
    let sink = SmtpSink::start().await;
    let github = FakeGithub::start().await;
    github.script(
        "GET /rate_limit",
        Script::Reply(401, vec![], json!({"message": "Bad credentials"})),
    );
    let (bot_base, github_base) = (bot.base.clone(), github.base());
    let relay = start(|c| {
        c.destinations.push(DestinationConfig {
            name: "bot".into(),
            kind: DestinationKind::Telegram,
            bot_token: Some(Secret::new(BOT_TOKEN)),
            api_base: Some(bot_base),
            health_check: Some(check(None)),
            ..DestinationConfig::default()
        });
        let mut mail = smtp("mail", sink.port);
        mail.health_check = Some(check(None));
        c.destinations.push(mail);
        c.destinations.push(DestinationConfig {
            name: "gh".into(),
            kind: DestinationKind::Github,
            token: Some(Secret::new("ghp_wrong")),
            api_base: Some(github_base),
            health_check: Some(HealthCheckConfig {
                failure_threshold: 1,
                ..check(None)
            }),
            ..DestinationConfig::default()
        });
    })
    .await;
    let status = after_checks(&relay, "bot", 1).await;
    let bot = check_of(&status, "bot");
    assert_eq!(bot["status"], "healthy", "{status:#}");
    assert_eq!(bot["last_passed"]["detail"], "bot @ferrule_test_bot");
    let status = after_checks(&relay, "mail", 1).await;
    let mail = check_of(&status, "mail");
    assert_eq!(mail["status"], "healthy", "{status:#}");
    assert!(
        mail["last_passed"]["detail"]
            .as_str()
            .unwrap()
            .ends_with("answered NOOP"),
        "{status:#}"
    );
    let status = after_checks(&relay, "gh", 1).await;
    let gh = check_of(&status, "gh");
    assert_eq!(gh["status"], "unhealthy", "{status:#}");
    assert_eq!(
        gh["last_error"]["message"],
        "GitHub rejected the token (401 Bad credentials)"
    );
    assert!(github.lines().contains(&"GET /rate_limit".to_owned()));
    assert!(
        !serde_json::to_string(&status)
            .unwrap()
            .contains("ghp_wrong")
    );
}

#[test]
fn a_health_check_is_refused_naming_the_field_it_gets_wrong() {
    let base = "[[destinations]]\nname = \"d\"\n";
    for (table, field) in [
        (
            "type = \"webhook\"\nurl = \"https://example.com/h\"\n[destinations.health_check]\n",
            "destinations[0].health_check.url",
        ),
        (
            "type = \"webhook\"\nurl = \"https://example.com/h\"\n[destinations.health_check]\nurl = \"ftp://x\"\n",
            "destinations[0].health_check.url",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:x\"\n[destinations.health_check]\nurl = \"https://example.com/\"\n",
            "destinations[0].health_check.url",
        ),
        (
            "type = \"webhook\"\nurl = \"https://example.com/h\"\n[destinations.health_check]\nurl = \"https://example.com/ok\"\ninterval = \"10s\"\ntimeout = \"20s\"\n",
            "destinations[0].health_check.timeout",
        ),
        (
            "type = \"webhook\"\nurl = \"https://example.com/h\"\n[destinations.health_check]\nurl = \"https://example.com/ok\"\ninterval = \"100ms\"\n",
            "destinations[0].health_check.interval",
        ),
        (
            "type = \"webhook\"\nurl = \"https://example.com/h\"\n[destinations.health_check]\nurl = \"https://example.com/ok\"\nexpect_status = [99]\n",
            "destinations[0].health_check.expect_status",
        ),
    ] {
        let config = ferrule::Config::from_toml_str(&format!("{base}{table}")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{table}: {err}");
    }
}
