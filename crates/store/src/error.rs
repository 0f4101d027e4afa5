//! The one error type every store operation returns, with its [`ErrorKind`] and retry hint.

use std::path::PathBuf;

use crate::run::{RunConflict, RunId};
use crate::types::{MessageId, Status};

/// A boxed error kept as the cause of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
///
/// The cause is kept as the error's [`source`](std::error::Error::source), so a caller that
/// logs the whole chain sees the driver's own message. Use [`StoreError::kind`] to branch and
/// [`StoreError::is_transient`] to decide whether a retry can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL could not be understood.
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given (for PostgreSQL, with any password removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An option or an argument has a value the store cannot use.
    #[error("invalid value for `{field}`: {reason}")]
    InvalidOption {
        /// The option or argument, e.g. `max_payload_bytes` or `destination`.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },

    /// The database file or its lock file could not be opened or created.
    #[error("cannot open store at {}", path.display())]
    Open {
        /// The file that could not be opened.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// Another process holds the database (SQLite is single-owner).
    #[error("store at {} is locked by another process (lock file {})", path.display(), lock_path.display())]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The lock file held by the other process.
        lock_path: PathBuf,
    },

    /// The database was written by a newer version of ferrule.
    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); upgrade ferrule"
    )]
    SchemaTooNew {
        /// The schema version recorded in the database.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },

    /// The database file is damaged or is not a database.
    #[error("store database is corrupt or not a database: {detail}")]
    Corrupt {
        /// Where the damage was noticed (file path or check).
        detail: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The database server could not be reached.
    #[error("database server {target} is unreachable")]
    Unreachable {
        /// Host and port (never the password).
        target: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// A payload is larger than `max_payload_bytes`; nothing was written.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size of the serialised payload in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// No message with this id exists.
    #[error("message {id} not found")]
    NotFound {
        /// The id that was looked up.
        id: MessageId,
    },

    /// No run with this id exists.
    #[error("run {id} not found")]
    RunNotFound {
        /// The id that was looked up.
        id: RunId,
    },

    /// A run's change was refused: nothing was written (see [`RunConflict`]).
    #[error("run {run} cannot be changed: {conflict}")]
    RunConflict {
        /// The run.
        run: RunId,
        /// Why.
        conflict: RunConflict,
    },

    /// The caller's lease is no longer valid: it was re-claimed by another worker, released, or
    /// the message was cancelled. The caller's result must be dropped.
    #[error("lease on message {id} was lost (owner `{owner}`)")]
    LeaseLost {
        /// The message.
        id: MessageId,
        /// The owner named in the stale lease.
        owner: String,
    },

    /// The operation does not apply to a message in this status.
    #[error("cannot {action} message {id} in status {from}")]
    InvalidTransition {
        /// The message.
        id: MessageId,
        /// Its current status.
        from: Status,
        /// What was attempted, e.g. `cancel`.
        action: &'static str,
    },

    /// The database's storage is full (SQLite `SQLITE_FULL`, an `ENOSPC` I/O error,
    /// PostgreSQL `53100 disk_full`): the operation wrote nothing. Retrying can succeed once
    /// space is freed, so this is transient, but it is an overload a caller should back off
    /// from rather than retry at once.
    #[error("store storage is full while {context}")]
    StorageFull {
        /// What the store was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The store has been closed (its writer stopped).
    #[error("store is closed")]
    Closed,

    /// The operation did not finish within the store's `operation_timeout` (a lock held
    /// elsewhere, a pool with no free connection, a saturated writer). The caller stopped
    /// waiting; a write may still commit later, so a retry should reuse its idempotency key.
    #[error("store operation `{operation}` did not finish within {after:?}")]
    Timeout {
        /// The operation, e.g. `enqueue`.
        operation: &'static str,
        /// The timeout that passed.
        after: std::time::Duration,
    },

    /// Any other database error.
    #[error("database error: {context}")]
    Database {
        /// What the store was doing.
        context: String,
        /// Whether retrying the operation may succeed (busy, connection reset, serialization
        /// failure).
        transient: bool,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

/// The broad class of a [`StoreError`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad URL, option or argument.
    Config,
    /// The database could not be opened.
    Open,
    /// Another process owns the database.
    Locked,
    /// The database schema is newer than this binary.
    SchemaTooNew,
    /// The database is damaged.
    Corrupt,
    /// The server cannot be reached.
    Unavailable,
    /// A payload is over the limit.
    PayloadTooLarge,
    /// The database's storage is full.
    StorageFull,
    /// No such message or run.
    NotFound,
    /// The caller's lease was lost (fencing).
    LeaseLost,
    /// A run's change was refused: its version moved, or its wait is no longer open.
    RunConflict,
    /// The message is in a status where the operation does not apply.
    InvalidTransition,
    /// The store was closed.
    Closed,
    /// An operation took longer than the store's operation timeout.
    Timeout,
    /// Another database error.
    Database,
}

impl StoreError {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::InvalidUrl { .. } | StoreError::InvalidOption { .. } => ErrorKind::Config,
            StoreError::Open { .. } => ErrorKind::Open,
            StoreError::Locked { .. } => ErrorKind::Locked,
            StoreError::SchemaTooNew { .. } => ErrorKind::SchemaTooNew,
            StoreError::Corrupt { .. } => ErrorKind::Corrupt,
            StoreError::Unreachable { .. } => ErrorKind::Unavailable,
            StoreError::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            StoreError::StorageFull { .. } => ErrorKind::StorageFull,
            StoreError::NotFound { .. } | StoreError::RunNotFound { .. } => ErrorKind::NotFound,
            StoreError::RunConflict { .. } => ErrorKind::RunConflict,
            StoreError::LeaseLost { .. } => ErrorKind::LeaseLost,
            StoreError::InvalidTransition { .. } => ErrorKind::InvalidTransition,
            StoreError::Closed => ErrorKind::Closed,
            StoreError::Timeout { .. } => ErrorKind::Timeout,
            StoreError::Database { .. } => ErrorKind::Database,
        }
    }

    /// Whether the same operation may succeed if retried later (server unreachable, database
    /// busy, serialization failure, an operation timeout, storage full until space is freed).
    /// Bad input, lost leases and corruption are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unreachable { .. }
            | StoreError::StorageFull { .. }
            | StoreError::Timeout { .. } => true,
            StoreError::Database { transient, .. } => *transient,
            _ => false,
        }
    }

    /// A [`StoreError::Database`] with the given context.
    pub fn database(
        context: impl Into<String>,
        transient: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        StoreError::Database {
            context: context.into(),
            transient,
            source: source.into(),
        }
    }

    /// A [`StoreError::StorageFull`] with the given context.
    pub fn storage_full(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::StorageFull {
            context: context.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience() {
        let e = StoreError::PayloadTooLarge { size: 10, max: 5 };
        assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "payload of 10 bytes exceeds the maximum of 5 bytes"
        );
        let e = StoreError::database("claiming", true, std::io::Error::other("busy"));
        assert!(e.is_transient());
        assert_eq!(e.kind(), ErrorKind::Database);
        assert!(std::error::Error::source(&e).is_some());
        let e = StoreError::storage_full(
            "committing a write batch",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "store storage is full while committing a write batch"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
