//! The CLI commands that talk to a running relay over its HTTP API: `send`, `status`,
//! `messages show | cancel`, `dlq list | replay | purge`.
//!
//! They go through the API because the SQLite store has a single owner (the running relay
//! holds its lock file).

use std::io::Read;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::console;
use crate::cli::{ClientArgs, DlqCommand, DlqFilter, MessagesCommand, SendArgs};
use crate::error::Error;

/// Ids replayed or purged per request by `dlq replay` and `dlq purge`.
const REPLAY_CHUNK: usize = 500;

/// An API client for one relay.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &ClientArgs) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Client(format!("cannot build an HTTP client: {e}")))?;
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Client(format!(
                "--server must be an http:// or https:// URL, not `{base}`"
            )));
        }
        Ok(Client {
            http,
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Sends a request; answers the status and the JSON body, or an error naming the API's
    /// error code and message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Value), Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Error::Client(format!(
                "cannot reach the relay at {}: {e} (is `ferrule serve` running? set --server)",
                self.base
            ))
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Error::Client(format!("cannot read the relay's answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok((status, value));
        }
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"].as_str().unwrap_or("");
        let hint = if status == StatusCode::UNAUTHORIZED {
            " (pass --token or set FERRULE_TOKEN)"
        } else {
            ""
        };
        Err(Error::Client(format!(
            "the relay answered {status}: {code}: {message}{hint}"
        )))
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `ferrule send`.
pub async fn send(args: SendArgs) -> Result<(), Error> {
    let client = Client::new(&args.client)?;
    let text = match args.payload.as_deref() {
        Some("-") | None => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|e| Error::Client(format!("cannot read the payload from stdin: {e}")))?;
            buf
        }
        Some(text) => text.to_owned(),
    };
    let payload: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Client(format!("the payload is not valid JSON: {e}")))?;
    let mut body = json!({"destination": args.destination, "payload": payload});
    if let Some(key) = args.ordering_key {
        body["ordering_key"] = json!(key);
    }
    if let Some(at) = args.deliver_after {
        body["deliver_after"] = json!(at);
    }
    let headers: Vec<(&str, String)> = args
        .idempotency_key
        .map(|k| vec![("idempotency-key", k)])
        .unwrap_or_default();
    let (status, answer) = client
        .call(Method::POST, "/v1/messages", &[], Some(&body), &headers)
        .await?;
    let id = answer["id"].as_str().unwrap_or_default();
    if status == StatusCode::OK {
        let now = match answer["status"].as_str() {
            Some(status) => format!("it is {status}"),
            None => "it is no longer stored".to_owned(),
        };
        console::out(&format!(
            "{id} (duplicate: nothing enqueued; the original message's id, {now})"
        ));
    } else {
        console::out(id);
    }
    Ok(())
}

/// `ferrule status`.
pub async fn status(args: ClientArgs) -> Result<(), Error> {
    let client = Client::new(&args)?;
    let (_, answer) = client.call(Method::GET, "/status", &[], None, &[]).await?;
    console::out(&pretty(&answer));
    Ok(())
}

/// `ferrule messages …`.
pub async fn messages(command: MessagesCommand) -> Result<(), Error> {
    match command {
        MessagesCommand::Show { client, id } => {
            let client = Client::new(&client)?;
            let path = format!("/v1/messages/{}", encode_segment(&id));
            let (_, answer) = client.call(Method::GET, &path, &[], None, &[]).await?;
            console::out(&pretty(&answer));
            Ok(())
        }
        MessagesCommand::Cancel { client, id } => {
            let client = Client::new(&client)?;
            let path = format!("/v1/messages/{}", encode_segment(&id));
            let (_, answer) = client.call(Method::DELETE, &path, &[], None, &[]).await?;
            let was = match answer["previous_status"].as_str() {
                Some(status) => format!(" (was {status})"),
                None => String::new(),
            };
            console::out(&format!("{id} cancelled{was}"));
            if let Some(note) = answer["note"].as_str() {
                console::err(&format!("note: {note}"));
            }
            Ok(())
        }
    }
}

/// Percent-encodes a path segment.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn filter_query(filter: &DlqFilter) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(d) = &filter.destination {
        q.push(("destination", d.clone()));
    }
    if let Some(e) = &filter.error_contains {
        q.push(("error_contains", e.clone()));
    }
    q
}

/// Pages through the dead letters matching `filter`, collecting their ids.
async fn dead_ids(
    client: &Client,
    filter: &DlqFilter,
    bar: &ProgressBar,
) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = filter_query(filter);
        query.push(("limit", "1000".into()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let (_, page) = client
            .call(Method::GET, "/v1/dead-letters", &query, None, &[])
            .await?;
        let batch = page["messages"].as_array().cloned().unwrap_or_default();
        ids.extend(
            batch
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned)),
        );
        bar.set_message(format!("{} dead letters found", ids.len()));
        bar.tick();
        match page["next"].as_str() {
            Some(next) if !batch.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(ids),
        }
    }
}

/// `ferrule dlq …`.
pub async fn dlq(command: DlqCommand) -> Result<(), Error> {
    match command {
        DlqCommand::List {
            client,
            filter,
            limit,
        } => {
            let client = Client::new(&client)?;
            let mut query = filter_query(&filter);
            query.push(("limit", limit.to_string()));
            let (_, page) = client
                .call(Method::GET, "/v1/dead-letters", &query, None, &[])
                .await?;
            let rows = page["messages"].as_array().cloned().unwrap_or_default();
            for m in &rows {
                console::out(&format!(
                    "{}  {}  attempts={}  {}",
                    m["id"].as_str().unwrap_or(""),
                    m["destination"].as_str().unwrap_or(""),
                    m["attempts"],
                    m["last_error"].as_str().unwrap_or("")
                ));
            }
            console::err(&format!("{} dead letters shown", rows.len()));
            Ok(())
        }
        DlqCommand::Replay {
            client,
            filter,
            dry_run,
        } => {
            let client = Client::new(&client)?;
            let spinner = ProgressBar::new_spinner();
            let ids = dead_ids(&client, &filter, &spinner).await?;
            spinner.finish_and_clear();
            if dry_run {
                console::out(&format!("{} dead letters would be replayed", ids.len()));
                return Ok(());
            }
            let bar = ProgressBar::new(ids.len() as u64);
            if let Ok(style) =
                ProgressStyle::with_template("replaying {bar:40} {pos}/{len} ({eta})")
            {
                bar.set_style(style);
            }
            let mut replayed = 0u64;
            for chunk in ids.chunks(REPLAY_CHUNK) {
                let body = json!({"ids": chunk});
                let (_, report) = client
                    .call(
                        Method::POST,
                        "/v1/dead-letters/replay",
                        &[],
                        Some(&body),
                        &[],
                    )
                    .await?;
                replayed += report["count"].as_u64().unwrap_or(0);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            console::out(&format!("{replayed} dead letters replayed"));
            Ok(())
        }
        DlqCommand::Purge { client, filter } => {
            let client = Client::new(&client)?;
            let spinner = ProgressBar::new_spinner();
            let ids = dead_ids(&client, &filter, &spinner).await?;
            spinner.finish_and_clear();
            let bar = ProgressBar::new(ids.len() as u64);
            if let Ok(style) = ProgressStyle::with_template("purging {bar:40} {pos}/{len} ({eta})")
            {
                bar.set_style(style);
            }
            let mut purged = 0u64;
            for chunk in ids.chunks(REPLAY_CHUNK) {
                let mut body = json!({"ids": chunk});
                if let Some(d) = &filter.destination {
                    body["destination"] = json!(d);
                }
                if let Some(e) = &filter.error_contains {
                    body["error_contains"] = json!(e);
                }
                let (_, answer) = client
                    .call(
                        Method::POST,
                        "/v1/dead-letters/purge",
                        &[],
                        Some(&body),
                        &[],
                    )
                    .await?;
                purged += answer["purged"].as_u64().unwrap_or(0);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            console::out(&format!("{purged} dead letters purged"));
            Ok(())
        }
    }
}
