//! `/metrics` from a real relay, checked against the Prometheus text format's rules (what
//! `promtool check metrics` and the official parsers enforce), and the series it exports from
//! the start and as messages flow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ferrule::telemetry::prometheus::FAMILIES;
use ferrule_policy::{Clock, ManualClock};
use reqwest::Method;
use serde_json::json;

use crate::receiver::{Receiver, Reply};
use crate::support::{TOKEN, TestRelay, start, start_clock, webhook};

/// One family as exposed: its `# HELP`, its `# TYPE` and its samples.
#[derive(Debug, Default)]
struct Exposed {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(ok)
}

/// `name{a="x",b="y"} value` → its parts; panics naming the line on anything malformed.
fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
            let mut labels = BTreeMap::new();
            for pair in rest.split(',').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("unquoted label value in {line}"));
                assert!(
                    is_name(key, false) && !key.starts_with("__"),
                    "bad label name {key:?} in {line}"
                );
                // Prometheus allows any UTF-8; ours stay within names an operator can type.
                assert!(
                    !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.:+-".contains(c)),
                    "label value {value:?} in {line} has spaces or other characters"
                );
                assert!(
                    labels.insert(key.to_owned(), value.to_owned()).is_none(),
                    "{line}"
                );
            }
            (name, labels)
        }
    };
    assert!(is_name(name, true), "bad metric name in {line}");
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Parses a text exposition and checks the rules that matter: every family has one `# HELP`
/// and one `# TYPE` before its samples, no family appears twice or is split, names and label
/// values are well formed, counters end in `_total`, and histograms have ascending buckets
/// ending in `+Inf` that agree with `_count`.
fn exposition(text: &str) -> BTreeMap<String, Exposed> {
    let mut families: BTreeMap<String, Exposed> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut finished = BTreeSet::new();
    let mut open = |name: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(name) {
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            assert!(
                !finished.contains(name),
                "family {name} appears twice or is split"
            );
            *current = Some(name.to_owned());
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            open(name, &mut current);
            let family = families.entry(name.to_owned()).or_default();
            assert!(family.help.is_none(), "two HELP lines for {name}");
            assert!(family.samples.is_empty(), "HELP after samples for {name}");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            family.help = Some(help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            open(name, &mut current);
            let family = families.entry(name.to_owned()).or_default();
            assert!(family.kind.is_none(), "two TYPE lines for {name}");
            assert!(family.samples.is_empty(), "TYPE after samples for {name}");
            family.kind = Some(kind.to_owned());
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let sample = sample(line);
            let family = current
                .clone()
                .filter(|f| {
                    sample.name == *f
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| sample.name.strip_suffix(s) == Some(f.as_str()))
                })
                .unwrap_or_else(|| panic!("{line}: a sample outside its family's block"));
            families.get_mut(&family).unwrap().samples.push(sample);
        }
    }
    for (name, family) in &families {
        assert!(family.help.is_some(), "{name} has no HELP");
        match family.kind.as_deref() {
            Some("counter") => assert!(name.ends_with("_total"), "counter {name}"),
            Some("gauge") => assert!(!name.ends_with("_total"), "gauge {name}"),
            Some("histogram") => check_histogram(name, &family.samples),
            other => panic!("{name} has TYPE {other:?}"),
        }
    }
    families
}

fn check_histogram(name: &str, samples: &[Sample]) {
    let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let mut labels = s.labels.clone();
        labels.remove("le");
        by_series.entry(labels).or_default().push(s);
    }
    for (labels, samples) in by_series {
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| {
                let le = &s.labels["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, s.value)
            })
            .collect();
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}{labels:?}: buckets out of order"
        );
        let count = samples
            .iter()
            .find(|s| s.name == format!("{name}_count"))
            .unwrap_or_else(|| panic!("{name}{labels:?} has no _count"));
        assert_eq!(
            buckets.last().map(|b| (b.0, b.1)),
            Some((f64::INFINITY, count.value)),
            "{name}{labels:?}: the +Inf bucket is the count"
        );
        assert!(
            samples.iter().any(|s| s.name == format!("{name}_sum")),
            "{name}{labels:?} has no _sum"
        );
    }
}

/// The value of the sample `name` with exactly `labels`, if exposed.
fn value(families: &BTreeMap<String, Exposed>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// `ferrule_oldest_due_age_seconds` as `relay` exports it: the first value `settled` accepts,
/// or the last one read after 5 s.
///
/// The gauge has no labels and metrics are process-wide, so a relay of another test running
/// in this process may set it between this relay's refresh and its answer; a few scrapes see
/// this relay's value.
async fn oldest_due_age(relay: &TestRelay, settled: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let families = scrape(relay).await;
        let age = value(&families, "ferrule_oldest_due_age_seconds", &[])
            .expect("ferrule_oldest_due_age_seconds is exported");
        if settled(age) || tokio::time::Instant::now() >= deadline {
            return age;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scrape(relay: &TestRelay) -> BTreeMap<String, Exposed> {
    let response = relay
        .http
        .get(format!("{}/metrics", relay.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    exposition(&response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_follow_the_text_format_and_every_series_is_there_from_the_start() {
    let relay = start(|c| {
        c.destinations
            .push(webhook("fresh-hook", "http://127.0.0.1:9/hook"));
        c.destinations
            .push(webhook("fresh-alerts", "http://127.0.0.1:9/hook"));
        c.alerts.webhook = Some("fresh-alerts".into());
        // A schedule: its occurrence counters.
        c.schedules.push(ferrule::config::ScheduleConfig {
            name: "fresh-schedule".into(),
            cron: "0 0 1 1 *".into(),
            timezone: "UTC".into(),
            destination: Some("fresh-hook".into()),
            route: None,
            payload: None,
            catch_up: ferrule::config::CatchUp::Skip,
            catch_up_window: std::time::Duration::from_secs(3600),
            catch_up_max: 1,
        });
        // An AI API with a fallback: the proxy's families.
        for (name, fallback) in [
            ("fresh-api", vec!["fresh-api-2".to_owned()]),
            ("fresh-api-2", vec![]),
        ] {
            c.destinations.push(ferrule::config::DestinationConfig {
                name: name.into(),
                kind: ferrule::config::DestinationKind::Http,
                base_url: Some("http://127.0.0.1:9/v1".into()),
                allow_private: true,
                classifier: Some(ferrule_policy::classify::Provider::OpenAi),
                fallback,
                ..Default::default()
            });
        }
    })
    .await;
    // Before any message: every family the relay always exports, with the destination's series
    // at zero.
    let families = scrape(&relay).await;
    for family in FAMILIES {
        let inbound = family.name.contains("inbound") || family.name.contains("callback");
        if inbound || family.name.contains("health_check") {
            // only with a Telegram destination that receives updates, or one with a check
            continue;
        }
        if family.name.contains("runs_") || family.name.contains("route_") {
            continue; // only with [[routes]] (tests/it/routes.rs checks them)
        }
        if family.name.starts_with("ferrule_store_pool_") {
            continue; // only on PostgreSQL (tests/it/store_health.rs checks them)
        }
        let exposed = families
            .get(family.name)
            .unwrap_or_else(|| panic!("{} is not exported from the start", family.name));
        assert_eq!(
            exposed.help.as_deref(),
            Some(family.help),
            "{}",
            family.name
        );
        assert_eq!(exposed.kind.as_deref(), Some(family.kind.as_str()));
        for s in &exposed.samples {
            let names: BTreeSet<&str> = s
                .labels
                .keys()
                .map(String::as_str)
                .filter(|l| *l != "le")
                .collect();
            assert_eq!(names, family.labels.iter().copied().collect(), "{s:?}");
        }
    }
    // The process families are this process's own figures, read at the scrape.
    let rss = value(&families, "process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1_000_000.0, "resident memory {rss}");
    let started = value(&families, "process_start_time_seconds", &[]).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > now - 24.0 * 3600.0 && started <= now + 1.0,
        "{started}"
    );
    assert!(value(&families, "process_open_fds", &[]).unwrap() > 0.0);
    let d = [("destination", "fresh-hook")];
    for name in [
        "ferrule_submitted_total",
        "ferrule_retries_total",
        "ferrule_dead_letters_total",
        "ferrule_queue_depth",
        "ferrule_scheduled_depth",
        "ferrule_dead_letter_depth",
        "ferrule_attempt_duration_seconds_count",
        "ferrule_delivery_latency_seconds_count",
    ] {
        assert_eq!(value(&families, name, &d), Some(0.0), "{name}");
    }
    for outcome in [
        "success",
        "transient",
        "retry_after",
        "permanent",
        "ignored",
    ] {
        let labels = [("destination", "fresh-hook"), ("outcome", outcome)];
        assert_eq!(
            value(&families, "ferrule_deliveries_total", &labels),
            Some(0.0)
        );
    }
    for reason in ["circuit_open", "rate_limited", "bulkhead_full", "paused"] {
        let labels = [("destination", "fresh-hook"), ("reason", reason)];
        assert_eq!(
            value(&families, "ferrule_deferred_total", &labels),
            Some(0.0)
        );
    }
    let labels = [("kind", "breaker.opened")];
    assert!(value(&families, "ferrule_alerts_total", &labels).is_some());
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&families, "ferrule_build_info", &version), Some(1.0));
    assert!(
        !families.contains_key("ferrule_policy_breaker_state"),
        "one breaker state family, not two"
    );
    // One gauge per breaker state, following the breaker.
    let state = |families: &BTreeMap<String, Exposed>| -> Vec<String> {
        ["closed", "open", "half_open", "forced_open", "disabled"]
            .into_iter()
            .filter(|s| {
                let labels = [("destination", "fresh-hook"), ("state", s)];
                value(families, "ferrule_breaker_state", &labels) == Some(1.0)
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(state(&families), ["closed"]);
    let (status, _) = relay
        .call(Method::POST, "/v1/breakers/fresh-hook/force-open", None)
        .await;
    assert!(status.is_success());
    assert_eq!(state(&scrape(&relay).await), ["forced_open"]);
}

/// Per destination: the queue, scheduled and dead-letter depths; overall: how long the oldest
/// due message has waited; and the time from submission to delivery.
#[tokio::test]
async fn depths_lag_and_delivery_latency_follow_the_messages() {
    let receiver = Receiver::start().await;
    let (open, gate) = tokio::sync::watch::channel(false);
    receiver.script([Reply::Held(gate, 200)]);
    let clock = ManualClock::with_system_time(SystemTime::now());
    let url = receiver.url.clone();
    let relay = start_clock(clock.shared(), |c| {
        let mut d = webhook("lag-hook", &url);
        d.timeout = Some(Duration::from_secs(60));
        c.destinations.push(d);
        c.destinations
            .push(webhook("idle-hook", "http://127.0.0.1:9/hook"));
    })
    .await;
    // The second waits behind the first, which the receiver holds, in the same ordering key.
    let body =
        |n: u32| json!({"destination": "lag-hook", "payload": {"n": n}, "ordering_key": "k"});
    let (status, first) = relay
        .call(Method::POST, "/v1/messages", Some(body(1)))
        .await;
    assert!(status.is_success(), "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    receiver.wait_for_hits(1, Duration::from_secs(5)).await;
    let (status, _) = relay
        .call(Method::POST, "/v1/messages", Some(body(2)))
        .await;
    assert!(status.is_success());
    let later = ferrule::time::rfc3339(clock.system_now() + Duration::from_secs(3600));
    for _ in 0..3 {
        let scheduled = json!({"destination": "idle-hook", "payload": {}, "deliver_after": later});
        let (status, _) = relay
            .call(Method::POST, "/v1/messages", Some(scheduled))
            .await;
        assert!(status.is_success());
    }
    clock.advance(Duration::from_secs(4));
    let families = scrape(&relay).await;
    let lag = [("destination", "lag-hook")];
    let idle = [("destination", "idle-hook")];
    assert_eq!(value(&families, "ferrule_queue_depth", &lag), Some(2.0));
    assert_eq!(value(&families, "ferrule_scheduled_depth", &lag), Some(0.0));
    assert_eq!(value(&families, "ferrule_queue_depth", &idle), Some(0.0));
    assert_eq!(
        value(&families, "ferrule_scheduled_depth", &idle),
        Some(3.0)
    );
    assert_eq!(
        value(&families, "ferrule_dead_letter_depth", &idle),
        Some(0.0)
    );
    let age = oldest_due_age(&relay, |age| (4.0..4.1).contains(&age)).await;
    assert!(
        (4.0..4.1).contains(&age),
        "the second message waited 4 s: {age}"
    );

    open.send(true).unwrap();
    relay
        .wait_for_status(&first, "delivered", Duration::from_secs(5))
        .await;
    // The latency is observed just after each delivery's commit, so the depth (read from the
    // store) can reach 0 a moment before the second observation: wait for both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let families = loop {
        let families = scrape(&relay).await;
        let delivered = value(&families, "ferrule_delivery_latency_seconds_count", &lag);
        if value(&families, "ferrule_queue_depth", &lag) == Some(0.0) && delivered == Some(2.0) {
            break families;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both deliveries observed: {delivered:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(oldest_due_age(&relay, |age| age == 0.0).await, 0.0);
    // Both were delivered 4 s after they were submitted, on the relay's clock (and a fraction
    // of a millisecond: the store keeps times to the millisecond).
    let bucket = |le: &str| {
        let labels = [("destination", "lag-hook"), ("le", le)];
        value(
            &families,
            "ferrule_delivery_latency_seconds_bucket",
            &labels,
        )
    };
    assert_eq!((bucket("2.5"), bucket("5")), (Some(0.0), Some(2.0)));
    let sum = value(&families, "ferrule_delivery_latency_seconds_sum", &lag).unwrap();
    assert!((8.0..8.01).contains(&sum), "{sum}");
}

#[test]
fn the_metrics_reference_lists_every_family() {
    let doc = include_str!("../../../../docs/OBSERVABILITY.md");
    for family in FAMILIES {
        let row = format!("| `{}` | {} |", family.name, family.kind.as_str());
        assert!(
            doc.contains(&row),
            "docs/OBSERVABILITY.md lacks the row {row}"
        );
    }
}

/// Every metric the shipped alert rules and Grafana dashboard query is one the relay exports,
/// so neither silently watches a series that never exists.
#[test]
fn the_shipped_alerts_and_dashboard_query_only_exported_families() {
    let exported: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    for (file, text) in [
        (
            "deploy/prometheus/alerts.yml",
            include_str!("../../../../deploy/prometheus/alerts.yml"),
        ),
        (
            "deploy/grafana/ferrule.json",
            include_str!("../../../../deploy/grafana/ferrule.json"),
        ),
    ] {
        let mut seen = 0;
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("ferrule_") || word.starts_with("process_")) {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|base| exported.contains(base))
                .unwrap_or(word);
            assert!(
                exported.contains(family),
                "{file} queries {word}, which the relay does not export"
            );
            seen += 1;
        }
        assert!(seen >= 5, "{file} names only {seen} metrics");
    }
}

/// `server.metrics_listen`: `/metrics`, `/livez` and `/readyz` on a second address, with the
/// same tokens, and nothing else there.
#[tokio::test]
async fn a_metrics_listener_serves_the_metrics_and_probes_only() {
    let relay = start(|c| c.server.metrics_listen = Some("127.0.0.1:0".into())).await;
    let at = relay.running.as_ref().unwrap().metrics_addr.unwrap();
    assert_ne!(at.to_string(), relay.base.trim_start_matches("http://"));
    let get = |path: &str, token: Option<&str>| {
        let mut request = relay.http.get(format!("http://{at}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };
    let metrics = get("/metrics", Some(TOKEN)).await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("# TYPE ferrule_build_info gauge"), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert_eq!(get("/metrics", None).await.status(), 401);
    assert_eq!(get("/livez", None).await.status(), 200);
    assert_eq!(get("/readyz", None).await.status(), 200);
    for path in ["/status", "/v1/messages", "/v1/openapi.json"] {
        assert_eq!(get(path, Some(TOKEN)).await.status(), 404, "{path}");
    }
}

#[test]
fn a_metrics_listener_on_the_api_address_is_refused_naming_the_field() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\nmetrics_listen = \"127.0.0.1:8080\"\n";
    let config = ferrule::Config::from_toml_str(text).unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("server.metrics_listen"), "{err}");
    let text = "[server]\nmetrics_listen = \"localhost\"\n";
    let err = ferrule::Config::from_toml_str(text)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.metrics_listen") && err.contains("not an address"),
        "{err}"
    );
}
