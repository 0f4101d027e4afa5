//! Shared send windows' conformance cases, generic over
//! [`Backend`](crate::conformance::Backend) and instantiated once per backend with
//! [`shared_limit_conformance_tests!`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrule_store::{ErrorKind, LimitSpan, SlotBatch, SlotFinish, SlotRequest, Store};

use crate::conformance::{Backend, fixture};

/// Instantiates every case for a backend type, in a module `shared_limit`.
#[macro_export]
macro_rules! shared_limit_conformance_tests {
    ($backend:ty) => {
        mod shared_limit {
            $crate::conformance_tests!(@cases shared_limit, $backend,
                a_window_admits_its_limit_then_says_when_a_place_frees,
                a_line_hands_out_places_and_does_not_charge_twice,
                concurrent_batches_never_overfill_a_window,
                bad_batches_are_refused,
                idle_windows_are_purged
            );
        }
    };
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
}

fn request(token: &str, chat: &str, bot_limit: u32, line: bool) -> SlotRequest {
    SlotRequest {
        token: token.into(),
        spans: vec![
            LimitSpan {
                key: format!("tg:x:chat:{chat}"),
                limit: 1,
                per: Duration::from_secs(1),
                line: None,
            },
            LimitSpan {
                key: "tg:x:bot".into(),
                limit: bot_limit,
                per: Duration::from_secs(1),
                line: line.then_some(Duration::from_millis(100)),
            },
        ],
        hold: Duration::from_secs(10),
        late: Duration::ZERO,
    }
}

fn batch(owner: &str, now: SystemTime, requests: Vec<SlotRequest>) -> SlotBatch {
    SlotBatch {
        owner: owner.into(),
        now,
        finishes: vec![],
        requests,
    }
}

fn finish(token: &str, chat: &str, when: SystemTime) -> SlotFinish {
    SlotFinish {
        token: token.into(),
        keys: vec![format!("tg:x:chat:{chat}"), "tg:x:bot".into()],
        at: when,
        happened: true,
    }
}

pub(crate) async fn a_window_admits_its_limit_then_says_when_a_place_frees<B: Backend>() {
    let f = fixture::<B>().await;
    let answers = f
        .store
        .take_send_slots(&batch(
            "relay-a",
            at(0),
            vec![
                request("1", "1", 2, false),
                request("2", "1", 2, false),
                request("3", "2", 2, false),
                request("4", "3", 2, false),
            ],
        ))
        .await
        .unwrap();
    let refused: Vec<_> = answers.iter().map(|a| a.refused.clone()).collect();
    assert!(refused[0].is_none() && refused[2].is_none(), "{answers:?}");
    // Chat 1 holds one in flight; the bot two: each could free a window after now.
    let second = refused[1].as_ref().unwrap();
    assert_eq!(
        (second.ready_at, second.key.as_str()),
        (at(1000), "tg:x:chat:1")
    );
    let fourth = refused[3].as_ref().unwrap();
    assert_eq!(
        (fourth.ready_at, fourth.key.as_str()),
        (at(1000), "tg:x:bot")
    );
    assert_eq!(answers[0].instances, 1);
    // Both finish at +200 ms (recorded by the next batch): places free a window after that.
    let mut next = batch("relay-b", at(900), vec![request("4", "3", 2, false)]);
    next.finishes = vec![finish("1", "1", at(200)), finish("3", "2", at(200))];
    let answers = f.store.take_send_slots(&next).await.unwrap();
    assert_eq!(answers[0].refused.as_ref().unwrap().ready_at, at(1200));
    assert_eq!(answers[0].instances, 2, "two relays asked");
    let answers = f
        .store
        .take_send_slots(&batch(
            "relay-b",
            at(1200),
            vec![request("4", "3", 2, false)],
        ))
        .await
        .unwrap();
    assert!(answers[0].refused.is_none());
}

pub(crate) async fn a_line_hands_out_places_and_does_not_charge_twice<B: Backend>() {
    let f = fixture::<B>().await;
    let answers = f
        .store
        .take_send_slots(&batch(
            "relay-a",
            at(0),
            (1..=4)
                .map(|c| request(&c.to_string(), &c.to_string(), 2, true))
                .collect(),
        ))
        .await
        .unwrap();
    let places: Vec<_> = answers
        .iter()
        .map(|a| a.refused.as_ref().map(|r| r.ready_at))
        .collect();
    // Two admitted; two in line 100 ms apart from when a place may free.
    assert_eq!(places, [None, None, Some(at(1000)), Some(at(1100))]);
    // The two finished at +10 ms: at +1010 ms their places are free, and 3 takes its own.
    let mut back = batch("relay-b", at(1010), vec![request("3", "3", 2, true)]);
    back.finishes = vec![finish("1", "1", at(10)), finish("2", "2", at(10))];
    let answers = f.store.take_send_slots(&back).await.unwrap();
    assert!(answers[0].refused.is_none(), "its place, not a second one");
    // A newcomer queues behind the line though a place is free.
    let answers = f
        .store
        .take_send_slots(&batch(
            "relay-a",
            at(1050),
            vec![request("9", "9", 2, true), request("4", "4", 2, true)],
        ))
        .await
        .unwrap();
    assert_eq!(answers[0].refused.as_ref().unwrap().ready_at, at(1200));
    assert!(
        answers[1].refused.is_none(),
        "4 has a place in line and one is free: {answers:?}"
    );
}

pub(crate) async fn concurrent_batches_never_overfill_a_window<B: Backend>() {
    let f = fixture::<B>().await;
    // Five relays ask at once for 10 sends each to distinct chats through a bot of 7 per
    // second, at the same instant: exactly 7 are admitted, whatever the interleaving.
    let mut tasks = Vec::new();
    for relay in 0..5 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let requests = (0..10)
                .map(|k| {
                    let name = format!("{relay}-{k}");
                    request(&name, &name, 7, false)
                })
                .collect();
            let owner = format!("relay-{relay}");
            store
                .take_send_slots(&batch(&owner, at(0), requests))
                .await
                .unwrap()
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task
            .await
            .unwrap()
            .iter()
            .filter(|a| a.refused.is_none())
            .count();
    }
    assert_eq!(admitted, 7);
    // A batch of one at a time from several tasks: still never more than the window.
    let mut tasks = Vec::new();
    for relay in 0..6 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for k in 0..5 {
                let name = format!("b{relay}-{k}");
                let answers = store
                    .take_send_slots(&batch(
                        "relay",
                        at(20_000),
                        vec![request(&name, &name, 7, false)],
                    ))
                    .await
                    .unwrap();
                admitted += usize::from(answers[0].refused.is_none());
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 7);
}

pub(crate) async fn bad_batches_are_refused<B: Backend>() {
    let f = fixture::<B>().await;
    let mut no_owner = batch("", at(0), vec![request("1", "1", 2, false)]);
    let err = f.store.take_send_slots(&no_owner).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    no_owner.owner = "relay".into();
    no_owner.requests[0].spans[1].limit = 0;
    let err = f.store.take_send_slots(&no_owner).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let mut line_first = batch("relay", at(0), vec![request("1", "1", 2, false)]);
    line_first.requests[0].spans[0].line = Some(Duration::from_millis(1));
    let err = f.store.take_send_slots(&line_first).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

pub(crate) async fn idle_windows_are_purged<B: Backend>() {
    let f = fixture::<B>().await;
    // Chat 1 and the bot are touched now; chat 2 and the bot again two hours later.
    let first = batch("relay", at(0), vec![request("1", "1", 2, false)]);
    f.store.take_send_slots(&first).await.unwrap();
    f.clock.advance(Duration::from_secs(7200));
    let later = batch("relay", at(7_200_000), vec![request("2", "2", 2, false)]);
    f.store.take_send_slots(&later).await.unwrap();
    assert_eq!(
        f.store
            .purge_send_windows(Duration::from_secs(3 * 3600))
            .await
            .unwrap(),
        0,
        "nothing is that old"
    );
    assert_eq!(
        f.store
            .purge_send_windows(Duration::from_secs(3600))
            .await
            .unwrap(),
        1,
        "only chat 1's window was idle for an hour"
    );
    // Chat 1 starts afresh: its send two hours ago is forgotten, as it would have been anyway.
    let again = batch("relay", at(7_200_001), vec![request("3", "1", 2, false)]);
    let answers = f.store.take_send_slots(&again).await.unwrap();
    assert!(answers[0].refused.is_none(), "{answers:?}");
}
