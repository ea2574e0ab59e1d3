//! The health report: the health rule (healthy while fewer than half are open), per-circuit
//! entries, the summary, keyed sources and the serde form.

use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, State};
use tower_breaker::health::HealthCheck;
use tower_breaker::keyed::KeyedLayer;
use tower_breaker::BoxError;
use tower_layer::Layer;

fn handle(name: &str) -> Handle {
    CircuitBreakerLayer::builder()
        .name(name)
        .build()
        .unwrap()
        .handle()
}

fn check(handles: &[Handle]) -> HealthCheck {
    handles.iter().fold(HealthCheck::new(), |h, handle| {
        h.with_handle(handle.clone())
    })
}

#[test]
fn no_circuits_is_healthy() {
    let report = HealthCheck::new().report();
    assert!(report.healthy);
    assert_eq!(report.summary, "0/0 circuits healthy");
    assert!(report.circuits.is_empty());
    assert!(HealthCheck::default().is_healthy());
}

#[tokio::test]
async fn exactly_half_open_is_unhealthy() {
    let hs: Vec<Handle> = ["a", "b", "c", "d"].into_iter().map(handle).collect();
    let health = check(&hs);
    assert!(health.is_healthy());
    assert_eq!(health.report().summary, "4/4 circuits healthy");

    hs[0].force_open();
    let report = health.report();
    assert!(report.healthy, "1 of 4 open");
    assert_eq!(report.summary, "3/4 circuits healthy");
    assert_eq!(report.open_circuits, 1);

    hs[1].force_open();
    let report = health.report();
    assert!(!report.healthy, "2 of 4 open is exactly half: unhealthy");
    assert!(!health.is_healthy());
    assert_eq!(report.summary, "2/4 circuits healthy");

    // Odd counts: 1 of 3 is below half, 2 of 3 is above. 1 of 2 is exactly half.
    let three = check(&hs[1..]);
    assert!(three.is_healthy());
    hs[2].force_open();
    assert!(!three.is_healthy());
    assert!(!check(&hs[2..]).is_healthy());
    hs[2].force_closed();
    assert!(three.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn open_and_forced_open_count_as_open_half_open_and_disabled_do_not() {
    let layer = CircuitBreakerLayer::builder()
        .name("tripped")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .build()
        .unwrap();
    let tripped = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async { Err::<(), _>("down") }));
    let _ = svc.ready().await.unwrap().call(()).await;
    let (forced, disabled) = (handle("forced"), handle("disabled"));
    forced.force_open();
    disabled.disable();
    let health = HealthCheck::new()
        .with("llm", tripped.clone())
        .with_handle(forced)
        .with_handle(disabled)
        .unhealthy_open_ratio(1.0);

    let report = health.report();
    let states: Vec<_> = report
        .circuits
        .iter()
        .map(|c| (c.name.as_str(), c.state, c.healthy))
        .collect();
    assert_eq!(
        states,
        vec![
            ("llm", State::Open, false),
            ("forced", State::ForcedOpen, false),
            ("disabled", State::Disabled, true),
        ]
    );
    assert_eq!(report.circuits[0].failure_rate, 1.0);
    assert_eq!(report.circuits[1].failure_rate, 0.0, "no calls yet");
    assert!(
        report.healthy,
        "ratio 1.0: unhealthy only when all are open"
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    let report = health.report();
    assert_eq!(report.circuits[0].state, State::HalfOpen);
    assert!(report.circuits[0].healthy);
    assert_eq!(report.summary, "2/3 circuits healthy");
}

#[test]
fn the_ratio_is_configurable_and_clamped() {
    let hs: Vec<Handle> = ["a", "b", "c", "d"].into_iter().map(handle).collect();
    hs[0].force_open();
    hs[1].force_open();
    assert!(check(&hs).unhealthy_open_ratio(0.75).is_healthy(), "2 < 3");
    hs[2].force_open();
    assert!(!check(&hs).unhealthy_open_ratio(0.75).is_healthy(), "3 = 3");
    assert!(
        check(&hs).unhealthy_open_ratio(7.0).is_healthy(),
        "clamped to 1.0: 3 < 4"
    );
    hs[3].force_open();
    assert!(!check(&hs).unhealthy_open_ratio(1.0).is_healthy());
    hs.iter().for_each(Handle::force_closed);
    assert!(
        !check(&hs).unhealthy_open_ratio(-1.0).is_healthy(),
        "0.0: never healthy"
    );
    assert!(check(&hs).unhealthy_open_ratio(f64::NAN).is_healthy());
}

#[tokio::test]
async fn keyed_circuits_are_reported_as_they_come_and_go() {
    let layer = KeyedLayer::builder(|r: &(&'static str, bool)| r.0)
        .breaker(CircuitBreakerLayer::builder().consecutive_failures(1))
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let fixed = handle("cache");
    let health = HealthCheck::new()
        .with("cache", fixed)
        .with_keyed(&breakers);
    assert_eq!(health.report().summary, "1/1 circuits healthy");

    let mut svc = layer.layer(service_fn(|(k, fail): (&'static str, bool)| async move {
        if fail {
            Err::<&str, BoxError>("down".into())
        } else {
            Ok(k)
        }
    }));
    svc.ready()
        .await
        .unwrap()
        .call(("openai", false))
        .await
        .unwrap();
    let _ = svc.ready().await.unwrap().call(("azure", true)).await;
    let report = health.report();
    let names: Vec<_> = report.circuits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["cache", "openai", "azure"]);
    assert_eq!(report.summary, "2/3 circuits healthy");
    assert!(report.healthy);
    breakers.remove(&"openai");
    assert_eq!(health.report().summary, "1/2 circuits healthy");
    assert!(!health.is_healthy());
}

#[cfg(feature = "serde")]
#[test]
fn the_report_serializes_in_snake_case() {
    let a = handle("openai");
    a.force_open();
    let report = HealthCheck::new()
        .with("openai", a)
        .with("anthropic", handle("anthropic"))
        .report();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "healthy": false,
            "open_circuits": 1,
            "summary": "1/2 circuits healthy",
            "circuits": [
                {"name": "openai", "state": "forced_open", "healthy": false, "failure_rate": 0.0},
                {"name": "anthropic", "state": "closed", "healthy": true, "failure_rate": 0.0}
            ]
        })
    );
}
