//! Readable views of the API's JSON, for people: the status summary, a message with its
//! timeline, and tables of messages, dead letters and breakers. `--json` bypasses them and
//! prints the API's JSON unchanged.
//!
//! Every view reads the JSON defensively: a field a relay of another version does not send is
//! shown as `-`, never a panic.

use std::time::Duration;

use comfy_table::{Table, presets};
use serde_json::Value;

/// Longest payload `messages show` prints; `--json` shows it whole.
const MAX_PAYLOAD_CHARS: usize = 300;

/// Columns aligned, no borders, two spaces between columns, no trailing blanks.
fn table(header: Option<&[&str]>, rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    if let Some(header) = header {
        table.set_header(header.to_vec());
    }
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string field, or `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "-".to_owned(),
    }
}

/// An RFC 3339 time to the second (the API sends milliseconds), or `-`.
fn time(value: &Value) -> String {
    match value.as_str().and_then(crate::time::parse_rfc3339) {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => text(value),
    }
}

/// Milliseconds as `26s 847ms` (and `0ms`, where humantime would say `0s`).
fn millis(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// How many of what, with the plural when it is not one: `1 dead letter`, `3 retried`.
fn count(value: &Value, one: &str, many: &str) -> String {
    match value.as_u64() {
        Some(1) => format!("1 {one}"),
        Some(n) => format!("{n} {many}"),
        None => format!("- {many}"),
    }
}

/// A breaker's state for people: `closed`, `open, 26s 847ms left`, with its window's failures.
fn breaker(b: &Value) -> String {
    let mut shown = text(&b["state"]).replace('_', " ");
    if let Some(ms) = b["remaining_open_ms"].as_u64() {
        shown.push_str(&format!(", {} left", millis(ms)));
    }
    if let (Some(failed), Some(calls)) = (b["failed_calls"].as_u64(), b["calls"].as_u64())
        && calls > 0
    {
        shown.push_str(&format!(", {failed}/{calls} failed"));
    }
    shown
}

/// A dependency's last error: `2026-01-01T12:00:00Z  what happened`, or `-`.
fn last_error(error: &Value) -> String {
    if error.is_null() {
        return "-".to_owned();
    }
    format!("{}  {}", time(&error["at"]), text(&error["message"]))
}

/// `ferrule status`: the overall state first, then uptime, depths and counters, then one row
/// per dependency with its health, breaker and last error.
pub(crate) fn status(s: &Value, base: &str) -> String {
    let c = &s["counters"];
    let uptime = s["uptime_seconds"].as_u64().map_or("-".to_owned(), |secs| {
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    });
    let mut out = vec![
        format!(
            "ferrule {} at {base}: {}",
            text(&s["version"]),
            text(&s["status"])
        ),
        format!("up {uptime}, since {}", time(&s["started_at"])),
        format!(
            "queue: {} pending, {}",
            text(&s["queue_depth"]),
            count(&s["dead_letter_depth"], "dead letter", "dead letters")
        ),
        format!(
            "counters: {} submitted, {} delivered, {} retried, {} dead, {} deferred, {}",
            text(&c["submitted"]),
            text(&c["delivered"]),
            text(&c["retried"]),
            text(&c["dead"]),
            text(&c["deferred"]),
            count(&c["panics"], "panic", "panics"),
        ),
    ];
    let destinations = s["dependencies"]["destinations"].as_object();
    let receives = destinations.is_some_and(|d| d.values().any(|d| d.get("inbound").is_some()));
    if receives {
        out.push(format!(
            "inbound: {} recorded, {}",
            text(&c["inbound"]),
            count(&c["inbound_duplicates"], "duplicate", "duplicates")
        ));
    }
    if let Some(sources) = s["email_sources"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<String> = sources.iter().map(text).collect();
        out.push(format!(
            "e-mail ({}): {} recorded, {}, {} refused",
            names.join(", "),
            text(&c["inbound_emails"]),
            count(&c["inbound_email_duplicates"], "duplicate", "duplicates"),
            text(&c["inbound_emails_refused"])
        ));
    }
    let store = &s["dependencies"]["store"];
    let mut rows = vec![vec![
        "store".to_owned(),
        text(&store["status"]),
        "-".to_owned(),
        last_error(&store["last_error"]),
    ]];
    for (name, d) in destinations.into_iter().flatten() {
        rows.push(vec![
            name.clone(),
            text(&d["health"]["status"]),
            breaker(&d["breaker"]),
            last_error(&d["health"]["last_error"]),
        ]);
        if let Some(inbound) = d.get("inbound") {
            rows.push(vec![
                format!("{name} (inbound, {})", text(&inbound["mode"])),
                text(&inbound["health"]["status"]),
                "-".to_owned(),
                last_error(&inbound["health"]["last_error"]),
            ]);
        }
    }
    out.push(String::new());
    out.push(table(
        Some(&["DEPENDENCY", "HEALTH", "BREAKER", "LAST ERROR"]),
        rows,
    ));
    out.join("\n")
}

/// `ferrule messages show`: the message's fields, then its timeline, one line per event.
pub(crate) fn message(m: &Value) -> String {
    let attempts = count(&m["attempts"], "attempt", "attempts");
    let mut fields = vec![
        ("id", text(&m["id"])),
        ("destination", text(&m["destination"])),
        ("status", format!("{} ({attempts})", text(&m["status"]))),
        ("created", time(&m["created_at"])),
        ("updated", time(&m["updated_at"])),
    ];
    for (label, key) in [
        ("delivered", "delivered_at"),
        ("next attempt", "next_attempt_at"),
    ] {
        if !m[key].is_null() {
            fields.push((label, time(&m[key])));
        }
    }
    for (label, key) in [
        ("ordering key", "ordering_key"),
        ("idempotency key", "idempotency_key"),
        ("last error", "last_error"),
    ] {
        if !m[key].is_null() {
            fields.push((label, text(&m[key])));
        }
    }
    if let Some(payload) = m.get("payload") {
        fields.push(("payload", payload_text(payload)));
    }
    let mut out = table(
        None,
        fields
            .into_iter()
            .map(|(label, value)| vec![label.to_owned(), value])
            .collect(),
    );
    let events = m["events"].as_array().map_or(&[][..], Vec::as_slice);
    if !events.is_empty() {
        let rows = events
            .iter()
            .map(|e| {
                vec![
                    text(&e["at"]),
                    text(&e["status"]),
                    text(&e["attempt"]),
                    text(&e["code"]),
                    e["duration_ms"].as_u64().map_or("-".to_owned(), millis),
                    text(&e["detail"]),
                ]
            })
            .collect();
        out.push_str("\n\n");
        out.push_str(&table(
            Some(&["TIME", "STATUS", "ATTEMPT", "CODE", "DURATION", "DETAIL"]),
            rows,
        ));
    }
    out
}

/// A payload as compact JSON, cut at [`MAX_PAYLOAD_CHARS`].
fn payload_text(payload: &Value) -> String {
    let whole = payload.to_string();
    let chars = whole.chars().count();
    if chars <= MAX_PAYLOAD_CHARS {
        return whole;
    }
    let cut: String = whole.chars().take(MAX_PAYLOAD_CHARS).collect();
    format!("{cut}… ({chars} characters; --json shows it whole)")
}

/// `ferrule messages list`: one row per message.
pub(crate) fn messages(rows: &[Value]) -> String {
    table(
        Some(&[
            "ID",
            "STATUS",
            "DESTINATION",
            "ATTEMPTS",
            "CREATED",
            "LAST ERROR",
        ]),
        rows.iter()
            .map(|m| {
                vec![
                    text(&m["id"]),
                    text(&m["status"]),
                    text(&m["destination"]),
                    text(&m["attempts"]),
                    time(&m["created_at"]),
                    text(&m["last_error"]),
                ]
            })
            .collect(),
    )
}

/// `ferrule audit`: one row per operator action, with its detail as compact JSON.
pub(crate) fn audit(rows: &[Value]) -> String {
    table(
        Some(&["AT", "ACTOR", "ACTION", "TARGET", "COUNT", "DETAIL"]),
        rows.iter()
            .map(|e| {
                let detail = match &e["detail"] {
                    Value::Object(map) if !map.is_empty() => e["detail"].to_string(),
                    _ => "-".to_owned(),
                };
                vec![
                    time(&e["at"]),
                    text(&e["actor"]),
                    text(&e["action"]),
                    text(&e["target"]),
                    text(&e["count"]),
                    detail,
                ]
            })
            .collect(),
    )
}

/// `ferrule alerts`: one row per alert, its text last.
pub(crate) fn alerts(rows: &[Value]) -> String {
    table(
        Some(&["AT", "SEVERITY", "KIND", "SUBJECT", "OUTCOME", "MESSAGE"]),
        rows.iter()
            .map(|a| {
                vec![
                    time(&a["at"]),
                    text(&a["severity"]),
                    text(&a["kind"]),
                    text(&a["subject"]),
                    text(&a["outcome"]),
                    text(&a["message"]),
                ]
            })
            .collect(),
    )
}

/// `ferrule dlq list`: one row per dead letter, with when it died (its last update).
pub(crate) fn dead_letters(rows: &[Value]) -> String {
    table(
        Some(&[
            "ID",
            "DESTINATION",
            "CREATED",
            "DIED",
            "ATTEMPTS",
            "LAST ERROR",
        ]),
        rows.iter()
            .map(|m| {
                vec![
                    text(&m["id"]),
                    text(&m["destination"]),
                    time(&m["created_at"]),
                    time(&m["updated_at"]),
                    text(&m["attempts"]),
                    text(&m["last_error"]),
                ]
            })
            .collect(),
    )
}

/// `ferrule breakers …`: one row per `{"destination", "breaker"}`.
pub(crate) fn breakers(rows: &[Value]) -> String {
    table(
        Some(&[
            "DESTINATION",
            "STATE",
            "FAILURE RATE",
            "OPEN WAIT",
            "REJECTED",
        ]),
        rows.iter()
            .map(|r| {
                let b = &r["breaker"];
                let mut state = breaker(b);
                if r["shared"]["probing"] == true {
                    state.push_str(", shared: a relay is probing");
                } else if r["shared"].is_object() {
                    state.push_str(", shared");
                }
                vec![
                    text(&r["destination"]),
                    state,
                    b["failure_rate"]
                        .as_f64()
                        .map_or("-".to_owned(), |r| format!("{:.0} %", r * 100.0)),
                    b["open_wait_ms"].as_u64().map_or("-".to_owned(), millis),
                    text(&b["total_rejected"]),
                ]
            })
            .collect(),
    )
}

/// `ferrule destinations list`: one row per destination, with who paused it.
pub(crate) fn destinations(rows: &[Value]) -> String {
    table(
        Some(&["NAME", "TYPE", "BREAKER", "HEALTH", "PAUSED"]),
        rows.iter()
            .map(|d| {
                let paused = match d["paused"]["paused_by"].as_str() {
                    Some(by) => format!("by {by} since {}", time(&d["paused"]["paused_at"])),
                    None => "-".to_owned(),
                };
                vec![
                    text(&d["name"]),
                    text(&d["type"]),
                    text(&d["breaker"]),
                    text(&d["health"]),
                    paused,
                ]
            })
            .collect(),
    )
}
/// `ferrule schedules list`: one row per schedule.
pub(crate) fn schedules(rows: &[Value]) -> String {
    table(
        Some(&[
            "NAME", "CRON", "TIMEZONE", "TARGET", "NEXT", "LAST", "PAUSED",
        ]),
        rows.iter()
            .map(|s| {
                let last = &s["last"];
                let last = if last.is_null() {
                    "-".to_owned()
                } else {
                    let what = match (last["message_id"].as_str(), last["run_id"].as_str()) {
                        (Some(id), _) => format!(" message {id}"),
                        (None, Some(id)) => format!(" run {id}"),
                        (None, None) => String::new(),
                    };
                    format!(
                        "{} {}{what}",
                        time(&last["scheduled_for"]),
                        text(&last["state"])
                    )
                };
                let paused = match s["paused"]["paused_by"].as_str() {
                    Some(by) => format!("by {by} since {}", time(&s["paused"]["paused_at"])),
                    None => "-".to_owned(),
                };
                vec![
                    text(&s["name"]),
                    text(&s["cron"]),
                    text(&s["timezone"]),
                    text(&s["target"]),
                    time(&s["next"]),
                    last,
                    paused,
                ]
            })
            .collect(),
    )
}

/// `ferrule routes chats`: one row per key, with where it comes from and, for one set through
/// the API, who set it when and the configuration's chat it replaces.
pub(crate) fn route_chats(rows: &[Value]) -> String {
    table(
        Some(&["KEY", "CHAT", "SOURCE", "SET"]),
        rows.iter()
            .map(|c| {
                let source = match c["configured_chat_id"].as_i64() {
                    Some(configured) => format!("{} (config: {configured})", text(&c["source"])),
                    None => text(&c["source"]),
                };
                let set = match c["updated_by"].as_str() {
                    Some(by) => format!("by {by} at {}", time(&c["updated_at"])),
                    None => "-".to_owned(),
                };
                vec![text(&c["key"]), text(&c["chat_id"]), source, set]
            })
            .collect(),
    )
}

/// `ferrule runs list`: one row per run.
pub(crate) fn runs(rows: &[Value]) -> String {
    table(
        Some(&[
            "ID",
            "ROUTE",
            "STATUS",
            "STATE",
            "STEP",
            "STARTED",
            "LAST ERROR",
        ]),
        rows.iter()
            .map(|r| {
                vec![
                    text(&r["id"]),
                    text(&r["route"]),
                    text(&r["status"]),
                    text(&r["state"]),
                    text(&r["step"]),
                    time(&r["created_at"]),
                    text(&r["last_error"]),
                ]
            })
            .collect(),
    )
}

/// `ferrule runs show`: the run, its timeline, its waits and its messages.
pub(crate) fn run(detail: &Value) -> String {
    let r = &detail["run"];
    let mut fields = vec![
        ("id", text(&r["id"])),
        ("route", text(&r["route"])),
        ("dedupe key", text(&r["dedupe_key"])),
        (
            "status",
            format!("{} ({})", text(&r["status"]), text(&r["state"])),
        ),
        ("step", text(&r["step"])),
        ("started", time(&r["created_at"])),
        ("updated", time(&r["updated_at"])),
    ];
    if !r["finished_at"].is_null() {
        fields.push(("finished", time(&r["finished_at"])));
    }
    fields.push((
        "processing",
        r["processing_ms"].as_u64().map_or("-".to_owned(), millis),
    ));
    fields.push((
        "waited",
        r["waited_ms"].as_u64().map_or("-".to_owned(), millis),
    ));
    if !r["last_error"].is_null() {
        fields.push(("last error", text(&r["last_error"])));
    }
    let mut out = table(
        None,
        fields
            .into_iter()
            .map(|(label, value)| vec![label.to_owned(), value])
            .collect(),
    );
    let section = |out: &mut String, header: &[&str], rows: Vec<Vec<String>>| {
        if !rows.is_empty() {
            out.push_str("\n\n");
            out.push_str(&table(Some(header), rows));
        }
    };
    let list = |key: &str| detail[key].as_array().cloned().unwrap_or_default();
    section(
        &mut out,
        &[
            "TIME", "EVENT", "STATUS", "STATE", "STEP", "DURATION", "DETAIL",
        ],
        list("events")
            .iter()
            .map(|e| {
                vec![
                    text(&e["at"]),
                    text(&e["kind"]),
                    text(&e["status"]),
                    text(&e["state"]),
                    text(&e["step"]),
                    e["duration_ms"].as_u64().map_or("-".to_owned(), millis),
                    text(&e["detail"]),
                ]
            })
            .collect(),
    );
    section(
        &mut out,
        &["WAIT", "STATE", "EXPIRES", "ANSWERED BY", "ACTION"],
        list("waits")
            .iter()
            .map(|w| {
                vec![
                    text(&w["step"]),
                    text(&w["state"]),
                    time(&w["expires_at"]),
                    text(&w["consumed_by"]),
                    text(&w["action"]),
                ]
            })
            .collect(),
    );
    section(
        &mut out,
        &[
            "MESSAGE",
            "STEP",
            "DESTINATION",
            "STATUS",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        list("messages")
            .iter()
            .map(|m| {
                vec![
                    text(&m["id"]),
                    text(&m["step"]),
                    text(&m["destination"]),
                    text(&m["status"]),
                    text(&m["attempts"]),
                    text(&m["last_error"]),
                ]
            })
            .collect(),
    );
    out
}

/// A rate as a percentage with one decimal, or `-`.
fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// Milliseconds or `-`.
fn millis_or_dash(value: &Value) -> String {
    value.as_u64().map_or("-".to_owned(), millis)
}

/// `ferrule stats`: the totals, the latencies, the top failures and the series by hour.
pub(crate) fn stats(s: &Value) -> String {
    let d = &s["deliveries"];
    let scope = match (s["destination"].as_str(), s["route"].as_str()) {
        (Some(d), Some(r)) => format!("destination {d}, route {r}"),
        (Some(d), None) => format!("destination {d}"),
        (None, Some(r)) => format!("every destination, route {r}"),
        (None, None) => "every destination".to_owned(),
    };
    let mut out = vec![format!(
        "last {} ({} to {}), {scope}",
        text(&s["window"]),
        time(&s["from"]),
        time(&s["to"])
    )];
    let per_message = s["attempts_per_message"]
        .as_f64()
        .map_or("-".to_owned(), |a| format!("{a:.2}"));
    out.push(table(
        None,
        vec![
            vec!["success rate".into(), percent(&s["success_rate"])],
            vec!["delivered".into(), text(&d["delivered"])],
            vec!["retried".into(), text(&d["retried"])],
            vec!["failed (permanent)".into(), text(&d["failed"])],
            vec!["dead-lettered".into(), text(&d["dead_lettered"])],
            vec!["attempts per message".into(), per_message],
            vec![
                "submit to delivered".into(),
                format!(
                    "mean {}, p50 {}, p95 {}",
                    millis_or_dash(&s["delivery_ms"]["mean"]),
                    millis_or_dash(&s["delivery_ms"]["p50"]),
                    millis_or_dash(&s["delivery_ms"]["p95"])
                ),
            ],
            vec![
                "attempt".into(),
                format!(
                    "mean {}, p50 {}, p95 {}",
                    millis_or_dash(&s["attempt_ms"]["mean"]),
                    millis_or_dash(&s["attempt_ms"]["p50"]),
                    millis_or_dash(&s["attempt_ms"]["p95"])
                ),
            ],
            vec![
                "runs".into(),
                format!(
                    "{} started, {} completed, {} failed, {} expired",
                    text(&s["runs"]["started"]),
                    text(&s["runs"]["completed"]),
                    text(&s["runs"]["failed"]),
                    text(&s["runs"]["expired"])
                ),
            ],
        ],
    ));
    let failures = s["top_failures"].as_array().map_or(&[][..], Vec::as_slice);
    if !failures.is_empty() {
        out.push(String::new());
        out.push(table(
            Some(&["FAILURE", "COUNT", "DEAD-LETTERED", "LAST"]),
            failures
                .iter()
                .map(|f| {
                    vec![
                        text(&f["reason"]),
                        text(&f["count"]),
                        text(&f["dead_lettered"]),
                        time(&f["last_at"]),
                    ]
                })
                .collect(),
        ));
    }
    let series = s["series"].as_array().map_or(&[][..], Vec::as_slice);
    if !series.is_empty() {
        out.push(String::new());
        out.push(table(
            Some(&["FROM", "DELIVERED", "RETRIED", "DEAD-LETTERED", "SUCCESS"]),
            series
                .iter()
                .map(|p| {
                    vec![
                        time(&p["start"]),
                        text(&p["delivered"]),
                        text(&p["retried"]),
                        text(&p["dead_lettered"]),
                        percent(&p["success_rate"]),
                    ]
                })
                .collect(),
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status_json(overall: &str) -> Value {
        json!({
            "status": overall, "version": "0.1.0",
            "started_at": "2026-01-01T12:00:00.123Z", "uptime_seconds": 3723,
            "counters": {"submitted": 10, "delivered": 7, "retried": 2, "dead": 1,
                         "deferred": 4, "panics": 0, "inbound": 0, "inbound_duplicates": 0,
                         "inbound_emails": 3, "inbound_email_duplicates": 1,
                         "inbound_emails_refused": 2},
            "email_sources": ["github", "support"],
            "queue_depth": 2, "dead_letter_depth": 1,
            "dependencies": {
                "store": {"status": "healthy", "last_error": null},
                "destinations": {
                    "billing-hook": {
                        "breaker": {"state": "open", "remaining_open_ms": 26_847,
                                    "open_wait_ms": 30_000, "calls": 4, "failed_calls": 4,
                                    "failure_rate": 1.0, "total_rejected": 3},
                        "health": {"status": "unhealthy", "last_error":
                            {"at": "2026-01-01T13:01:59.500Z", "message": "webhook answered 500"}}
                    },
                    "ops-chat": {
                        "breaker": {"state": "closed", "remaining_open_ms": null, "calls": 0},
                        "health": {"status": "healthy", "last_error": null},
                        "inbound": {"mode": "polling", "health": {"status": "healthy", "last_error": null}}
                    }
                }
            }
        })
    }

    #[test]
    fn the_status_summary_says_the_state_first_then_one_aligned_row_per_dependency() {
        let shown = status(&status_json("degraded"), "http://127.0.0.1:8080");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[..6],
            [
                "ferrule 0.1.0 at http://127.0.0.1:8080: degraded",
                "up 1h 2m 3s, since 2026-01-01T12:00:00Z",
                "queue: 2 pending, 1 dead letter",
                "counters: 10 submitted, 7 delivered, 2 retried, 1 dead, 4 deferred, 0 panics",
                "inbound: 0 recorded, 0 duplicates",
                "e-mail (github, support): 3 recorded, 1 duplicate, 2 refused",
            ],
            "{shown}"
        );
        let table = &lines[7..];
        assert_eq!(table.len(), 5, "{shown}");
        let column = table[0].find("BREAKER").unwrap();
        assert!(
            table[2].starts_with("billing-hook")
                && table[2][column..].starts_with("open, 26s 847ms left, 4/4 failed"),
            "{shown}"
        );
        assert!(
            table[2].ends_with("2026-01-01T13:01:59Z  webhook answered 500"),
            "{shown}"
        );
        assert!(
            table[4].starts_with("ops-chat (inbound, polling)"),
            "{shown}"
        );
    }

    #[test]
    fn a_message_shows_its_fields_then_one_timeline_line_per_event() {
        let m = json!({
            "id": "01KTEST", "destination": "hook", "status": "dead", "attempts": 1,
            "payload": {"n": "x".repeat(400)}, "ordering_key": null, "idempotency_key": "k-1",
            "next_attempt_at": null, "last_error": "webhook answered 400",
            "created_at": "2026-01-01T12:00:00.000Z", "updated_at": "2026-01-01T12:00:01.250Z",
            "delivered_at": null,
            "events": [
                {"seq": 1, "at": "2026-01-01T12:00:00.000Z", "status": "queued", "attempt": 0,
                 "outcome": null, "code": null, "duration_ms": null, "detail": null},
                {"seq": 2, "at": "2026-01-01T12:00:01.250Z", "status": "dead", "attempt": 1,
                 "outcome": "permanent", "code": "400", "duration_ms": 1250,
                 "detail": "webhook answered 400"},
            ]
        });
        let shown = message(&m);
        assert!(
            shown.contains("status           dead (1 attempt)"),
            "{shown}"
        );
        assert!(shown.contains("idempotency key  k-1"), "{shown}");
        assert!(
            !shown.contains("ordering key"),
            "null fields are left out: {shown}"
        );
        assert!(
            shown.contains("(408 characters; --json shows it whole)"),
            "{shown}"
        );
        let timeline: Vec<&str> = shown
            .lines()
            .skip_while(|l| !l.starts_with("TIME"))
            .collect();
        assert_eq!(timeline.len(), 3, "{shown}");
        assert_eq!(
            timeline[2],
            "2026-01-01T12:00:01.250Z  dead    1        400   1s 250ms  webhook answered 400"
        );
        assert!(timeline[1].starts_with("2026-01-01T12:00:00.000Z  queued  0        -"));
    }

    #[test]
    fn durations_read_in_milliseconds_never_as_0s() {
        assert_eq!(millis(0), "0ms");
        assert_eq!(millis(26_847), "26s 847ms");
    }

    #[test]
    fn missing_fields_show_as_a_dash() {
        let shown = status(&json!({}), "http://x");
        assert!(shown.starts_with("ferrule - at http://x: -"), "{shown}");
        assert_eq!(dead_letters(&[json!({})]).lines().count(), 2);
        assert!(breakers(&[json!({"destination": "d"})]).contains("d  "));
    }

    #[test]
    fn a_shared_circuit_says_so_and_who_probes() {
        let held = json!({"destination": "d", "breaker": {"state": "open", "remaining_open_ms": 4_000},
            "shared": {"epoch": 3, "held": true, "probe_at": "2026-01-01T00:00:04Z", "probing": false}});
        let probing = json!({"destination": "e", "breaker": {"state": "open", "remaining_open_ms": 1},
            "shared": {"epoch": 4, "held": true, "probe_at": "2026-01-01T00:00:04Z", "probing": true}});
        let shown = breakers(&[held, probing, json!({"destination": "f", "shared": null})]);
        assert!(shown.contains("open, 4s left, shared "), "{shown}");
        assert!(
            shown.contains("open, 1ms left, shared: a relay is probing"),
            "{shown}"
        );
        assert!(!shown.lines().last().unwrap().contains("shared"), "{shown}");
    }
}
