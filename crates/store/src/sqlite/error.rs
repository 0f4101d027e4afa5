//! Mapping of `rusqlite` errors to [`StoreError`].

use std::path::Path;

use rusqlite::ErrorCode;

use crate::error::StoreError;

/// Maps a driver error met while doing `context`.
pub(crate) fn map(context: &str, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: context.to_owned(),
            source: Some(Box::new(err)),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::database(context, true, err)
        }
        _ => StoreError::database(context, false, err),
    }
}

/// Maps an error met while opening the database file at `path`.
pub(crate) fn map_open(path: &Path, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: path.display().to_string(),
            source: Some(Box::new(err)),
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Open {
            path: path.to_owned(),
            source: Box::new(err),
        },
        _ => map(&format!("opening {}", path.display()), err),
    }
}

/// An extension to map `rusqlite` results with a context string.
pub(crate) trait Context<T> {
    /// Maps the error with [`map`].
    fn ctx(self, context: &str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|e| map(context, e))
    }
}
