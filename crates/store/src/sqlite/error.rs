//! Mapping of `rusqlite` errors to [`StoreError`].

use std::path::Path;
use std::sync::Arc;

use rusqlite::ErrorCode;

use crate::error::StoreError;

/// Maps a driver error met while doing `context`.
pub(crate) fn map(context: &str, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: context.to_owned(),
            source: Some(Box::new(err)),
        },
        _ if is_full(&err) => StoreError::storage_full(context, err),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::database(context, true, err)
        }
        _ => StoreError::database(context, false, err),
    }
}

/// Maps one driver error that fails several callers at once (a write batch's `BEGIN` or
/// `COMMIT`): each caller gets its own [`StoreError`] of the same kind, all sharing the
/// driver's error as their source.
pub(crate) fn map_shared(context: &str, err: &Arc<rusqlite::Error>) -> StoreError {
    let source = Box::new(Arc::clone(err));
    if is_full(err) {
        StoreError::storage_full(context, source)
    } else {
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
                detail: context.to_owned(),
                source: Some(source),
            },
            _ => StoreError::database(context, is_busy(err), source),
        }
    }
}

/// Whether `err` means the file system has no room: `SQLITE_FULL` (a write met `ENOSPC`), or
/// `SQLITE_IOERR_SHMSIZE` (the WAL index could not grow, which on a tmpfs is the same).
pub(crate) fn is_full(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => {
            e.code == ErrorCode::DiskFull || e.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
        }
        _ => false,
    }
}

/// Whether retrying a statement that failed with `err` can succeed by itself (busy, locked).
pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A real `SQLITE_FULL`: a database capped at a few pages, filled until a write fails.
    fn full_error() -> rusqlite::Error {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA max_page_count = 4; CREATE TABLE t (b BLOB)")
            .unwrap();
        (0..100)
            .find_map(|_| {
                conn.execute("INSERT INTO t VALUES (zeroblob(1024))", [])
                    .err()
            })
            .expect("a 4-page database fills up")
    }

    #[test]
    fn a_full_disk_is_storage_full_not_a_database_error() {
        let err = full_error();
        assert!(is_full(&err), "{err}");
        let mapped = map("enqueueing", err);
        assert_eq!(mapped.kind(), ErrorKind::StorageFull, "{mapped}");
        assert!(mapped.is_transient());
        let shared = map_shared("committing a write batch", &Arc::new(full_error()));
        assert_eq!(shared.kind(), ErrorKind::StorageFull, "{shared}");
        assert!(std::error::Error::source(&shared).is_some());
    }

    #[test]
    fn other_errors_keep_their_kind() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let err = conn
            .execute("INSERT INTO missing VALUES (1)", [])
            .unwrap_err();
        assert!(!is_full(&err));
        let mapped = map("inserting", err);
        assert_eq!(mapped.kind(), ErrorKind::Database);
        assert!(!mapped.is_transient());
    }
}
