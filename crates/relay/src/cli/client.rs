//! The CLI commands that talk to a running relay over its HTTP API: `send`, `status`,
//! `messages list | show | replay | cancel`, `dlq list | replay | purge`,
//! `breakers list | reset | force-open | disable`, `destinations list | pause | resume`, `schedules list | pause | resume | trigger`, `routes chats`, `audit`, `alerts`, `stats`.
//!
//! They go through the API because the SQLite store has a single owner (the running relay
//! holds its lock file). They find the relay at `--server`, else `FERRULE_SERVER`, else the
//! `server.listen` of the configuration given with `--config` or `FERRULE_CONFIG`, else
//! `http://127.0.0.1:8080`.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ferrule_policy::ConfigError;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::{
    AlertsArgs, AuditArgs, BreakersCommand, ClientArgs, Confirm, DestinationsCommand, DlqCommand,
    DlqFilter, MessagesCommand, PageArgs, RouteChatsAction, RoutesCommand, RunsCommand,
    SchedulesCommand, SendArgs, StatsArgs, StatusArgs, console, render,
};
use crate::config::Config;
use crate::error::Error;

/// Ids replayed or purged per request by `dlq replay` and `dlq purge`.
const REPLAY_CHUNK: usize = 500;

/// Where the relay is when nothing says otherwise.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The relay's base URL: `--server` (or `FERRULE_SERVER`, which clap has read into it), else
/// the `server.listen` of the configuration at `config`, else `http://127.0.0.1:8080`.
///
/// The configuration is read without validating it: only `server.listen` matters here, and
/// its secrets (`env:`, `file:`) may live only where the relay runs.
pub fn server_url(args: &ClientArgs, config: Option<&Path>) -> Result<String, Error> {
    if let Some(server) = args.server.as_deref().filter(|s| !s.is_empty()) {
        return Ok(server.trim_end_matches('/').to_owned());
    }
    match config {
        Some(path) => url_for_listen(&Config::load_unvalidated(Some(path))?.server.listen),
        None => Ok(DEFAULT_SERVER.to_owned()),
    }
}

/// The URL that reaches a relay listening on `listen`: a wildcard address (`0.0.0.0`, `[::]`)
/// means this machine's loopback.
fn url_for_listen(listen: &str) -> Result<String, Error> {
    let invalid =
        |message: String| Error::Config(ConfigError::new("server.listen", message).into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| invalid(format!("`{listen}` is not an address: {e}")))?;
    if addr.port() == 0 {
        return Err(invalid(format!(
            "`{listen}` listens on any free port; pass --server with the address `ferrule serve` printed"
        )));
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(ip, addr.port())))
}

/// An API client for one relay.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the relay [`server_url`] finds.
    pub fn new(args: &ClientArgs, config: Option<&Path>) -> Result<Self, Error> {
        let base = server_url(args, config)?;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Client(format!(
                "--server must be an http:// or https:// URL, not `{base}`"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Client(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
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

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        Ok(self.call(Method::GET, path, query, None, &[]).await?.1)
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        Ok(self.call(Method::POST, path, &[], body, &[]).await?.1)
    }
}

/// Prints `value` as the API sent it.
fn print_json(value: &Value) {
    console::out(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// `ferrule send`.
pub async fn send(client: &Client, args: SendArgs) -> Result<(), Error> {
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

/// `ferrule status`: prints the status and answers the exit code its overall state means
/// ([`crate::cli::STATUS_EXIT_CODES`]).
pub async fn status(client: &Client, args: StatusArgs) -> Result<u8, Error> {
    let answer = client.get("/status", &[]).await?;
    if args.json {
        print_json(&answer);
    } else {
        console::out(&render::status(&answer, client.base()));
    }
    Ok(match answer["status"].as_str() {
        Some("ok") => 0,
        Some("degraded") => 1,
        Some("unhealthy" | "draining") => 2,
        _ => 3,
    })
}

/// The query of one page of a listing.
fn page_query(page: &PageArgs) -> Vec<(&'static str, String)> {
    let mut query = vec![("limit", page.limit.to_string())];
    if let Some(cursor) = &page.cursor {
        query.push(("cursor", cursor.clone()));
    }
    query
}

/// Prints one page of messages (`what` names one, e.g. "dead letter") as a table, or as JSON,
/// and on stderr how many were shown and how to get the next page.
fn print_page(answer: &Value, page: &PageArgs, what: &str, table: fn(&[Value]) -> String) {
    if page.json {
        print_json(answer);
        return;
    }
    let rows = answer["messages"].as_array().map_or(&[][..], Vec::as_slice);
    if !rows.is_empty() {
        console::out(&table(rows));
    }
    let plural = if rows.len() == 1 { "" } else { "s" };
    let mut note = format!("{} {what}{plural} shown", rows.len());
    if let Some(next) = answer["next"].as_str().filter(|_| !rows.is_empty()) {
        note.push_str(&format!("; the next page: --cursor {next}"));
    }
    console::err(&note);
}

/// `ferrule messages …`.
pub async fn messages(client: &Client, command: MessagesCommand) -> Result<(), Error> {
    match command {
        MessagesCommand::List {
            status,
            destination,
            page,
        } => {
            let mut query = page_query(&page);
            if let Some(status) = status {
                query.push(("status", status));
            }
            if let Some(destination) = destination {
                query.push(("destination", destination));
            }
            let answer = client.get("/v1/messages", &query).await?;
            print_page(&answer, &page, "message", render::messages);
        }
        MessagesCommand::Show { id, json } => {
            let answer = client
                .get(&format!("/v1/messages/{}", encode_segment(&id)), &[])
                .await?;
            if json {
                print_json(&answer);
            } else {
                console::out(&render::message(&answer));
            }
        }
        MessagesCommand::Replay { id } => {
            let path = format!("/v1/messages/{}/replay", encode_segment(&id));
            let answer = client.post(&path, None).await?;
            console::out(&format!(
                "{} {}",
                answer["id"].as_str().unwrap_or(&id),
                answer["status"].as_str().unwrap_or("queued")
            ));
        }
        MessagesCommand::Cancel { id } => {
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
        }
    }
    Ok(())
}

/// `ferrule runs …`.
pub async fn runs(client: &Client, command: RunsCommand) -> Result<(), Error> {
    match command {
        RunsCommand::List {
            route,
            state,
            status,
            since,
            page,
        } => {
            let mut query = page_query(&page);
            for (name, value) in [
                ("route", route),
                ("state", state),
                ("status", status),
                ("since", since),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let answer = client.get("/v1/runs", &query).await?;
            if page.json {
                print_json(&answer);
                return Ok(());
            }
            let rows = answer["runs"].as_array().map_or(&[][..], Vec::as_slice);
            if !rows.is_empty() {
                console::out(&render::runs(rows));
            }
            let plural = if rows.len() == 1 { "" } else { "s" };
            let mut note = format!("{} run{plural} shown", rows.len());
            if let Some(next) = answer["next"].as_str().filter(|_| !rows.is_empty()) {
                note.push_str(&format!("; the next page: --cursor {next}"));
            }
            console::err(&note);
        }
        RunsCommand::Show { id, json } => {
            let answer = client
                .get(&format!("/v1/runs/{}", encode_segment(&id)), &[])
                .await?;
            if json {
                print_json(&answer);
            } else {
                console::out(&render::run(&answer));
            }
        }
        RunsCommand::Retry { id } => {
            let path = format!("/v1/runs/{}/retry", encode_segment(&id));
            let answer = client.post(&path, None).await?;
            console::out(&format!(
                "{id} {} ({})",
                answer["run"]["status"].as_str().unwrap_or("active"),
                answer["run"]["state"].as_str().unwrap_or("-")
            ));
        }
        RunsCommand::Cancel { id } => {
            let path = format!("/v1/runs/{}/cancel", encode_segment(&id));
            client.post(&path, None).await?;
            console::out(&format!("{id} cancelled"));
        }
    }
    Ok(())
}

/// `ferrule routes chats <route> [set <key> <chat_id> | remove <key>]`: the route's chat
/// mappings after the change, if any.
pub async fn routes(client: &Client, command: RoutesCommand) -> Result<(), Error> {
    let RoutesCommand::Chats(args) = command;
    let path = format!("/v1/routes/{}/chats", encode_segment(&args.route));
    let (answer, done) = match args.action {
        None => (client.get(&path, &[]).await?, None),
        Some(RouteChatsAction::Set { key, chat_id }) => {
            let body = json!({"key": key, "chat_id": chat_id});
            let (_, answer) = client
                .call(Method::PUT, &path, &[], Some(&body), &[])
                .await?;
            (answer, Some(format!("{key} → {chat_id} set")))
        }
        Some(RouteChatsAction::Remove { key }) => {
            let query = [("key", key.clone())];
            let (_, answer) = client
                .call(Method::DELETE, &path, &query, None, &[])
                .await?;
            (answer, Some(format!("{key} removed")))
        }
    };
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    if let Some(done) = done {
        console::err(&done);
    }
    let rows = answer["chats"].as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        console::err(&format!("route {} maps no chat", args.route));
    } else {
        console::out(&render::route_chats(rows));
    }
    Ok(())
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
async fn dead_ids(client: &Client, filter: &DlqFilter) -> Result<Vec<String>, Error> {
    let spinner = ProgressBar::new_spinner();
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = filter_query(filter);
        query.push(("limit", "1000".into()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get("/v1/dead-letters", &query).await?;
        let batch = page["messages"].as_array().cloned().unwrap_or_default();
        ids.extend(
            batch
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned)),
        );
        spinner.set_message(format!("{} dead letters found", ids.len()));
        spinner.tick();
        match page["next"].as_str() {
            Some(next) if !batch.is_empty() => cursor = Some(next.to_owned()),
            _ => {
                spinner.finish_and_clear();
                return Ok(ids);
            }
        }
    }
}

/// What the filter selects, for people: "dead letters of `hook`", "every dead letter".
fn described(filter: &DlqFilter, count: usize) -> String {
    let mut text = match count {
        1 => "1 dead letter".to_owned(),
        n => format!("{n} dead letters"),
    };
    if let Some(d) = &filter.destination {
        text.push_str(&format!(" of `{d}`"));
    }
    if let Some(e) = &filter.error_contains {
        text.push_str(&format!(" whose last error contains `{e}`"));
    }
    text
}

/// Whether to go on with `verb` (e.g. "purge", whose past is `done`, "purged") on `what`:
/// not on a dry run; at once with `--yes`; else only after a person answers yes on a
/// terminal. Never without one of those.
fn go_ahead(verb: &str, done: &str, what: &str, confirm: &Confirm) -> Result<bool, Error> {
    if confirm.dry_run {
        console::out(&format!(
            "{what} would be {done} (dry run: nothing changed)"
        ));
        return Ok(false);
    }
    if confirm.yes {
        return Ok(true);
    }
    let capitalised = verb[..1].to_uppercase() + &verb[1..];
    match console::confirm(&format!("{capitalised} {what}?")) {
        Some(true) => Ok(true),
        Some(false) => Err(Error::Client(format!("not confirmed: nothing was {done}"))),
        None => Err(Error::Client(format!(
            "refusing to {verb} {what} without confirmation: stdin is not a terminal; \
             pass --yes (or --dry-run to only count them)"
        ))),
    }
}

/// Sends `ids` to `path` in chunks of [`REPLAY_CHUNK`] with a progress bar labelled `verb`;
/// `body` makes each request's body from its chunk and `count` reads how many it affected.
async fn in_chunks(
    client: &Client,
    path: &str,
    ids: &[String],
    verb: &str,
    body: impl Fn(&[String]) -> Value,
    count: &str,
) -> Result<u64, Error> {
    let bar = ProgressBar::new(ids.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template(&format!("{verb} {{bar:40}} {{pos}}/{{len}} ({{eta}})"))
    {
        bar.set_style(style);
    }
    let mut done = 0u64;
    for chunk in ids.chunks(REPLAY_CHUNK) {
        let answer = client.post(path, Some(&body(chunk))).await?;
        done += answer[count].as_u64().unwrap_or(0);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(done)
}

/// `ferrule dlq …`.
pub async fn dlq(client: &Client, command: DlqCommand) -> Result<(), Error> {
    match command {
        DlqCommand::List { filter, page } => {
            let mut query = filter_query(&filter);
            query.extend(page_query(&page));
            let answer = client.get("/v1/dead-letters", &query).await?;
            print_page(&answer, &page, "dead letter", render::dead_letters);
        }
        DlqCommand::Replay { filter, confirm } => {
            let ids = dead_ids(client, &filter).await?;
            if ids.is_empty() {
                console::out(&format!("{}: nothing to replay", described(&filter, 0)));
                return Ok(());
            }
            if !go_ahead(
                "replay",
                "replayed",
                &described(&filter, ids.len()),
                &confirm,
            )? {
                return Ok(());
            }
            let replayed = in_chunks(
                client,
                "/v1/dead-letters/replay",
                &ids,
                "replaying",
                |chunk| json!({"ids": chunk}),
                "count",
            )
            .await?;
            console::out(&format!("{replayed} dead letters replayed"));
        }
        DlqCommand::Purge {
            filter,
            all,
            confirm,
        } => {
            if filter.is_empty() && !all {
                return Err(Error::Client(
                    "dlq purge needs a filter (--destination, --error-contains) or --all to \
                     purge every dead letter"
                        .into(),
                ));
            }
            let ids = dead_ids(client, &filter).await?;
            if ids.is_empty() {
                console::out(&format!("{}: nothing to purge", described(&filter, 0)));
                return Ok(());
            }
            if !go_ahead("purge", "purged", &described(&filter, ids.len()), &confirm)? {
                return Ok(());
            }
            let purged = in_chunks(
                client,
                "/v1/dead-letters/purge",
                &ids,
                "purging",
                |chunk| {
                    // Only those that still match: one replayed meanwhile is not purged.
                    let mut body = json!({"ids": chunk});
                    if let Some(d) = &filter.destination {
                        body["destination"] = json!(d);
                    }
                    if let Some(e) = &filter.error_contains {
                        body["error_contains"] = json!(e);
                    }
                    body
                },
                "purged",
            )
            .await?;
            console::out(&format!("{purged} dead letters purged"));
        }
    }
    Ok(())
}

/// `ferrule breakers …`.
pub async fn breakers(client: &Client, command: BreakersCommand) -> Result<(), Error> {
    let (destination, action) = match command {
        BreakersCommand::List { json } => {
            let answer = client.get("/v1/breakers", &[]).await?;
            if json {
                print_json(&answer);
            } else {
                let rows = answer["breakers"].as_array().map_or(&[][..], Vec::as_slice);
                console::out(&render::breakers(rows));
            }
            return Ok(());
        }
        BreakersCommand::Reset { destination } => (destination, "reset"),
        BreakersCommand::ForceOpen { destination } => (destination, "force-open"),
        BreakersCommand::Disable { destination } => (destination, "disable"),
    };
    let path = format!("/v1/breakers/{}/{action}", encode_segment(&destination));
    let answer = client.post(&path, None).await?;
    console::out(&render::breakers(std::slice::from_ref(&answer)));
    Ok(())
}

/// `ferrule destinations …`.
pub async fn destinations(client: &Client, command: DestinationsCommand) -> Result<(), Error> {
    let (destination, action, query) = match command {
        DestinationsCommand::List { json } => {
            let answer = client.get("/v1/destinations", &[]).await?;
            if json {
                print_json(&answer);
            } else {
                let rows = answer["destinations"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                console::out(&render::destinations(rows));
            }
            return Ok(());
        }
        DestinationsCommand::Pause {
            destination,
            reason,
        } => (
            destination,
            "pause",
            reason.map(|r| vec![("reason", r)]).unwrap_or_default(),
        ),
        DestinationsCommand::Resume { destination } => (destination, "resume", Vec::new()),
    };
    let path = format!("/v1/destinations/{}/{action}", encode_segment(&destination));
    let (_, answer) = client.call(Method::POST, &path, &query, None, &[]).await?;
    match answer["paused"]["paused_by"].as_str() {
        Some(by) => console::out(&format!(
            "{destination} paused by {by} at {}: its messages wait until `ferrule destinations resume {destination}`",
            answer["paused"]["paused_at"].as_str().unwrap_or("-")
        )),
        None => console::out(&format!("{destination} delivering")),
    }
    Ok(())
}

/// `ferrule schedules …` (default: list).
pub async fn schedules(client: &Client, command: Option<SchedulesCommand>) -> Result<(), Error> {
    let command = command.unwrap_or(SchedulesCommand::List { json: false });
    let (name, action, query) = match command {
        SchedulesCommand::List { json } => {
            let answer = client.get("/v1/schedules", &[]).await?;
            if json {
                print_json(&answer);
            } else {
                let rows = answer["schedules"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                if rows.is_empty() {
                    console::err("no schedules are configured ([[schedules]])");
                } else {
                    console::out(&render::schedules(rows));
                }
            }
            return Ok(());
        }
        SchedulesCommand::Pause { name, reason } => (
            name,
            "pause",
            reason.map(|r| vec![("reason", r)]).unwrap_or_default(),
        ),
        SchedulesCommand::Resume { name } => (name, "resume", Vec::new()),
        SchedulesCommand::Trigger { name } => (name, "trigger", Vec::new()),
    };
    let path = format!("/v1/schedules/{}/{action}", encode_segment(&name));
    let (_, answer) = client.call(Method::POST, &path, &query, None, &[]).await?;
    if action == "trigger" {
        let o = &answer["occurrence"];
        let what = match (o["message_id"].as_str(), o["run_id"].as_str()) {
            (Some(id), _) => format!("message {id}"),
            (None, Some(id)) => format!("run {id}"),
            (None, None) => "nothing".to_owned(),
        };
        console::out(&format!(
            "{name} fired at {}: {what}",
            o["scheduled_for"].as_str().unwrap_or("-")
        ));
        return Ok(());
    }
    match answer["paused"]["paused_by"].as_str() {
        Some(by) => console::out(&format!(
            "{name} paused by {by} at {}: it fires again after `ferrule schedules resume {name}`",
            answer["paused"]["paused_at"].as_str().unwrap_or("-")
        )),
        None => console::out(&format!(
            "{name} active; next occurrence {}",
            answer["next"].as_str().unwrap_or("never")
        )),
    }
    Ok(())
}

/// `ferrule alerts`.
pub async fn alerts(client: &Client, args: AlertsArgs) -> Result<(), Error> {
    let mut query = page_query(&args.page);
    if let Some(kind) = args.kind {
        query.push(("kind", kind));
    }
    if let Some(subject) = args.subject {
        query.push(("subject", subject));
    }
    let now = std::time::SystemTime::now();
    if let Some(since) = args.since {
        query.push(("since", since_time(&since, now)?));
    }
    if let Some(until) = args.until {
        let time = since_time(&until, now).map_err(|_| {
            Error::Client(format!(
                "--until `{until}` is neither an RFC 3339 time nor a duration such as `24h`"
            ))
        })?;
        query.push(("until", time));
    }
    let answer = client.get("/v1/alerts", &query).await?;
    if args.page.json {
        print_json(&answer);
        return Ok(());
    }
    let rows = answer["alerts"].as_array().map_or(&[][..], Vec::as_slice);
    if !rows.is_empty() {
        console::out(&render::alerts(rows));
    }
    let plural = if rows.len() == 1 { "" } else { "s" };
    let mut note = format!("{} alert{plural} shown", rows.len());
    if let Some(next) = answer["next"].as_str().filter(|_| !rows.is_empty()) {
        note.push_str(&format!("; the next page: --cursor {next}"));
    }
    console::err(&note);
    Ok(())
}

/// `ferrule audit`.
pub async fn audit(client: &Client, args: AuditArgs) -> Result<(), Error> {
    let mut query = page_query(&args.page);
    if let Some(actor) = args.actor {
        query.push(("actor", actor));
    }
    if let Some(action) = args.action {
        query.push(("action", action));
    }
    if let Some(since) = args.since {
        query.push(("since", since_time(&since, std::time::SystemTime::now())?));
    }
    let answer = client.get("/v1/audit", &query).await?;
    if args.page.json {
        print_json(&answer);
        return Ok(());
    }
    let rows = answer["entries"].as_array().map_or(&[][..], Vec::as_slice);
    if !rows.is_empty() {
        console::out(&render::audit(rows));
    }
    let plural = if rows.len() == 1 { "y" } else { "ies" };
    let mut note = format!("{} entr{plural} shown", rows.len());
    if let Some(next) = answer["next"].as_str().filter(|_| !rows.is_empty()) {
        note.push_str(&format!("; the next page: --cursor {next}"));
    }
    console::err(&note);
    Ok(())
}

/// `ferrule stats`.
pub async fn stats(client: &Client, args: StatsArgs) -> Result<(), Error> {
    if crate::rollups::parse_window(&args.window).is_none() {
        return Err(Error::Client(format!(
            "--window `{}` must be a number and a unit: 1-999m, 1-999h or 1-99d (e.g. 1h, 24h, 7d)",
            args.window
        )));
    }
    let mut query = vec![("window", args.window)];
    if let Some(destination) = args.destination {
        query.push(("destination", destination));
    }
    if let Some(route) = args.route {
        query.push(("route", route));
    }
    let answer = client.get("/v1/stats", &query).await?;
    if args.json {
        print_json(&answer);
    } else {
        console::out(&render::stats(&answer));
    }
    Ok(())
}

/// `--since` as the RFC 3339 time the API takes: given as one, or as a duration ago (`24h`).
fn since_time(since: &str, now: std::time::SystemTime) -> Result<String, Error> {
    if let Some(t) = crate::time::parse_rfc3339(since) {
        return Ok(crate::time::rfc3339(t));
    }
    let ago = humantime::parse_duration(since).map_err(|_| {
        Error::Client(format!(
            "--since `{since}` is neither an RFC 3339 time nor a duration such as `24h`"
        ))
    })?;
    Ok(crate::time::rfc3339(
        now.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        let now = crate::time::parse_rfc3339("2026-01-02T00:00:00Z").unwrap();
        assert_eq!(since_time("24h", now).unwrap(), "2026-01-01T00:00:00.000Z");
        assert_eq!(
            since_time("2025-12-31T12:00:00Z", now).unwrap(),
            "2025-12-31T12:00:00.000Z"
        );
        assert!(
            since_time("yesterday", now)
                .unwrap_err()
                .to_string()
                .contains("--since")
        );
    }

    #[test]
    fn the_server_url_comes_from_the_listen_address_with_wildcards_on_loopback() {
        assert_eq!(
            url_for_listen("127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            url_for_listen("0.0.0.0:8081").unwrap(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(url_for_listen("[::]:8082").unwrap(), "http://[::1]:8082");
        assert_eq!(
            url_for_listen("192.0.2.7:80").unwrap(),
            "http://192.0.2.7:80"
        );
        for bad in ["127.0.0.1:0", "localhost:8080", "nowhere"] {
            let e = url_for_listen(bad).unwrap_err().to_string();
            assert!(e.contains("server.listen"), "{bad}: {e}");
        }
    }

    #[test]
    fn server_beats_the_config_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferrule.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:9100\"\n[[destinations]]\nname = \"x\"\ntype = \"telegram\"\nbot_token = \"env:FERRULE_TEST_UNSET_TOKEN\"\n",
        )
        .unwrap();
        let none = ClientArgs::default();
        assert_eq!(server_url(&none, None).unwrap(), DEFAULT_SERVER);
        assert_eq!(
            server_url(&none, Some(&path)).unwrap(),
            "http://127.0.0.1:9100",
            "an unset env: secret does not matter here"
        );
        let given = ClientArgs {
            server: Some("http://relay.example:1/".into()),
            token: None,
        };
        assert_eq!(
            server_url(&given, Some(&path)).unwrap(),
            "http://relay.example:1"
        );
    }
}
