//! Loading: built-in defaults, then the TOML file, then `FERRULE_*` environment variables,
//! with errors that name the key.

use ferrule_policy::ConfigError;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::{Config, LoadError};

/// The built-in defaults, then the TOML `text` if any.
pub(super) fn layered(text: Option<&str>) -> Figment {
    // Serialising the defaults into figment's value tree is most of a small config's parse;
    // they never change, so that is done once and the tree cloned.
    static DEFAULTS: std::sync::LazyLock<Figment> =
        std::sync::LazyLock::new(|| Figment::from(Serialized::defaults(Config::default())));
    let figment = DEFAULTS.clone();
    match text {
        Some(text) => figment.merge(Toml::string(text)),
        None => figment,
    }
}

/// The configuration `figment` describes, not yet validated.
pub(super) fn extract(figment: Figment) -> Result<Config, LoadError> {
    // serde reads a struct from a list of its fields in order, so `[[defaults]]` (a list of
    // tables) would be taken for `[defaults]` with its first table as `retry`, the second as
    // `breaker`: refuse a list wherever the defaults have a table.
    static SHAPE: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::to_value(Config::default()).unwrap_or(serde_json::Value::Null)
    });
    let merged: figment::value::Value = figment
        .extract()
        .map_err(|e| LoadError::Parse(describe_figment(e)))?;
    let merged = serde_json::to_value(&merged).map_err(|e| LoadError::Parse(e.to_string()))?;
    tables_stay_tables(&merged, &SHAPE, "")
        .map_err(|e| LoadError::Parse(format!("`{}`: {}", e.field(), e.message())))?;
    figment
        .extract()
        .map_err(|e| LoadError::Parse(describe_figment(e)))
}

/// Refuses a list in `value` where `shape`, the same section serialised from its defaults,
/// has a table; `path` names where `value` sits. (A number or a string there is refused by
/// serde itself, which cannot read a struct from one.)
pub(super) fn tables_stay_tables(
    value: &serde_json::Value,
    shape: &serde_json::Value,
    path: &str,
) -> Result<(), ConfigError> {
    use serde_json::Value::{Array, Object};
    match (shape, value) {
        (Object(shape), Object(value)) => {
            for (key, inner) in value {
                if let Some(inner_shape) = shape.get(key) {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    tables_stay_tables(inner, inner_shape, &path)?;
                }
            }
            Ok(())
        }
        (Object(_), Array(_)) => Err(ConfigError::new(
            path.to_owned(),
            "must be a table, not a list (`[[…]]` makes a list of tables)",
        )),
        _ => Ok(()),
    }
}

/// A figment error with its key path, in one line: the path in the style `validate()` uses
/// (`destinations[0].type`), the complaint without figment's nested backticks, and a value of
/// the wrong type by its type only (it may be a secret written in the wrong place).
pub(super) fn describe_figment(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = field_path(&e.path);
            let mut text = if path.is_empty() {
                describe_kind(&e.kind)
            } else {
                format!("`{path}`: {}", describe_kind(&e.kind))
            };
            if let Some(source) = &e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                text.push_str(&format!(" (in {source})"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Keys joined with `.`, list indices as `[i]`: `destinations[0].retry.max_attempts`.
pub(super) fn field_path<S: AsRef<str>>(keys: &[S]) -> String {
    let mut path = String::new();
    for key in keys {
        let key = key.as_ref();
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{key}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
    }
    path
}

/// What figment's error kind says, phrased as the relay's own errors are.
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let one_of = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        names.join(", ")
    };
    match kind {
        Kind::InvalidType(actual, expected) => {
            let found = match actual {
                Actual::Str(_) => "a string".to_owned(),
                Actual::Seq => "a list".to_owned(),
                Actual::Map => "a table".to_owned(),
                other => other.to_string(),
            };
            format!("expected {expected}, found {found}")
        }
        Kind::UnknownField(found, expected) => {
            format!(
                "unknown field `{found}`; expected one of {}",
                one_of(expected)
            )
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; expected one of {}",
                one_of(expected)
            )
        }
        other => other.to_string(),
    }
}
