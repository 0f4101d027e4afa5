//! `ferrule-bench-ui`: how fast the dashboard answers over a big store (docs/BENCHMARKS.md,
//! "Dashboard").
//!
//! Fills a SQLite store with `--messages` messages (default 1,000,000) spread over the last
//! 7 days on 4 destinations (97 % delivered, 2 % dead, 1 % retrying a day ahead, every 10th
//! with an idempotency key, every 4th with an ordering key), starts the relay on it in this
//! process, signs in to `/ui` and times every page and filter `--rounds` times (p50, p95,
//! max), the payload-text filter over a 24 h range.
//!
//! Run: `cargo build --release -p ferrule --features testing --bin ferrule-bench-ui &&
//! target/release/ferrule-bench-ui`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ferrule::config::{ConfiguredToken, DestinationConfig, DestinationKind, Secret};
use ferrule::{Config, StartOptions};
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};

const TOKEN: &str = "bench-ui-token-0123456789abcdef";
const DESTINATIONS: [&str; 4] = ["hooks-a", "hooks-b", "hooks-c", "hooks-d"];

#[derive(Parser)]
#[command(about = "Times the dashboard's pages over a big SQLite store")]
struct Args {
    /// Messages in the store.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Reuse the store in this directory if it is already filled (else a new temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// A line of the report, on stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Writes `n` messages straight into the store's tables, in one transaction.
fn fill(db: &std::path::Path, n: u64) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")?;
    let tx = conn.transaction()?;
    let now = SystemTime::now();
    let week = 7 * 86_400_000i64;
    let start = millis(now) - week;
    {
        let mut insert = tx.prepare(
            "INSERT INTO messages (id, destination, payload, idempotency_key, ordering_key, \
             status, attempts, next_attempt_at, last_error, created_at, updated_at, delivered_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for i in 0..n {
            let created = start + (week as u128 * u128::from(i) / u128::from(n.max(1))) as i64;
            let id = ulid::Ulid::from_parts(created as u64, u128::from(i) + 1).to_string();
            let destination = DESTINATIONS[(i % 4) as usize];
            let payload = format!(
                r#"{{"order":{i},"customer":"cust-{}","text":"order {i} for customer {} is ready"}}"#,
                i % 50_000,
                i % 50_000
            );
            let key = (i % 10 == 0).then(|| format!("key-{i}"));
            let ordering = (i % 4 == 0).then(|| format!("order-{}", i % 10_000));
            let (status, attempts, next, error, delivered) = match i % 100 {
                0 | 1 => (
                    "dead",
                    5,
                    created,
                    Some(if i % 200 == 0 {
                        "timeout after 10s"
                    } else {
                        "HTTP 503"
                    }),
                    None,
                ),
                2 => (
                    "retrying",
                    2,
                    millis(now) + 86_400_000,
                    Some("HTTP 502"),
                    None,
                ),
                _ => ("delivered", 1, created, None, Some(created + 180)),
            };
            insert.execute(rusqlite::params![
                id,
                destination,
                payload,
                key,
                ordering,
                status,
                attempts,
                next,
                error,
                created,
                created + 200,
                delivered
            ])?;
            if i % 100_000 == 0 && i > 0 {
                say(&format!("  {i} written"));
            }
        }
    }
    tx.commit()?;
    conn.execute_batch("ANALYZE;")?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let holder;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("the store directory");
            d.clone()
        }
        None => {
            holder = tempfile_dir();
            holder.clone()
        }
    };
    let db = dir.join("ferrule.db");
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.shutdown_delay = Duration::ZERO;
    config.store.url = Secret::new(format!("sqlite://{}", db.display()));
    config.auth.tokens = vec![ConfiguredToken::named("bench", Secret::new(TOKEN))];
    // Keep every message for the whole run (the oldest are 7 days old).
    config.store.retention = Duration::from_secs(30 * 86_400);
    for name in DESTINATIONS {
        config.destinations.push(DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Webhook,
            url: "http://127.0.0.1:9/hook".into(),
            allow_private: true,
            ..DestinationConfig::default()
        });
    }
    let fresh = !db.exists();
    if fresh {
        // Opening the store creates its schema; then the rows go straight in.
        drop(
            ferrule::server::open_store(&config, ferrule_policy::clock::system())
                .await
                .expect("the store opens"),
        );
        say(&format!(
            "filling {} with {} messages…",
            db.display(),
            args.messages
        ));
        let t = Instant::now();
        fill(&db, args.messages).expect("the store fills");
        say(&format!("filled in {:.1} s", t.elapsed().as_secs_f64()));
    }
    let running = ferrule::start(
        config,
        StartOptions {
            clock: ferrule_policy::clock::system(),
            banner: false,
        },
    )
    .await
    .expect("the relay starts");
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Sign in as a browser would.
    let page = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let login = page
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ferrule_login="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a sign-in cookie");
    let html = page.text().await.unwrap();
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    let csrf = html[at..].split('"').next().unwrap().to_owned();
    let answer = http
        .post(format!("{base}/ui/login"))
        .header(COOKIE, login)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    let session = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ferrule_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a session cookie");
    let get = |path: String| {
        let http = http.clone();
        let base = base.clone();
        let session = session.clone();
        async move {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .header(COOKIE, session)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            (t.elapsed(), status, body)
        }
    };
    // A message id, and a cursor deep into the listing.
    let (_, _, first) = get("/ui/messages?destination=hooks-c".into()).await;
    let id = first
        .split("/ui/messages/")
        .nth(1)
        .map(|s| s[..26].to_owned())
        .expect("a message on the first page");
    let mut deep = String::from("/ui/messages");
    for _ in 0..20 {
        let (_, _, html) = get(deep.clone()).await;
        match html
            .split(r#"rel="next" id="next-page""#)
            .next()
            .and_then(|h| h.rsplit("href=\"").next())
        {
            Some(href) if href.starts_with("/ui/messages?") => {
                deep = href.split('"').next().unwrap().replace("&amp;", "&");
            }
            _ => break,
        }
    }
    let pages: Vec<(&str, String)> = vec![
        ("overview (1 h chart)", "/ui".into()),
        ("overview (24 h)", "/ui?range=24h".into()),
        ("overview (7 d)", "/ui?range=7d".into()),
        ("destinations", "/ui/destinations".into()),
        ("messages, newest", "/ui/messages".into()),
        ("messages, 21st page (cursor)", deep.clone()),
        ("messages, status=dead", "/ui/messages?status=dead".into()),
        (
            "messages, status=retrying",
            "/ui/messages?status=retrying".into(),
        ),
        (
            "messages, destination",
            "/ui/messages?destination=hooks-b".into(),
        ),
        (
            "messages, status+destination+24 h",
            "/ui/messages?status=delivered&destination=hooks-c&range=24h".into(),
        ),
        ("messages, last hour", "/ui/messages?range=1h".into()),
        ("messages, since/until (a 2 h window)", {
            let now = SystemTime::now();
            let since = ferrule::time::rfc3339(now - Duration::from_secs(5 * 86_400));
            let until = ferrule::time::rfc3339(now - Duration::from_secs(5 * 86_400 - 7200));
            format!("/ui/messages?since={since}&until={until}")
        }),
        (
            "messages, idempotency key",
            format!(
                "/ui/messages?idempotency_key=key-{}",
                args.messages / 2 / 10 * 10
            ),
        ),
        (
            "messages, ordering key",
            "/ui/messages?ordering_key=order-4242".into(),
        ),
        (
            "messages, payload text (24 h)",
            "/ui/messages?payload_contains=cust-4242%22&range=24h".into(),
        ),
        ("message page", format!("/ui/messages/{id}")),
        ("dead letters", "/ui/dead-letters".into()),
        (
            "dead letters, destination+24 h",
            "/ui/dead-letters?destination=hooks-a&range=24h".into(),
        ),
        (
            "dead letters, error text",
            "/ui/dead-letters?error_contains=timeout".into(),
        ),
        (
            "dead letters, payload text (24 h)",
            "/ui/dead-letters?payload_contains=cust-42&range=24h".into(),
        ),
        (
            "bulk replay preview, one destination (all 7 d)",
            "/ui/dead-letters/preview?op=replay&destination=hooks-a".into(),
        ),
        (
            "bulk replay preview, 24 h",
            "/ui/dead-letters/preview?op=replay&range=24h".into(),
        ),
        ("runs", "/ui/runs?show=all".into()),
        ("inbound", "/ui/inbound".into()),
        ("alerts", "/ui/alerts".into()),
        ("audit", "/ui/audit".into()),
    ];
    out!("| page | p50 ms | p95 ms | max ms | status |");
    out!("| --- | ---: | ---: | ---: | --- |");
    let mut over = 0;
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(args.rounds);
        let mut status = reqwest::StatusCode::OK;
        // One warm-up request (the first read of a page's index pages from disk).
        let _ = get(path.clone()).await;
        for _ in 0..args.rounds {
            let (t, s, _) = get(path.clone()).await;
            status = s;
            times.push(t);
        }
        times.sort();
        let p95 = percentile(&times, 95.0);
        if p95 > Duration::from_millis(100) {
            over += 1;
        }
        out!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(&times, 50.0)),
            ms(p95),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
            status.as_u16()
        );
    }
    out!(
        "\n{} messages; {} of {} pages over 100 ms at p95",
        args.messages,
        over,
        pages.len()
    );
    running.shutdown();
    let _ = running.wait().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrule-bench-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
