#![allow(dead_code)] // helpers used by the proxy tests

//! Fake OpenAI and Anthropic APIs on 127.0.0.1: a real HTTP server (axum) that answers each
//! request with the next scripted step — the providers' real error bodies and headers, event
//! streams that may break before or after their first byte — and records what it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::support::Recorded;

/// OpenAI's answer to a chat completion.
pub(crate) const OPENAI_COMPLETION: &str = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default"}"#;

/// OpenAI's billing stop (429).
pub(crate) const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

/// OpenAI's server error (500).
pub(crate) const OPENAI_SERVER_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

/// Anthropic's overload (529).
pub(crate) const ANTHROPIC_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

/// Anthropic's answer to a message.
pub(crate) const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"output_tokens":503}}"#;

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// This status, headers and JSON body.
    Json(u16, Vec<(&'static str, String)>, String),
    /// A `text/event-stream` of these events (each written as one chunk, 5 ms apart); with
    /// `break_after: Some(n)`, the connection breaks after `n` events (0: before the first
    /// byte of the body).
    Events {
        events: Vec<String>,
        break_after: Option<usize>,
    },
    /// Wait this long, then answer with the step.
    Slow(Duration, Box<Step>),
}

/// A 200 with `body` as JSON.
pub(crate) fn ok(body: &str) -> Step {
    Step::Json(
        200,
        vec![("x-request-id", "req_ok".into())],
        body.to_owned(),
    )
}

/// A failure with `status` and `body`, and headers.
pub(crate) fn fail(status: u16, headers: &[(&'static str, &str)], body: &str) -> Step {
    Step::Json(
        status,
        headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
        body.to_owned(),
    )
}

/// The chunks of an OpenAI chat completion stream, ending with its usage and `[DONE]`.
pub(crate) fn openai_chunks(words: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = words
        .iter()
        .map(|w| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"
            )
        })
        .collect();
    events.push("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n".into());
    events.push("data: [DONE]\n\n".into());
    events
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) method: String,
    /// Path and query.
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Got {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug)]
struct Inner {
    script: Mutex<VecDeque<Step>>,
    otherwise: Mutex<Step>,
    got: Recorded<Got>,
}

/// A running fake API.
#[derive(Debug, Clone)]
pub(crate) struct FakeAi {
    /// `http://127.0.0.1:<port>/v1`.
    pub(crate) base: String,
    inner: Arc<Inner>,
}

impl FakeAi {
    /// Starts a fake that answers with `otherwise` once its script is used up.
    pub(crate) async fn start(otherwise: Step) -> FakeAi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            script: Mutex::new(VecDeque::new()),
            otherwise: Mutex::new(otherwise),
            got: Recorded::default(),
        });
        let app = Router::new().fallback(answer).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAi { base, inner }
    }

    /// Appends steps to the script.
    pub(crate) fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.inner.script.lock().unwrap().extend(steps);
    }

    /// What it answers once the script is used up.
    pub(crate) fn otherwise(&self, step: Step) {
        *self.inner.otherwise.lock().unwrap() = step;
    }

    /// Every request so far.
    pub(crate) fn got(&self) -> Vec<Got> {
        self.inner.got.all()
    }

    /// Waits (at most `limit`) until at least `n` requests came.
    pub(crate) async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Got> {
        self.inner.got.wait_for(n, limit, "requests").await
    }
}

async fn answer(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    inner.got.push(Got {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    let step = {
        let next = inner.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| inner.otherwise.lock().unwrap().clone())
    };
    respond(step).await
}

async fn respond(step: Step) -> Response {
    match step {
        Step::Slow(wait, step) => {
            tokio::time::sleep(wait).await;
            Box::pin(respond(*step)).await
        }
        Step::Json(status, headers, body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            let h = response.headers_mut();
            h.insert("content-type", "application/json".parse().unwrap());
            for (name, value) in headers {
                h.insert(name, value.parse().unwrap());
            }
            response
        }
        Step::Events {
            events,
            break_after,
        } => {
            let stream = futures_util::stream::unfold(0usize, move |n| {
                let events = events.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if break_after == Some(n) {
                        return Some((Err(std::io::Error::other("upstream broke")), usize::MAX));
                    }
                    if n == usize::MAX {
                        return None;
                    }
                    let event = events.get(n)?.clone();
                    Some((Ok::<_, std::io::Error>(Bytes::from(event)), n + 1))
                }
            });
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            response
        }
    }
}
