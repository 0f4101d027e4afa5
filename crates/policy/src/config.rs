//! Configuration errors shared by every policy's `validate()`.

use std::borrow::Cow;

/// A configuration value is invalid; `field` names it (dotted path, e.g. `retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct ConfigError {
    field: Cow<'static, str>,
    message: Cow<'static, str>,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault, as a dotted path.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the field path, e.g. `max_attempts` within `retry` becomes `retry.max_attempts`.
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        ConfigError {
            field: format!("{prefix}.{}", self.field).into(),
            message: self.message,
        }
    }
}

/// Fails with a [`ConfigError`] on `field` unless `ok`.
#[allow(dead_code)] // used by the policy modules
pub(crate) fn ensure(
    ok: bool,
    field: &'static str,
    message: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, message))
    }
}

/// Fails unless `value` is a finite number within `[min, max]`.
#[allow(dead_code)] // used by the policy modules
pub(crate) fn ensure_ratio(
    value: f64,
    field: &'static str,
    min: f64,
    max: f64,
) -> Result<(), ConfigError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be a number from {min} to {max}, got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field() {
        let e = ConfigError::new("max_attempts", "must be at least 1").within("retry");
        assert_eq!(e.field(), "retry.max_attempts");
        assert_eq!(
            e.to_string(),
            "invalid `retry.max_attempts`: must be at least 1"
        );
        assert!(ensure_ratio(f64::NAN, "failure_rate", 0.0, 1.0).is_err());
        assert!(ensure_ratio(0.5, "failure_rate", 0.0, 1.0).is_ok());
    }
}
