//! [`Error`]: what can stop a command, and the exit code it maps to.

use crate::config;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] config::LoadError),
    /// The store could not be opened or used.
    #[error("store: {0}")]
    Store(#[from] ferrule_store::StoreError),
    /// A destination could not be built.
    #[error("destination: {0}")]
    Connector(#[from] ferrule_connectors::ConnectorError),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A running relay could not be reached or answered with an error.
    #[error("{0}")]
    Client(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// `e` and its causes, each after `separator`, leaving out a cause whose text is already
/// shown: many errors repeat their source in their own message.
pub(crate) fn chain(e: &dyn std::error::Error, separator: &str) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(separator);
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Error::Io {
            context: "cannot listen on 127.0.0.1:8080".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address in use"),
        };
        assert_eq!(
            chain(&e, "\n  caused by: "),
            "cannot listen on 127.0.0.1:8080: Address in use",
            "{e:?}"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner reason")]
        struct Inner;
        assert_eq!(
            chain(&Outer(Inner), "\n  caused by: "),
            "outer\n  caused by: inner reason"
        );
    }
}
