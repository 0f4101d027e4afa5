//! Maps `sqlx` errors to [`StoreError`], deciding what is transient and what is the server's
//! absence.

use std::sync::Arc;

use crate::error::{BoxError, StoreError};

/// SQLSTATE classes and codes a retry can get past: connection exceptions (08), serialization
/// failure, deadlock, lock not available, too many connections, a statement cancelled (by the
/// operation timeout as `statement_timeout`), server shutting down.
fn transient_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "53300" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

/// Maps a driver error raised while the store was doing `context`.
pub(crate) fn map(context: &str, target: &str, err: sqlx::Error) -> StoreError {
    let class = classify(&err);
    build(context, target, class, Box::new(err))
}

/// Maps one driver error that fails several callers at once (a group-commit batch): each
/// caller gets its own [`StoreError`] of the same kind, all sharing the driver's error as
/// their source.
pub(crate) fn map_shared(context: &str, target: &str, err: &Arc<sqlx::Error>) -> StoreError {
    build(context, target, classify(err), Box::new(Arc::clone(err)))
}

/// What a driver error means for the caller.
enum Class {
    Unreachable,
    Closed,
    Database { transient: bool },
    Corrupt,
    Full,
}

fn classify(err: &sqlx::Error) -> Class {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => Class::Unreachable,
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Class::Closed,
        // 53100 disk_full: the server could not extend a file; nothing was written.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "53100") => Class::Full,
        sqlx::Error::Database(db) => Class::Database {
            transient: db.code().is_some_and(|c| transient_code(&c)),
        },
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Class::Corrupt,
        _ => Class::Database { transient: false },
    }
}

fn build(context: &str, target: &str, class: Class, source: BoxError) -> StoreError {
    match class {
        Class::Unreachable => StoreError::Unreachable {
            target: target.to_owned(),
            source,
        },
        Class::Closed => StoreError::Closed,
        Class::Database { transient } => StoreError::database(context, transient, source),
        Class::Corrupt => StoreError::Corrupt {
            detail: format!("unexpected value while {context}"),
            source: Some(source),
        },
        Class::Full => StoreError::storage_full(context, source),
    }
}

/// Whether a statement failed on a conflict with a concurrent transaction (serialization
/// failure, deadlock): nothing was written, and running the same transaction again can succeed.
pub(crate) fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40001" || c == "40P01"))
}

/// Maps an error raised while connecting: a missing database or refused login is a problem
/// with the URL (`Open`), not an outage.
pub(crate) fn map_connect(redacted_url: &str, target: &str, err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        let code = db.code().unwrap_or_default();
        // 3D000 invalid_catalog_name; 28xxx invalid authorization; 42501 insufficient privilege.
        if code == "3D000" || code.starts_with("28") || code == "42501" {
            return StoreError::Open {
                path: redacted_url.into(),
                source: Box::new(err),
            };
        }
    }
    map("connecting", target, err)
}

/// Turns a decoded text that does not parse into a `Corrupt` error.
pub(crate) fn corrupt(what: &str, err: impl Into<crate::BoxError>) -> StoreError {
    StoreError::Corrupt {
        detail: format!("stored {what} cannot be read"),
        source: Some(err.into()),
    }
}
