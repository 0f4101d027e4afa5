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
