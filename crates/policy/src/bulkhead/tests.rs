//! Tests of the bulkhead: concurrency, queue bound, `max_wait` on a manual clock, tower layer.

use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::clock::ManualClock;
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::{Context, Error};

fn bulkhead(
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Option<Duration>,
) -> (Bulkhead, ManualClock, Arc<Recorder>) {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let ctx = Context::new("b")
        .with_clock(clock.shared())
        .with_observer(recorder.clone());
    let config = BulkheadConfig {
        max_concurrent,
        max_queue,
        max_wait,
    };
    (
        Bulkhead::with_context(config, ctx).unwrap(),
        clock,
        recorder,
    )
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn config_validation() {
    let bad = BulkheadConfig {
        max_concurrent: 0,
        ..Default::default()
    };
    assert_eq!(bad.validate().unwrap_err().field(), "max_concurrent");
    let huge = BulkheadConfig {
        max_concurrent: usize::MAX,
        max_queue: usize::MAX,
        max_wait: Some(Duration::MAX),
    };
    assert!(Bulkhead::new(huge).is_ok());
    assert_eq!(Bulkhead::new(bad).unwrap_err().field(), "max_concurrent");
    let d = BulkheadConfig::default();
    assert_eq!((d.max_concurrent, d.max_queue, d.max_wait), (64, 0, None));
    assert!(toml::from_str::<BulkheadConfig>("max_concurent = 3").is_err());
}

#[test]
fn caps_concurrency_and_rejects_without_queue() {
    let (b, _clock, recorder) = bulkhead(2, 0, None);
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire_owned().unwrap();
    assert_eq!(b.in_flight(), 2);
    let full = b.try_acquire().unwrap_err();
    assert_eq!(
        full,
        BulkheadFull {
            max_concurrent: 2,
            max_queue: 0
        }
    );
    assert_eq!(recorder.count("bulkhead_rejected"), 1);
    drop(p1);
    assert_eq!(b.in_flight(), 1);
    let _p3 = b.try_acquire().unwrap();
    drop(p2);
    assert_eq!(b.in_flight(), 1);
}

#[tokio::test]
async fn no_queue_means_acquire_rejects_at_once() {
    let (b, clock, recorder) = bulkhead(1, 0, None);
    let _p = b.try_acquire().unwrap();
    assert!(b.acquire().await.is_err());
    assert_eq!(b.queued(), 0);
    assert_eq!(clock.pending_sleeps(), 0);
    assert_eq!(recorder.count("bulkhead_rejected"), 1);
}

#[tokio::test]
async fn queue_is_bounded_and_served_when_a_slot_frees() {
    let (b, _clock, recorder) = bulkhead(1, 1, None);
    let permit = b.try_acquire_owned().unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire_owned().await.map(|_| ()) });
    settle().await;
    assert_eq!(b.queued(), 1);
    assert!(!waiter.is_finished());

    // The queue holds one: the next caller is turned away at once.
    assert!(b.acquire().await.is_err());
    assert_eq!(recorder.count("bulkhead_rejected"), 1);

    drop(permit);
    waiter.await.unwrap().unwrap();
    assert_eq!(b.queued(), 0);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn queued_call_gives_up_after_max_wait_on_the_clock() {
    let (b, clock, recorder) = bulkhead(1, 4, Some(Duration::from_secs(5)));
    let _permit = b.try_acquire().unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire_owned().await.map(|_| ()) });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(b.queued(), 1);
    clock.advance(Duration::from_secs(5) - Duration::from_nanos(1));
    settle().await;
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_nanos(1));
    assert!(waiter.await.unwrap().is_err());
    assert_eq!(b.queued(), 0);
    assert_eq!(recorder.count("bulkhead_rejected"), 1);
}

#[tokio::test]
async fn cancelled_waiter_leaves_the_queue() {
    let (b, _clock, _recorder) = bulkhead(1, 1, None);
    let _permit = b.try_acquire().unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire_owned().await.map(|_| ()) });
    settle().await;
    assert_eq!(b.queued(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(b.queued(), 0);
}

#[tokio::test]
async fn call_runs_in_a_slot_and_maps_rejection() {
    let (b, _clock, _recorder) = bulkhead(1, 0, None);
    let b2 = b.clone();
    let r: Result<usize, Error<()>> = b.call(|| async { Ok(b2.in_flight()) }).await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(b.in_flight(), 0);

    let _p = b.try_acquire().unwrap();
    let r: Result<(), Error<()>> = b.call(|| async { Ok(()) }).await;
    let err = r.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::BulkheadFull(_)));
    assert!(err.is_rejection());
}

#[tokio::test]
async fn tower_layer_holds_slot_queues_and_rejects() {
    let (b, _clock, _recorder) = bulkhead(1, 1, None);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let inner = service_fn(move |req: u32| {
        let mut rx = release_rx.clone();
        async move {
            if req == 0 {
                rx.wait_for(|open| *open).await.map_err(|_| "closed")?;
            }
            if req == 1 {
                return Err("inner");
            }
            Ok::<_, &'static str>(req)
        }
    });
    let svc = BulkheadLayer::new(b.clone()).layer(inner);

    // The first call holds the only slot until released.
    let mut first = svc.clone();
    first.ready().await.unwrap();
    let blocked = tokio::spawn(first.call(0));
    settle().await;
    assert_eq!(b.in_flight(), 1);

    // The second waits in the queue.
    let mut second = svc.clone();
    second.ready().await.unwrap();
    let queued = tokio::spawn(second.call(2));
    settle().await;
    assert_eq!(b.queued(), 1);

    // The third finds the queue full.
    let err: BoxError = svc.clone().oneshot(3).await.unwrap_err();
    assert!(err.downcast_ref::<BulkheadFull>().is_some());

    release_tx.send(true).unwrap();
    assert_eq!(blocked.await.unwrap().unwrap(), 0);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    assert_eq!(b.in_flight(), 0);

    // Inner errors are boxed unchanged.
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "inner");
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn newcomers_do_not_overtake_queued_calls() {
    let (b, _clock, _recorder) = bulkhead(1, 2, None);
    let permit = b.try_acquire_owned().unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire_owned().await });
    settle().await;
    drop(permit);
    // The slot is promised to the queued call: a newcomer may not take it.
    assert!(b.try_acquire().is_err());
    let held = waiter.await.unwrap().unwrap();
    assert_eq!(b.in_flight(), 1);
    drop(held);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_exceeds_the_cap_and_loses_no_wake_up() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let b = Bulkhead::new(BulkheadConfig {
        max_concurrent: 3,
        max_queue: 1000,
        max_wait: None,
    })
    .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                for _ in 0..5 {
                    let r: Result<(), Error<()>> = b
                        .call(|| async {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await;
                    r.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a queued call was never woken")
            .unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!(b.in_flight(), 0);
    assert_eq!(b.queued(), 0);
}
