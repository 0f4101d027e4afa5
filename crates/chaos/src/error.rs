//! The harness's error type: setup problems that stop a run before it can give a verdict.

/// Why the harness could not run (a failed check is a verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// An I/O operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL refused a setup statement.
    #[error("{what}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// Anything else that keeps the run from starting.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A PostgreSQL error with what was being done.
    pub(crate) fn pg(what: impl Into<String>, source: sqlx::Error) -> Self {
        Error::Postgres {
            what: what.into(),
            source,
        }
    }
}

/// The harness's result type.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
