//! Each route's `chats` as templates read them: the configured `[[routes.chats]]` with the
//! entries set through the API laid over them, kept in memory so a run never reads the store
//! for them.
//!
//! Configured entries are the defaults; an entry set through the API (`PUT
//! /v1/routes/{name}/chats`) replaces a configured one of the same key or adds a key, and
//! removing it (`DELETE`) shows the configured one again, if any. The API's entries are the
//! store's (`route_chats`): read at start, changed by this relay's own writes at once, and on a
//! store shared by several relays (PostgreSQL) read again every [`FOLLOW_EVERY`], like the
//! breaker overrides and pauses, so a change made through another relay is used here within
//! that long.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use ferrule_store::{AnyStore, RouteChat, Store, StoreError};
use serde_json::{Map, Value, json};

use super::{Route, Routes};
use crate::config::ChatMapping;

/// How often a relay sharing its store with others reads the routes' chats again.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// Where a route's chat entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[routes.chats]]` in the configuration.
    Config,
    /// Set through the API, stored.
    Api,
}

impl Source {
    /// `config` or `api`, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// One entry of a route's `chats`, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEntry {
    /// What is mapped.
    pub key: String,
    /// The chat templates get.
    pub chat_id: i64,
    /// Where it comes from.
    pub source: Source,
    /// The stored entry, for one set through the API.
    pub stored: Option<RouteChat>,
    /// The configured chat an entry set through the API replaces, if any.
    pub configured: Option<i64>,
}

/// One route's chats: the configured ones and those stored, with the object templates read.
#[derive(Debug)]
pub struct Chats {
    configured: BTreeMap<String, i64>,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    stored: BTreeMap<String, RouteChat>,
    object: Value,
}

impl Chats {
    /// The chats of a route configured with `mappings`, before any stored entry is read.
    pub fn configured(mappings: &[ChatMapping]) -> Self {
        let configured: BTreeMap<String, i64> = mappings
            .iter()
            .map(|c| (c.key.clone(), c.chat_id))
            .collect();
        let object = merge(&configured, &BTreeMap::new());
        Chats {
            configured,
            current: RwLock::new(Current {
                stored: BTreeMap::new(),
                object,
            }),
        }
    }

    /// The object templates read as `chats`: key → chat id.
    pub fn object(&self) -> Value {
        self.read(|c| c.object.clone())
    }

    /// Whether `key` is configured in `[[routes.chats]]`.
    pub fn is_configured(&self, key: &str) -> bool {
        self.configured.contains_key(key)
    }

    /// Whether `key` has an entry set through the API.
    pub fn is_stored(&self, key: &str) -> bool {
        self.read(|c| c.stored.contains_key(key))
    }

    /// Every entry in key order (byte order), each once: the API's over the configuration's.
    pub fn entries(&self) -> Vec<ChatEntry> {
        self.read(|current| {
            let mut entries: BTreeMap<&str, ChatEntry> = self
                .configured
                .iter()
                .map(|(key, &chat_id)| {
                    let entry = ChatEntry {
                        key: key.clone(),
                        chat_id,
                        source: Source::Config,
                        stored: None,
                        configured: None,
                    };
                    (key.as_str(), entry)
                })
                .collect();
            for (key, stored) in &current.stored {
                let entry = ChatEntry {
                    key: key.clone(),
                    chat_id: stored.chat_id,
                    source: Source::Api,
                    stored: Some(stored.clone()),
                    configured: self.configured.get(key).copied(),
                };
                entries.insert(key.as_str(), entry);
            }
            entries.into_values().collect()
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        f(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the stored entries with `stored`; answers whether anything changed.
    fn replace(&self, stored: BTreeMap<String, RouteChat>) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.stored == stored {
            return false;
        }
        current.object = merge(&self.configured, &stored);
        current.stored = stored;
        true
    }

    /// Changes the stored entries with `change`.
    fn change(&self, change: impl FnOnce(&mut BTreeMap<String, RouteChat>)) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        change(&mut current.stored);
        current.object = merge(&self.configured, &current.stored);
    }
}

/// The configured chats with the stored ones over them, as a JSON object.
fn merge(configured: &BTreeMap<String, i64>, stored: &BTreeMap<String, RouteChat>) -> Value {
    let mut object: Map<String, Value> = configured
        .iter()
        .map(|(key, chat)| (key.clone(), json!(chat)))
        .collect();
    for (key, chat) in stored {
        object.insert(key.clone(), json!(chat.chat_id));
    }
    Value::Object(object)
}

impl Routes {
    /// Reads the stored chats of every route (at start). Entries of a route no longer
    /// configured are kept in the store and logged.
    pub async fn load_chats(&self, store: &AnyStore) -> Result<(), StoreError> {
        let _writes = self.chat_writes.lock().await;
        let mut by_route = by_route(store.route_chats(None).await?);
        for route in self.iter() {
            let stored = by_route.remove(&route.config.name).unwrap_or_default();
            if !stored.is_empty() {
                tracing::info!(route = %route.config.name, count = stored.len(), "chats set through the API restored");
            }
            route.chats.replace(stored);
        }
        for (route, stored) in by_route {
            tracing::info!(
                route,
                count = stored.len(),
                "stored chats name no configured route; kept"
            );
        }
        Ok(())
    }

    /// Stores `route`'s chat of `key` as `chat_id`, set by `by`, then uses it at once. Nothing
    /// changes when the store refuses the write.
    pub async fn set_chat(
        &self,
        store: &AnyStore,
        route: &Route,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> Result<RouteChat, StoreError> {
        let _writes = self.chat_writes.lock().await;
        let stored = store
            .set_route_chat(&route.config.name, key, chat_id, by)
            .await?;
        route.chats.change(|s| {
            s.insert(key.to_owned(), stored.clone());
        });
        Ok(stored)
    }

    /// Removes `route`'s stored chat of `key`, then stops using it at once (the configured
    /// one, if any, shows again); answers whether one was stored.
    pub async fn remove_chat(
        &self,
        store: &AnyStore,
        route: &Route,
        key: &str,
    ) -> Result<bool, StoreError> {
        let _writes = self.chat_writes.lock().await;
        let was = store.delete_route_chat(&route.config.name, key).await?;
        route.chats.change(|s| {
            s.remove(key);
        });
        Ok(was)
    }

    /// Reads the stored chats again and uses what changed since this relay last read or wrote
    /// them; answers how many routes changed.
    pub async fn follow_chats(&self, store: &AnyStore) -> Result<usize, StoreError> {
        let _writes = self.chat_writes.lock().await;
        let mut by_route = by_route(store.route_chats(None).await?);
        let mut changed = 0;
        for route in self.iter() {
            let stored = by_route.remove(&route.config.name).unwrap_or_default();
            if route.chats.replace(stored) {
                tracing::info!(route = %route.config.name, "chats changed through another relay applied");
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Follows the stored chats every [`FOLLOW_EVERY`] on `clock` until `stop`.
    pub async fn follow_chats_until(
        &self,
        store: &AnyStore,
        clock: &ferrule_policy::SharedClock,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        crate::destination::follow_every(clock, FOLLOW_EVERY, stop, "the routes' chats", || {
            self.follow_chats(store)
        })
        .await;
    }
}

/// Stored entries by route, then by key.
fn by_route(chats: Vec<RouteChat>) -> BTreeMap<String, BTreeMap<String, RouteChat>> {
    let mut by_route: BTreeMap<String, BTreeMap<String, RouteChat>> = BTreeMap::new();
    for chat in chats {
        by_route
            .entry(chat.route.clone())
            .or_default()
            .insert(chat.key.clone(), chat);
    }
    by_route
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn stored(key: &str, chat_id: i64) -> (String, RouteChat) {
        let chat = RouteChat {
            route: "r".into(),
            key: key.into(),
            chat_id,
            updated_at: SystemTime::UNIX_EPOCH,
            updated_by: "ops".into(),
        };
        (key.to_owned(), chat)
    }

    #[test]
    fn stored_entries_replace_configured_ones_and_add_keys() {
        let chats = Chats::configured(&[
            ChatMapping {
                key: "octo/a".into(),
                chat_id: 1,
            },
            ChatMapping {
                key: "octo/b".into(),
                chat_id: 2,
            },
        ]);
        assert_eq!(chats.object(), json!({"octo/a": 1, "octo/b": 2}));
        assert!(chats.replace([stored("octo/b", 20), stored("octo/c", 30)].into()));
        assert!(!chats.replace([stored("octo/b", 20), stored("octo/c", 30)].into()));
        assert_eq!(
            chats.object(),
            json!({"octo/a": 1, "octo/b": 20, "octo/c": 30})
        );
        let listed: Vec<_> = chats
            .entries()
            .into_iter()
            .map(|e| (e.key, e.chat_id, e.source, e.configured))
            .collect();
        assert_eq!(
            listed,
            [
                ("octo/a".to_owned(), 1, Source::Config, None),
                ("octo/b".to_owned(), 20, Source::Api, Some(2)),
                ("octo/c".to_owned(), 30, Source::Api, None),
            ]
        );
        // Removing the stored entry shows the configured one again.
        chats.change(|s| {
            s.remove("octo/b");
        });
        assert_eq!(
            chats.object(),
            json!({"octo/a": 1, "octo/b": 2, "octo/c": 30})
        );
        assert!(chats.is_configured("octo/b") && !chats.is_stored("octo/b"));
    }
}
