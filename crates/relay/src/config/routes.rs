//! `[[routes]]`: what starts a run (a trigger), how its dedupe key is made, and its ordered
//! steps (`send`, `wait`, `branch`, `end`); checked at load with errors that name the field,
//! e.g. `routes[0].steps[2].on_failure`. The templates are compiled by
//! [`crate::routes::Routes::compile`], which also names the field of a template that does not
//! compile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use ferrule_policy::retry::RetryConfig;

use super::defaults::overlay;
use super::{Config, DestinationKind};

/// The longest a wait may last: 30 days (a run that waits longer is better restarted).
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The default time a wait lasts: one day.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// One `[[routes]]` table.
///
/// ```toml
/// [[routes]]
/// name = "github-pr"
/// dedupe = "{{ email.message_id }}"
/// fallback_after = "10m"
/// trigger = { kind = "email", source = "github", match = { "github.reason" = ["review_requested"] } }
///
/// [[routes.chats]]
/// key = "octo/app"
/// chat_id = -100123
///
/// [[routes.steps]]
/// name = "card"
/// kind = "wait"
/// destination = "telegram"
/// payload = { chat_id = "{{ chats[github.repository] }}", text = "PR {{ github.number }}" }
/// buttons = [{ action = "approve", text = "Approve" }]
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name: 1-64 of `a-z 0-9 _ -`, the `{name}` of `/v1/routes/{name}/runs`.
    pub name: String,
    /// What starts a run.
    pub trigger: TriggerConfig,
    /// A template over the trigger's context that makes the run's dedupe key: one run per
    /// key, durably. Default: the e-mail's key (its `Message-ID`) for an e-mail trigger, the
    /// `Idempotency-Key` (else a new id) for an API trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<String>,
    /// How long a step's destination may keep its circuit open before the step's `on_failure`
    /// step takes over (default: only when retries are spent).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fallback_after: Option<Duration>,
    /// Chat ids by key (a repository `owner/repo`, a sender's login…), given to templates as
    /// `chats`: `chats[github.repository]` is undefined when no mapping exists, which fails
    /// the step and runs its `on_failure` step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chats: Vec<ChatMapping>,
    /// The steps, in order; the run starts at the first.
    pub steps: Vec<StepConfig>,
}

/// What starts a run of a route.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// `email` (a mail posted to an `[[inbound.email]]` source), `telegram` (a message to a
    /// Telegram destination's bot) or `api` (only `POST /v1/routes/{name}/runs`).
    pub kind: TriggerKind,
    /// The e-mail source or the Telegram destination; not for `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Conditions on the trigger's context, all of which must hold: a path (`github.reason`,
    /// `email.from.address`, `message.text`) and the values it may have (compared as text,
    /// case-insensitively).
    #[serde(default, rename = "match", skip_serializing_if = "BTreeMap::is_empty")]
    pub matches: BTreeMap<String, Vec<String>>,
}

/// The kind of a trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A mail posted to an e-mail source.
    Email,
    /// A message (not a button press) to a Telegram destination's bot.
    Telegram,
    /// Only the API.
    #[default]
    Api,
}

/// One `[[routes.chats]]` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMapping {
    /// What is mapped: a repository (`owner/repo`), a sender's login, or any text a template
    /// looks up.
    pub key: String,
    /// The Telegram chat id.
    pub chat_id: i64,
}

/// The kind of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A message to a destination; its output joins the context as `steps.<name>`.
    #[default]
    Send,
    /// A card with buttons (a message to a Telegram destination, sent after the wait is
    /// stored), then a wait for a press or an API signal.
    Wait,
    /// Goes to a step chosen by a context value.
    Branch,
    /// Ends the run.
    End,
}

/// One button of a wait's card.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonConfig {
    /// The action a press means (1-16 of `a-z 0-9 _`): `steps.<wait>.action` after a press.
    pub action: String,
    /// The button's label.
    pub text: String,
}

/// One `[[routes.steps]]` table. Which fields apply depends on `kind`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The step's name, unique in the route: 1-32 of `a-z 0-9 _ -`.
    pub name: String,
    /// `send`, `wait`, `branch` or `end`.
    #[serde(default)]
    pub kind: StepKind,
    /// The run's state once the step succeeded (a wait: once its card is sent); for `end`,
    /// the final state. Default: unchanged (`end`: `completed`, or the status's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `send`, `wait`: the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// `send`, `wait`: the payload. Every string in it is a template over the context; a
    /// string that is one `{{ expression }}` and nothing else keeps the expression's JSON
    /// type (a number, an object…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The step after this one succeeds (default: the next in order; after the last, the run
    /// completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// `send`, `wait`: the step run when this one fails for good (retries spent, a template
    /// that cannot render, or the destination's circuit open past `fallback_after`). Default:
    /// the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// `send`, `wait`: the retry policy of this step's messages, laid over the destination's
    /// field by field (same fields as a destination's `retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
    /// `send`: the time one attempt may take (the destination's by default). `wait`: how long
    /// the wait lasts (default one day, at most 30 days).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// `wait`: the card's buttons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ButtonConfig>,
    /// `wait`: the Telegram user ids who may press (default: anyone in the chat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_users: Vec<i64>,
    /// `wait`: the step run when the wait runs out (default: the run ends `expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// `branch`: a template whose text chooses the case, e.g. `{{ steps.card.action }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// `branch`: value → step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cases: BTreeMap<String, String>,
    /// `branch`: the step when no case matches (default: the run fails naming the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `end`: `completed` (default), `failed` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EndStatus>,
}

impl StepConfig {
    /// Whether this (wait) step's card asks the user to reply (`reply_markup.force_reply`):
    /// the reply answers the wait with action `reply` and its text.
    pub fn asks_for_reply(&self) -> bool {
        self.payload
            .as_ref()
            .is_some_and(|p| p["reply_markup"]["force_reply"] == Value::Bool(true))
    }
}

/// How an `end` step finishes the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndStatus {
    /// Done.
    #[default]
    Completed,
    /// Failed.
    Failed,
    /// Expired.
    Expired,
}

/// Checks a name: 1 to `max` of `a-z 0-9 _ -`.
pub(super) fn check_name(field: &str, name: &str, max: usize) -> Result<(), ConfigError> {
    if !(1..=max).contains(&name.len())
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(ConfigError::new(
            field.to_owned(),
            format!("must be 1 to {max} of `a-z`, `0-9`, `_` and `-`"),
        ));
    }
    Ok(())
}

impl Config {
    /// Checks `[[routes]]` but for their templates (compiled with the routes, which names a
    /// template's field when it does not compile); the error names the field, e.g.
    /// `routes[0].steps[1].destination`.
    pub fn validate_routes(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (r, route) in self.routes.iter().enumerate() {
            let at = |field: &str| format!("routes[{r}].{field}");
            check_name(&at("name"), &route.name, 64)?;
            if !names.insert(route.name.as_str()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("`{}` is used by an earlier route", route.name),
                ));
            }
            self.validate_trigger(&at("trigger"), &route.trigger)?;
            if route.fallback_after.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::new(
                    at("fallback_after"),
                    "must be longer than zero",
                ));
            }
            let mut keys = BTreeSet::new();
            for (i, chat) in route.chats.iter().enumerate() {
                if chat.key.trim().is_empty() {
                    return Err(ConfigError::new(
                        at(&format!("chats[{i}].key")),
                        "must not be empty",
                    ));
                }
                if !keys.insert(chat.key.as_str()) {
                    return Err(ConfigError::new(
                        at(&format!("chats[{i}].key")),
                        format!("`{}` is mapped by an earlier entry", chat.key),
                    ));
                }
            }
            if route.steps.is_empty() {
                return Err(ConfigError::new(at("steps"), "a route needs a step"));
            }
            let steps: BTreeSet<&str> = route.steps.iter().map(|s| s.name.as_str()).collect();
            let mut seen = BTreeSet::new();
            for (s, step) in route.steps.iter().enumerate() {
                let at = |field: &str| format!("routes[{r}].steps[{s}].{field}");
                check_name(&at("name"), &step.name, 32)?;
                if !seen.insert(step.name.as_str()) {
                    return Err(ConfigError::new(
                        at("name"),
                        format!("`{}` is used by an earlier step", step.name),
                    ));
                }
                self.validate_step(&at, step, &steps)?;
                self.step_retry(r, s)?;
            }
        }
        Ok(())
    }

    /// The retry policy of step `s` of route `r`: its `retry` table laid over its
    /// destination's effective policy, or `None` when it has no table of its own.
    pub fn step_retry(&self, r: usize, s: usize) -> Result<Option<RetryConfig>, ConfigError> {
        let step = &self.routes[r].steps[s];
        let (Some(over), Some(destination)) = (&step.retry, &step.destination) else {
            return Ok(None);
        };
        let Some(i) = self
            .destinations
            .iter()
            .position(|d| d.name.trim() == destination.trim())
        else {
            return Ok(None);
        };
        let field = format!("routes[{r}].steps[{s}].retry");
        let base = self.policies(i)?.retry;
        let retry: RetryConfig = overlay(&base, Some(over), &field)?;
        retry.validate().map_err(|e| e.within(&field))?;
        Ok(Some(retry))
    }

    fn validate_trigger(&self, at: &str, trigger: &TriggerConfig) -> Result<(), ConfigError> {
        let source = trigger.source.as_deref().map(str::trim);
        match (trigger.kind, source) {
            (TriggerKind::Api, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.source"),
                    "an `api` trigger has no source",
                ));
            }
            (TriggerKind::Api, None) => {}
            (_, None) => {
                return Err(ConfigError::new(
                    format!("{at}.source"),
                    "required: the e-mail source or Telegram destination that starts runs",
                ));
            }
            (TriggerKind::Email, Some(source)) => {
                if !self.inbound.email.iter().any(|s| s.name == source) {
                    return Err(ConfigError::new(
                        format!("{at}.source"),
                        format!("no `[[inbound.email]]` source named `{source}` is configured"),
                    ));
                }
            }
            (TriggerKind::Telegram, Some(source)) => {
                self.destination_of_kind(
                    &format!("{at}.source"),
                    source,
                    DestinationKind::Telegram,
                )?;
            }
        }
        for (path, values) in &trigger.matches {
            if path.is_empty()
                || !path.split('.').all(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
            {
                return Err(ConfigError::new(
                    format!("{at}.match"),
                    format!("`{path}` is not a path like `github.reason`"),
                ));
            }
            if values.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.match.{path}"),
                    "give at least one value",
                ));
            }
        }
        Ok(())
    }

    fn validate_step(
        &self,
        at: &dyn Fn(&str) -> String,
        step: &StepConfig,
        steps: &BTreeSet<&str>,
    ) -> Result<(), ConfigError> {
        let refers = |field: &str, target: &Option<String>| -> Result<(), ConfigError> {
            match target {
                Some(name) if !steps.contains(name.as_str()) => Err(ConfigError::new(
                    at(field),
                    format!("no step named `{name}` in this route"),
                )),
                _ => Ok(()),
            }
        };
        refers("next", &step.next)?;
        refers("on_failure", &step.on_failure)?;
        refers("on_timeout", &step.on_timeout)?;
        refers("default", &step.default)?;
        for (value, target) in &step.cases {
            refers(&format!("cases.{value}"), &Some(target.clone()))?;
        }
        let not_for = |field: &str, set: bool| -> Result<(), ConfigError> {
            if set {
                return Err(ConfigError::new(
                    at(field),
                    format!("not a field of a `{}` step", kind_name(step.kind)),
                ));
            }
            Ok(())
        };
        let sends = matches!(step.kind, StepKind::Send | StepKind::Wait);
        not_for("destination", !sends && step.destination.is_some())?;
        not_for("payload", !sends && step.payload.is_some())?;
        not_for("on_failure", !sends && step.on_failure.is_some())?;
        not_for("retry", !sends && step.retry.is_some())?;
        not_for("timeout", !sends && step.timeout.is_some())?;
        let waits = step.kind == StepKind::Wait;
        not_for("buttons", !waits && !step.buttons.is_empty())?;
        not_for("allowed_users", !waits && !step.allowed_users.is_empty())?;
        not_for("on_timeout", !waits && step.on_timeout.is_some())?;
        let branches = step.kind == StepKind::Branch;
        not_for("on", !branches && step.on.is_some())?;
        not_for("cases", !branches && !step.cases.is_empty())?;
        not_for("default", !branches && step.default.is_some())?;
        not_for(
            "status",
            step.kind != StepKind::End && step.status.is_some(),
        )?;
        not_for("next", step.kind == StepKind::End && step.next.is_some())?;
        if sends {
            let Some(destination) = step.destination.as_deref().map(str::trim) else {
                return Err(ConfigError::new(at("destination"), "required"));
            };
            let Some(dest) = self
                .destinations
                .iter()
                .find(|d| d.name.trim() == destination)
            else {
                return Err(ConfigError::new(
                    at("destination"),
                    format!("no destination named `{destination}` is configured"),
                ));
            };
            if waits && dest.kind != DestinationKind::Telegram {
                return Err(ConfigError::new(
                    at("destination"),
                    format!(
                        "`{destination}` is a {} destination; a wait's card goes to a telegram one",
                        dest.kind.as_str()
                    ),
                ));
            }
            if step.payload.is_none() {
                return Err(ConfigError::new(at("payload"), "required"));
            }
            if step.timeout.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(at("timeout"), "must be longer than zero"));
            }
        }
        if waits {
            if step.timeout.is_some_and(|t| t > MAX_WAIT) {
                return Err(ConfigError::new(at("timeout"), "must be at most 30 days"));
            }
            if step.buttons.is_empty() && !step.asks_for_reply() {
                return Err(ConfigError::new(
                    at("buttons"),
                    "a wait needs a button, or a card asking for a reply (`reply_markup = { force_reply = true }`)",
                ));
            }
            if !step.buttons.is_empty() && step.asks_for_reply() {
                return Err(ConfigError::new(
                    at("buttons"),
                    "a card asking for a reply (`force_reply`) cannot carry buttons",
                ));
            }
            let mut actions = BTreeSet::new();
            for (i, button) in step.buttons.iter().enumerate() {
                let action = &button.action;
                if !(1..=16).contains(&action.len())
                    || !action
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(ConfigError::new(
                        at(&format!("buttons[{i}].action")),
                        "must be 1 to 16 of `a-z`, `0-9` and `_` (it travels in callback_data)",
                    ));
                }
                if !actions.insert(action.as_str()) {
                    return Err(ConfigError::new(
                        at(&format!("buttons[{i}].action")),
                        format!("`{action}` is used by an earlier button"),
                    ));
                }
                if button.text.trim().is_empty() {
                    return Err(ConfigError::new(
                        at(&format!("buttons[{i}].text")),
                        "must not be empty",
                    ));
                }
            }
        }
        if branches {
            if step.on.is_none() {
                return Err(ConfigError::new(at("on"), "required"));
            }
            if step.cases.is_empty() {
                return Err(ConfigError::new(at("cases"), "a branch needs a case"));
            }
        }
        Ok(())
    }
}

/// The name written in `kind = "…"`.
pub fn kind_name(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Send => "send",
        StepKind::Wait => "wait",
        StepKind::Branch => "branch",
        StepKind::End => "end",
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    /// `routes` laid into a config with a telegram, a github and an e-mail source.
    fn check(routes: &str) -> Result<(), (String, String)> {
        let text = format!(
            r#"
[[destinations]]
name = "telegram"
type = "telegram"
bot_token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"

[[destinations]]
name = "github"
type = "github"
token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"

[[inbound.email]]
name = "github"

{routes}
"#
        );
        let config = Config::from_toml_str(&text).map_err(|e| ("parse".into(), e.to_string()))?;
        config
            .validate()
            .map_err(|e| (e.field().to_owned(), e.message().to_owned()))
    }

    const CARD: &str = r#"
[[routes.steps]]
name = "card"
kind = "wait"
destination = "telegram"
payload = { chat_id = 1, text = "PR {{ github.number }}" }
buttons = [{ action = "approve", text = "Approve" }]
"#;

    #[test]
    fn a_valid_route_loads() {
        let route = format!(
            "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"email\", source = \"github\", match = {{ \"github.reason\" = [\"review_requested\"] }} }}\n{CARD}"
        );
        check(&route).unwrap();
    }

    #[test]
    fn mistakes_are_refused_naming_the_field() {
        let cases = [
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"email\", source = \"nope\" }}\n{CARD}"
                ),
                "routes[0].trigger.source",
            ),
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"api\" }}\n{CARD}on_failure = \"gone\"\n"
                ),
                "routes[0].steps[0].on_failure",
            ),
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"api\" }}\n{}",
                    CARD.replace("\"telegram\"", "\"github\"")
                ),
                "routes[0].steps[0].destination",
            ),
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"api\" }}\n{}",
                    CARD.replace("github.number", "gihtub.number")
                ),
                "routes[0].steps[0].payload.text",
            ),
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"api\" }}\n{}",
                    CARD.replace("\"approve\"", "\"Approve!\"")
                ),
                "routes[0].steps[0].buttons[0].action",
            ),
            (
                format!(
                    "[[routes]]\nname = \"pr\"\ntrigger = {{ kind = \"api\" }}\n{CARD}retry = {{ max_attempts = 0 }}\n"
                ),
                "routes[0].steps[0].retry.max_attempts",
            ),
            (
                "[[routes]]\nname = \"pr\"\ntrigger = { kind = \"api\" }\nsteps = []\n".to_owned(),
                "routes[0].steps",
            ),
        ];
        for (routes, field) in cases {
            let err = check(&routes).unwrap_err();
            assert_eq!(err.0, field, "{routes}\n{err:?}");
        }
    }
}
