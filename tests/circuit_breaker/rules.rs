//! Decisions 9 and 10: trip rules, open duration, back-off, server back-off hints.

use tokio::time::advance;
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Outcome, Reason, State};

use super::*;

fn last_reason(svc: &Svc) -> Reason {
    svc.handle()
        .stats()
        .transitions
        .last()
        .expect("a transition")
        .reason
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_at_exactly_n_and_successes_reset_the_streak() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().consecutive_failures(3));
    fail(&mut svc, 2).await;
    call(&mut svc, Req::Ok).await.unwrap();
    fail(&mut svc, 2).await;
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(svc.handle().stats().consecutive_failures, 2);
    fail(&mut svc, 1).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(last_reason(&svc), Reason::ConsecutiveFailures(3));
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_neither_count_nor_break_the_streak() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .classifier(|r: Result<&&'static str, &BoxError>| match r {
            Ok(&"slow") => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Inner::default());
    assert!(svc.ready().await.unwrap().call(Req::Fail).await.is_err());
    svc.ready()
        .await
        .unwrap()
        .call(Req::Slow(ms(1)))
        .await
        .unwrap();
    assert!(svc.ready().await.unwrap().call(Req::Fail).await.is_err());
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.stats().ignored_calls, 1);
}

/// Trip rules are OR-ed: the rate rule needs `minimum_calls`, and only a failure can trip it.
#[tokio::test(start_paused = true)]
async fn failure_rate_needs_minimum_calls_and_only_a_failure_trips() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(0)
            .failure_rate(0.5)
            .minimum_calls(10)
            .count_window(10),
    );
    for _ in 0..4 {
        fail(&mut svc, 1).await;
        call(&mut svc, Req::Ok).await.unwrap();
    }
    fail(&mut svc, 1).await; // 5 of 9: under minimum_calls
    assert_eq!(svc.handle().state(), State::Closed);
    call(&mut svc, Req::Ok).await.unwrap(); // 5 of 10 = 50 %, but a success never trips
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(svc.handle().stats().failure_rate, Some(0.5));
    fail(&mut svc, 1).await; // replaces the oldest failure: 5 of 10, and now a failure
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(last_reason(&svc), Reason::FailureRate(0.5));
}

/// The count window slides: after 1000 successes, a window's worth of failures trips it
/// (a cumulative count would need 1000).
#[tokio::test(start_paused = true)]
async fn count_window_slides() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(0)
            .failure_rate(0.8)
            .minimum_calls(10)
            .count_window(10),
    );
    for _ in 0..1000 {
        call(&mut svc, Req::Ok).await.unwrap();
    }
    fail(&mut svc, 7).await;
    assert_eq!(svc.handle().state(), State::Closed);
    fail(&mut svc, 1).await;
    assert_eq!(svc.handle().state(), State::Open);
}

/// The time window forgets calls older than the window.
#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(0)
            .failure_rate(0.5)
            .minimum_calls(4)
            .time_window(secs(10)),
    );
    fail(&mut svc, 3).await;
    advance(secs(10)).await;
    fail(&mut svc, 3).await;
    assert_eq!(
        svc.handle().state(),
        State::Closed,
        "the first three aged out"
    );
    fail(&mut svc, 1).await;
    assert_eq!(svc.handle().state(), State::Open);
}

/// Trip rules are OR-ed: the slow-call rate trips; a fast success does not count as slow.
#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .consecutive_failures(0)
            .slow_calls(secs(1), 0.5)
            .minimum_calls(4)
            .count_window(4),
    );
    call(&mut svc, Req::Ok).await.unwrap();
    call(&mut svc, Req::Ok).await.unwrap();
    call(&mut svc, Req::Slow(ms(999))).await.unwrap(); // under the threshold: not slow
    call(&mut svc, Req::Slow(secs(1))).await.unwrap(); // exactly the threshold: not slow
    assert_eq!(svc.handle().stats().slow_calls, 0);
    call(&mut svc, Req::Slow(ms(1001))).await.unwrap(); // longer: slow (1 of 4)
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(svc.handle().stats().slow_calls, 1);
    call(&mut svc, Req::Slow(secs(2))).await.unwrap(); // window: 999 ms, 1 s, 1.001 s, 2 s: 2 of 4
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(last_reason(&svc), Reason::SlowCallRate(0.5));
}

/// A slow probe counts as a failed probe when the slow-call rule is on.
#[tokio::test(start_paused = true)]
async fn slow_probe_reopens() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().slow_calls(secs(1), 1.0));
    trip(&mut svc).await;
    advance(secs(60)).await;
    call(&mut svc, Req::Slow(secs(2))).await.unwrap();
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(last_reason(&svc), Reason::ProbeFailed);
}

/// Open duration, back-off and Throttled: each failed half-open phase doubles the open duration
/// (minus up to 20 % jitter, capped), and closing resets it.
#[tokio::test(start_paused = true)]
async fn open_duration_backs_off_and_resets_on_close() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .open_duration(secs(10))
            .max_open_duration(secs(30)),
    );
    trip(&mut svc).await;
    assert_eq!(svc.handle().stats().retry_after, Some(secs(10)));
    let mut expected = [
        (secs(16), secs(20)),
        (secs(24), secs(30)),
        (secs(24), secs(30)),
    ]
    .into_iter();
    let mut waited = secs(10);
    for _ in 0..3 {
        advance(waited).await;
        assert!(call(&mut svc, Req::Fail).await.is_err());
        let d = svc.handle().stats().retry_after.unwrap();
        let (lo, hi) = expected.next().unwrap();
        assert!(
            d >= lo && d <= hi,
            "re-trip open duration {d:?} not in {lo:?}..={hi:?}"
        );
        waited = d;
    }
    advance(waited).await;
    for _ in 0..3 {
        call(&mut svc, Req::Ok).await.unwrap();
    }
    assert_eq!(svc.handle().state(), State::Closed);
    trip(&mut svc).await;
    assert_eq!(
        svc.handle().stats().retry_after,
        Some(secs(10)),
        "back-off reset on close"
    );
}

async fn call2<S>(svc: &mut S, req: Req) -> Result<&'static str, BoxError>
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// Open duration, back-off and Throttled: a server hint opens at once for exactly the hint, without
/// counting a failure; hints are clamped to `retry_after_bounds`; no hint counts as a failure.
#[tokio::test(start_paused = true)]
async fn throttled_opens_for_the_hint() {
    let cases = [
        (Some(secs(7)), Some(secs(7))),
        (Some(ms(10)), Some(secs(1))), // clamped up to the 1 s minimum
        (Some(secs(86_400)), Some(secs(600))), // clamped down to 10 min
    ];
    for (hint, expected) in cases {
        let layer = CircuitBreakerLayer::builder()
            .classifier(move |r: Result<&&'static str, &BoxError>| match r {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Throttled { retry_after: hint },
            })
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Inner::default());
        assert!(call2(&mut svc, Req::Fail).await.is_err());
        let stats = handle.stats();
        assert_eq!(stats.state, State::Open);
        assert_eq!(stats.retry_after, expected);
        assert_eq!((stats.failed_calls, stats.throttled_calls), (0, 1));
    }
    let layer = CircuitBreakerLayer::builder()
        .classifier(|r: Result<&&'static str, &BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Throttled { retry_after: None },
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Inner::default());
    for _ in 0..4 {
        assert!(call2(&mut svc, Req::Fail).await.is_err());
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        handle.stats().failed_calls,
        4,
        "no hint counts as a failure"
    );
    assert!(call2(&mut svc, Req::Fail).await.is_err());
    assert_eq!(handle.state(), State::Open);
}
