//! A fake GitHub REST API on 127.0.0.1 (hyper): it checks the token, keeps each pull request's
//! reviews, comments, labels, merge and state the way GitHub does (and shows them with
//! `GET /repos/{owner}/{repo}/pulls/{n}`), records every request (with its arrival on a
//! [`ManualClock`]), and answers from a script when told.
//!
//! ```no_run
//! # async fn demo() {
//! use ferrule_connectors::testing::fake_github::{FakeGithub, Script, TOKEN};
//! use serde_json::json;
//!
//! let github = FakeGithub::start().await;
//! // Point a GitHub destination with `TOKEN` at `github.base()`; the next merge of
//! // octo/app#42 is refused, as GitHub refuses a pull request it cannot merge:
//! github.script(
//!     "PUT /repos/octo/app/pulls/42/merge",
//!     Script::Reply(405, Vec::new(), json!({"message": "Pull Request is not mergeable"})),
//! );
//! // … deliver, then:
//! assert_eq!(github.lines(), ["PUT /repos/octo/app/pulls/42/merge"]);
//! assert!(!github.state().thread("octo/app", 42).merged);
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrule_policy::clock::{Clock, ManualClock};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use humantime_serde::re::humantime;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The only token the fake accepts; any other is answered 401 "Bad credentials".
pub const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
/// The account [`TOKEN`] acts as (`GET /user`), and the author of its reviews and comments.
pub const LOGIN: &str = "ferrule-bot";
/// The head commit of every pull request: a merge with another `sha` is answered 409.
pub const HEAD: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
/// The commit every merge makes.
pub const MERGE_SHA: &str = "e5bd3914e2e596debea16f433f57875b5b90bcd6";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`null` when there was none or it was not JSON).
    pub body: Value,
    /// When it arrived, on the fake's clock.
    pub at: Instant,
}

impl Recorded {
    /// `METHOD /path`, without the query.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The value of header `name`, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Whether it changes something at GitHub (any method but `GET`).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// What the fake does instead of acting like GitHub, for one matching request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answer this status, headers and JSON body.
    Reply(u16, Vec<(&'static str, String)>, Value),
    /// Answer this status with a non-JSON body.
    Raw(u16, &'static str),
    /// Act like GitHub, then never answer: the response is lost.
    ActThenHang,
    /// Close the connection without answering.
    Drop,
}

/// One pull request (or issue) as GitHub keeps it.
#[derive(Debug, Clone, Default)]
pub struct Thread {
    /// Whether it was merged.
    pub merged: bool,
    /// Whether it was closed.
    pub closed: bool,
    /// Its labels, in the order they were first added.
    pub labels: Vec<String>,
    /// Its reviews, as `GET …/reviews` lists them.
    pub reviews: Vec<Value>,
    /// Its comments, as `GET …/comments` lists them.
    pub comments: Vec<Value>,
}

/// What the fake holds: what it received, its pull requests, and how it behaves.
#[derive(Debug)]
pub struct State {
    /// Every request, in the order it arrived.
    pub requests: Vec<Recorded>,
    /// Pull requests and issues by `owner/repo#number`, made when first acted on.
    pub threads: BTreeMap<String, Thread>,
    /// Items per page of a list (default 100).
    pub page_size: usize,
    /// How long a write takes, on the fake's clock (default none).
    pub write_takes: Duration,
    /// How long a read (`GET`) takes, on the fake's clock (default none).
    pub read_takes: Duration,
    /// Writes being answered right now.
    pub writes_in_flight: usize,
    /// The most writes that were ever in flight at once.
    pub most_writes_in_flight: usize,
    clock: ManualClock,
    base: String,
    /// `METHOD /path` → what to do, first match first.
    scripts: Vec<(String, Script)>,
    next_id: u64,
}

impl State {
    /// Pull request (or issue) `number` of `repo` (`owner/name`).
    pub fn thread(&mut self, repo: &str, number: u64) -> &mut Thread {
        self.threads.entry(format!("{repo}#{number}")).or_default()
    }
}

/// A fake GitHub REST API on 127.0.0.1. See the [module](self).
#[derive(Debug)]
pub struct FakeGithub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// The clock requests are stamped with and writes take their time on.
    pub clock: ManualClock,
}

impl FakeGithub {
    /// Starts a fake on a clock of its own.
    pub async fn start() -> FakeGithub {
        Self::start_on(ManualClock::new()).await
    }

    /// Starts a fake on `clock` (share it with the code under test to measure its pace).
    pub async fn start_on(clock: ManualClock) -> FakeGithub {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            threads: BTreeMap::new(),
            page_size: 100,
            write_takes: Duration::ZERO,
            read_takes: Duration::ZERO,
            writes_in_flight: 0,
            most_writes_in_flight: 0,
            clock: clock.clone(),
            base: format!("http://{addr}"),
            scripts: Vec::new(),
            next_id: 1,
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGithub { addr, state, clock }
    }

    /// `http://127.0.0.1:<port>`: the `api_base` to point a connector at.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the fake holds, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next request matching `line` (`METHOD /path`) gets `script`.
    pub fn script(&self, line: &str, script: Script) {
        self.state().scripts.push((line.to_owned(), script));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Every request so far as `METHOD /path`.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    /// Waits (in real time, 1 ms at a time, for a few seconds at most) until `n` requests
    /// have arrived.
    ///
    /// # Panics
    ///
    /// When they do not.
    pub async fn wait_for_requests(&self, n: usize) {
        for _ in 0..5000 {
            if self.state().requests.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{n} requests never arrived: {:?}", self.lines());
    }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

/// A status, headers and JSON body.
type Reply = (u16, Vec<(&'static str, String)>, Value);

fn respond((status, headers, body): Reply) -> Answer {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).map_err(std::io::Error::other)?)
        .header("content-type", "application/json; charset=utf-8");
    for (name, value) in headers {
        response = response.header(name, value);
    }
    let body = if status == 204 {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    response
        .body(Full::new(body))
        .map_err(std::io::Error::other)
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Answer {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (recorded, script, takes, clock) = {
        let mut state = lock();
        let recorded = Recorded {
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: state.clock.now(),
        };
        state.requests.push(recorded.clone());
        let line = recorded.line();
        let script = state
            .scripts
            .iter()
            .position(|(l, _)| *l == line)
            .map(|i| state.scripts.remove(i).1);
        let takes = if recorded.is_write() {
            state.write_takes
        } else {
            state.read_takes
        };
        (recorded, script, takes, state.clock.clone())
    };
    match script {
        Some(Script::Reply(status, headers, body)) => respond((status, headers, body)),
        Some(Script::Raw(status, text)) => Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from(text)))
            .map_err(std::io::Error::other),
        Some(Script::Drop) => Err(std::io::Error::other("dropped")),
        Some(Script::ActThenHang) => {
            let _ = act_like_github(&mut lock(), &recorded);
            std::future::pending().await
        }
        None => {
            let write = recorded.is_write();
            if write {
                let mut s = lock();
                s.writes_in_flight += 1;
                s.most_writes_in_flight = s.most_writes_in_flight.max(s.writes_in_flight);
            }
            if !takes.is_zero() {
                clock.sleep(takes).await;
            }
            let mut state = lock();
            if write {
                state.writes_in_flight -= 1;
            }
            respond(act_like_github(&mut state, &recorded))
        }
    }
}

fn not_found() -> Reply {
    (404, Vec::new(), json!({"message": "Not Found"}))
}

/// What GitHub would answer, acting on the state.
fn act_like_github(state: &mut State, request: &Recorded) -> Reply {
    if request.header("authorization") != format!("Bearer {TOKEN}") {
        return (
            401,
            Vec::new(),
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    let now = humantime::format_rfc3339_seconds(state.clock.system_now()).to_string();
    let user = json!({"login": LOGIN, "id": 7});
    let path = request.path();
    if request.method == Method::GET && path == "/user" {
        return (200, Vec::new(), user);
    }
    // /repos/{owner}/{repo}/{pulls|issues}/{number}[/{what}]
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (repo, kind, number, what) = match segments.as_slice() {
        ["repos", owner, name, kind, number, rest @ ..] if rest.len() <= 1 => (
            format!("{owner}/{name}"),
            *kind,
            number.parse::<u64>().ok(),
            rest.first().copied().unwrap_or(""),
        ),
        _ => return not_found(),
    };
    let Some(number) = number else {
        return not_found();
    };
    let id = state.next_id;
    let method = request.method.as_str();
    match (method, kind, what) {
        ("POST", "pulls", "reviews") => {
            state.next_id += 1;
            let event = request.body["event"].as_str().unwrap_or("");
            let review = json!({
                "id": id,
                "html_url": format!("https://github.com/{repo}/pull/{number}#pullrequestreview-{id}"),
                "user": user,
                "body": request.body.get("body").cloned().unwrap_or(json!("")),
                "state": match event { "APPROVE" => "APPROVED", "REQUEST_CHANGES" => "CHANGES_REQUESTED", _ => "PENDING" },
                "commit_id": request.body.get("commit_id").cloned().unwrap_or(json!(HEAD)),
                "submitted_at": now,
            });
            state.thread(&repo, number).reviews.push(review.clone());
            (200, Vec::new(), review)
        }
        ("GET", "pulls", "reviews") => {
            let reviews = state.thread(&repo, number).reviews.clone();
            page(state, request, &reviews)
        }
        ("POST", "issues", "comments") => {
            state.next_id += 1;
            let comment = json!({
                "id": id,
                "html_url": format!("https://github.com/{repo}/pull/{number}#issuecomment-{id}"),
                "user": user,
                "body": request.body["body"],
                "created_at": now,
                "updated_at": now,
            });
            state.thread(&repo, number).comments.push(comment.clone());
            (201, Vec::new(), comment)
        }
        ("GET", "issues", "comments") => {
            let comments = state.thread(&repo, number).comments.clone();
            page(state, request, &comments)
        }
        ("PUT", "pulls", "merge") => {
            let thread = state.thread(&repo, number);
            if thread.merged {
                return (
                    405,
                    Vec::new(),
                    json!({"message": "Pull Request is not mergeable"}),
                );
            }
            if request.body.get("sha").is_some_and(|sha| sha != HEAD) {
                return (
                    409,
                    Vec::new(),
                    json!({"message": "Head branch was modified. Review and try the merge again."}),
                );
            }
            thread.merged = true;
            (
                200,
                Vec::new(),
                json!({"sha": MERGE_SHA, "merged": true, "message": "Pull Request successfully merged"}),
            )
        }
        ("GET", "pulls", "") => {
            let thread = state.thread(&repo, number);
            let closed = thread.merged || thread.closed;
            (
                200,
                Vec::new(),
                json!({
                    "number": number,
                    "state": if closed { "closed" } else { "open" },
                    "merged": thread.merged,
                    "merge_commit_sha": if thread.merged { json!(MERGE_SHA) } else { Value::Null },
                    "head": {"sha": HEAD},
                }),
            )
        }
        ("GET", "pulls", "merge") => {
            if state.thread(&repo, number).merged {
                (204, Vec::new(), Value::Null)
            } else {
                not_found()
            }
        }
        ("POST", "issues", "labels") => {
            let thread = state.thread(&repo, number);
            for label in request.body["labels"].as_array().into_iter().flatten() {
                let label = label.as_str().unwrap_or_default().to_owned();
                if !thread.labels.contains(&label) {
                    thread.labels.push(label);
                }
            }
            let labels: Vec<Value> = thread.labels.iter().map(|l| json!({"name": l})).collect();
            (200, Vec::new(), Value::Array(labels))
        }
        ("PATCH", "issues", "") => {
            state.thread(&repo, number).closed = request.body["state"] == "closed";
            (
                200,
                Vec::new(),
                json!({"number": number, "state": "closed"}),
            )
        }
        _ => not_found(),
    }
}

/// One page of `items`, with a `Link` to the next as GitHub sends it.
fn page(state: &State, request: &Recorded, items: &[Value]) -> Reply {
    let query = request.uri.split_once('?').map_or("", |(_, q)| q);
    let page: usize = query
        .split('&')
        .find_map(|p| p.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size = state.page_size;
    let chunk: Vec<Value> = items
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let mut headers = Vec::new();
    if items.len() > page * size {
        let (base, path) = (&state.base, request.path());
        headers.push((
            "link",
            format!(
                "<{base}{path}?per_page=100&page={}>; rel=\"next\", <{base}{path}?page=9>; rel=\"last\"",
                page + 1,
            ),
        ));
    }
    (200, headers, Value::Array(chunk))
}
