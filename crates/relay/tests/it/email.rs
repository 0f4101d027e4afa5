//! Inbound e-mail end to end: the real relay on a SQLite file (and once on PostgreSQL), mail
//! posted to `POST /v1/inbound/email/{source}` as a raw message and as SendGrid's and
//! Mailgun's forms, recorded once, listed by `GET /v1/inbound` and forwarded to a real webhook
//! receiver. The GitHub notifications are the fixtures in `mail/`, written like GitHub's.

use std::time::Duration;

use ferrule::Config;
use ferrule::config::{EmailSourceConfig, Secret};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::receiver::Receiver;
use crate::support::{
    Backend, TOKEN, TestRelay, metric, send_whole_then_read, start, start_on, webhook,
};

const WAIT: Duration = Duration::from_secs(10);
/// The `github` source's secret.
const MAIL_SECRET: &str = "mail-secret_0123456789";
/// The `other` source's secret.
const OTHER_SECRET: &str = "other-secret_0123456789";
const READ_TOKEN: &str = "read-only-token-0123456789";

/// A fixture mail from `tests/it/mail/`.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/mail/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The GitHub notifications of one morning: a new pull request (#42), a comment on it, a push
/// to it, a second pull request (#43) asking for review, and #42 merged.
const GITHUB_MAILS: [&str; 5] = [
    "github-new-pull-request.eml",
    "github-comment.eml",
    "github-push.eml",
    "github-review-requested.eml",
    "github-merged.eml",
];

/// The source `name` (with [`MAIL_SECRET`], forwarding to `app-hook` when `forward` is given)
/// and the `other` source, then `setup`. (Metrics are the process's: a test that reads them
/// names its source apart.)
fn sources(
    name: &'static str,
    forward: Option<&Receiver>,
    setup: impl FnOnce(&mut Config),
) -> impl FnOnce(&mut Config) {
    let hook = forward.map(|r| r.url.clone());
    move |c: &mut Config| {
        c.auth.read_only_tokens = vec![Secret::new(READ_TOKEN).into()];
        if let Some(url) = &hook {
            c.destinations.push(webhook("app-hook", url));
        }
        c.inbound.email.push(EmailSourceConfig {
            name: name.into(),
            secret: Some(Secret::new(MAIL_SECRET)),
            forward_to: hook.as_ref().map(|_| "app-hook".into()),
            max_size: None,
        });
        c.inbound.email.push(EmailSourceConfig {
            name: "other".into(),
            secret: Some(Secret::new(OTHER_SECRET)),
            ..Default::default()
        });
        setup(c);
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

/// Posts `body` as `content_type` to `source`: the status, the JSON answer and the headers.
async fn post(
    relay: &TestRelay,
    source: &str,
    auth: Auth<'_>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value, HeaderMap) {
    let request = relay
        .http
        .post(format!("{}/v1/inbound/email/{source}", relay.base))
        .header("content-type", content_type)
        .body(body);
    send(authed(request, auth)).await
}

/// Posts `form` to `source`.
async fn post_form(
    relay: &TestRelay,
    source: &str,
    auth: Auth<'_>,
    form: Form,
) -> (StatusCode, Value, HeaderMap) {
    let request = relay
        .http
        .post(format!("{}/v1/inbound/email/{source}", relay.base))
        .multipart(form);
    send(authed(request, auth)).await
}

/// Posts a raw message to `source` with [`MAIL_SECRET`].
async fn post_mail(relay: &TestRelay, source: &str, raw: Vec<u8>) -> (StatusCode, Value) {
    let (status, body, _) = post(
        relay,
        source,
        Auth::Bearer(MAIL_SECRET),
        "message/rfc822",
        raw,
    )
    .await;
    (status, body)
}

fn authed(request: reqwest::RequestBuilder, auth: Auth<'_>) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
    }
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, HeaderMap) {
    let response = request.send().await.expect("the relay answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

/// Every recorded event of `source`, newest first, through `GET /v1/inbound`.
async fn events(relay: &TestRelay, source: &str) -> Vec<Value> {
    relay
        .page(&format!("/v1/inbound?source={source}&limit=1000"), "events")
        .await
}

/// The messages queued for `destination`.
async fn messages_to(relay: &TestRelay, destination: &str) -> Vec<Value> {
    relay
        .page(
            &format!("/v1/messages?destination={destination}&limit=1000"),
            "messages",
        )
        .await
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

/// `/metrics` as text.
async fn metrics(relay: &TestRelay) -> String {
    let (_, text) = relay.call(reqwest::Method::GET, "/metrics", None).await;
    text.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn github_notifications_are_recorded_with_their_context_and_forwarded_in_thread_order() {
    let receiver = Receiver::start().await;
    let relay = start(sources("morning", Some(&receiver), |_| {})).await;
    let mut answers = Vec::new();
    for name in GITHUB_MAILS {
        let (status, answer) = post_mail(&relay, "morning", fixture(name)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert_eq!(answer["duplicate"], false, "{name}: {answer}");
        assert!(answer["forward"].is_string(), "{name}: {answer}");
        answers.push(answer);
    }

    // Listed newest first, each with its summary and GitHub context.
    let mut stored = events(&relay, "email:morning").await;
    stored.reverse();
    assert_eq!(stored.len(), 5);
    let context: Vec<(String, u64, String, String)> = stored
        .iter()
        .map(|e| {
            let g = &e["payload"]["github"];
            (
                g["kind"].as_str().unwrap().to_owned(),
                g["number"].as_u64().unwrap(),
                g["event"].as_str().unwrap().to_owned(),
                g["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("pull", 42, "opened", "subscribed"),
        ("pull", 42, "comment", "comment"),
        ("pull", 42, "push", "push"),
        ("pull", 43, "opened", "review_requested"),
        ("pull", 42, "issue_event", "state_change"),
    ];
    assert_eq!(
        context,
        expected.map(|(k, n, e, r)| (k.to_owned(), n, e.to_owned(), r.to_owned()))
    );
    for (event, answer) in stored.iter().zip(&answers) {
        assert_eq!(event["id"], answer["id"]);
        assert_eq!(event["source"], "email:morning");
        assert_eq!(event["payload"]["github"]["repository"], "octo/hello");
    }
    let opened = &stored[0];
    assert_eq!(opened["external_id"], "octo/hello/pull/42@github.com");
    let summary = &opened["payload"]["summary"];
    assert_eq!(
        summary["from"],
        json!({"name": "Marty McFly", "address": "notifications@github.com"})
    );
    assert_eq!(summary["to"][0]["address"], "hello@noreply.github.com");
    assert_eq!(
        summary["subject"],
        "[octo/hello] Fix the flux capacitor (PR #42)"
    );
    assert_eq!(summary["date"], "2026-12-01T10:15:00-08:00");
    assert_eq!(summary["message_id"], "octo/hello/pull/42@github.com");
    let text = summary["text"].as_str().unwrap();
    assert!(text.starts_with("The capacitor overheated"), "{text}");
    assert!(!text.contains("<p>"), "the text part, not the HTML: {text}");
    let github = &opened["payload"]["github"];
    assert_eq!(github["labels"], json!(["bug"]));
    assert_eq!(github["pull_request_status"], "open");
    assert_eq!(github["url"], "https://github.com/octo/hello/pull/42");
    let comment = &stored[1]["payload"];
    assert_eq!(
        comment["summary"]["in_reply_to"],
        json!(["octo/hello/pull/42@github.com"])
    );
    assert_eq!(comment["github"]["sender"], "doc");
    assert_eq!(comment["github"]["event_id"], "2519874456");
    assert_eq!(
        comment["github"]["url"],
        "https://github.com/octo/hello/pull/42#issuecomment-2519874456"
    );
    let merged = &stored[4]["payload"]["github"];
    assert_eq!(merged["pull_request_status"], "merged");
    assert_eq!(
        merged["url"],
        "https://github.com/octo/hello/pull/42#event-15627384950"
    );
    assert_eq!(
        stored[3]["payload"]["github"]["labels"],
        json!(["enhancement", "ui"])
    );

    // Each forwarded to the receiver with the summary and the context, #42's on one ordering key.
    let hits = receiver.wait_for_hits(5, WAIT).await;
    let mut forwarded: Vec<Value> = hits
        .iter()
        .map(|h| serde_json::from_slice(&h.body).unwrap())
        .collect();
    forwarded.sort_by_key(|f| f["email"]["date"].as_str().unwrap().to_owned());
    for (forward, event) in forwarded.iter().zip(&stored) {
        assert_eq!(forward["source"], "email:morning");
        assert_eq!(forward["email"], event["payload"]["summary"]);
        assert_eq!(forward["github"], event["payload"]["github"]);
    }
    for (answer, (_, number, _, _)) in answers.iter().zip(expected) {
        let message = relay.message(answer["forward"].as_str().unwrap()).await;
        assert_eq!(message["destination"], "app-hook");
        assert_eq!(
            message["ordering_key"],
            format!("email:morning:octo/hello#{number}")
        );
    }
    let (_, status) = relay.call(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status["counters"]["inbound_emails"], 5, "{status}");
    assert_eq!(status["email_sources"], json!(["morning", "other"]));
    assert_eq!(
        metric(
            &metrics(&relay).await,
            "ferrule_inbound_emails_total{source=\"morning\"}"
        ),
        5.0
    );
}

#[tokio::test]
async fn a_mail_that_is_not_from_github_is_recorded_without_context() {
    let receiver = Receiver::start().await;
    let relay = start(sources("github", Some(&receiver), |_| {})).await;
    let (status, answer) = post_mail(&relay, "github", fixture("plain.eml")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stored = events(&relay, "email:github").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["external_id"], "disk-1.1796148000@example.org");
    let payload = &stored[0]["payload"];
    assert_eq!(payload["github"], Value::Null);
    assert_eq!(payload["summary"]["subject"], "Disk almost full — db-1");
    assert_eq!(
        payload["summary"]["text"],
        "Only 2 % left on /var of db-1.\r\n— the night shift"
    );
    let hit = &receiver.wait_for_hits(1, WAIT).await[0];
    let forward: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(forward["github"], Value::Null);
    assert_eq!(forward["email"], payload["summary"]);
    let message = relay.message(answer["forward"].as_str().unwrap()).await;
    assert_eq!(message["ordering_key"], Value::Null);
}

/// SendGrid's Inbound Parse in raw mode: the message in `email`, among its other fields.
fn sendgrid_form(raw: Vec<u8>) -> Form {
    Form::new()
        .text("headers", "From: Marty McFly <notifications@github.com>\n")
        .text("dkim", "{@github.com : pass}")
        .text("to", "octo/hello <hello@noreply.github.com>")
        .text("from", "Marty McFly <notifications@github.com>")
        .text("subject", "[octo/hello] Fix the flux capacitor (PR #42)")
        .text("sender_ip", "192.30.252.211")
        .text(
            "envelope",
            r#"{"to":["doc@example.com"],"from":"noreply@github.com"}"#,
        )
        .text(
            "charsets",
            r#"{"to":"UTF-8","from":"UTF-8","subject":"UTF-8"}"#,
        )
        .text("SPF", "pass")
        .text("email", String::from_utf8(raw).unwrap())
        .text("spam_score", "0.1")
}

/// Mailgun's forward to a URL ending in `mime`: the message in `body-mime`.
fn mailgun_form(raw: Vec<u8>) -> Form {
    Form::new()
        .text("recipient", "doc@example.com")
        .text("sender", "noreply@github.com")
        .text("from", "Marty McFly <notifications@github.com>")
        .text(
            "subject",
            "Re: [octo/hello] Fix the flux capacitor (PR #42)",
        )
        .part(
            "body-mime",
            Part::bytes(raw).mime_str("message/rfc822").unwrap(),
        )
        .text("timestamp", "1796148133")
        .text("token", "c6b0e9b8a4f2d1e3")
        .text(
            "signature",
            "6f1e0a9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f",
        )
}

#[tokio::test]
async fn sendgrid_and_mailgun_forms_are_read_from_their_fields() {
    let relay = start(sources("github", None, |_| {})).await;
    let auth = Auth::Bearer(MAIL_SECRET);
    let (status, sendgrid, _) = post_form(
        &relay,
        "github",
        auth,
        sendgrid_form(fixture(GITHUB_MAILS[0])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sendgrid}");
    let (status, mailgun, _) = post_form(
        &relay,
        "github",
        auth,
        mailgun_form(fixture(GITHUB_MAILS[1])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{mailgun}");
    assert_eq!(
        (&sendgrid["duplicate"], &mailgun["duplicate"]),
        (&json!(false), &json!(false))
    );
    let stored = events(&relay, "email:github").await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|e| e["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "octo/hello/pull/42/c2519874456@github.com",
            "octo/hello/pull/42@github.com"
        ]
    );
    assert_eq!(stored[0]["payload"]["github"]["event"], "comment");
    assert_eq!(stored[1]["payload"]["github"]["event"], "opened");
    // What a form carries is what the raw message carries: the same mail posted raw is the
    // same record.
    let (_, raw) = post_mail(&relay, "github", fixture(GITHUB_MAILS[0])).await;
    assert_eq!(
        (&raw["id"], &raw["duplicate"]),
        (&sendgrid["id"], &json!(true))
    );

    // Mailgun posts a mail without attachments urlencoded; the message keeps its bytes (this
    // one is Latin-1, 8bit).
    let latin1 = b"From: Doc <doc@example.com>\r\nMessage-ID: <latin1@example.com>\r\n\
        Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        Gr\xfc\xdfe aus Hill Valley\r\n";
    let encoded = format!(
        "recipient=doc%40example.com&sender=doc%40example.com&body-mime={}&token=abc",
        url::form_urlencoded::byte_serialize(latin1).collect::<String>()
    );
    let (status, body, _) = post(
        &relay,
        "github",
        auth,
        "application/x-www-form-urlencoded",
        encoded.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        events(&relay, "email:github").await[0]["payload"]["summary"]["text"],
        "Grüße aus Hill Valley"
    );

    // A form without either field, and a form that is not one.
    let (status, body, _) =
        post_form(&relay, "github", auth, Form::new().text("text", "hello")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_form");
    assert_eq!(body["error"]["field"], "email");
    let (status, body, _) = post(
        &relay,
        "github",
        auth,
        "multipart/form-data; boundary=zz",
        b"this is not a form".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_form");
    let (status, body, _) = post(&relay, "github", auth, "multipart/form-data", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_form");
    let (status, body, _) = post(
        &relay,
        "github",
        auth,
        "application/x-www-form-urlencoded",
        b"recipient=doc%40example.com&body-plain=hi".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "email");
    // A raw mail sent with curl's default type, `--data-binary` without `-H`, is told how.
    let (status, body, _) = post(
        &relay,
        "github",
        auth,
        "application/x-www-form-urlencoded",
        fixture("plain.eml"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`content-type: message/rfc822`"),
        "{body}"
    );
    assert_eq!(events(&relay, "email:github").await.len(), 3);
}

#[tokio::test]
async fn a_redelivered_mail_is_recorded_and_forwarded_once() {
    let receiver = Receiver::start().await;
    let relay = start(sources("redelivered", Some(&receiver), |_| {})).await;
    let (status, first) = post_mail(&relay, "redelivered", fixture("github-comment.eml")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The service retries (it missed our 200), the same way and as a form.
    let (status, again) = post_mail(&relay, "redelivered", fixture("github-comment.eml")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));
    let (_, form, _) = post_form(
        &relay,
        "redelivered",
        Auth::Bearer(MAIL_SECRET),
        sendgrid_form(fixture("github-comment.eml")),
    )
    .await;
    assert_eq!(form, json!({"id": first["id"], "duplicate": true}));
    // A mail without a Message-ID is keyed by its content.
    let anonymous =
        b"From: Ops <ops@example.org>\r\nSubject: ping\r\n\r\nstill there?\r\n".to_vec();
    let (_, a) = post_mail(&relay, "redelivered", anonymous.clone()).await;
    let (_, b) = post_mail(&relay, "redelivered", anonymous).await;
    assert_eq!((&b["id"], &b["duplicate"]), (&a["id"], &json!(true)));

    let stored = events(&relay, "email:redelivered").await;
    assert_eq!(stored.len(), 2);
    let key = stored[0]["external_id"].as_str().unwrap();
    assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
    assert_eq!(
        messages_to(&relay, "app-hook").await.len(),
        2,
        "one forward per mail"
    );
    receiver.wait_for_hits(2, WAIT).await;
    let (_, status) = relay.call(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status["counters"]["inbound_emails"], 2, "{status}");
    assert_eq!(
        status["counters"]["inbound_email_duplicates"], 3,
        "{status}"
    );
    let text = metrics(&relay).await;
    assert_eq!(
        metric(
            &text,
            "ferrule_inbound_email_duplicates_total{source=\"redelivered\"}"
        ),
        3.0
    );
}

#[tokio::test]
async fn malformed_mail_is_422_with_the_reason_and_nothing_is_recorded() {
    let relay = start(sources("malformed", None, |_| {})).await;
    for (raw, says) in [
        (&b""[..], "no header section"),
        (b"just some text\r\nand more\r\n", "no header section"),
        (
            b"To: doc@example.com\r\nSubject: who sent this\r\n\r\nbody\r\n",
            "`From:`",
        ),
        (
            b"From: marty@example.com\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\
              Content-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
            "names no boundary",
        ),
    ] {
        let (status, body) = post_mail(&relay, "malformed", raw.to_vec()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(&body, "invalid_email");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    assert!(events(&relay, "email:malformed").await.is_empty());
    let (_, status) = relay.call(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status["counters"]["inbound_emails_refused"], 4, "{status}");
    let text = metrics(&relay).await;
    assert_eq!(
        metric(
            &text,
            "ferrule_inbound_emails_refused_total{source=\"malformed\",reason=\"invalid_email\"}"
        ),
        4.0,
        "{text}"
    );
}

#[tokio::test]
async fn an_oversize_mail_is_413_also_for_a_client_that_sends_it_whole_first() {
    let relay = start(sources("github", None, |c| {
        c.inbound.email[0].max_size = Some(64 * 1024);
    }))
    .await;
    let mut big = fixture("plain.eml");
    big.extend(std::iter::repeat_n(b'x', 100 * 1024));
    // Said by Content-Length.
    let (status, body) = post_mail(&relay, "github", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "body_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("65536"),
        "{body}"
    );
    // A client that writes a 16 MiB body whole before it reads still reads the 413: said by
    // Content-Length, or found while reading a body of unknown length (chunked).
    let mut whole = fixture("plain.eml");
    whole.resize(16 * 1024 * 1024, b'x');
    let chunked: Vec<u8> = whole
        .chunks(64 * 1024)
        .flat_map(|c| {
            [
                format!("{:x}\r\n", c.len()).into_bytes(),
                c.to_vec(),
                b"\r\n".to_vec(),
            ]
        })
        .flatten()
        .chain(b"0\r\n\r\n".iter().copied())
        .collect();
    for (framing, body) in [
        (format!("Content-Length: {}", whole.len()), &whole),
        ("Transfer-Encoding: chunked".to_owned(), &chunked),
    ] {
        let head = format!(
            "POST /v1/inbound/email/github HTTP/1.1\r\nHost: relay\r\n\
             Authorization: Bearer {MAIL_SECRET}\r\nContent-Type: message/rfc822\r\n\
             {framing}\r\n\r\n"
        );
        let (status, answer, _) = send_whole_then_read(&relay.base, &head, body).await;
        assert_eq!(status, 413, "{framing}: {answer}");
        assert_error(&answer, "body_too_large");
    }
    assert!(events(&relay, "email:github").await.is_empty());

    // The limit is the source's, not `server.max_body_bytes` (1 MiB): a 3 MiB mail under the
    // default 10 MiB is taken.
    let relay = start(sources("github", None, |_| {})).await;
    let mut large = fixture("plain.eml");
    large.extend(b"\r\n");
    large.extend(
        std::iter::repeat_n(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n",
            3 * 16 * 1024,
        )
        .flatten(),
    );
    assert!(large.len() > 3 * 1024 * 1024);
    let (status, body) = post_mail(&relay, "github", large.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = events(&relay, "email:github").await;
    assert_eq!(stored[0]["payload"]["summary"]["size"], large.len());
    assert_eq!(
        stored[0]["payload"]["summary"]["text_truncated"], true,
        "the raw message is not kept"
    );
}

#[tokio::test]
async fn the_source_secret_or_an_admin_token_gets_in_and_nothing_else_does() {
    let relay = start(sources("guarded", None, |_| {})).await;
    let mail = || fixture("plain.eml");
    let refused = [
        (Auth::None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Auth::Bearer("wrong-secret_0123456789"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Auth::Bearer(OTHER_SECRET),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Auth::Basic("mail", "wrong-secret_0123456789"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Auth::Basic(MAIL_SECRET, ""),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (Auth::Bearer(READ_TOKEN), StatusCode::FORBIDDEN, "forbidden"),
    ];
    for (auth, want, code) in refused {
        let (status, body, headers) = post(&relay, "guarded", auth, "message/rfc822", mail()).await;
        assert_eq!(status, want, "{body}");
        assert_error(&body, code);
        if want == StatusCode::UNAUTHORIZED {
            let challenge = headers[WWW_AUTHENTICATE].to_str().unwrap();
            assert!(
                challenge.contains("Bearer") && challenge.contains("Basic"),
                "{challenge}"
            );
        }
    }
    assert!(events(&relay, "email:guarded").await.is_empty());
    let text = metrics(&relay).await;
    assert_eq!(
        metric(
            &text,
            "ferrule_inbound_emails_refused_total{source=\"guarded\",reason=\"unauthorized\"}"
        ),
        5.0,
        "{text}"
    );

    // The secret as a bearer token, as a basic-auth password with any user (and so in the URL,
    // as a mail service is given it), and an admin token.
    let (status, first, _) = post(
        &relay,
        "guarded",
        Auth::Bearer(MAIL_SECRET),
        "message/rfc822",
        mail(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for auth in [
        Auth::Basic("sendgrid", MAIL_SECRET),
        Auth::Basic("", MAIL_SECRET),
        Auth::Bearer(TOKEN),
    ] {
        let (status, body, _) = post(&relay, "guarded", auth, "message/rfc822", mail()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["id"], first["id"]);
    }
    let port = relay.base.rsplit(':').next().unwrap();
    let url = format!("http://mailgun:{MAIL_SECRET}@127.0.0.1:{port}/v1/inbound/email/guarded");
    let (status, body, _) = send(
        reqwest::Client::new()
            .post(url)
            .header("content-type", "message/rfc822")
            .body(mail()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], first["id"]);
    // One source's secret is not another's way in, and a secretless source takes admin tokens.
    let (status, _, _) = post(
        &relay,
        "other",
        Auth::Bearer(MAIL_SECRET),
        "message/rfc822",
        mail(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = post(
        &relay,
        "other",
        Auth::Bearer(OTHER_SECRET),
        "message/rfc822",
        mail(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The secret opens nothing else.
    let (status, _) = relay
        .call_with(
            reqwest::Method::GET,
            "/v1/inbound",
            None,
            Some(MAIL_SECRET),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unknown_source_is_404_and_other_content_types_are_415() {
    let relay = start(sources("github", None, |_| {})).await;
    for auth in [Auth::None, Auth::Bearer(TOKEN)] {
        let (status, body, _) = post(
            &relay,
            "nobody",
            auth,
            "message/rfc822",
            fixture("plain.eml"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_error(&body, "not_found");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`nobody`"),
            "{body}"
        );
    }
    for content_type in [
        "text/plain",
        "application/json",
        "multipart/mixed; boundary=x",
        "",
    ] {
        let (status, body, _) = post(
            &relay,
            "github",
            Auth::Bearer(MAIL_SECRET),
            content_type,
            fixture("plain.eml"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {body}"
        );
        assert_error(&body, "unsupported_media_type");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("message/rfc822"),
            "{body}"
        );
    }
    // A raw message as octet-stream is taken, like message/rfc822.
    let (status, body, _) = post(
        &relay,
        "github",
        Auth::Bearer(MAIL_SECRET),
        "application/octet-stream",
        fixture("plain.eml"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn mail_is_recorded_once_and_forwarded_on_postgres() {
    let receiver = Receiver::start().await;
    let relay = start_on(
        Backend::Postgres,
        sources("github", Some(&receiver), |_| {}),
    )
    .await;
    let (status, first) = post_mail(&relay, "github", fixture("github-merged.eml")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = post_mail(&relay, "github", fixture("github-merged.eml")).await;
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));
    let stored = events(&relay, "email:github").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["payload"]["github"]["pull_request_status"],
        "merged"
    );
    let hit = &receiver.wait_for_hits(1, WAIT).await[0];
    let forward: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(forward["github"]["number"], 42);
    assert_eq!(messages_to(&relay, "app-hook").await.len(), 1);
}

#[tokio::test]
async fn an_email_source_exports_its_series_from_the_start() {
    let relay = start(sources("fresh-mail", None, |_| {})).await;
    let text = metrics(&relay).await;
    for family in [
        "ferrule_inbound_emails_total",
        "ferrule_inbound_email_duplicates_total",
        "ferrule_inbound_emails_refused_total",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{text}");
        assert!(text.contains(&format!("# TYPE {family} counter")), "{text}");
    }
    let s = "source=\"fresh-mail\"";
    assert_eq!(
        metric(&text, &format!("ferrule_inbound_emails_total{{{s}}}")),
        0.0
    );
    assert!(
        text.contains(&format!("ferrule_inbound_emails_total{{{s}}} 0")),
        "{text}"
    );
    assert!(text.contains(&format!("ferrule_inbound_email_duplicates_total{{{s}}} 0")));
    for reason in ferrule::telemetry::prometheus::EMAIL_REFUSAL_REASONS {
        let series = format!("ferrule_inbound_emails_refused_total{{{s},reason=\"{reason}\"}} 0");
        assert!(text.contains(&series), "{series} is not exported: {text}");
    }
}
