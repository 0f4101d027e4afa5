//! SQLite connection settings: the database path from a `sqlite://` URL and the pragmas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StoreError;
use crate::options::{StoreOptions, Synchronous};

/// Where the database lives and how connections are set up.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// The backend-independent options.
    pub store: StoreOptions,
}

impl SqliteOptions {
    /// Options for the database at `path`.
    pub fn new(path: impl Into<PathBuf>, store: StoreOptions) -> Self {
        SqliteOptions {
            path: path.into(),
            store,
        }
    }

    /// Parses `sqlite://path` (relative: `sqlite://relay.db`, absolute: `sqlite:///var/lib/x.db`;
    /// `sqlite:path` is accepted too). In-memory databases are refused: the store is durable.
    pub fn from_url(url: &str, store: StoreOptions) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("expected `sqlite://<path>`"))?;
        let path = rest.split('?').next().unwrap_or_default();
        if rest.contains('?') {
            return Err(invalid(
                "query parameters are not supported; use StoreOptions",
            ));
        }
        if path.is_empty() {
            return Err(invalid("the path is empty"));
        }
        if path == ":memory:" || path.starts_with("file::memory:") {
            return Err(invalid("in-memory databases are not durable"));
        }
        Ok(SqliteOptions::new(path, store))
    }

    /// The lock file that makes the database single-owner: `<db>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        lock_path(&self.path)
    }

    pub(crate) fn pragmas(&self) -> String {
        let sync = match self.store.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        format!(
            // temp_store: savepoint sub-journals, RETURNING buffers and json_each sets would
            // otherwise spill to temporary files once past 64 KiB; in memory they cost no
            // syscalls (the relay's CPU per delivered message fell by a third, BENCHMARKS.md).
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; \
             PRAGMA temp_store = MEMORY;",
            millis(self.store.busy_timeout)
        )
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = SqliteOptions::from_url("sqlite://relay.db", StoreOptions::default()).unwrap();
        assert_eq!(o.path, PathBuf::from("relay.db"));
        assert_eq!(o.lock_path(), PathBuf::from("relay.db.lock"));
        let o = SqliteOptions::from_url("sqlite:///var/lib/f.db", StoreOptions::default()).unwrap();
        assert_eq!(o.path, PathBuf::from("/var/lib/f.db"));
        for bad in [
            "sqlite://",
            "sqlite://:memory:",
            "postgres://x",
            "sqlite://a.db?mode=ro",
        ] {
            let err = SqliteOptions::from_url(bad, StoreOptions::default()).unwrap_err();
            assert!(matches!(err, StoreError::InvalidUrl { .. }), "{bad}: {err}");
        }
    }
}
