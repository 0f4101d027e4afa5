//! `ferrule token create|list|revoke`: named API tokens in the store, worked on straight from
//! the configuration like `migrate` (no running relay, no token needed), so an operator can
//! always get a working token back. Creating and revoking are recorded in the audit log as
//! done by `cli:<user>`.

use std::time::SystemTime;

use ferrule_store::{AnyStore, StoreError};

use super::TokenCommand;
use super::console;
use crate::audit::{self, Action};
use crate::auth::stored::{self, CreateError, RELOAD_EVERY};
use crate::auth::{Role, Tokens};
use crate::config::Config;
use crate::error::Error;

/// Runs one `ferrule token` command on `store`, the store `config` names.
pub async fn run(config: &Config, store: &AnyStore, command: TokenCommand) -> Result<(), Error> {
    match command {
        TokenCommand::Create { name, read_only } => {
            let role = if read_only { Role::Read } else { Role::Admin };
            let token = stored::create(store, &name, role, SystemTime::now())
                .await
                .map_err(|e| match e {
                    CreateError::Store(e) => Error::Store(e),
                    e => Error::Other(e.to_string()),
                })?;
            let entry = audit::entry(&cli_actor(), Action::TokenCreate)
                .target(&name)
                .detail(serde_json::json!({"role": role.as_str()}));
            audit::record(store, entry).await;
            console::out(&token);
            console::err(&format!(
                "created {} token `{name}`: shown only this once, only its hash is stored; {}",
                role.as_str(),
                when_it_applies(config)
            ));
        }
        TokenCommand::List => {
            let entries = stored::list(store).await?;
            console::out(&table(&entries));
            let configured = Tokens::configured(&config.auth)
                .map(|t| t.len())
                .unwrap_or(0);
            if configured > 0 {
                console::err(&format!(
                    "and {configured} token(s) from `[auth]` in the configuration"
                ));
            }
        }
        TokenCommand::Revoke { name } => {
            if !stored::revoke(store, &name).await? {
                return Err(Error::Other(format!(
                    "no stored token is named `{name}` (`ferrule token list` shows them)"
                )));
            }
            let entry = audit::entry(&cli_actor(), Action::TokenRevoke).target(&name);
            audit::record(store, entry).await;
            console::err(&format!(
                "revoked token `{name}`; {}",
                when_it_applies(config)
            ));
        }
    }
    Ok(())
}

/// Who the audit log says ran a `ferrule token` command: `cli:` and the login name of the
/// user running it (`USER`, else `LOGNAME`), or `cli` when neither is set.
fn cli_actor() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .map_or_else(|| "cli".to_owned(), |user| format!("cli:{user}"))
}

/// A store that cannot be opened because a running relay holds it, said so with what to do.
pub fn explain_locked(e: Error) -> Error {
    match e {
        Error::Store(e @ StoreError::Locked { .. }) => Error::Other(format!(
            "{e}: a running relay holds it (on SQLite one process at a time opens the store); \
             stop the relay, run this command again, then start the relay"
        )),
        e => e,
    }
}

/// When a running relay sees the change.
fn when_it_applies(config: &Config) -> String {
    let url = config.store_url().unwrap_or_default();
    if url.starts_with("sqlite:") {
        "the relay applies this when it next starts".to_owned()
    } else {
        format!(
            "running relays apply this within {} s",
            RELOAD_EVERY.as_secs()
        )
    }
}

/// The stored tokens as a table: name, role, creation time and the start of the hash (never
/// the token, which is not stored).
fn table(entries: &[stored::Entry]) -> String {
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|(name, token)| match token {
            Ok(t) => [
                name.clone(),
                t.role.as_str().to_owned(),
                t.created_at.clone(),
                format!("sha256:{}…", t.sha256.get(..8).unwrap_or("")),
            ],
            Err(why) => [
                name.clone(),
                "-".into(),
                "-".into(),
                format!("damaged, not accepted: {why}"),
            ],
        })
        .collect();
    let header = ["NAME", "ROLE", "CREATED", "HASH"].map(String::from);
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&header)
        .chain(&rows)
        .map(|r| {
            format!(
                "{:w0$}  {:w1$}  {:w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
