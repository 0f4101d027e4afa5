//! PostgreSQL for a run: a fresh database per run (dropped after), and restarts of the local
//! cluster with `pg_ctlcluster`.

use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::error::{Error, Result};

/// A database created for one run; [`RunDatabase::drop_now`] removes it.
#[derive(Debug)]
pub(crate) struct RunDatabase {
    base: String,
    /// The database's name.
    pub(crate) name: String,
    /// Its URL, for the relays.
    pub(crate) url: String,
}

/// `base` with its database replaced by `name`.
pub(crate) fn with_database(base: &str, name: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| Error::Setup(format!("--postgres-url is not a URL: {e}")))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

impl RunDatabase {
    /// Creates `ferrule_chaos_<pid>_<suffix>` on the server of `base`.
    pub(crate) async fn create(base: &str, suffix: &str) -> Result<Self> {
        let name = format!("ferrule_chaos_{}_{suffix}", std::process::id());
        let mut conn = PgConnection::connect(base)
            .await
            .map_err(|e| Error::pg(format!("connecting to {base}"), e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| Error::pg(format!("creating database {name}"), e))?;
        let _ = conn.close().await;
        Ok(RunDatabase {
            base: base.to_owned(),
            url: with_database(base, &name)?,
            name,
        })
    }

    /// Drops the database (closing any session still on it).
    pub(crate) async fn drop_now(self) -> Result<()> {
        let mut conn = PgConnection::connect(&self.base)
            .await
            .map_err(|e| Error::pg("connecting to drop the run database", e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| Error::pg(format!("dropping database {}", self.name), e))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Client sessions on the server that belong to other databases (other users of a shared
    /// server, whom a restart would disturb).
    pub(crate) async fn other_sessions(&self) -> Result<i64> {
        let mut conn = PgConnection::connect(&self.base)
            .await
            .map_err(|e| Error::pg("connecting to count sessions", e))?;
        let own = self.base_database();
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND datname IS NOT NULL AND datname <> $1 AND datname <> $2",
        )
        .bind(&self.name)
        .bind(own)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::pg("counting sessions", e))?;
        let _ = conn.close().await;
        Ok(count)
    }

    fn base_database(&self) -> String {
        reqwest::Url::parse(&self.base)
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_owned())
            .unwrap_or_default()
    }
}

/// Restarts the local cluster on port 5432: `pg_ctlcluster <version> <cluster> stop`, `down`
/// of outage, then `start` (`down` zero: one `restart`). Returns how long it took.
pub(crate) async fn restart(down: Duration) -> Result<Duration> {
    let list = tokio::process::Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .await
        .map_err(|e| Error::io("running pg_lsclusters", e))?;
    let text = String::from_utf8_lossy(&list.stdout);
    let (version, cluster) = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"5432")).then(|| (f[0].to_owned(), f[1].to_owned()))
        })
        .next()
        .ok_or_else(|| Error::Setup("pg_lsclusters lists no cluster on port 5432".into()))?;
    let started = Instant::now();
    let ctl = |action: &'static str| {
        let (version, cluster) = (version.clone(), cluster.clone());
        async move {
            let status = tokio::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, &cluster, action])
                .status()
                .await
                .map_err(|e| Error::io("running pg_ctlcluster", e))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error::Setup(format!(
                    "pg_ctlcluster {action} exited with {status}"
                )))
            }
        }
    };
    if down.is_zero() {
        ctl("restart").await?;
    } else {
        ctl("stop").await?;
        tokio::time::sleep(down).await;
        ctl("start").await?;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").ok(),
            Some("postgres://postgres@127.0.0.1:5432/x".to_owned())
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x").ok(),
            Some("postgres://u:p@h/x?sslmode=disable".to_owned())
        );
    }
}
