//! Named API tokens kept in the store: one meta key `relay.tokens.<name>` each, holding
//! `{"sha256": hex, "role": "admin"|"read", "created_at": rfc3339}`. `ferrule token` creates,
//! lists and revokes them; `serve` generates `default` when no admin token exists, moves the
//! hash an older relay stored (`relay.auth.token_sha256`) there, and reloads them every
//! [`RELOAD_EVERY`], so relays sharing a PostgreSQL database see each other's changes.

use std::time::{Duration, SystemTime};

use ferrule_store::{AnyStore, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{Role, Tokens, from_hex, generate, hash, to_hex};

/// The prefix of every stored token's meta key.
pub const PREFIX: &str = "relay.tokens.";
/// Where relays before named tokens kept the generated token's hash.
pub const LEGACY_KEY: &str = "relay.auth.token_sha256";
/// The name of the token `serve` generates.
pub const GENERATED_NAME: &str = "default";
/// How often a running relay reads the stored tokens again: a token created or revoked with
/// `ferrule token` takes effect within this long.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// One stored token, as its meta value holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The SHA-256 of the token, lower-case hex.
    pub sha256: String,
    /// What it may do.
    pub role: Role,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl StoredToken {
    /// A record of `token` with `role`, created at `now`.
    fn new(token: &str, role: Role, now: SystemTime) -> Self {
        StoredToken {
            sha256: to_hex(&hash(token)),
            role,
            created_at: crate::time::rfc3339(now),
        }
    }
}

/// A stored token by name, or why its value cannot be read.
pub type Entry = (String, Result<StoredToken, String>);

/// Why a token cannot be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The name is not 1 to 64 of `A-Z a-z 0-9 _ . -`.
    #[error("token name `{0}` must be 1 to 64 of `A-Z a-z 0-9 _ . -`")]
    InvalidName(String),
    /// A token of that name is stored.
    #[error("a token named `{0}` exists; revoke it first (`ferrule token revoke {0}`)")]
    Exists(String),
    /// No randomness for the token.
    #[error("cannot generate a token: {0}")]
    Random(getrandom::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a name that is not 1 to 64 of `A-Z a-z 0-9 _ . -`.
pub fn check_name(name: &str) -> Result<(), CreateError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CreateError::InvalidName(name.to_owned()))
    }
}

/// Every stored token by name, in name order; a value that does not parse is listed with why.
pub async fn list(store: &AnyStore) -> Result<Vec<Entry>, StoreError> {
    Ok(store
        .list_meta(PREFIX)
        .await?
        .into_iter()
        .map(|(key, value)| {
            let name = key[PREFIX.len()..].to_owned();
            let token = serde_json::from_str::<StoredToken>(&value)
                .map_err(|e| e.to_string())
                .and_then(|t| match from_hex(&t.sha256) {
                    Some(_) => Ok(t),
                    None => Err("`sha256` is not 64 hex digits".to_owned()),
                });
            (name, token)
        })
        .collect())
}

/// The stored tokens the API accepts, and the names of those whose value cannot be read.
pub async fn load(store: &AnyStore) -> Result<(Tokens, Vec<String>), StoreError> {
    let mut tokens = Tokens::default();
    let mut damaged = Vec::new();
    for (name, token) in list(store).await? {
        match token
            .ok()
            .and_then(|t| Some((from_hex(&t.sha256)?, t.role)))
        {
            Some((hash, role)) => tokens.push(hash, role, Some(name)),
            None => damaged.push(name),
        }
    }
    Ok((tokens, damaged))
}

/// Creates the token `name` with `role` and returns it: the only time it is seen, since only
/// its hash is stored.
pub async fn create(
    store: &AnyStore,
    name: &str,
    role: Role,
    now: SystemTime,
) -> Result<String, CreateError> {
    check_name(name)?;
    let key = format!("{PREFIX}{name}");
    if store.get_meta(&key).await?.is_some() {
        return Err(CreateError::Exists(name.to_owned()));
    }
    let token = generate().map_err(CreateError::Random)?;
    let record = StoredToken::new(&token, role, now);
    store.set_meta(&key, &to_json(&record)).await?;
    Ok(token)
}

/// Deletes the token `name`; answers whether it existed.
pub async fn revoke(store: &AnyStore, name: &str) -> Result<bool, StoreError> {
    store.delete_meta(&format!("{PREFIX}{name}")).await
}

/// Creates the admin token `serve` generates when no admin token exists: named `default`, or
/// `default-2`, `default-3`, … when that name is taken. Returns its name and the token.
pub async fn generate_admin(
    store: &AnyStore,
    now: SystemTime,
) -> Result<(String, String), CreateError> {
    let taken: Vec<String> = list(store).await?.into_iter().map(|(n, _)| n).collect();
    let name = std::iter::once(GENERATED_NAME.to_owned())
        .chain((2..).map(|n| format!("{GENERATED_NAME}-{n}")))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| GENERATED_NAME.to_owned());
    let token = create(store, &name, Role::Admin, now).await?;
    Ok((name, token))
}

/// Moves the hash an older relay stored under [`LEGACY_KEY`] to the admin token `default`
/// (unless that name is taken, then it is dropped as superseded), so the token it printed
/// keeps working. A value that is not a hash is dropped with a warning. Call it only when no
/// `[auth] tokens` are configured: then an older relay did not accept the legacy token either.
pub async fn migrate_legacy(store: &AnyStore, now: SystemTime) -> Result<(), StoreError> {
    let Some(hex) = store.get_meta(LEGACY_KEY).await? else {
        return Ok(());
    };
    let key = format!("{PREFIX}{GENERATED_NAME}");
    match from_hex(hex.trim()) {
        Some(_) if store.get_meta(&key).await?.is_none() => {
            let record = StoredToken {
                sha256: hex.trim().to_owned(),
                role: Role::Admin,
                created_at: crate::time::rfc3339(now),
            };
            store.set_meta(&key, &to_json(&record)).await?;
            tracing::info!(
                "the generated API token stored by an earlier version is now the admin token \
                 `{GENERATED_NAME}` (`ferrule token list`)"
            );
        }
        Some(_) => {}
        None => {
            tracing::warn!("the stored API token hash (`{LEGACY_KEY}`) is damaged; it is dropped")
        }
    }
    store.delete_meta(LEGACY_KEY).await?;
    Ok(())
}

fn to_json(record: &StoredToken) -> String {
    // A struct of strings always serialises.
    serde_json::to_string(record).unwrap_or_default()
}
