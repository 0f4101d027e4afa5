//! The dashboard in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`). Signs in, finds a delivered message, sees a dead letter,
//! previews and bulk-replays it, sees it delivered, checks that a read-only token cannot
//! replay, and signs out; a screenshot of every page goes to
//! `<target dir>/ui-screenshots/`, and of the Alerts and Destinations pages (with alerts in
//! the alert log and a destination held back by its rate limit) at desktop and phone width, in
//! the light and the dark theme.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test says so and passes
//! (a developer's `scripts/test`), unless `FERRULE_UI_BROWSER_REQUIRED` is set, as `.ci/run`
//! does after installing them: then it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use ferrule::config::{ConfiguredToken, DestinationConfig, DestinationKind, Secret};
use ferrule::{Config, StartOptions};
use serde_json::{Value, json};

const ADMIN: &str = "browser-admin-token-0123456789";
const READ_ONLY: &str = "browser-viewer-token-0123456789";
/// The whole test's bound.
const LIMIT: Duration = Duration::from_secs(150);

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target dir>/tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("ui-screenshots"))
        .unwrap_or_else(|| PathBuf::from("target/ui-screenshots"));
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium() {
    let required = std::env::var_os("FERRULE_UI_BROWSER_REQUIRED").is_some();
    let (Some(chromium), Some(driver)) = (
        which(&["chromium", "chromium-browser"]),
        which(&["chromedriver"]),
    ) else {
        assert!(
            !required,
            "FERRULE_UI_BROWSER_REQUIRED is set but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        // A skipped test must say so where the developer looks.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the dashboard's browser test: chromium and chromedriver are not installed \
             (apt-get install chromium chromium-driver; .ci/run installs them and never skips)"
        );
        return;
    };
    tokio::time::timeout(LIMIT, run(chromium, driver))
        .await
        .expect("the browser test finishes within its bound");
}

/// A webhook receiver on 127.0.0.1 that answers 400 (a permanent failure) while `failing`.
async fn receiver(failing: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let failing = failing.clone();
            async move {
                if failing.load(Ordering::SeqCst) {
                    axum::http::StatusCode::BAD_REQUEST
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn api(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.unwrap().json().await.unwrap()
}

async fn wait_status(base: &str, id: &str, status: &str) {
    for _ in 0..200 {
        let m = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/messages/{id}"),
            None,
        )
        .await;
        if m["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {id} never became {status}");
}

struct Shots {
    dir: PathBuf,
    n: u32,
}

impl Shots {
    async fn take(&mut self, c: &Client, name: &str) {
        self.n += 1;
        let png = c.screenshot().await.expect("a screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.n));
        std::fs::write(&path, png).expect("the screenshot is written");
    }
}

/// Waits until the element at `css` holds `text` (reloading with `reload`).
async fn wait_text(c: &Client, css: &str, text: &str, reload: bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if last.contains(text) {
                return last;
            }
        }
        if reload {
            c.refresh().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never showed `{text}`; last: `{last}`");
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/login", "a visitor is sent to sign in");
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "#overall", "", false).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui");
}

async fn sign_out(c: &Client) {
    c.find(Locator::XPath("//button[normalize-space()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..50 {
        if c.current_url().await.unwrap().path() == "/ui/login" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("signing out did not lead to the sign-in page");
}

async fn run(chromium: PathBuf, driver: PathBuf) {
    // The relay: an admin and a read-only token, one webhook destination.
    let failing = Arc::new(AtomicBool::new(false));
    let hook = receiver(failing.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.shutdown_delay = Duration::ZERO;
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("ferrule.db").display()
    ));
    config.auth.tokens = vec![ConfiguredToken::named("ops", Secret::new(ADMIN))];
    config.auth.read_only_tokens = vec![ConfiguredToken::named("viewer", Secret::new(READ_ONLY))];
    config.dispatcher.poll_interval = Duration::from_millis(50);
    config.destinations.push(DestinationConfig {
        name: "hooks".into(),
        kind: DestinationKind::Webhook,
        url: hook.clone(),
        allow_private: true,
        timeout: Some(Duration::from_secs(2)),
        ..DestinationConfig::default()
    });
    // A destination its rate limit holds back: one message an hour.
    config.destinations.push(DestinationConfig {
        name: "slow".into(),
        kind: DestinationKind::Webhook,
        url: hook.clone(),
        allow_private: true,
        timeout: Some(Duration::from_secs(2)),
        rate_limit: Some(json!({"limit": 1, "per": "1h"})),
        ..DestinationConfig::default()
    });
    config.alerts.webhook = Some("hooks".into());
    let relay = ferrule::start(
        config,
        StartOptions {
            clock: ferrule_policy::clock::system(),
            banner: false,
        },
    )
    .await
    .expect("the relay starts");
    let base = format!("http://{}", relay.addr);

    // One delivered message, one dead letter (a hostile payload, shown escaped).
    let submit = |payload: Value| {
        let base = base.clone();
        async move {
            api(
                &base,
                reqwest::Method::POST,
                "/v1/messages",
                Some(json!({"destination": "hooks", "payload": payload})),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let delivered = submit(json!({"order": 1001, "note": "fine"})).await;
    wait_status(&base, &delivered, "delivered").await;
    failing.store(true, Ordering::SeqCst);
    let dead = submit(json!({"order": 1002, "note": "<script>alert('x')</script>"})).await;
    wait_status(&base, &dead, "dead").await;
    failing.store(false, Ordering::SeqCst);
    // Alerts in the alert log (queued to `hooks`), and a deferral for `slow`'s limit.
    {
        use ferrule::alerts::Alert;
        let now = std::time::SystemTime::now();
        let alerts = &relay.state.alerts;
        alerts.raise(Alert::breaker_opened("slow", now)).await;
        alerts
            .raise(Alert::health_check_failing(
                "slow",
                "connection refused",
                now,
            ))
            .await;
        alerts.raise(Alert::startup_recovery(3, now)).await;
        alerts.raise(Alert::dead_letters(120, 100, now)).await;
        for n in 0..2 {
            api(
                &base,
                reqwest::Method::POST,
                "/v1/messages",
                Some(json!({"destination": "slow", "payload": {"n": n}})),
            )
            .await;
        }
    }
    // An hour of deliveries in the rollups the charts are drawn from.
    {
        use ferrule_store::{RollupBatch, Store};
        let now = std::time::SystemTime::now();
        let mut batch = RollupBatch::new();
        for minute in 0..60u64 {
            let at = now - Duration::from_secs(60 * minute);
            let wave = 20 + (minute * 7 % 23);
            for i in 0..wave {
                let attempt = Duration::from_millis(30 + i * 3);
                batch.delivered(at, "hooks", attempt, attempt * 2);
            }
            for _ in 0..(minute % 5) {
                batch.retried(at, "hooks", Duration::from_millis(900), "status 503");
            }
            if minute % 17 == 3 {
                batch.dead_lettered(at, "hooks", Duration::from_millis(40), true, "status 400");
            }
        }
        relay.state.store.add_rollups(&batch).await.unwrap();
    }

    // chromedriver on a free loopback port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut chromedriver = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let c = session(port, &chromium, &[]).await;
    let mut shots = Shots {
        dir: screenshots_dir(),
        n: 0,
    };
    let mut result = drive(&c, &base, &delivered, &dead, &mut shots).await;
    let _ = c.close().await;
    if result.is_ok() {
        // An outage: the Overview names the destination that is not healthy.
        api(
            &base,
            reqwest::Method::POST,
            "/v1/breakers/slow/force-open?reason=screenshots",
            None,
        )
        .await;
        // The dark theme: the system setting the stylesheet follows, forced dark.
        let dark = session(port, &chromium, &["--force-dark-mode"]).await;
        result = dark_walk(&dark, &base, &mut shots).await;
        let _ = dark.close().await;
    }
    let _ = chromedriver.kill().await;
    relay.shutdown();
    let _ = relay.wait().await;
    result.expect("the browser walk");
}

/// A WebDriver session with `chromium`, through chromedriver on `port`, with `extra`
/// arguments.
async fn session(port: u16, chromium: &Path, extra: &[&str]) -> Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--hide-scrollbars",
    ];
    args.extend_from_slice(extra);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium, "args": args}),
    );
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("no WebDriver session with chromium");
}

/// The Alerts and Destinations pages (and the Overview) in the dark theme, at desktop and
/// phone width.
async fn dark_walk(
    c: &Client,
    base: &str,
    shots: &mut Shots,
) -> Result<(), fantoccini::error::CmdError> {
    c.set_window_size(1280, 900).await?;
    c.goto(&format!("{base}/ui")).await?;
    sign_in(c, base, ADMIN).await;
    let dark = c
        .execute(
            "return window.matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await?;
    assert_eq!(dark, json!(true), "the browser prefers the dark theme");
    wait_text(c, "#overall-trouble", "1 destination unhealthy", true).await;
    for (width, height, suffix) in [(1280, 900, "dark"), (390, 844, "phone-dark")] {
        c.set_window_size(width, height).await?;
        for (path, name) in [
            ("/ui", "overview"),
            ("/ui/alerts", "alerts"),
            ("/ui/destinations#destination-slow", "destinations"),
        ] {
            c.goto(&format!("{base}{path}")).await?;
            shots.take(c, &format!("{name}-{suffix}")).await;
        }
    }
    c.set_window_size(1280, 900).await?;
    sign_out(c).await;
    Ok(())
}

async fn drive(
    c: &Client,
    base: &str,
    delivered: &str,
    dead: &str,
    shots: &mut Shots,
) -> Result<(), fantoccini::error::CmdError> {
    c.set_window_size(1280, 900).await?;
    c.goto(&format!("{base}/ui")).await?;
    shots.take(c, "sign-in").await;
    sign_in(c, base, ADMIN).await;
    shots.take(c, "overview").await;

    // A delivered message, found with the filters.
    c.goto(&format!("{base}/ui/messages?status=delivered"))
        .await?;
    shots.take(c, "messages-delivered").await;
    c.find(Locator::LinkText(delivered)).await?.click().await?;
    wait_text(c, "h1", "delivered", false).await;
    let payload = c.find(Locator::Css("#payload")).await?.text().await?;
    assert!(payload.contains("1001"), "{payload}");
    shots.take(c, "message-delivered").await;

    c.goto(&format!("{base}/ui/destinations")).await?;
    shots.take(c, "destinations").await;

    // The dead letter: listed, its hostile payload shown as text.
    c.goto(&format!("{base}/ui/dead-letters")).await?;
    c.find(Locator::LinkText(dead)).await?;
    shots.take(c, "dead-letters").await;
    c.goto(&format!("{base}/ui/messages/{dead}")).await?;
    let payload = c.find(Locator::Css("#payload")).await?.text().await?;
    assert!(
        payload.contains("<script>alert('x')</script>"),
        "shown as text: {payload}"
    );
    let scripts = c
        .execute(
            "return document.querySelectorAll('#payload script').length",
            vec![],
        )
        .await?;
    assert_eq!(scripts, json!(0), "the payload's script is not an element");
    shots.take(c, "message-dead").await;

    // Bulk replay: preview, confirm, progress, delivered.
    c.goto(&format!("{base}/ui/dead-letters?destination=hooks"))
        .await?;
    c.find(Locator::Css("#preview-replay"))
        .await?
        .click()
        .await?;
    let count = wait_text(c, "#preview-count", "1 dead letter", false).await;
    assert!(count.contains("matches"), "{count}");
    shots.take(c, "bulk-preview").await;
    c.find(Locator::Css("#confirm")).await?.click().await?;
    wait_text(c, "#job-status", "Finished", false).await;
    shots.take(c, "bulk-job").await;
    c.goto(&format!("{base}/ui/messages/{dead}")).await?;
    wait_text(c, "h1", "delivered", true).await;
    shots.take(c, "message-replayed").await;

    for (path, name) in [
        ("/ui/runs?show=all", "runs"),
        ("/ui/inbound", "inbound"),
        ("/ui/alerts", "alerts"),
        ("/ui/audit", "audit"),
        ("/ui?range=24h", "overview-24h"),
    ] {
        c.goto(&format!("{base}{path}")).await?;
        shots.take(c, name).await;
    }
    let audit = {
        c.goto(&format!("{base}/ui/audit")).await?;
        c.find(Locator::Css("#audit")).await?.text().await?
    };
    assert!(audit.contains("dead_letters.replay"), "{audit}");

    // Phone width.
    c.set_window_size(390, 844).await?;
    for (path, name) in [
        ("/ui", "overview-phone"),
        ("/ui/messages", "messages-phone"),
        ("/ui/alerts", "alerts-phone"),
        ("/ui/destinations#destination-slow", "destinations-phone"),
    ] {
        c.goto(&format!("{base}{path}")).await?;
        shots.take(c, name).await;
    }
    c.set_window_size(1280, 900).await?;
    sign_out(c).await;

    // A read-only token: no replay buttons, and the server refuses a forged form.
    sign_in(c, base, READ_ONLY).await;
    c.goto(&format!("{base}/ui/dead-letters/preview?op=replay"))
        .await?;
    assert!(
        c.find(Locator::Css("#confirm")).await.is_err(),
        "no confirm button"
    );
    shots.take(c, "read-only-preview").await;
    c.goto(&format!("{base}/ui/messages/{delivered}")).await?;
    assert!(
        c.find(Locator::Css("#replay")).await.is_err(),
        "no replay button"
    );
    c.execute(
        "const csrf = document.querySelector('input[name=csrf]').value;
         const f = document.createElement('form');
         f.method = 'post'; f.action = arguments[0];
         const i = document.createElement('input'); i.name = 'csrf'; i.value = csrf;
         f.appendChild(i); document.body.appendChild(f); f.submit();",
        vec![json!(format!("/ui/messages/{delivered}/replay"))],
    )
    .await?;
    let refusal = wait_text(c, "#error-message", "read-only", false).await;
    assert!(refusal.contains("change nothing"), "{refusal}");
    shots.take(c, "read-only-refused").await;
    c.goto(&format!("{base}/ui")).await?;
    sign_out(c).await;
    shots.take(c, "signed-out").await;
    Ok(())
}
