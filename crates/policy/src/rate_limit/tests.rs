//! Tests of the rate limiters on a manual clock, and through tower services.

use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::{Context, Error, Outcome};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn setup() -> (ManualClock, Arc<Recorder>, Context) {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let ctx = Context::new("rl")
        .with_clock(clock.shared())
        .with_observer(recorder.clone());
    (clock, recorder, ctx)
}

fn direct(config: RateLimitConfig) -> (RateLimiter, ManualClock, Arc<Recorder>) {
    let (clock, recorder, ctx) = setup();
    (
        RateLimiter::with_context(config, ctx).unwrap(),
        clock,
        recorder,
    )
}

fn keyed(config: RateLimitConfig) -> (KeyedRateLimiter<u64>, ManualClock, Arc<Recorder>) {
    let (clock, recorder, ctx) = setup();
    (
        KeyedRateLimiter::with_context(config, ctx).unwrap(),
        clock,
        recorder,
    )
}

#[test]
fn config_validation_names_the_field() {
    let field = |c: RateLimitConfig| c.validate().unwrap_err().field().to_owned();
    assert_eq!(field(RateLimitConfig::new(0, secs(1))), "limit");
    assert_eq!(field(RateLimitConfig::new(1, Duration::ZERO)), "per");
    assert_eq!(
        field(RateLimitConfig::new(10, Duration::from_nanos(5))),
        "per"
    );
    assert_eq!(
        field(RateLimitConfig::new(1, secs(1)).with_burst(0)),
        "burst"
    );
    assert_eq!(field(RateLimitConfig::new(1, Duration::MAX)), "per");
    assert_eq!(
        field(RateLimitConfig::new(1, secs(365 * 24 * 3600)).with_burst(u32::MAX)),
        "per"
    );
    assert!(RateLimiter::new(RateLimitConfig::new(0, secs(1))).is_err());
    assert!(KeyedRateLimiter::<u8>::new(RateLimitConfig::new(1, Duration::ZERO)).is_err());
    assert!(RateLimitConfig::new(u32::MAX, secs(5)).validate().is_ok());
}

#[test]
fn config_from_toml() {
    let c: RateLimitConfig = toml::from_str("limit = 30\nper = \"1s\"").unwrap();
    assert_eq!(c, RateLimitConfig::new(30, secs(1)));
    let c: RateLimitConfig = toml::from_str("limit = 20\nper = \"1m\"\nburst = 5").unwrap();
    assert_eq!(c, RateLimitConfig::new(20, secs(60)).with_burst(5));
    assert!(toml::from_str::<RateLimitConfig>("limt = 1").is_err());
}

#[test]
fn telegram_bot_limit_says_exactly_when_to_come_back() {
    let (limiter, clock, recorder) = direct(RateLimitConfig::new(30, secs(1)));
    let start = clock.now();
    for _ in 0..30 {
        limiter.check().unwrap();
    }
    let refused = limiter.check().unwrap_err();
    let interval = Duration::from_nanos(1_000_000_000 / 30);
    assert_eq!(refused.wait, interval);
    assert_eq!(refused.ready_at, start + interval);
    assert_eq!(recorder.count("rate_limited"), 1);

    clock.advance(interval - Duration::from_nanos(1));
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.wait, Duration::from_nanos(1));
    assert_eq!(refused.ready_at, start + interval);
    clock.advance(Duration::from_nanos(1));
    limiter.check().unwrap();
    assert!(limiter.check().is_err());
}

#[test]
fn group_limit_twenty_per_minute() {
    let (limiter, clock, _recorder) = direct(RateLimitConfig::new(20, secs(60)));
    for _ in 0..20 {
        limiter.check().unwrap();
    }
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.wait, secs(3));
    clock.advance(secs(60));
    for _ in 0..20 {
        limiter.check().unwrap();
    }
    assert!(limiter.check().is_err());
}

#[test]
fn burst_can_be_smaller_or_larger_than_the_limit() {
    let (limiter, clock, _recorder) = direct(RateLimitConfig::new(10, secs(1)).with_burst(2));
    limiter.check().unwrap();
    limiter.check().unwrap();
    assert_eq!(limiter.check().unwrap_err().wait, ms(100));
    clock.advance(ms(100));
    limiter.check().unwrap();

    let (limiter, _clock, _recorder) = direct(RateLimitConfig::new(1, secs(1)).with_burst(3));
    for _ in 0..3 {
        limiter.check().unwrap();
    }
    assert_eq!(limiter.check().unwrap_err().wait, secs(1));
}

#[test]
fn check_n_admits_all_or_none() {
    let (limiter, clock, _recorder) = direct(RateLimitConfig::new(5, secs(1)));
    assert_eq!(
        limiter.check_n(6),
        Err(InsufficientCapacity {
            requested: 6,
            burst: 5
        })
    );
    assert_eq!(limiter.check_n(0), Ok(Ok(())));
    assert_eq!(limiter.check_n(3), Ok(Ok(())));
    let refused = limiter.check_n(3).unwrap().unwrap_err();
    assert_eq!(refused.wait, ms(200));
    // Nothing was taken by the refused batch: two single calls still fit.
    limiter.check().unwrap();
    limiter.check().unwrap();
    assert!(limiter.check().is_err());
    clock.advance(ms(600));
    assert_eq!(limiter.check_n(3), Ok(Ok(())));
}

#[tokio::test]
async fn until_ready_sleeps_on_the_clock_for_exactly_the_wait() {
    let (limiter, clock, _recorder) = direct(RateLimitConfig::new(2, secs(1)));
    limiter.check().unwrap();
    limiter.check().unwrap();
    let l = limiter.clone();
    let handle = tokio::spawn(async move { l.until_ready().await });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(clock.next_sleep_in(), Some(ms(500)));
    clock.advance(ms(499));
    tokio::task::yield_now().await;
    assert!(!handle.is_finished());
    clock.advance(ms(1));
    handle.await.unwrap();
    // until_ready took the cell.
    assert_eq!(limiter.check().unwrap_err().wait, ms(500));
}

#[tokio::test]
async fn call_fails_fast_with_a_retry_after() {
    let (limiter, _clock, _recorder) = direct(RateLimitConfig::new(1, secs(2)));
    let r: Result<u8, Error<()>> = limiter.call(|| async { Ok(1) }).await;
    assert_eq!(r.unwrap(), 1);
    let mut ran = false;
    let r: Result<u8, Error<()>> = limiter
        .call(|| {
            ran = true;
            async { Ok(2) }
        })
        .await;
    assert!(!ran);
    let err = r.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited(l) if l.wait == secs(2)));
    assert_eq!(err.policy_outcome(), Some(Outcome::RetryAfter(secs(2))));
}

#[test]
fn keys_are_independent() {
    let (limiter, clock, recorder) = keyed(RateLimitConfig::new(1, secs(1)));
    let start = clock.now();
    limiter.check_key(&1).unwrap();
    let refused = limiter.check_key(&1).unwrap_err();
    assert_eq!(refused.ready_at, start + secs(1));
    limiter.check_key(&2).unwrap();
    assert!(limiter.for_key(2).check().is_err());
    limiter.for_key(3).check().unwrap();
    assert_eq!(limiter.len(), 3);
    assert_eq!(recorder.count("rate_limited"), 2);
    clock.advance(secs(1));
    limiter.check_key(&1).unwrap();
    assert_eq!(limiter.for_key(1).key(), &1);
}

#[test]
fn retain_recent_forgets_quiet_keys_only() {
    let (limiter, clock, _recorder) = keyed(RateLimitConfig::new(1, secs(1)));
    limiter.check_key(&1).unwrap();
    clock.advance(ms(1500));
    limiter.check_key(&2).unwrap();
    // Governor keeps a key for one more interval after it has refilled.
    limiter.retain_recent();
    assert_eq!(limiter.len(), 2);
    clock.advance(ms(500));
    assert_eq!(limiter.len(), 2);
    limiter.retain_recent();
    // Key 1 refilled an interval ago; key 2 is still limited.
    assert_eq!(limiter.len(), 1);
    assert!(limiter.check_key(&2).is_err());
    clock.advance(secs(5));
    limiter.retain_recent();
    limiter.shrink_to_fit();
    assert!(limiter.is_empty());
}

#[test]
fn keyed_check_n() {
    let (limiter, _clock, _recorder) = keyed(RateLimitConfig::new(4, secs(1)));
    let view = limiter.for_key(9);
    assert_eq!(view.check_n(4), Ok(Ok(())));
    assert_eq!(view.check_n(1).unwrap().unwrap_err().wait, ms(250));
    assert!(view.check_n(5).is_err());
    assert_eq!(limiter.check_key_n(&10, 2), Ok(Ok(())));
}

#[tokio::test]
async fn key_view_waits_and_calls() {
    let (limiter, clock, _recorder) = keyed(RateLimitConfig::new(1, secs(1)));
    let r: Result<(), Error<()>> = limiter.for_key(5).call(|| async { Ok(()) }).await;
    r.unwrap();
    let r: Result<(), Error<()>> = limiter.for_key(5).call(|| async { Ok(()) }).await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::RateLimited(_)));

    let l = limiter.clone();
    let handle = tokio::spawn(async move { l.for_key(5).until_ready().await });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(clock.next_sleep_in(), Some(secs(1)));
    clock.advance(secs(1));
    handle.await.unwrap();
}

#[tokio::test]
async fn tower_layers_limit_requests() {
    let (limiter, clock, _recorder) = direct(RateLimitConfig::new(1, secs(1)));
    let svc = RateLimitLayer::new(limiter).layer(service_fn(|x: u32| async move {
        if x == 0 {
            Err(std::io::Error::other("inner"))
        } else {
            Ok(x)
        }
    }));
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 4);
    let err: BoxError = svc.clone().oneshot(5).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(limited.wait, secs(1));
    clock.advance(secs(1));
    let err = svc.oneshot(0).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());

    let (per_host, _clock, recorder) = keyed(RateLimitConfig::new(1, secs(10)));
    let svc = KeyedRateLimitLayer::new(per_host.clone(), |req: &(u64, u32)| req.0).layer(
        service_fn(|req: (u64, u32)| async move { Ok::<_, BoxError>(req.1) }),
    );
    assert_eq!(svc.clone().oneshot((1, 10)).await.unwrap(), 10);
    assert_eq!(svc.clone().oneshot((2, 20)).await.unwrap(), 20);
    let err = svc.clone().oneshot((1, 11)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().wait, secs(10));
    assert_eq!(per_host.len(), 2);
    assert_eq!(recorder.count("rate_limited"), 1);
}
