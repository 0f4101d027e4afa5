//! Named API tokens: `ferrule token create|list|revoke` through the real binary, a running
//! relay picking them up from PostgreSQL, and the generated token of older relays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use ferrule::StartOptions;
use ferrule::auth::{self, stored};
use ferrule_policy::{ManualClock, SharedClock};
use ferrule_store::Store;
use reqwest::{Method, StatusCode};

use crate::binary::{BIN, Server};
use crate::support::{self, PgSchema, TOKEN};

/// A config file in `dir` with the store at `store_url` and no `[auth]` tokens.
fn write_config(dir: &Path, store_url: &str) -> PathBuf {
    let path = dir.join("ferrule.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{store_url}\"\n"),
    )
    .unwrap();
    path
}

fn token_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("token")
        .args(args)
        .arg("--config")
        .arg(config)
        // Who the audit log says ran it.
        .env("USER", "alice")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn status_with(base: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[test]
fn on_sqlite_the_token_commands_name_the_lock_and_recover_a_lost_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferrule.db");
    let config = write_config(dir.path(), &format!("sqlite://{}", db.display()));
    let server = Server::start(&config);
    server.wait_for_stdout("generated admin API token");
    // The generated token is lost; the running relay holds the store.
    let out = token_cli(&config, &["create", "--name", "ops"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is locked by another process")
            && stderr.contains(".lock")
            && stderr.contains("stop the relay"),
        "{stderr}"
    );
    drop(server);
    let out = token_cli(&config, &["create", "--name", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ops = text(&out.stdout).trim().to_owned();
    assert!(ops.starts_with("frl_"), "{ops}");
    let out = token_cli(&config, &["create", "--name", "grafana", "--read-only"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let grafana = text(&out.stdout).trim().to_owned();
    let out = token_cli(&config, &["create", "--name", "ops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("a token named `ops` exists"));
    let out = token_cli(&config, &["list"]);
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in [
        "NAME", "default", "ops", "grafana", "admin", "read", "sha256:",
    ] {
        assert!(list.contains(expected), "{expected}: {list}");
    }
    assert!(!list.contains(&ops) && !list.contains(&grafana), "{list}");

    let server = Server::start(&config);
    let banner = server.wait_for_stdout("curl ");
    assert!(
        !banner.contains("generated"),
        "an admin token exists: {banner}"
    );
    let base = server.base.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(status_with(&base, &ops).await, StatusCode::OK);
        assert_eq!(status_with(&base, &grafana).await, StatusCode::OK);
        let refused = reqwest::Client::new()
            .post(format!("{base}/v1/breakers/none/reset"))
            .bearer_auth(&grafana)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(refused, StatusCode::FORBIDDEN, "read-only");
    });
    drop(server);
    let out = token_cli(&config, &["revoke", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = token_cli(&config, &["revoke", "ops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no stored token is named `ops`"));
    let server = Server::start(&config);
    server.wait_for_stdout("curl ");
    let base = server.base.clone();
    rt.block_on(async {
        assert_eq!(
            status_with(&base, &ops).await,
            StatusCode::UNAUTHORIZED,
            "revoked"
        );
    });
    // The audit log says who created and revoked them; `ferrule audit` reads it with a
    // read-only token.
    let out = Command::new(BIN)
        .args(["audit", "--action", "token.create", "--server", &base])
        .args(["--token", &grafana])
        .output()
        .unwrap();
    let audit = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<&str> = audit.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "default, ops, grafana: {audit}");
    assert!(
        rows[0].contains("token.create") && rows[0].contains("grafana"),
        "{audit}"
    );
    assert!(rows[..2].iter().all(|r| r.contains("cli:alice")), "{audit}");
    assert!(
        rows[2].contains("relay") && rows[2].contains("default"),
        "generated: {audit}"
    );
    assert!(
        text(&out.stderr).contains("3 entries shown"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["audit", "--since", "1h", "--json", "--server", &base])
        .args(["--token", &grafana])
        .output()
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["entries"][0]["action"], "token.revoke", "{page}");
    assert_eq!(page["entries"][0]["target"], "ops", "{page}");
}

#[tokio::test]
async fn a_running_relay_on_postgres_applies_tokens_created_and_revoked_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let shared: SharedClock = std::sync::Arc::new(clock.clone());
    let mut config = support::config_in(&dir);
    config.store.url = ferrule::config::Secret::new(schema.url());
    let relay = support::start_in(tempfile::tempdir().unwrap(), config, shared).await;
    let file = write_config(dir.path(), &schema.url());
    let out = token_cli(&file, &["create", "--name", "ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("within 5 s"),
        "{}",
        text(&out.stderr)
    );
    let ci = text(&out.stdout).trim().to_owned();
    assert_eq!(
        status_with(&relay.base, &ci).await,
        StatusCode::UNAUTHORIZED
    );
    // The relay reads the stored tokens again every RELOAD_EVERY of its clock.
    let applied = |wanted: StatusCode| {
        let clock = clock.clone();
        let ci = ci.clone();
        let base = relay.base.clone();
        async move {
            for _ in 0..200 {
                clock.advance(stored::RELOAD_EVERY);
                if status_with(&base, &ci).await == wanted {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the relay did not apply the change: still not {wanted}");
        }
    };
    applied(StatusCode::OK).await;
    assert_eq!(
        status_with(&relay.base, TOKEN).await,
        StatusCode::OK,
        "configured"
    );
    let out = token_cli(&file, &["revoke", "ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    applied(StatusCode::UNAUTHORIZED).await;
    drop(relay);
    drop(schema);
}

#[tokio::test]
async fn the_token_an_older_relay_generated_becomes_default_and_keeps_working() {
    let old = "frl_generated-by-an-older-relay-0123456789";
    // A store where an older relay left its generated token's hash; no `[auth] tokens`.
    let with_legacy = |dir: &tempfile::TempDir| {
        let mut config = support::config_in(dir);
        config.auth.tokens.clear();
        async move {
            let store = ferrule::server::open_store(&config, ferrule_policy::clock::system())
                .await
                .unwrap();
            store
                .set_meta(stored::LEGACY_KEY, &auth::to_hex(&auth::hash(old)))
                .await
                .unwrap();
            drop(store);
            config
        }
    };
    // Without `[auth] tokens`, the older relay accepted it: it becomes `default`.
    let dir = tempfile::tempdir().unwrap();
    let config = with_legacy(&dir).await;
    let running = ferrule::start(
        config.clone(),
        StartOptions {
            banner: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        running.generated_token, None,
        "the old token is the admin token"
    );
    let base = format!("http://{}", running.addr);
    assert_eq!(status_with(&base, old).await, StatusCode::OK);
    assert_eq!(
        running
            .state
            .store
            .get_meta(stored::LEGACY_KEY)
            .await
            .unwrap(),
        None
    );
    let listed = stored::list(&running.state.store).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, "default");
    assert_eq!(listed[0].1.as_ref().unwrap().role, auth::Role::Admin);
    running.shutdown();
    running.wait().await.unwrap();

    // With `[auth] tokens`, the older relay did not accept it, and neither does this one.
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_legacy(&dir).await;
    config.auth.tokens = vec![ferrule::config::Secret::new(TOKEN).into()];
    let relay = support::start_in(dir, config, ferrule_policy::clock::system()).await;
    let (status, _) = relay
        .call_with(Method::GET, "/status", None, Some(old), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&relay.base, TOKEN).await, StatusCode::OK);
}

#[tokio::test]
async fn breaker_overrides_say_who_set_them_by_the_tokens_name() {
    let receiver = crate::receiver::Receiver::start().await;
    let named = "deploy-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config_in(&dir);
    config
        .auth
        .tokens
        .push(ferrule::config::ConfiguredToken::named(
            "deploy-bot",
            ferrule::config::Secret::new(named),
        ));
    config
        .destinations
        .push(support::webhook("hook", &receiver.url));
    // A stored token, created before the relay holds the SQLite store.
    let store = ferrule::server::open_store(&config, ferrule_policy::clock::system())
        .await
        .unwrap();
    let ops = stored::create(&store, "ops", auth::Role::Admin, SystemTime::now())
        .await
        .unwrap();
    drop(store);
    let relay = support::start_in(dir, config, ferrule_policy::clock::system()).await;

    let set_by = |token: String| {
        let relay = &relay;
        async move {
            let (status, body) = relay
                .call_with(
                    Method::POST,
                    "/v1/breakers/hook/force-open",
                    None,
                    Some(&token),
                    &[],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["override"]["set_by"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(set_by(named.to_owned()).await, "deploy-bot");
    assert_eq!(set_by(ops).await, "ops");
    // A configured token without a name is said by the start of its hash, never itself.
    let unnamed = set_by(TOKEN.to_owned()).await;
    assert!(
        unnamed.starts_with("api:") && unnamed.len() == 12,
        "{unnamed}"
    );
}
