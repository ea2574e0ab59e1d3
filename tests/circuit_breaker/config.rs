//! Bad configuration is a `ConfigError` naming the field, never a panic; the defaults.

use tokio::time::advance;
use tower_breaker::circuit_breaker::{Builder, CircuitBreakerLayer, State};

use super::*;

fn rejected(builder: Builder) -> &'static str {
    builder.build().expect_err("must be rejected").field()
}

#[test]
fn every_out_of_range_value_names_its_field() {
    let b = CircuitBreakerLayer::builder;
    let cases: Vec<(Builder, &str)> = vec![
        (b().name(""), "name"),
        (b().failure_rate(0.0), "failure_rate"),
        (b().failure_rate(-0.1), "failure_rate"),
        (b().failure_rate(1.01), "failure_rate"),
        (b().failure_rate(f64::NAN), "failure_rate"),
        (b().minimum_calls(0), "minimum_calls"),
        (
            b().failure_rate(0.5).count_window(5).minimum_calls(6),
            "minimum_calls",
        ),
        (b().count_window(0), "count_window"),
        (b().time_window(Duration::ZERO), "time_window"),
        (b().time_window(ms(19)), "time_window"),
        (b().slow_calls(Duration::ZERO, 0.5), "slow_calls"),
        (b().slow_calls(secs(1), 0.0), "slow_calls"),
        (b().slow_calls(secs(1), f64::INFINITY), "slow_calls"),
        (b().open_duration(Duration::ZERO), "open_duration"),
        (
            b().open_duration(secs(10)).max_open_duration(secs(9)),
            "max_open_duration",
        ),
        (b().half_open_permits(0), "half_open_permits"),
        (b().success_threshold(0), "success_threshold"),
        (
            b().half_open_permits(2).success_threshold(3),
            "success_threshold",
        ),
        (b().probe_timeout(Duration::ZERO), "probe_timeout"),
        (
            b().retry_after_bounds(secs(2), secs(1)),
            "retry_after_bounds",
        ),
        (b().history_len(0), "history_len"),
    ];
    for (builder, field) in cases {
        assert_eq!(rejected(builder), field);
    }
    let err = CircuitBreakerLayer::builder()
        .half_open_permits(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("half_open_permits"), "{err}");
}

#[test]
fn edge_values_are_accepted() {
    let ok = [
        CircuitBreakerLayer::builder().failure_rate(1.0),
        CircuitBreakerLayer::builder().consecutive_failures(0),
        CircuitBreakerLayer::builder()
            .count_window(1)
            .minimum_calls(1)
            .failure_rate(1.0),
        CircuitBreakerLayer::builder().time_window(ms(20)),
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1),
        CircuitBreakerLayer::builder().retry_after_bounds(secs(1), secs(1)),
    ];
    for builder in ok {
        builder.build().expect("valid");
    }
}

/// The defaults: 5 consecutive failures, 60 s open, 3 probes, 3 successes to close.
#[tokio::test(start_paused = true)]
async fn defaults_trip_at_5_open_60s_and_close_after_3_probes() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    fail(&mut svc, 4).await;
    assert_eq!(svc.handle().state(), State::Closed);
    fail(&mut svc, 1).await;
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(svc.handle().name(), "default");
    advance(secs(60) - ms(1)).await;
    assert_eq!(svc.handle().state(), State::Open);
    advance(ms(1)).await;
    assert_eq!(svc.handle().state(), State::HalfOpen);
    let mut probes: Vec<_> = (0..4)
        .map(|_| (svc.clone(), tokio_test::task::spawn(())))
        .collect();
    let admitted = probes
        .iter_mut()
        .map(|(s, t)| t.enter(|cx, _| s.poll_ready(cx)).is_ready())
        .filter(|ready| *ready)
        .count();
    assert_eq!(admitted, 3);
    drop(probes);
    for _ in 0..2 {
        call(&mut svc, Req::Ok).await.unwrap();
    }
    assert_eq!(svc.handle().state(), State::HalfOpen);
    call(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.handle().state(), State::Closed);
}
