//! The templates of `[[routes]]` and `[[schedules]]`: every template string of every route
//! (dedupe keys, payload strings, branch values) or schedule (payload strings) compiled with `minijinja` when the configuration loads, named by
//! its field (`routes[0].steps[1].payload.text`), and rendered with undefined values refused,
//! so a missing variable is an error naming the field and the template, never an empty text.
//!
//! A payload string that is a single `{{ expression }}` and nothing else keeps the
//! expression's JSON type (`chat_id = "{{ chats[github.repository] }}"` is a number); any
//! other string renders as text.

use std::fmt;

use ferrule_policy::ConfigError;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::config::{RouteConfig, ScheduleConfig};

/// The names a template may start from: what a trigger puts in a run's context, what each
/// step adds, and what the engine gives at render time.
pub const ROOTS: &[&str] = &[
    "email", "github", "message", "input", "run", "chats", "steps", "wait", "signal",
];

/// The names a schedule's payload template may use.
pub const SCHEDULE_ROOTS: &[&str] = &["scheduled_for", "name"];

/// Why a template did not render: the field, the template and minijinja's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template's field, e.g. `routes[0].steps[1].payload.chat_id`.
    pub field: String,
    /// What went wrong, e.g. `undefined value`, with the template's text.
    pub reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for TemplateError {}

/// Every route template, compiled.
pub struct Templates {
    env: Environment<'static>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// The expression of a string that is one `{{ … }}` and nothing else.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// The source compiled for a payload string: a whole expression becomes its JSON.
fn source_of(text: &str) -> String {
    match whole_expression(text) {
        Some(expr) => format!("{{{{ ({expr}) | ferrule_json }}}}"),
        None => text.to_owned(),
    }
}

impl Templates {
    /// Compiles every template of `routes`; the error names the template's field, for a
    /// syntax error or a variable that no context has (one not in [`ROOTS`]).
    pub fn compile(routes: &[RouteConfig]) -> Result<Templates, ConfigError> {
        // (field, text, whether a whole expression keeps its JSON type)
        let mut fields: Vec<(String, String, bool)> = Vec::new();
        for (r, route) in routes.iter().enumerate() {
            if let Some(dedupe) = &route.dedupe {
                fields.push((format!("routes[{r}].dedupe"), dedupe.clone(), false));
            }
            for (s, step) in route.steps.iter().enumerate() {
                if let Some(payload) = &step.payload {
                    collect(
                        &format!("routes[{r}].steps[{s}].payload"),
                        payload,
                        &mut fields,
                    );
                }
                if let Some(on) = &step.on {
                    fields.push((format!("routes[{r}].steps[{s}].on"), on.clone(), false));
                }
            }
        }
        Self::compile_fields(fields, ROOTS, "any run's context")
    }

    /// Compiles the payload templates of `schedules` (fields `schedules[i].payload…`), which
    /// may use only [`SCHEDULE_ROOTS`].
    pub fn compile_schedules(schedules: &[ScheduleConfig]) -> Result<Templates, ConfigError> {
        let mut fields: Vec<(String, String, bool)> = Vec::new();
        for (i, schedule) in schedules.iter().enumerate() {
            if let Some(payload) = &schedule.payload {
                collect(&format!("schedules[{i}].payload"), payload, &mut fields);
            }
        }
        Self::compile_fields(fields, SCHEDULE_ROOTS, "a schedule's payload")
    }

    fn compile_fields(
        fields: Vec<(String, String, bool)>,
        roots: &[&str],
        what: &str,
    ) -> Result<Templates, ConfigError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("ferrule_json", strict_json);
        for (field, text, typed) in fields {
            let source = if typed { source_of(&text) } else { text };
            env.add_template_owned(field.clone(), source)
                .map_err(|e| ConfigError::new(field.clone(), reason(&e)))?;
            let template = env
                .get_template(&field)
                .map_err(|e| ConfigError::new(field.clone(), reason(&e)))?;
            let mut unknown: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !roots.contains(&v.as_str()))
                .collect();
            unknown.sort();
            if let Some(first) = unknown.first() {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "`{first}` is not defined in {what} (a template starts from one of {})",
                        roots.join(", ")
                    ),
                ));
            }
        }
        Ok(Templates { env })
    }

    /// Renders the template of `field` as text over `context`.
    pub fn text(&self, field: &str, context: &Value) -> Result<String, TemplateError> {
        let template = self.env.get_template(field).map_err(|e| TemplateError {
            field: field.to_owned(),
            reason: reason(&e),
        })?;
        template
            .render(minijinja::value::Serde(context))
            .map_err(|e| TemplateError {
                field: field.to_owned(),
                reason: format!("{} in `{}`", reason(&e), template.source()),
            })
    }

    /// Renders `payload` (the step's configured value, whose templates were compiled under
    /// `field`) over `context`: every string rendered, a whole expression kept as its JSON.
    pub fn payload(
        &self,
        field: &str,
        payload: &Value,
        context: &Value,
    ) -> Result<Value, TemplateError> {
        Ok(match payload {
            Value::String(text) => {
                let rendered = self.text(field, context)?;
                if whole_expression(text).is_some() {
                    serde_json::from_str(&rendered).map_err(|e| TemplateError {
                        field: field.to_owned(),
                        reason: format!("not a JSON value: {e}"),
                    })?
                } else {
                    Value::String(rendered)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.payload(&format!("{field}[{i}]"), item, context))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.payload(&format!("{field}.{k}"), v, context)?,
                        ))
                    })
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// The strings of `value` with their fields.
fn collect(field: &str, value: &Value, out: &mut Vec<(String, String, bool)>) {
    match value {
        Value::String(text) => out.push((field.to_owned(), text.clone(), true)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(&format!("{field}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect(&format!("{field}.{k}"), v, out);
            }
        }
        _ => {}
    }
}

/// The JSON of a whole expression's value; undefined is an error, as everywhere else (the
/// built-in `tojson` would make it `null`).
fn strict_json(value: minijinja::Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "the expression's value is undefined",
        ));
    }
    serde_json::to_string(&value)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))
}

/// minijinja's reason without its own location (the field names the place).
fn reason(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{StepConfig, StepKind};

    fn route(payload: Value) -> RouteConfig {
        RouteConfig {
            name: "r".into(),
            dedupe: Some("{{ email.message_id }}".into()),
            steps: vec![StepConfig {
                name: "s".into(),
                kind: StepKind::Send,
                payload: Some(payload),
                ..StepConfig::default()
            }],
            ..RouteConfig::default()
        }
    }

    #[test]
    fn a_whole_expression_keeps_its_type_and_text_renders() {
        let t = Templates::compile(&[route(json!({
            "chat_id": "{{ chats[github.repository] }}",
            "text": "PR #{{ github.number }} by {{ github.sender }}",
            "n": 3,
        }))])
        .unwrap();
        let ctx = json!({"chats": {"octo/app": -100}, "github": {"repository": "octo/app", "number": 7, "sender": "ana"}});
        let out = t
            .payload(
                "routes[0].steps[0].payload",
                &json!({
                    "chat_id": "{{ chats[github.repository] }}",
                    "text": "PR #{{ github.number }} by {{ github.sender }}",
                    "n": 3,
                }),
                &ctx,
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"chat_id": -100, "text": "PR #7 by ana", "n": 3})
        );
        assert_eq!(
            t.text("routes[0].dedupe", &json!({"email": {"message_id": "a@b"}}))
                .unwrap(),
            "a@b"
        );
    }

    #[test]
    fn a_missing_value_names_the_field_and_template() {
        let payload = json!({"chat_id": "{{ chats[github.repository] }}"});
        let t = Templates::compile(&[route(payload.clone())]).unwrap();
        let ctx = json!({"chats": {}, "github": {"repository": "octo/app"}});
        let err = t
            .payload("routes[0].steps[0].payload", &payload, &ctx)
            .unwrap_err();
        assert_eq!(err.field, "routes[0].steps[0].payload.chat_id");
        assert!(err.reason.contains("undefined"), "{err}");
        assert!(err.reason.contains("chats[github.repository]"), "{err}");
    }

    #[test]
    fn bad_templates_are_refused_at_load_naming_the_field() {
        let err = Templates::compile(&[route(json!({"text": "{{ github.number "}))]).unwrap_err();
        assert_eq!(err.field(), "routes[0].steps[0].payload.text");
        let err = Templates::compile(&[route(json!({"text": "{{ gihtub.number }}"}))]).unwrap_err();
        assert_eq!(err.field(), "routes[0].steps[0].payload.text");
        assert!(err.message().contains("`gihtub`"), "{}", err.message());
    }
}
