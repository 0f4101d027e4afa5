//! `[[schedules]]` end to end on a manual clock: each occurrence fires once with its key and
//! payload, the catch-up modes after a downtime (a real restart on the same store), pause,
//! resume and trigger through the API with their audit entries, and two relays on one
//! PostgreSQL database firing each occurrence of a per-second schedule exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ferrule::Config;
use ferrule::config::{CatchUp, ScheduleConfig, Secret};
use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{Filter, Message, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{PgSchema, TestRelay, config_in, metric, start_in, webhook};

fn t(text: &str) -> SystemTime {
    ferrule::time::parse_rfc3339(text).unwrap()
}

fn schedule(name: &str, cron: &str, catch_up: CatchUp) -> ScheduleConfig {
    ScheduleConfig {
        name: name.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        destination: Some("hook".into()),
        route: None,
        payload: Some(json!({"for": "{{ scheduled_for }}", "schedule": "{{ name }}"})),
        catch_up,
        catch_up_window: Duration::from_secs(3600),
        catch_up_max: 100,
    }
}

/// A relay on `clock` with a webhook `hook` to a closed port and `schedules`.
async fn relay(
    clock: &ManualClock,
    schedules: Vec<ScheduleConfig>,
    pg: Option<&PgSchema>,
) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = config_in(&dir);
    if let Some(pg) = pg {
        config.store.url = Secret::new(pg.url());
    }
    config
        .destinations
        .push(webhook("hook", "http://127.0.0.1:9/hook"));
    config.schedules = schedules;
    start_in(dir, config, clock.shared()).await
}

/// The messages sent to `hook`, oldest first.
async fn messages(relay: &TestRelay) -> Vec<Message> {
    let store = &relay.running.as_ref().unwrap().state.store;
    let mut page = store
        .list(&Filter::all().destination("hook"), None, 1000)
        .await
        .unwrap()
        .messages;
    page.reverse();
    page
}

/// The occurrence times of `schedule`'s messages to `hook`, from their idempotency keys.
async fn fired(relay: &TestRelay, schedule: &str) -> Vec<String> {
    let prefix = format!("schedule:{schedule}:");
    messages(relay)
        .await
        .iter()
        .filter_map(|m| {
            m.idempotency_key
                .as_deref()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect()
}

/// Waits (polling every 5 ms on tokio's timer) until `schedule`'s latest recorded occurrence
/// is the one due at `at`. The relay's sleep towards it is worked out from the clock a moment
/// before it starts, so a test's advance can land in between and leave it pending: after a
/// while the clock is nudged a second, as a late wake-up would be.
async fn recorded(relay: &TestRelay, clock: &ManualClock, schedule: &str, at: &str) -> Value {
    let store = &relay.running.as_ref().unwrap().state.store;
    for round in 0..2000 {
        let latest = store.latest_occurrences().await.unwrap();
        if let Some(o) = latest
            .iter()
            .find(|o| o.schedule == schedule && !o.manual && o.scheduled_for >= t(at))
        {
            return serde_json::to_value(o).unwrap();
        }
        if round % 100 == 99 {
            clock.advance(Duration::from_secs(1));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{schedule}: no occurrence at {at} was recorded");
}

/// The schedule named `name` as `GET /v1/schedules` shows it.
async fn shown(relay: &TestRelay, name: &str) -> Value {
    relay
        .page("/v1/schedules", "schedules")
        .await
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// Moves `clock` forward to `at` (if it is not there yet).
fn advance_to(clock: &ManualClock, at: &str) {
    if let Ok(d) = t(at).duration_since(clock.system_now()) {
        clock.advance(d);
    }
}

#[tokio::test]
async fn a_schedule_fires_each_occurrence_once_with_its_key_and_payload() {
    let clock = ManualClock::with_system_time(t("2026-01-01T00:00:30Z"));
    let relay = relay(
        &clock,
        vec![schedule("minutely", "* * * * *", CatchUp::Latest)],
        None,
    )
    .await;
    let listed = shown(&relay, "minutely").await;
    assert_eq!(listed["next"], "2026-01-01T00:01:00.000Z");
    assert_eq!(listed["last"], Value::Null);
    assert_eq!(listed["target"], "destination:hook");
    for minute in 1..=3 {
        let at = format!("2026-01-01T00:0{minute}:00Z");
        advance_to(&clock, &at);
        recorded(&relay, &clock, "minutely", &at).await;
    }
    assert_eq!(
        fired(&relay, "minutely").await,
        [
            "2026-01-01T00:01:00.000Z",
            "2026-01-01T00:02:00.000Z",
            "2026-01-01T00:03:00.000Z"
        ]
    );
    let first = &messages(&relay).await[0];
    assert_eq!(
        first.payload,
        json!({"for": "2026-01-01T00:01:00.000Z", "schedule": "minutely"})
    );
    let listed = shown(&relay, "minutely").await;
    assert_eq!(listed["last"]["scheduled_for"], "2026-01-01T00:03:00.000Z");
    assert_eq!(listed["last"]["state"], "fired");
    assert!(listed["last"]["message_id"].is_string(), "{listed}");
    assert_eq!(listed["next"], "2026-01-01T00:04:00.000Z");
    let (_, text) = relay.call(Method::GET, "/metrics", None).await;
    let text = text.as_str().unwrap();
    assert_eq!(
        metric(
            text,
            r#"ferrule_schedule_occurrences_total{schedule="minutely",outcome="fired"}"#
        ),
        3.0
    );
}

/// Fires 00:05 on a `*/5` schedule, stops for a downtime until 00:21:30 (00:10, 00:15 and
/// 00:20 missed: 00:20 is 90 s late), starts again on the same store and waits until 00:20 is
/// recorded. Answers the fired occurrences and the relay.
async fn after_downtime(
    name: &str,
    catch_up: CatchUp,
    window: Duration,
    max: u32,
) -> (Vec<String>, TestRelay) {
    let clock = ManualClock::with_system_time(t("2026-01-01T00:00:30Z"));
    let mut s = schedule(name, "*/5 * * * *", catch_up);
    s.catch_up_window = window;
    s.catch_up_max = max;
    let mut relay = relay(&clock, vec![s], None).await;
    advance_to(&clock, "2026-01-01T00:05:00Z");
    recorded(&relay, &clock, name, "2026-01-01T00:05:00Z").await;
    let config = relay.running.as_ref().unwrap().state.config.clone();
    relay.stop().await;
    advance_to(&clock, "2026-01-01T00:21:30Z");
    let running = ferrule::start(
        config,
        ferrule::StartOptions {
            clock: clock.shared(),
            banner: false,
        },
    )
    .await
    .expect("the relay starts again");
    relay.base = format!("http://{}", running.addr);
    relay.running = Some(running);
    recorded(&relay, &clock, name, "2026-01-01T00:20:00Z").await;
    (fired(&relay, name).await, relay)
}

async fn skipped_count(relay: &TestRelay, name: &str) -> f64 {
    let (_, text) = relay.call(Method::GET, "/metrics", None).await;
    metric(
        text.as_str().unwrap(),
        &format!(r#"ferrule_schedule_occurrences_total{{schedule="{name}",outcome="skipped"}}"#),
    )
}

#[tokio::test]
async fn catch_up_skip_fires_none_of_the_missed_occurrences() {
    let (fired, relay) =
        after_downtime("c-skip", CatchUp::Skip, Duration::from_secs(3600), 100).await;
    assert_eq!(fired, ["2026-01-01T00:05:00.000Z"]);
    let listed = shown(&relay, "c-skip").await;
    assert_eq!(listed["last"]["state"], "skipped");
    assert_eq!(listed["last"]["reason"], "missed; catch_up = skip");
    assert_eq!(skipped_count(&relay, "c-skip").await, 3.0);
}

#[tokio::test]
async fn catch_up_latest_fires_the_latest_missed_occurrence() {
    let (fired, relay) =
        after_downtime("c-latest", CatchUp::Latest, Duration::from_secs(3600), 100).await;
    assert_eq!(
        fired,
        ["2026-01-01T00:05:00.000Z", "2026-01-01T00:20:00.000Z"]
    );
    assert_eq!(shown(&relay, "c-latest").await["last"]["state"], "fired");
    assert_eq!(skipped_count(&relay, "c-latest").await, 2.0);
}

#[tokio::test]
async fn catch_up_all_fires_the_missed_occurrences_within_the_window_and_max() {
    // A 10-minute window leaves out 00:10 (11.5 minutes late).
    let (fired, relay) = after_downtime("c-all", CatchUp::All, Duration::from_secs(600), 100).await;
    assert_eq!(
        fired,
        [
            "2026-01-01T00:05:00.000Z",
            "2026-01-01T00:15:00.000Z",
            "2026-01-01T00:20:00.000Z"
        ]
    );
    assert_eq!(skipped_count(&relay, "c-all").await, 1.0);
    // With a whole hour but at most one.
    let (fired, _relay) =
        after_downtime("c-all-max", CatchUp::All, Duration::from_secs(3600), 1).await;
    assert_eq!(
        fired,
        ["2026-01-01T00:05:00.000Z", "2026-01-01T00:20:00.000Z"]
    );
}

#[tokio::test]
async fn a_paused_schedule_fires_nothing_and_resumes_without_catching_up() {
    let clock = ManualClock::with_system_time(t("2026-01-01T00:00:30Z"));
    let relay = relay(
        &clock,
        vec![schedule("paused", "* * * * *", CatchUp::All)],
        None,
    )
    .await;
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/schedules/paused/pause?reason=maintenance",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"]["reason"], "maintenance");
    assert_eq!(body["paused"]["paused_at"], "2026-01-01T00:00:30.000Z");
    // Three minutes pass by.
    for minute in 1..=3 {
        advance_to(&clock, &format!("2026-01-01T00:0{minute}:00Z"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    advance_to(&clock, "2026-01-01T00:03:30Z");
    let (status, body) = relay
        .call(Method::POST, "/v1/schedules/paused/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], Value::Null);
    advance_to(&clock, "2026-01-01T00:04:00Z");
    recorded(&relay, &clock, "paused", "2026-01-01T00:04:00Z").await;
    assert_eq!(
        fired(&relay, "paused").await,
        ["2026-01-01T00:04:00.000Z"],
        "nothing while paused, nothing caught up"
    );
    // A manual trigger, and the audit log.
    let (status, body) = relay
        .call(Method::POST, "/v1/schedules/paused/trigger", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["occurrence"]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let manual = messages(&relay)
        .await
        .into_iter()
        .find(|m| m.id.to_string() == id)
        .unwrap();
    assert!(
        manual
            .idempotency_key
            .as_deref()
            .unwrap()
            .starts_with("schedule:paused:manual:"),
        "{manual:?}"
    );
    let listed = shown(&relay, "paused").await;
    assert_eq!(listed["last_manual"]["message_id"], id.as_str());
    let entries = relay.page("/v1/audit", "entries").await;
    let actions: Vec<_> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("schedule.trigger", "paused"),
            ("schedule.resume", "paused"),
            ("schedule.pause", "paused")
        ]
    );
    // Unknown names are 404 with the JSON error.
    let (status, body) = relay
        .call(Method::POST, "/v1/schedules/nope/trigger", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_postgres_fire_each_occurrence_once() {
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(t("2026-01-01T00:00:00.500Z"));
    let every_second = || vec![schedule("tick", "* * * * * *", CatchUp::All)];
    let a = relay(&clock, every_second(), Some(&schema)).await;
    let b = relay(&clock, every_second(), Some(&schema)).await;
    let ticks = 40;
    for s in 1..=ticks {
        let at = format!("2026-01-01T00:00:{s:02}Z");
        advance_to(&clock, &format!("2026-01-01T00:00:{s:02}Z"));
        // Both relays have recorded or found it: each waits for its own view of the store.
        recorded(&a, &clock, "tick", &at).await;
        recorded(&b, &clock, "tick", &at).await;
    }
    let fired = fired(&a, "tick").await;
    let unique: BTreeSet<_> = fired.iter().collect();
    assert_eq!(
        unique.len(),
        fired.len(),
        "no occurrence fired twice: {fired:?}"
    );
    assert!(fired.len() >= ticks, "every tick fired: {}", fired.len());
    let (_, text) = a.call(Method::GET, "/metrics", None).await;
    let counted = metric(
        text.as_str().unwrap(),
        r#"ferrule_schedule_occurrences_total{schedule="tick",outcome="fired"}"#,
    );
    assert_eq!(
        counted as usize,
        fired.len(),
        "each counted once, by the relay that fired it"
    );
    drop((a, b));
}
