//! Maps `sqlx` errors to [`StoreError`], deciding what is transient and what is the server's
//! absence.

use crate::error::StoreError;

/// SQLSTATE classes and codes a retry can get past: connection exceptions (08), serialization
/// failure, deadlock, lock not available, too many connections, server shutting down.
fn transient_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
        )
}

/// Maps a driver error raised while the store was doing `context`.
pub(crate) fn map(context: &str, target: &str, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => {
            StoreError::Unreachable {
                target: target.to_owned(),
                source: Box::new(err),
            }
        }
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed,
        sqlx::Error::Database(ref db) => {
            let transient = db.code().is_some_and(|c| transient_code(&c));
            StoreError::database(context, transient, err)
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt {
            detail: format!("unexpected value while {context}"),
            source: Some(Box::new(err)),
        },
        other => StoreError::database(context, false, other),
    }
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
