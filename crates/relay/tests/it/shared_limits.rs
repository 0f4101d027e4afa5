//! A Telegram bot's limits and a GitHub token's write pace shared by three relays on one
//! PostgreSQL database: a hundred chats at once, submitted through all three, against a fake
//! Bot API enforcing Telegram's windows on arrival, draw no 429 and every message is delivered
//! once; writes with one token go one at a time, the interval apart, whichever relay makes
//! them. And what a relay does while
//! the store does not answer: it fails closed, then keeps a share of the bot's limits alone,
//! and shares again when the store is back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferrule::config::Secret;
use ferrule::destination::TelegramLimiters;
use ferrule::destination::shared_limits::{FAIL_CLOSED, SharedLimits};
use ferrule::testing::fake_bot_api::FakeBotApi;
use ferrule_connectors::telegram::{ChatId, TelegramLimits};
use ferrule_connectors::testing::fake_github::FakeGithub;
use ferrule_policy::{Context, ManualClock};
use ferrule_store::{MessageId, StoreOptions};
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::fake_bot_api::BOT_TOKEN;
use crate::github::{drive, github, manual_clock, on};
use crate::support::{PausableProxy, PgSchema, TestRelay, config_in, start_in};
use crate::telegram::{chat_id, scaled_limits, telegram};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_share_a_bots_limits_and_never_trigger_flood_control() {
    let schema = PgSchema::new();
    // The bot's window holds 100 sends per 250 ms, each chat's 10 per second, each group's 2
    // per 500 ms: 300 sends meet all three.
    let (fake_limits, limits) = scaled_limits();
    let api = FakeBotApi::start(BOT_TOKEN, fake_limits).await.unwrap();
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = Secret::new(schema.url());
        let mut d = telegram("chat", api.base());
        d.limits = Some(limits.clone());
        config.destinations.push(d);
        relays.push(start_in(dir, config, ferrule_policy::clock::system()).await);
    }
    const CHATS: i64 = 100;
    const PER_CHAT: usize = 3;
    // Every chat's messages in order, through one of the relays; all chats at once.
    let submitters = (0..CHATS).map(|chat| {
        let relay = &relays[usize::try_from(chat).unwrap() % relays.len()];
        async move {
            let mut ids = Vec::new();
            for n in 0..PER_CHAT {
                let text = format!("{chat}/{n}");
                ids.push(
                    relay
                        .submit("chat", json!({"chat_id": chat_id(chat), "text": text}))
                        .await,
                );
            }
            ids
        }
    });
    let ids: BTreeSet<String> = futures_util::future::join_all(submitters)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = ids.len();
    api.wait_for_sends(total, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let delivered = loop {
        let (_, page) = relays[0]
            .call(
                Method::GET,
                "/v1/messages?status=delivered&limit=1000",
                None,
            )
            .await;
        let delivered: BTreeSet<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if delivered.len() >= total || tokio::time::Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivered, ids, "every message delivered");
    assert_eq!(
        api.refusals(),
        [],
        "the three relays together kept within every limit the fake enforces"
    );
    let sent = api.sends();
    let texts: BTreeSet<&str> = sent
        .iter()
        .map(|s| s.params["text"].as_str().unwrap())
        .collect();
    assert_eq!(sent.len(), total, "one send per message");
    assert_eq!(texts.len(), total, "every message exactly once");
}

/// Admits a send of a fresh message to `chat` through `limits`; answers the refusal's reason,
/// if any.
async fn admit(limits: &Arc<TelegramLimiters>, chat: i64) -> Result<(), &'static str> {
    let task = {
        let limits = limits.clone();
        tokio::spawn(async move {
            let id = MessageId::from_ulid(ulid::Ulid::new());
            match limits.admit(&ChatId::Id(chat), id).await {
                Ok(send) => {
                    drop(send);
                    Ok(())
                }
                Err((_, which)) => Err(which),
            }
        })
    };
    tokio::time::timeout(WAIT, task)
        .await
        .expect("an answer")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_store_does_not_answer_sends_fail_closed_then_share_the_bot_alone() {
    let schema = PgSchema::new();
    let proxy = PausableProxy::to_test_postgres().await;
    let clock = ManualClock::new();
    let store = ferrule_store::open(
        &proxy.through(&schema.url()),
        StoreOptions::with_clock(clock.shared()),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let ctx = Context::new("bot").with_clock(clock.shared());
    // Three relays share the bot (30 a second); the third is the one that loses the store.
    let mut relays = Vec::new();
    let mut handles = Vec::new();
    for n in 0..3 {
        let shared = SharedLimits::with_ask_timeout(
            format!("relay-{n}"),
            clock.shared(),
            Duration::from_millis(300),
        );
        handles.push(shared.clone());
        let runner = (shared.clone(), store.clone(), stop.clone());
        tokio::spawn(async move { runner.0.run(&runner.1, &runner.2).await });
        let mut limits = TelegramLimiters::new(&TelegramLimits::default(), &ctx).unwrap();
        limits.share(shared, "bot", Duration::from_secs(5));
        relays.push(Arc::new(limits));
    }
    for (n, limits) in relays.iter().enumerate() {
        admit(limits, n as i64).await.unwrap();
    }
    // Shared: a chat one relay sent to is held back on another.
    assert_eq!(admit(&relays[2], 0).await, Err("per chat"));
    clock.advance(Duration::from_secs(2));

    proxy.pause();
    let lone = &relays[2];
    assert_eq!(
        admit(lone, 100).await,
        Err("shared limits unreachable"),
        "fails closed"
    );
    assert_eq!(admit(lone, 101).await, Err("shared limits unreachable"));
    // Past the time it fails closed, it keeps the limits alone with a third of the bot's.
    clock.advance(FAIL_CLOSED);
    let mut admitted = 0;
    for chat in 200..230 {
        if admit(lone, chat).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "a third of the bot's 30 a second, alone");

    proxy.resume();
    // It asks the store again every second, and shares again once it answers.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut chat = 300;
    while !handles[2].reachable() {
        assert!(tokio::time::Instant::now() < deadline, "not shared again");
        clock.advance(Duration::from_secs(1));
        let _ = admit(lone, chat).await;
        chat += 1;
    }
    // Chat 0's window in the store is free again; this relay's send to it now holds back the
    // next one from another relay.
    clock.advance(Duration::from_secs(2));
    admit(lone, 0).await.unwrap();
    assert_eq!(admit(&relays[0], 0).await, Err("per chat"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_write_with_one_github_token_one_at_a_time_a_second_apart() {
    let schema = PgSchema::new();
    let clock = manual_clock();
    let fake = FakeGithub::start_on(clock.clone()).await;
    // Each write keeps GitHub busy for 300 ms of the clock.
    fake.state().write_takes = Duration::from_millis(300);
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = Secret::new(schema.url());
        let mut d = github("gh", &fake.base());
        // Far beyond how fast the test moves the clock: a write in flight holds the token.
        d.timeout = Some(Duration::from_secs(120));
        config.destinations.push(d);
        relays.push(start_in(dir, config, clock.shared()).await);
    }
    // Twelve pull requests, so that no ordering key holds any of them back, through all three.
    const WRITES: u64 = 12;
    let submits = (1..=WRITES).map(|n| {
        let relay = &relays[usize::try_from(n).unwrap() % relays.len()];
        relay.submit("gh", on(n, "comment", json!({"body": "ok"})))
    });
    let ids = futures_util::future::join_all(submits).await;
    drive(
        &clock,
        Duration::from_millis(50),
        Duration::from_secs(300),
        || {
            let state = fake.state();
            state
                .threads
                .values()
                .map(|t| t.comments.len())
                .sum::<usize>()
                >= usize::try_from(WRITES).unwrap()
        },
    )
    .await;
    {
        let state = fake.state();
        assert_eq!(
            state.most_writes_in_flight, 1,
            "never two writes in flight, from any relay"
        );
        let starts: Vec<_> = state.requests.iter().map(|r| r.at).collect();
        assert_eq!(starts.len(), ids.len(), "one request each");
        for pair in starts.windows(2) {
            // Each starts a second after the one before finished (300 ms after it started).
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(1300), "{gap:?}");
        }
    }
    for id in &ids {
        relays[0].wait_for_status(id, "delivered", WAIT).await;
    }
}
