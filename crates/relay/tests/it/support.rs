#![allow(dead_code)] // helpers used by the delivery tests

//! Starting the real relay on a temporary SQLite file, and a client for its API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrule::config::{DestinationConfig, DestinationKind, Secret};
use ferrule::{Config, Running, StartOptions};
use ferrule_policy::SharedClock;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The API token every test relay accepts.
pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// A relay running in this process.
pub(crate) struct TestRelay {
    /// The running relay.
    pub(crate) running: Option<Running>,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// An HTTP client.
    pub(crate) http: reqwest::Client,
    /// Holds the database directory.
    pub(crate) dir: TempDir,
    /// The PostgreSQL schema, when running on PostgreSQL (dropped after the relay stops).
    pub(crate) pg: Option<PgSchema>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

/// A test config: loopback listener on a free port, the store in `dir`, the test token.
pub(crate) fn config_in(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    // No load balancer watches these relays: stop at once (tests of the delay set their own).
    config.server.shutdown_delay = Duration::ZERO;
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("ferrule.db").display()
    ));
    config.store.synchronous = ferrule_store::Synchronous::Normal;
    config.auth.tokens = vec![Secret::new(TOKEN).into()];
    config.dispatcher.poll_interval = Duration::from_millis(50);
    config
}

/// A webhook destination named `name` pointing at `url` (loopback allowed).
pub(crate) fn webhook(name: &str, url: &str) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Webhook,
        url: url.into(),
        secret: Some(Secret::new(SECRET)),
        allow_private: true,
        timeout: Some(Duration::from_secs(2)),
        headers: Default::default(),
        ..DestinationConfig::default()
    }
}

/// The webhook secret test destinations sign with.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Starts the relay on `clock` with the test config changed by `setup`.
pub(crate) async fn start_clock(clock: SharedClock, setup: impl FnOnce(&mut Config)) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(&dir);
    setup(&mut config);
    start_in(dir, config, clock).await
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the database at `FERRULE_TEST_POSTGRES_URL`, dropped afterwards.
    Postgres,
}

/// Starts the relay on `backend` with the test config changed by `setup`.
pub(crate) async fn start_on(backend: Backend, setup: impl FnOnce(&mut Config)) -> TestRelay {
    match backend {
        Backend::Sqlite => start(setup).await,
        Backend::Postgres => {
            let dir = tempfile::tempdir().unwrap();
            let mut config = config_in(&dir);
            let schema = PgSchema::new();
            config.store.url = Secret::new(schema.url());
            setup(&mut config);
            let mut relay = start_in(dir, config, ferrule_policy::clock::system()).await;
            relay.pg = Some(schema);
            relay
        }
    }
}

/// A fresh PostgreSQL schema, dropped with everything in it on drop.
pub(crate) struct PgSchema {
    name: String,
    base: String,
}

impl PgSchema {
    pub(crate) fn new() -> Self {
        let base = std::env::var("FERRULE_TEST_POSTGRES_URL").expect(
            "FERRULE_TEST_POSTGRES_URL must name a PostgreSQL database (scripts/test sets it)",
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // The creation time in the name lets a later run sweep what a killed run left behind.
        let name = format!("{SCHEMA_PREFIX}{now}_{:08x}", fastrand::u32(..),);
        sweep_stale_schemas(&base, now);
        PgSchema { name, base }
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL without the schema.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    /// Drops the schema, waiting a few seconds for its locks. The relay's last write may still
    /// hold one: a `#[tokio::test]` runs the relay on the test's own thread, which this drop
    /// blocks, so a transaction the shutdown interrupted cannot end until the test returns.
    /// Then the drop goes on in the background, once the test's connections are closed; a
    /// schema it could not drop before the process exited is swept by a later run.
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || drop_schema(&base, &name, "3s"))
            .join()
            .unwrap_or(false);
        if !dropped {
            let (base, name) = (self.base.clone(), self.name.clone());
            std::thread::spawn(move || {
                for _ in 0..30 {
                    if drop_schema(&base, &name, "2s") {
                        return;
                    }
                }
            });
        }
    }
}

/// The prefix of the schemas relay tests create: `ferrule_relay_test_<unix secs>_<random>`.
const SCHEMA_PREFIX: &str = "ferrule_relay_test_";

/// Drops `schema` unless a lock on it is not granted within `lock_timeout`; says whether it
/// is gone.
fn drop_schema(base: &str, schema: &str, lock_timeout: &str) -> bool {
    let sql =
        format!("SET lock_timeout = '{lock_timeout}'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        use sqlx::Connection as _;
        let Ok(mut conn) = sqlx::PgConnection::connect(base).await else {
            return false;
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .is_ok()
    })
}

/// Drops the test schemas created more than an hour before `now` (left by a killed run), once
/// per process.
fn sweep_stale_schemas(base: &str, now: u64) {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let base = base.to_owned();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let names: Vec<String> = rt.block_on(async {
                use sqlx::Connection as _;
                let Ok(mut conn) = sqlx::PgConnection::connect(&base).await else {
                    return Vec::new();
                };
                sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
                    .bind(format!("{SCHEMA_PREFIX}%"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default()
            });
            for name in names {
                let created = name
                    .strip_prefix(SCHEMA_PREFIX)
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|secs| secs.parse::<u64>().ok());
                if created.is_some_and(|created| created + 3600 < now) {
                    drop_schema(&base, &name, "1s");
                }
            }
        })
        .join();
    });
}

/// Starts the relay with `config` exactly as given, keeping `dir` alive.
pub(crate) async fn start_in(dir: TempDir, config: Config, clock: SharedClock) -> TestRelay {
    let running = ferrule::start(
        config,
        StartOptions {
            clock,
            banner: false,
        },
    )
    .await
    .expect("the relay starts");
    TestRelay {
        base: format!("http://{}", running.addr),
        running: Some(running),
        http: reqwest::Client::new(),
        dir,
        pg: None,
    }
}

/// Starts the relay on the system clock with the test config changed by `setup`.
pub(crate) async fn start(setup: impl FnOnce(&mut Config)) -> TestRelay {
    start_clock(ferrule_policy::clock::system(), setup).await
}

impl TestRelay {
    /// Sends a request with the test token.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, Some(TOKEN), &[]).await
    }

    /// Sends a request with `token` (or none) and extra headers.
    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the relay answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// The items under `key` of the page `GET path` answers with the test token, which must be
    /// 200.
    pub(crate) async fn page(&self, path: &str, key: &str) -> Vec<Value> {
        let (status, page) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        page[key]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {page}"))
            .clone()
    }

    /// Submits `payload` to `destination`; returns the new id.
    pub(crate) async fn submit(&self, destination: &str, payload: Value) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/messages",
                Some(serde_json::json!({"destination": destination, "payload": payload})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The message `id` with its timeline.
    pub(crate) async fn message(&self, id: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/messages/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits (polling every 10 ms, at most `limit`) until message `id` has `status`.
    pub(crate) async fn wait_for_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = self.message(id).await;
            if message["status"] == status {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} did not become {status}: {message:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the relay and starts it again with the same configuration on the same store, on
    /// `clock`: a real restart (a new `start`), listening on a new port.
    pub(crate) async fn restart(&mut self, clock: SharedClock) {
        let config = self
            .running
            .as_ref()
            .expect("the relay runs")
            .state
            .config
            .clone();
        self.stop().await;
        let options = StartOptions {
            clock,
            banner: false,
        };
        let running = ferrule::start(config, options)
            .await
            .expect("the relay starts again");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    /// The breaker of `destination` as `GET /v1/breakers` shows it.
    pub(crate) async fn breaker(&self, destination: &str) -> Value {
        let (status, body) = self.call(Method::GET, "/v1/breakers", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["destination"] == destination)
            .cloned()
            .unwrap_or_else(|| panic!("no breaker for {destination}: {body}"))
    }

    /// Shuts the relay down and waits for it.
    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.wait().await.expect("the relay stops cleanly");
        }
    }
}

/// What a test server received, in order, with a way to wait for more.
#[derive(Debug)]
pub(crate) struct Recorded<T> {
    items: std::sync::Mutex<Vec<T>>,
    notify: tokio::sync::Notify,
}

impl<T> Default for Recorded<T> {
    fn default() -> Self {
        Recorded {
            items: std::sync::Mutex::new(Vec::new()),
            notify: tokio::sync::Notify::new(),
        }
    }
}

impl<T: Clone> Recorded<T> {
    /// Records `item` and wakes every waiter.
    pub(crate) fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
        self.notify.notify_waiters();
    }

    /// Everything recorded so far.
    pub(crate) fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until at least `n` items were recorded; `what` names them in
    /// the failure message.
    pub(crate) async fn wait_for(&self, n: usize, limit: Duration, what: &str) -> Vec<T> {
        self.wait_until(limit, &format!("{n} {what}"), |items| items.len() >= n)
            .await
    }

    /// Waits (at most `limit`) until `done` holds for everything recorded; `what` says what
    /// was expected in the failure message.
    pub(crate) async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            let items = self.all();
            if done(&items) {
                return items;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "expected {what}, got {} items",
                items.len()
            );
        }
    }
}

/// The value of the Prometheus sample `name` (with labels) in `text`, or 0.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends `head` and then `body` whole on a new connection to `base`, only then reads the
/// answer, as Python's `requests` does: its status and its JSON body. Then asks `GET /livez` on
/// the same connection and returns that status too (`None` if the connection was closed).
pub(crate) async fn send_whole_then_read(
    base: &str,
    head: &str,
    body: &[u8],
) -> (u16, Value, Option<u16>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    async fn answer(conn: &mut BufReader<tokio::net::TcpStream>) -> Option<(u16, Vec<u8>)> {
        let mut status = String::new();
        conn.read_line(&mut status).await.ok()?;
        let status = status.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.ok()?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.ok()?;
        Some((status, body))
    }

    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body)
        .await
        .expect("the relay reads the whole body before closing");
    let mut conn = BufReader::new(conn);
    let (status, answer_body) = answer(&mut conn).await.expect("an answer");
    let next = format!("GET /livez HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let again = match conn.get_mut().write_all(next.as_bytes()).await {
        Ok(()) => answer(&mut conn).await.map(|(status, _)| status),
        Err(_) => None,
    };
    (status, serde_json::from_slice(&answer_body).unwrap(), again)
}

/// A TCP proxy to `upstream` that forwards nothing while paused.
pub(crate) struct PausableProxy {
    addr: SocketAddr,
    paused: Arc<watch::Sender<bool>>,
}

impl PausableProxy {
    pub(crate) async fn start(upstream: SocketAddr) -> PausableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(watch::Sender::new(false));
        let gate = paused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.subscribe();
                tokio::spawn(async move {
                    if wait_open(&mut gate.clone()).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(forward(client_read, server_write, gate.clone()));
                    tokio::spawn(forward(server_read, client_write, gate));
                });
            }
        });
        PausableProxy { addr, paused }
    }

    /// A proxy to the test PostgreSQL server (`FERRULE_TEST_POSTGRES_URL`).
    pub(crate) async fn to_test_postgres() -> PausableProxy {
        let base = std::env::var("FERRULE_TEST_POSTGRES_URL").expect(
            "FERRULE_TEST_POSTGRES_URL must name a PostgreSQL database (scripts/test sets it)",
        );
        let base = url::Url::parse(&base).unwrap();
        let upstream = tokio::net::lookup_host((
            base.host_str().unwrap(),
            base.port_or_known_default().unwrap(),
        ))
        .await
        .unwrap()
        .next()
        .unwrap();
        PausableProxy::start(upstream).await
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a PostgreSQL URL) with its host and port replaced by the proxy's.
    pub(crate) fn through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.to_string()
    }

    pub(crate) fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub(crate) fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn wait_open(gate: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    gate.wait_for(|paused| !*paused).await.map(drop)
}

/// Copies `from` to `to`, holding every chunk while the proxy is paused.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_open(&mut gate).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
