//! A webhook receiver for trying the relay: prints each delivery and checks its Standard
//! Webhooks signature.
//!
//! ```sh
//! cargo run -p ferrule --example receiver            # listens on 127.0.0.1:9000/hook
//! ```
//!
//! It verifies with the secret in `FERRULE_RECEIVER_SECRET` (default: the one in
//! `deploy/ferrule.example.toml`).

use std::io::Write;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferrule_connectors::webhook::{WebhookSecret, verify};

const DEFAULT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn hook(headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret: WebhookSecret = match std::env::var("FERRULE_RECEIVER_SECRET")
        .unwrap_or_else(|_| DEFAULT_SECRET.into())
        .parse()
    {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "bad FERRULE_RECEIVER_SECRET: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    };
    let checked = verify(
        &secret,
        &headers,
        &body,
        SystemTime::now(),
        Duration::from_secs(300),
    );
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    let _ = writeln!(
        std::io::stdout(),
        "webhook-id {id}: signature {} body {}",
        if checked.is_ok() { "valid" } else { "INVALID" },
        String::from_utf8_lossy(&body)
    );
    if checked.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    let _ = writeln!(
        std::io::stdout(),
        "receiver listening on http://127.0.0.1:9000/hook"
    );
    axum::serve(listener, Router::new().route("/hook", post(hook))).await
}
