//! Adaptive thresholds: they follow the request rate of the last minute.

use tokio::time::advance;
use tower_breaker::circuit_breaker::{AdaptiveThresholds, CircuitBreakerLayer, State};

use super::*;

async fn succeed(svc: &mut Svc, n: usize) {
    for _ in 0..n {
        call(svc, Req::Ok).await.unwrap();
    }
}

/// `AdaptiveThresholds::seed()` at its boundaries: rates of exactly 50 and 100 stay in the
/// lower row.
#[tokio::test(start_paused = true)]
async fn seed_table_boundaries() {
    let (mut svc, _inner) =
        breaker(CircuitBreakerLayer::builder().adaptive(AdaptiveThresholds::seed()));
    let row = |svc: &Svc| {
        let s = svc.handle().stats();
        (
            s.request_rate.unwrap(),
            s.consecutive_failure_threshold,
            s.open_duration,
        )
    };
    assert_eq!(row(&svc), (0, 10, secs(60)));
    succeed(&mut svc, 50).await;
    assert_eq!(row(&svc), (50, 10, secs(60)));
    succeed(&mut svc, 1).await;
    assert_eq!(row(&svc), (51, 5, secs(45)));
    succeed(&mut svc, 49).await;
    assert_eq!(row(&svc), (100, 5, secs(45)));
    succeed(&mut svc, 1).await;
    assert_eq!(row(&svc), (101, 3, secs(30)));
}

/// Under high load three failures trip for 30 s; after a quiet minute the low-load row (10
/// failures, 60 s) is back.
#[tokio::test(start_paused = true)]
async fn high_load_trips_sooner_and_quiet_relaxes() {
    let (mut svc, _inner) =
        breaker(CircuitBreakerLayer::builder().adaptive(AdaptiveThresholds::seed()));
    succeed(&mut svc, 120).await;
    fail(&mut svc, 3).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(svc.handle().stats().retry_after, Some(secs(30)));

    svc.handle().reset();
    advance(secs(60)).await;
    fail(&mut svc, 9).await;
    assert_eq!(svc.handle().state(), State::Closed, "low load tolerates 9");
    fail(&mut svc, 1).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(svc.handle().stats().retry_after, Some(secs(60)));
}

#[test]
fn adaptive_rows_are_validated() {
    let zero = AdaptiveThresholds::seed().above(200, 0, secs(1));
    let err = CircuitBreakerLayer::builder()
        .adaptive(zero)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "adaptive");
    let instant = AdaptiveThresholds::new(3, Duration::ZERO);
    let err = CircuitBreakerLayer::builder()
        .adaptive(instant)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "adaptive");
}
