//! The provider classifiers against the bodies and headers OpenAI and Anthropic really send.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::*;
use crate::ManualClock;

/// OpenAI's billing stop (429).
const OPENAI_QUOTA: &str = r#"{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}"#;

/// OpenAI's rate limit (429).
const OPENAI_RATE_LIMIT: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29870, Requested 1200. Please try again in 2.14s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;

/// OpenAI's server error (500).
const OPENAI_SERVER_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

/// OpenAI's bad request (400).
const OPENAI_BAD_REQUEST: &str = r#"{"error":{"message":"Invalid value for 'temperature': must be between 0 and 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;

/// Anthropic's overload (529).
const ANTHROPIC_OVERLOADED: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;

/// Anthropic's rate limit (429).
const ANTHROPIC_RATE_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (b2d1…) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."}}"#;

/// Anthropic's spend limit, as a typed error.
const ANTHROPIC_SPEND_LIMIT: &str = r#"{"type":"error","error":{"type":"enforced_spend_limit_reached","message":"Your organization has reached its spend limit."}}"#;

/// Anthropic's monthly spend limit, as a rate-limit error (429).
const ANTHROPIC_MONTHLY_SPEND: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's monthly spend limit. Please try again later."}}"#;

/// Anthropic's workspace usage limits (400).
const ANTHROPIC_USAGE_LIMITS: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2026-08-01 at 00:00 UTC."}}"#;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn verdict(
    c: &ProviderClassifier,
    status: u16,
    pairs: &[(&'static str, &'static str)],
    body: &str,
) -> Verdict {
    c.classify_parts(
        StatusCode::from_u16(status).unwrap(),
        &headers(pairs),
        body.as_bytes(),
    )
}

fn on_manual_clock(provider: Provider) -> (ProviderClassifier, ManualClock) {
    let clock = ManualClock::new(); // wall clock: 2026-01-01T00:00:00Z
    let c = ProviderClassifier::for_provider(provider).with_clock(clock.shared());
    (c, clock)
}

#[test]
fn status_table_per_provider() {
    let cases: &[(u16, Outcome, Outcome)] = &[
        // status, generic, openai/anthropic
        (200, Outcome::Success, Outcome::Success),
        (201, Outcome::Success, Outcome::Success),
        (301, Outcome::Permanent, Outcome::Permanent),
        (400, Outcome::Permanent, Outcome::Permanent),
        (401, Outcome::Permanent, Outcome::Permanent),
        (404, Outcome::Permanent, Outcome::Permanent),
        (408, Outcome::Transient, Outcome::Transient),
        (409, Outcome::Permanent, Outcome::Transient),
        (422, Outcome::Permanent, Outcome::Permanent),
        (425, Outcome::Transient, Outcome::Transient),
        (429, Outcome::Transient, Outcome::Transient),
        (500, Outcome::Transient, Outcome::Transient),
        (503, Outcome::Transient, Outcome::Transient),
        (529, Outcome::Transient, Outcome::Transient),
    ];
    let generic = ProviderClassifier::for_provider(Provider::Generic);
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let c = ProviderClassifier::for_provider(provider);
        for (status, expected_generic, expected) in cases {
            assert_eq!(
                verdict(&generic, *status, &[], "").outcome,
                *expected_generic,
                "generic {status}"
            );
            assert_eq!(
                verdict(&c, *status, &[], "").outcome,
                *expected,
                "{provider} {status}"
            );
        }
    }
}

#[test]
fn openai_insufficient_quota_is_a_billing_stop() {
    let c = ProviderClassifier::for_provider(Provider::OpenAi);
    let v = verdict(
        &c,
        429,
        &[("x-request-id", "req_8a1b"), ("retry-after", "1")],
        OPENAI_QUOTA,
    );
    assert_eq!(v.outcome, Outcome::Permanent);
    assert_eq!(v.reason, Some(Reason::Billing));
    assert!(v.is_billing());
    assert_eq!(v.error_code.as_deref(), Some("insufficient_quota"));
    assert_eq!(v.request_id.as_deref(), Some("req_8a1b"));
    // The generic classifier knows nothing of billing: a 429 is a 429.
    let generic = ProviderClassifier::for_provider(Provider::Generic);
    assert_eq!(
        verdict(&generic, 429, &[], OPENAI_QUOTA).outcome,
        Outcome::Transient
    );
}

#[test]
fn openai_rate_limit_waits_for_the_hint() {
    let (c, _clock) = on_manual_clock(Provider::OpenAi);
    let v = verdict(
        &c,
        429,
        &[
            ("retry-after-ms", "2140"),
            ("retry-after", "3"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "2.14s"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
        ],
        OPENAI_RATE_LIMIT,
    );
    assert_eq!(v.outcome, Outcome::RetryAfter(Duration::from_millis(2140)));
    assert_eq!(v.reason, Some(Reason::RateLimited));
    assert_eq!(v.error_code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(v.limits.tokens.remaining, Some(0));
    assert_eq!(v.limits.requests.remaining, Some(499));
    assert_eq!(v.limits.requests.reset, Some(Duration::from_millis(120)));
    assert_eq!(v.limits.wait(), Some(Duration::from_millis(2140)));
    // Without `retry-after-ms`, `retry-after` in seconds, then as an HTTP-date.
    let v = verdict(&c, 429, &[("retry-after", "3")], OPENAI_RATE_LIMIT);
    assert_eq!(v.outcome, Outcome::RetryAfter(Duration::from_secs(3)));
    let v = verdict(
        &c,
        503,
        &[("retry-after", "Thu, 01 Jan 2026 00:00:30 GMT")],
        "",
    );
    assert_eq!(v.outcome, Outcome::RetryAfter(Duration::from_secs(30)));
    // Garbage hints are ignored, never fatal.
    let v = verdict(
        &c,
        429,
        &[("retry-after-ms", "-5"), ("retry-after", "soon")],
        "",
    );
    assert_eq!(v.outcome, Outcome::Transient);
}

#[test]
fn a_hint_past_the_cap_fails_fast() {
    let config = ProviderClassifierConfig {
        provider: Provider::OpenAi,
        max_retry_after: Duration::from_secs(20),
    };
    let c = ProviderClassifier::new(config).unwrap();
    let v = verdict(&c, 429, &[("retry-after", "21")], OPENAI_RATE_LIMIT);
    assert_eq!(v.outcome, Outcome::Permanent);
    assert_eq!(v.reason, Some(Reason::RetryAfterTooLong));
    let v = verdict(&c, 429, &[("retry-after", "20")], OPENAI_RATE_LIMIT);
    assert_eq!(v.outcome, Outcome::RetryAfter(Duration::from_secs(20)));
}

#[test]
fn x_should_retry_overrides_the_status() {
    let c = ProviderClassifier::for_provider(Provider::OpenAi);
    let v = verdict(&c, 400, &[("x-should-retry", "true")], OPENAI_BAD_REQUEST);
    assert_eq!(v.outcome, Outcome::Transient);
    assert_eq!(v.reason, Some(Reason::ShouldRetryHeader));
    let v = verdict(&c, 500, &[("x-should-retry", "false")], OPENAI_SERVER_ERROR);
    assert_eq!(v.outcome, Outcome::Permanent);
    let v = verdict(&c, 500, &[("x-should-retry", "maybe")], OPENAI_SERVER_ERROR);
    assert_eq!(v.outcome, Outcome::Transient);
    // A success stays a success.
    let v = verdict(&c, 200, &[("x-should-retry", "true")], "{}");
    assert_eq!(v.outcome, Outcome::Success);
    // Even `x-should-retry: true` does not retry a billing stop.
    let v = verdict(&c, 429, &[("x-should-retry", "true")], OPENAI_QUOTA);
    assert_eq!(v.outcome, Outcome::Permanent);
}

#[test]
fn anthropic_overload_and_rate_limit_are_retried() {
    let (c, _clock) = on_manual_clock(Provider::Anthropic);
    let v = verdict(
        &c,
        529,
        &[("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")],
        ANTHROPIC_OVERLOADED,
    );
    assert_eq!(v.outcome, Outcome::Transient);
    assert_eq!(v.reason, Some(Reason::Overloaded));
    assert_eq!(v.error_code.as_deref(), Some("overloaded_error"));
    assert_eq!(
        v.request_id.as_deref(),
        Some("req_011CSHoEeqs5C35K2UUqR7Fy")
    );
    let v = verdict(
        &c,
        429,
        &[
            ("retry-after", "12"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:12Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-01-01T00:00:01Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-12-31T23:59:00Z",
            ),
        ],
        ANTHROPIC_RATE_LIMIT,
    );
    assert_eq!(v.outcome, Outcome::RetryAfter(Duration::from_secs(12)));
    assert_eq!(v.reason, Some(Reason::RateLimited));
    assert_eq!(v.limits.requests.remaining, Some(0));
    assert_eq!(v.limits.requests.reset, Some(Duration::from_secs(12)));
    assert_eq!(v.limits.input_tokens.reset, Some(Duration::from_secs(1)));
    // A reset in the past means now.
    assert_eq!(v.limits.output_tokens.reset, Some(Duration::ZERO));
    assert_eq!(v.limits.wait(), Some(Duration::from_secs(12)));
}

#[test]
fn anthropic_spend_limits_are_billing_stops() {
    let c = ProviderClassifier::for_provider(Provider::Anthropic);
    for (status, body) in [
        (429, ANTHROPIC_SPEND_LIMIT),
        (429, ANTHROPIC_MONTHLY_SPEND),
        (400, ANTHROPIC_USAGE_LIMITS),
    ] {
        let v = verdict(&c, status, &[("retry-after", "5")], body);
        assert_eq!(v.outcome, Outcome::Permanent, "{body}");
        assert_eq!(v.reason, Some(Reason::Billing), "{body}");
    }
    // An ordinary rate limit is not one.
    assert!(!verdict(&c, 429, &[], ANTHROPIC_RATE_LIMIT).is_billing());
}

#[test]
fn bodies_that_are_not_json_are_fine() {
    let c = ProviderClassifier::for_provider(Provider::Anthropic);
    for body in ["", "<html>502 Bad Gateway</html>", "{", "[1,2]", "\u{0}"] {
        assert_eq!(verdict(&c, 502, &[], body).outcome, Outcome::Transient);
    }
    let v = verdict(&c, 502, &[], r#"{"error":"plain string"}"#);
    assert_eq!(v.error_code, None);
}

#[test]
fn go_durations() {
    let cases: &[(&str, Option<Duration>)] = &[
        ("6s", Some(Duration::from_secs(6))),
        ("1m2s", Some(Duration::from_secs(62))),
        ("6m0s", Some(Duration::from_secs(360))),
        ("250ms", Some(Duration::from_millis(250))),
        ("2.14s", Some(Duration::from_millis(2140))),
        ("1h2m3s", Some(Duration::from_secs(3723))),
        ("0s", Some(Duration::ZERO)),
        ("17µs", Some(Duration::from_micros(17))),
        (" 5s ", Some(Duration::from_secs(5))),
        ("", None),
        ("6", None),
        ("s", None),
        ("5d", None),
        ("-5s", None),
        ("1..2s", None),
        ("ms5", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_go_duration(text), *expected, "{text:?}");
    }
}

#[test]
fn usage_of_both_providers() {
    let openai = br#"{"id":"chatcmpl-abc","object":"chat.completion","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3}}}"#;
    assert_eq!(
        Usage::from_body(openai),
        Some(Usage {
            input: 19,
            output: 10,
            cached: 3
        })
    );
    let anthropic = br#"{"id":"msg_01","type":"message","content":[],"usage":{"input_tokens":2095,"output_tokens":503,"cache_read_input_tokens":100}}"#;
    assert_eq!(
        Usage::from_body(anthropic),
        Some(Usage {
            input: 2095,
            output: 503,
            cached: 100
        })
    );
    assert_eq!(Usage::from_body(b"{}"), None);
    assert_eq!(Usage::from_body(br#"{"usage":null}"#), None);
    assert_eq!(Usage::from_body(b"not json"), None);
}

#[test]
fn classifies_responses_and_transport_errors() {
    let c = ProviderClassifier::for_provider(Provider::OpenAi);
    let response = Response::builder()
        .status(429)
        .body(OPENAI_QUOTA.as_bytes().to_vec())
        .unwrap();
    assert_eq!(
        c.classify(&Ok::<_, std::io::Error>(response)),
        Outcome::Permanent
    );
    assert_eq!(
        c.classify(&Err::<Response<Vec<u8>>, _>("connection reset")),
        Outcome::Transient
    );
}

#[test]
fn config_parses_and_validates() {
    let config: ProviderClassifierConfig =
        toml::from_str("provider = \"anthropic\"\nmax_retry_after = \"15s\"").unwrap();
    assert_eq!(config.provider, Provider::Anthropic);
    assert_eq!(config.max_retry_after, Duration::from_secs(15));
    let zero = ProviderClassifierConfig {
        max_retry_after: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(
        ProviderClassifier::new(zero).unwrap_err().field(),
        "max_retry_after"
    );
    assert!(toml::from_str::<ProviderClassifierConfig>("provider = \"gemini\"").is_err());
}
