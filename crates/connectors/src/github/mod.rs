//! The GitHub connector: acts on a pull request — approve, request changes, comment, merge,
//! label, close — through GitHub's REST API, never twice.
//!
//! Each attempt validates the stored payload again ([`validate_payload`]) and makes the
//! action's one request:
//!
//! | action | request |
//! |---|---|
//! | `approve`, `request_changes` | `POST /repos/{owner}/{repo}/pulls/{n}/reviews` with `event` (and `commit_id` = `sha`) |
//! | `comment` | `POST /repos/{owner}/{repo}/issues/{n}/comments` |
//! | `merge` | `PUT /repos/{owner}/{repo}/pulls/{n}/merge` with `sha` and `merge_method` |
//! | `label` | `POST /repos/{owner}/{repo}/issues/{n}/labels` |
//! | `close` | `PATCH /repos/{owner}/{repo}/issues/{n}` with `state: closed` |
//!
//! **Never twice.** A timeout or a crash leaves unknown whether GitHub acted, so an attempt
//! after the first looks before it acts (the first makes no extra call):
//!
//! - `merge`: `GET …/pulls/{n}/merge`; 204 means merged, and the attempt succeeds without
//!   merging again (then `GET …/pulls/{n}` reads the merge commit for the output; if that read
//!   fails, the output just lacks it).
//! - `approve`, `request_changes`: the pull request's reviews; one by this token's account
//!   (`login`, or `GET /user` once) counts as this message's when it carries the message's
//!   marker, or is in the same state on the same commit (`sha`); with neither a body nor a
//!   `sha`, an approval submitted since the message was created (its ULID's time, less five
//!   minutes for clock skew) counts.
//! - `comment`: comments and review bodies carry a hidden marker `<!-- ferrule:{message id} -->`;
//!   a retry looks for it among the comments.
//! - `label` and `close` are idempotent at GitHub: repeating them changes nothing.
//!
//! **Output.** A success's [`DeliveryResult::output`] holds what GitHub answered that a later
//! step may use, for the review or comment an earlier attempt made too:
//!
//! | action | output |
//! |---|---|
//! | `approve`, `request_changes` | `{"id", "html_url", "state"}` of the review (`state`: `APPROVED`, `CHANGES_REQUESTED`) |
//! | `comment` | `{"id", "html_url"}` of the comment |
//! | `merge` | `{"merged": true, "sha"}`: the merge commit |
//! | `label` | `{"labels": [...]}`: every label the pull request has now, by name |
//! | `close` | `{"state": "closed"}` |
//!
//! When a retry found the action already done, the output also has `"already": true`.
//!
//! **Classification.**
//!
//! | answer | outcome | signal |
//! |---|---|---|
//! | 2xx | [`Outcome::Success`], what was done in the detail | — |
//! | 403/429 with `retry-after` | [`Outcome::RetryAfter`] | [`Signal::PauseDestination`] |
//! | 403/429 with `x-ratelimit-remaining: 0` (primary limit) | [`Outcome::RetryAfter`] until `x-ratelimit-reset` | [`Signal::PauseDestination`] |
//! | other 429, 403 naming a rate limit (secondary limit) | [`Outcome::RetryAfter`]: 1 min, doubling while it lasts ([`SecondaryLimit`]); [`Outcome::Permanent`] after `max_tries` in a row | [`Signal::PauseDestination`] |
//! | 401 | [`Outcome::Permanent`] | [`Signal::Unauthorized`] |
//! | other 403 ("Resource not accessible by integration", …) | [`Outcome::Permanent`], with a hint about the token's permissions | — |
//! | 405 on merge (not mergeable), 409 on merge (head moved since `sha`) | [`Outcome::Permanent`] with that reason | — |
//! | 404, 410, 422, other 4xx, 3xx | [`Outcome::Permanent`], GitHub's message in the detail | — |
//! | 5xx, 408, network errors, timeouts | [`Outcome::Transient`] | — |
//!
//! Rate limits belong to the token, so they pause the whole destination and are not breaker
//! failures. A plain 403 is a configuration problem, but of this token *for this repository or
//! action* (a fine-grained token without access to one repository, an organisation's policy):
//! the message fails for good, and the destination's other messages go on — unlike a 401,
//! which no request can succeed after.
//!
//! **Pace.** GitHub asks for writes one at a time per token, at least a second apart. The
//! connector does not wait (it never sleeps); the relay asks a [`WritePace`] before each
//! attempt and defers the message in the store when refused.
//!
//! The token is sent only in the `Authorization` header (marked sensitive), only to `api_base`
//! (pagination links elsewhere are not followed), and never appears in a detail or `Debug`.

mod config;
mod pace;
mod payload;
mod reply;
#[cfg(test)]
mod tests;
mod throttle;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferrule_policy::{Outcome, SharedClock};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use humantime_serde::re::humantime;
use reqwest::{Client, RequestBuilder, redirect};
use serde_json::{Map, Value, json};

pub use self::config::{DEFAULT_API_BASE, GithubConfig, GithubToken, SecondaryLimit};
pub use self::pace::{WritePace, WritePermit};
pub use self::payload::{
    Action, GithubPayload, MAX_BODY_CHARS, MAX_LABEL_CHARS, MAX_LABELS, MergeMethod, PayloadError,
    Repo, validate_payload,
};
use self::reply::{Reply, Verdict, assess};
use self::throttle::Throttle;
use crate::shared::{DETAIL_CHARS, read_body, transport_detail, truncate};
use crate::{Connector, ConnectorError, Delivery, DeliveryResult, Signal};

/// The API version every request asks for.
const API_VERSION: &str = "2022-11-28";
/// The largest response body read: a page of 100 reviews with long bodies.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The most pages of reviews or comments a retry reads looking for an earlier attempt's.
const MAX_PAGES: usize = 100;
/// How much earlier than the message's creation an approval may be dated and still count as
/// this message's: clock skew between the relay and GitHub.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The prefix of a detail about the look before acting.
const CHECKING: &str = "checking what an earlier attempt did: ";

/// Acts on pull requests with one GitHub token.
///
/// Built once per destination: it owns one HTTP client (connection pool, TLS roots, the
/// token's headers, no redirects) and the token's secondary-limit run. Cloning is cheap and
/// shares both.
///
/// ```
/// use ferrule_connectors::github::{GithubConfig, GithubConnector};
///
/// let config: GithubConfig = toml::from_str(r#"
///     token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
///     user_agent = "acme-release-bot"
/// "#)?;
/// let connector = GithubConnector::new(config, ferrule_policy::clock::system())?;
/// assert!(!format!("{connector:?}").contains("16C7e42F"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct GithubConnector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    api_base: String,
    token: GithubToken,
    timeout: Duration,
    min_write_interval: Duration,
    /// The token's account: configured, or learnt from `GET /user` on the first retried review.
    login: Mutex<Option<String>>,
    throttle: Throttle,
    clock: SharedClock,
}

/// What one attempt produced, before timing.
#[derive(Debug)]
struct Attempt {
    outcome: Outcome,
    code: Option<i32>,
    detail: String,
    signal: Option<Signal>,
    output: Option<Value>,
}

impl Attempt {
    fn new(outcome: Outcome, code: Option<u16>, detail: String) -> Self {
        Attempt {
            outcome,
            code: code.map(i32::from),
            detail,
            signal: None,
            output: None,
        }
    }

    /// A success with `output`.
    fn done(code: u16, detail: String, output: Value) -> Self {
        Attempt {
            output: Some(output),
            ..Attempt::new(Outcome::Success, Some(code), detail)
        }
    }

    fn with_signal(mut self, signal: Signal) -> Self {
        self.signal = Some(signal);
        self
    }
}

impl GithubConnector {
    /// Validates `config` and builds the connector; `clock` times requests and attempts and
    /// reads `retry-after` and `x-ratelimit-reset` against its wall clock.
    pub fn new(config: GithubConfig, clock: SharedClock) -> Result<Self, ConnectorError> {
        let api_base = config.parse_api_base()?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", config.token.expose()))
            .map_err(|_| ConnectorError::InvalidSecret {
                field: "token".into(),
                reason: "cannot be sent in a header".into(),
            })?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        headers.insert(AUTHORIZATION, authorization);
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .user_agent(config.user_agent.as_str())
            .default_headers(headers)
            .build()
            .map_err(|e| ConnectorError::Client {
                source: Box::new(e.without_url()),
            })?;
        Ok(GithubConnector {
            inner: Arc::new(Inner {
                client,
                api_base,
                token: config.token,
                timeout: config.timeout,
                min_write_interval: config.min_write_interval,
                login: Mutex::new(config.login),
                throttle: Throttle::new(config.secondary_limit),
                clock,
            }),
        })
    }

    /// The least time between one write with this token finishing and the next starting: the
    /// interval of the [`WritePace`] the relay keeps for the token.
    pub fn min_write_interval(&self) -> Duration {
        self.inner.min_write_interval
    }

    /// Whether `other` acts with the same token on the same API: destinations that do must
    /// share one [`WritePace`], since GitHub paces the token, not the destination.
    pub fn shares_token_with(&self, other: &GithubConnector) -> bool {
        self.inner.token == other.inner.token && self.inner.api_base == other.inner.api_base
    }

    /// One attempt, without the timing.
    async fn attempt(&self, delivery: &Delivery<'_>) -> Attempt {
        let payload = match validate_payload(delivery.payload) {
            Ok(payload) => payload,
            Err(err) => {
                return Attempt::new(Outcome::Permanent, None, format!("invalid payload: {err}"));
            }
        };
        let call = Call {
            payload: &payload,
            message: delivery.message_id,
        };
        if delivery.attempt > 1 {
            match self.done_earlier(&call).await {
                Ok(Some(done)) => return done,
                Ok(None) => {}
                Err(failed) => return failed,
            }
        }
        let reply = match self.send(self.action_request(&call)).await {
            Ok(reply) => reply,
            Err(detail) => return Attempt::new(Outcome::Transient, None, detail),
        };
        if let Err(failed) = self.judge(&reply, &call, "") {
            return failed;
        }
        let json = reply.json.as_ref().unwrap_or(&Value::Null);
        Attempt::done(reply.status, call.done(json), call.output(json))
    }

    /// The request that performs the action.
    fn action_request(&self, call: &Call<'_>) -> RequestBuilder {
        let client = &self.inner.client;
        let (pull, issue) = (self.pull_url(call), self.issue_url(call));
        let marked = |body: &str| format!("{body}\n\n{}", call.marker());
        let (request, body) = match &call.payload.action {
            Action::Approve { body, sha } => (
                client.post(format!("{pull}/reviews")),
                review("APPROVE", body.as_deref().map(marked), sha.as_deref()),
            ),
            Action::RequestChanges { body, sha } => (
                client.post(format!("{pull}/reviews")),
                review("REQUEST_CHANGES", Some(marked(body)), sha.as_deref()),
            ),
            Action::Comment { body } => (
                client.post(format!("{issue}/comments")),
                json!({ "body": marked(body) }),
            ),
            Action::Merge { sha, method } => {
                let mut params = json!({});
                if let Some(sha) = sha {
                    params["sha"] = Value::from(sha.as_str());
                }
                if let Some(method) = method {
                    params["merge_method"] = Value::from(method.as_str());
                }
                (client.put(format!("{pull}/merge")), params)
            }
            Action::Label { labels } => (
                client.post(format!("{issue}/labels")),
                json!({ "labels": labels }),
            ),
            Action::Close => (client.patch(issue), json!({ "state": "closed" })),
        };
        request
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    /// One health check: `GET /rate_limit`, which GitHub answers without counting it against
    /// the token's limit; passes when the token is accepted, with the requests left.
    pub(crate) async fn check_rate_limit(&self) -> crate::CheckResult {
        let url = format!("{}/rate_limit", self.inner.api_base);
        let reply = self.send(self.inner.client.get(url)).await?;
        match reply.status {
            200 => Ok(match reply.remaining {
                Some(left) => format!("token accepted, {left} requests left this hour"),
                None => "token accepted".to_owned(),
            }),
            401 => Err("GitHub rejected the token (401 Bad credentials)".to_owned()),
            status => Err(format!("GitHub answered {status}: {}", reply.snippet)),
        }
    }

    fn pull_url(&self, call: &Call<'_>) -> String {
        let GithubPayload { repo, number, .. } = call.payload;
        format!("{}/repos/{repo}/pulls/{number}", self.inner.api_base)
    }

    fn issue_url(&self, call: &Call<'_>) -> String {
        let GithubPayload { repo, number, .. } = call.payload;
        format!("{}/repos/{repo}/issues/{number}", self.inner.api_base)
    }

    /// On an attempt after the first: whether an earlier one already did what the payload
    /// asks. `Ok(Some)` is the successful attempt to report instead of acting, `Ok(None)` means
    /// act, `Err` is a failure while looking.
    async fn done_earlier(&self, call: &Call<'_>) -> Result<Option<Attempt>, Attempt> {
        let target = call.target();
        match &call.payload.action {
            Action::Merge { .. } => {
                let url = format!("{}/merge", self.pull_url(call));
                let reply = self.check(self.inner.client.get(url)).await?;
                if reply.status == 404 {
                    return Ok(None);
                }
                self.judge(&reply, call, CHECKING)?;
                if reply.status != 204 {
                    return Ok(None);
                }
                let mut output = json!({ "merged": true, "already": true });
                let mut commit = String::new();
                if let Some(sha) = self.merge_commit(call).await {
                    commit = format!(" as {sha}");
                    output["sha"] = Value::from(sha);
                }
                Ok(Some(Attempt::done(
                    204,
                    format!(
                        "already merged {target}{commit} (GET …/merge answered 204), by an \
                         earlier attempt or by someone else; not merged again"
                    ),
                    output,
                )))
            }
            Action::Approve { .. } | Action::RequestChanges { .. } => self.reviewed(call).await,
            Action::Comment { .. } => {
                let mut url = format!("{}/comments?per_page=100", self.issue_url(call));
                if let Some(since) = self.since(call.message) {
                    // Only comments touched since the message was created can be its own.
                    let since = humantime::format_rfc3339_seconds(since);
                    let _ = write!(url, "&since={since}");
                }
                let marker = call.marker();
                let found = self
                    .find(url, call, |comment| {
                        comment
                            .get("body")
                            .and_then(Value::as_str)
                            .is_some_and(|body| body.contains(&marker))
                    })
                    .await?;
                Ok(found.map(|(status, comment)| {
                    Attempt::done(
                        status,
                        format!(
                            "already commented on {target} (comment {}, with this message's \
                             marker), by an earlier attempt; not commented again",
                            id_of(&comment)
                        ),
                        already(call.output(&comment)),
                    )
                }))
            }
            // Repeating them changes nothing at GitHub.
            _ => Ok(None),
        }
    }

    /// Whether an earlier attempt made this message's review; see [`ReviewMatch`].
    async fn reviewed(&self, call: &Call<'_>) -> Result<Option<Attempt>, Attempt> {
        let (approve, has_body, sha) = match &call.payload.action {
            Action::Approve { body, sha } => (true, body.is_some(), sha.as_deref()),
            Action::RequestChanges { sha, .. } => (false, true, sha.as_deref()),
            _ => return Ok(None),
        };
        let login = self.login(call).await?;
        let marker = call.marker();
        let wanted = ReviewMatch {
            login: &login,
            state: if approve {
                "APPROVED"
            } else {
                "CHANGES_REQUESTED"
            },
            marker: has_body.then_some(marker.as_str()),
            sha,
            since: self.since(call.message),
        };
        let url = format!("{}/reviews?per_page=100", self.pull_url(call));
        let found = self
            .find(url, call, |review| wanted.matches(review))
            .await?;
        Ok(found.map(|(status, review)| {
            let what = if approve {
                "approved"
            } else {
                "requested changes on"
            };
            Attempt::done(
                status,
                format!(
                    "already {what} {} as {login} (review {}), by an earlier attempt; not \
                     reviewed again",
                    call.target(),
                    id_of(&review)
                ),
                already(call.output(&review)),
            )
        }))
    }

    /// The commit a merged pull request's merge made, from `GET …/pulls/{n}`; `None` when
    /// that read fails or does not say. The merge is done either way, so a failure here fails
    /// nothing.
    async fn merge_commit(&self, call: &Call<'_>) -> Option<String> {
        let reply = self
            .send(self.inner.client.get(self.pull_url(call)))
            .await
            .ok()?;
        if assess(&reply) != Verdict::Ok {
            return None;
        }
        let pull = reply.json?;
        if pull.get("merged") != Some(&Value::Bool(true)) {
            return None;
        }
        pull.get("merge_commit_sha")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// When the message was created, less the clock skew allowed, from its id when it is a
    /// ULID (the relay's ids are). `None` when the id is not a ULID or its time is not
    /// believable (ahead of this clock, or before 1970): then nothing is ruled out by date.
    fn since(&self, message: &str) -> Option<SystemTime> {
        let created = ulid::Ulid::from_string(message).ok()?.datetime();
        if created > self.inner.clock.system_now() + CLOCK_SKEW {
            return None;
        }
        created
            .checked_sub(CLOCK_SKEW)
            .filter(|since| *since >= SystemTime::UNIX_EPOCH)
    }

    /// The token's account: configured, learnt earlier, or asked of `GET /user` now.
    async fn login(&self, call: &Call<'_>) -> Result<String, Attempt> {
        if let Some(login) = self.lock_login().clone() {
            return Ok(login);
        }
        let reply = self
            .check(
                self.inner
                    .client
                    .get(format!("{}/user", self.inner.api_base)),
            )
            .await?;
        self.judge(&reply, call, CHECKING).map_err(|mut failed| {
            if reply.status == 403 && failed.outcome == Outcome::Permanent {
                failed.detail.push_str(
                    "; GET /user is refused to this token (a GitHub App installation token?): \
                     set `login` to the account it acts as",
                );
            }
            failed
        })?;
        let Some(login) = reply
            .json
            .as_ref()
            .and_then(|user| user.get("login"))
            .and_then(Value::as_str)
        else {
            return Err(Attempt::new(
                Outcome::Transient,
                Some(reply.status),
                format!("{CHECKING}GET /user answered without a login"),
            ));
        };
        *self.lock_login() = Some(login.to_owned());
        Ok(login.to_owned())
    }

    fn lock_login(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner.login.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the list at `url` page by page (following `rel="next"` within `api_base`) until an
    /// item `matches`; answers the status of the page it was on and the item.
    async fn find(
        &self,
        mut url: String,
        call: &Call<'_>,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<(u16, Value)>, Attempt> {
        let within = format!("{}/", self.inner.api_base);
        for _ in 0..MAX_PAGES {
            let reply = self.check(self.inner.client.get(&url)).await?;
            self.judge(&reply, call, CHECKING)?;
            let Some(Value::Array(items)) = reply.json else {
                return Err(Attempt::new(
                    Outcome::Transient,
                    Some(reply.status),
                    format!("{CHECKING}GitHub answered {} with no list", reply.status),
                ));
            };
            if let Some(item) = items.into_iter().find(|item| matches(item)) {
                return Ok(Some((reply.status, item)));
            }
            match reply.next {
                None => return Ok(None),
                Some(next) if next.starts_with(&within) => url = next,
                Some(_) => {
                    return Err(Attempt::new(
                        Outcome::Permanent,
                        Some(reply.status),
                        format!(
                            "{CHECKING}the next page is outside `api_base`, and the token is \
                             not sent there; not repeated, in case it was done"
                        ),
                    ));
                }
            }
        }
        Err(Attempt::new(
            Outcome::Permanent,
            None,
            format!(
                "{CHECKING}more than {MAX_PAGES} pages to look through; not repeated, in case \
                 it was done"
            ),
        ))
    }

    /// [`send`](Self::send) for a look before acting: a transport failure is a transient
    /// attempt.
    async fn check(&self, request: RequestBuilder) -> Result<Reply, Attempt> {
        self.send(request)
            .await
            .map_err(|detail| Attempt::new(Outcome::Transient, None, format!("{CHECKING}{detail}")))
    }

    /// Sends `request` and reads the answer within `timeout` on the connector's clock; a
    /// transport failure is a token-free detail.
    async fn send(&self, request: RequestBuilder) -> Result<Reply, String> {
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_body(response, MAX_BODY).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        let timeout = self.inner.clock.sleep(self.inner.timeout);
        tokio::select! {
            result = exchange => match result {
                Ok((status, headers, body)) => Ok(Reply::new(
                    status,
                    &headers,
                    &body,
                    self.inner.clock.system_now(),
                )),
                Err(err) => Err(self.transport(&err.without_url())),
            },
            () = timeout => Err(format!(
                "timed out after {}; GitHub may have acted, so a retry looks first",
                humantime::format_duration(self.inner.timeout)
            )),
        }
    }

    fn transport(&self, err: &reqwest::Error) -> String {
        self.inner.token.scrub(&transport_detail(err))
    }

    /// `Ok` for a 2xx; otherwise the failed attempt the answer makes, with its signal. `step`
    /// prefixes the detail (empty for the action itself).
    ///
    /// Any rate limit counts towards the token's secondary-limit run, but only an answer to the
    /// action (a write) ends it: a read that gets through says nothing about the next write.
    fn judge(&self, reply: &Reply, call: &Call<'_>, step: &str) -> Result<(), Attempt> {
        let acting = step.is_empty();
        let answered = || {
            if acting {
                self.inner.throttle.answered(call.message);
            }
        };
        let verdict = assess(reply);
        let status = reply.status;
        let said = format!(
            "{step}GitHub {status}: {}",
            self.inner.token.scrub(&reply.message())
        );
        let failed = |outcome, detail| Err(Attempt::new(outcome, Some(status), detail));
        let wait = |d: Duration| humantime::format_duration(d).to_string();
        match verdict {
            Verdict::Ok => {
                answered();
                Ok(())
            }
            Verdict::Primary(pause) => Err(Attempt::new(
                Outcome::RetryAfter(pause),
                Some(status),
                format!(
                    "{said}; the token's hourly quota is spent: its writes pause for {}",
                    wait(pause)
                ),
            )
            .with_signal(Signal::PauseDestination(pause))),
            Verdict::Secondary(retry_after) => {
                let hit = self.inner.throttle.secondary(call.message, retry_after);
                let (outcome, detail) = if hit.give_up {
                    (
                        Outcome::Permanent,
                        format!(
                            "{said}; a secondary rate limit {} times in a row for this \
                             message: giving up (the token pauses for {})",
                            hit.tries,
                            wait(hit.wait)
                        ),
                    )
                } else {
                    (
                        Outcome::RetryAfter(hit.wait),
                        format!(
                            "{said}; a secondary rate limit ({} in a row): the token pauses for {}",
                            hit.run,
                            wait(hit.wait)
                        ),
                    )
                };
                Err(Attempt::new(outcome, Some(status), detail)
                    .with_signal(Signal::PauseDestination(hit.wait)))
            }
            Verdict::Unauthorized => {
                answered();
                Err(Attempt::new(
                    Outcome::Permanent,
                    Some(status),
                    format!("{said}; the token was rejected"),
                )
                .with_signal(Signal::Unauthorized))
            }
            Verdict::Forbidden => {
                answered();
                failed(
                    Outcome::Permanent,
                    format!(
                        "{said}; the token may not do this here (its permissions, its access to \
                         the repository, or an organisation policy)"
                    ),
                )
            }
            Verdict::Transient => failed(Outcome::Transient, said),
            Verdict::Permanent => {
                answered();
                let merge = acting && matches!(call.payload.action, Action::Merge { .. });
                let detail = match status {
                    405 if merge => format!(
                        "{said}; not merged: GitHub cannot merge it as it is (conflicts, \
                         required checks or reviews, or a draft)"
                    ),
                    409 if merge => format!(
                        "{said}; not merged: the pull request's head is no longer the `sha` given"
                    ),
                    _ => said,
                };
                failed(Outcome::Permanent, detail)
            }
        }
    }
}

impl Connector for GithubConnector {
    async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        let start = self.inner.clock.now();
        let attempt = self.attempt(delivery).await;
        DeliveryResult {
            outcome: attempt.outcome,
            code: attempt.code,
            detail: truncate(&self.inner.token.scrub(&attempt.detail), 2 * DETAIL_CHARS),
            duration: self.inner.clock.now().saturating_duration_since(start),
            signal: attempt.signal,
            output: attempt.output,
        }
    }
}

/// One delivery's payload and message id.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    payload: &'a GithubPayload,
    message: &'a str,
}

impl Call<'_> {
    /// `owner/repo#n`, for details.
    fn target(&self) -> String {
        format!("{}#{}", self.payload.repo, self.payload.number)
    }

    /// The hidden marker appended to the comments and review bodies of this message.
    fn marker(&self) -> String {
        format!("<!-- ferrule:{} -->", self.message)
    }

    /// What a successful action did, for the detail, from GitHub's answer `json`.
    fn done(&self, json: &Value) -> String {
        let target = self.target();
        match &self.payload.action {
            Action::Approve { .. } => format!("approved {target} (review {})", id_of(json)),
            Action::RequestChanges { .. } => {
                format!("requested changes on {target} (review {})", id_of(json))
            }
            Action::Comment { .. } => format!("commented on {target} (comment {})", id_of(json)),
            Action::Merge { .. } => match json.get("sha").and_then(Value::as_str) {
                Some(sha) => format!("merged {target} (commit {sha})"),
                None => format!("merged {target}"),
            },
            Action::Label { labels } => format!("labelled {target}: {}", labels.join(", ")),
            Action::Close => format!("closed {target}"),
        }
    }

    /// What a later step may use of GitHub's answer `json` to the action (or of the review or
    /// comment an earlier attempt made): see the module's **Output**.
    fn output(&self, json: &Value) -> Value {
        let mut output = Map::new();
        let mut copy = |keys: &[&str]| {
            for key in keys {
                if let Some(value) = json.get(*key).filter(|v| !v.is_null()) {
                    output.insert((*key).to_owned(), value.clone());
                }
            }
        };
        match &self.payload.action {
            Action::Approve { .. } | Action::RequestChanges { .. } => {
                copy(&["id", "html_url", "state"]);
            }
            Action::Comment { .. } => copy(&["id", "html_url"]),
            Action::Merge { .. } => {
                copy(&["sha"]);
                // A 200 to the merge is a merge, whatever the body says.
                output.insert("merged".into(), Value::Bool(true));
            }
            Action::Label { .. } => {
                let names: Vec<Value> = json
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|label| label.get("name").cloned())
                    .collect();
                output.insert("labels".into(), Value::Array(names));
            }
            Action::Close => {
                copy(&["state"]);
                output
                    .entry("state")
                    .or_insert_with(|| Value::from("closed"));
            }
        }
        Value::Object(output)
    }
}

/// `output` marked as found done rather than done now.
fn already(mut output: Value) -> Value {
    output["already"] = Value::Bool(true);
    output
}

/// The `id` of a review or comment, or `?`.
fn id_of(item: &Value) -> String {
    item.get("id")
        .and_then(Value::as_u64)
        .map_or_else(|| "?".to_owned(), |id| id.to_string())
}

/// The body of a review request.
fn review(event: &str, body: Option<String>, sha: Option<&str>) -> Value {
    let mut params = json!({ "event": event });
    if let Some(body) = body {
        params["body"] = Value::from(body);
    }
    if let Some(sha) = sha {
        params["commit_id"] = Value::from(sha);
    }
    params
}

/// Which review counts as one an earlier attempt of this message made.
#[derive(Debug)]
struct ReviewMatch<'a> {
    /// The token's account.
    login: &'a str,
    /// The state the review leaves: `APPROVED` or `CHANGES_REQUESTED`.
    state: &'a str,
    /// The marker the review's body carries, when it has a body.
    marker: Option<&'a str>,
    /// The commit reviewed, when the payload names one.
    sha: Option<&'a str>,
    /// When the message was created (less the clock skew allowed), when known.
    since: Option<SystemTime>,
}

impl ReviewMatch<'_> {
    fn matches(&self, review: &Value) -> bool {
        let text = |key: &str| review.get(key).and_then(Value::as_str);
        let by_us = review
            .get("user")
            .and_then(|user| user.get("login"))
            .and_then(Value::as_str)
            .is_some_and(|login| login.eq_ignore_ascii_case(self.login));
        if !by_us {
            return false;
        }
        if let Some(marker) = self.marker
            && text("body").is_some_and(|body| body.contains(marker))
        {
            // Its very own review, whatever became of it since (dismissed, say).
            return true;
        }
        if text("state") != Some(self.state) {
            return false;
        }
        match (self.sha, self.marker) {
            (Some(sha), _) => text("commit_id").is_some_and(|id| id.eq_ignore_ascii_case(sha)),
            // With a marker to look for, a review without it is not this message's.
            (None, Some(_)) => false,
            // Neither: an approval by this account since the message was created. Unreadable
            // dates count, so that a doubt never approves twice.
            (None, None) => match (self.since, text("submitted_at")) {
                (Some(since), Some(at)) => {
                    humantime::parse_rfc3339_weak(at).map_or(true, |at| at >= since)
                }
                _ => true,
            },
        }
    }
}
