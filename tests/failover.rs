//! `Failover`, `FailoverLayer` and the `skip_open` Steer picker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Handle, State};
use tower_breaker::failover::{skip_open, Failover, FailoverLayer};
use tower_breaker::BoxError;
use tower_layer::Layer;

type Endpoint = tower::util::BoxCloneSyncService<u32, &'static str, &'static str>;

/// An in-process endpoint answering with its name, or failing while `down` is set.
fn endpoint(name: &'static str, down: Arc<AtomicBool>) -> Endpoint {
    Endpoint::new(service_fn(move |_: u32| {
        let down = down.load(Ordering::SeqCst);
        async move {
            if down {
                Err(name)
            } else {
                Ok(name)
            }
        }
    }))
}

fn breaker(name: &str, failures: u32, open: Duration) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(failures)
        .open_duration(open)
        .half_open_permits(1)
        .success_threshold(1)
        .build()
        .unwrap()
}

fn flag(v: bool) -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(v))
}

async fn send<S>(svc: &mut S, req: u32) -> Result<S::Response, BoxError>
where
    S: Service<u32, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn call_goes_to_the_first_ready_member_in_priority_order() {
    let (a, mut ha) = tower_test::mock::pair::<u32, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<u32, &'static str>();
    let (c, mut hc) = tower_test::mock::pair::<u32, &'static str>();
    let mut failover = Failover::with_names([("a", a), ("b", b), ("c", c)]);
    let routes = failover.routes();
    let mut task = tokio_test::task::spawn(());

    // Nothing ready: pending, and every member registered the waker.
    ha.allow(0);
    hb.allow(0);
    hc.allow(0);
    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));

    // The lowest-priority member becomes ready: the task is woken and the call goes there.
    hc.allow(1);
    assert!(task.is_woken());
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    let fut = failover.call(1);
    let (req, send) = hc.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_response("c");
    assert_eq!(fut.await.unwrap(), "c");
    assert_eq!(routes.last_name().as_deref(), Some("c"));

    // b and c ready: b wins.
    hb.allow(1);
    hc.allow(1);
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    let fut = failover.call(2);
    let (req, send) = hb.next_request().await.unwrap();
    assert_eq!(req, 2);
    send.send_response("b");
    assert_eq!(fut.await.unwrap(), "b");
    assert_eq!(routes.last(), Some(1));

    // a ready: a wins over the still-ready c.
    ha.allow(1);
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    let fut = failover.call(3);
    let (req, send) = ha.next_request().await.unwrap();
    assert_eq!(req, 3);
    send.send_response("a");
    assert_eq!(fut.await.unwrap(), "a");
    assert_eq!(routes.last(), Some(0));
    assert_eq!(routes.served(), vec![1, 1, 1]);
    assert_eq!(failover.services().count(), 3);
    assert_eq!(failover.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn polling_stops_at_the_first_ready_member() {
    let (a, mut ha) = tower_test::mock::pair::<u32, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<u32, &'static str>();
    let mut failover = Failover::new([a, b]);
    ha.allow(1);
    hb.allow(1);
    let mut task = tokio_test::task::spawn(());
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    // b was never polled, so it reserved nothing: its one allowed call is still available to
    // another clone.
    let mut other = failover.clone();
    ha.allow(0);
    assert_ready_ok!(task.enter(|cx, _| other.poll_ready(cx)));
    let _fut = other.call(7);
    assert_eq!(hb.next_request().await.unwrap().0, 7);
}

#[tokio::test(start_paused = true)]
async fn traffic_moves_off_an_open_primary_and_returns_when_it_closes() {
    let primary_down = flag(false);
    let primary = breaker("primary", 2, Duration::from_secs(10));
    let primary_handle = primary.handle();
    let mut failover = Failover::with_names([
        (
            "primary",
            primary.layer(endpoint("primary", primary_down.clone())),
        ),
        (
            "secondary",
            breaker("secondary", 2, Duration::from_secs(10))
                .layer(endpoint("secondary", flag(false))),
        ),
    ]);
    let routes = failover.routes();

    assert_eq!(send(&mut failover, 0).await.unwrap(), "primary");
    primary_down.store(true, Ordering::SeqCst);
    assert!(send(&mut failover, 1).await.is_err());
    assert!(send(&mut failover, 2).await.is_err());
    assert_eq!(routes.last(), Some(0));
    assert_eq!(primary_handle.state(), State::Open);

    // The primary's circuit is open: requests go to the secondary at once.
    for i in 0..5 {
        assert_eq!(send(&mut failover, 10 + i).await.unwrap(), "secondary");
    }
    assert_eq!(routes.last_name().as_deref(), Some("secondary"));

    // The primary recovers; its circuit half-opens at exactly 10 s.
    primary_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(send(&mut failover, 20).await.unwrap(), "secondary");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(send(&mut failover, 21).await.unwrap(), "primary");
    assert_eq!(primary_handle.state(), State::Closed);
    assert_eq!(send(&mut failover, 22).await.unwrap(), "primary");
    assert_eq!(routes.served(), vec![5, 6]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_task_is_woken_when_the_primary_circuit_admits_again() {
    let primary_down = flag(true);
    let primary = breaker("primary", 1, Duration::from_secs(10));
    let (backup, mut backup_handle) = tower_test::mock::pair::<u32, &'static str>();
    let backup = tower::util::BoxCloneSyncService::new(backup.map_err(|_| "backup failed"));
    let mut failover = Failover::new([
        primary.layer(endpoint("primary", primary_down.clone())),
        primary_layer_passthrough().layer(backup),
    ]);
    backup_handle.allow(0);

    // Trip the primary (the backup is not ready, so the primary is chosen).
    assert!(send(&mut failover, 0).await.is_err());
    assert_eq!(primary.handle().state(), State::Open);
    primary_down.store(false, Ordering::SeqCst);

    let mut task = tokio_test::task::spawn(());
    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(!task.is_woken());
    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(task.is_woken(), "woken by the primary's open deadline");
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    assert_eq!(failover.call(1).await.unwrap(), "primary");
    assert_eq!(failover.last_route(), Some(0));
}

/// A breaker that never trips, so both members have the same type.
fn primary_layer_passthrough() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("backup")
        .consecutive_failures(0)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn all_open_waits_and_goes_to_the_member_that_admits_first() {
    let a = breaker("a", 1, Duration::from_secs(30));
    let b = breaker("b", 1, Duration::from_secs(10));
    let (ha, hb) = (a.handle(), b.handle());
    let down = flag(true);
    let mut failover = Failover::new([
        a.layer(endpoint("a", down.clone())),
        b.layer(endpoint("b", down.clone())),
    ]);
    assert!(send(&mut failover, 0).await.is_err()); // a trips
    assert!(send(&mut failover, 1).await.is_err()); // b trips
    assert_eq!((ha.state(), hb.state()), (State::Open, State::Open));
    down.store(false, Ordering::SeqCst);

    let mut task = tokio_test::task::spawn(());
    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(!task.is_woken());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(task.is_woken(), "woken at the earliest open deadline (b's)");
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    assert_eq!(failover.call(2).await.unwrap(), "b");
    assert_eq!(ha.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_poll_ready_fails_is_retired() {
    let (a, mut ha) = tower_test::mock::pair::<u32, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<u32, &'static str>();
    let mut failover = Failover::new([a, b]);
    let mut task = tokio_test::task::spawn(());

    ha.send_error("a is gone");
    hb.allow(1);
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    assert!(failover.is_retired(0));
    let fut = failover.call(1);
    hb.next_request().await.unwrap().1.send_response("b");
    assert_eq!(fut.await.unwrap(), "b");

    // a is never polled again, even when it could serve.
    ha.allow(5);
    hb.allow(0);
    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));

    // The last member fails too: now poll_ready fails, with that member's error.
    hb.send_error("b is gone");
    assert!(task.is_woken());
    let err = assert_ready!(task.enter(|cx, _| failover.poll_ready(cx))).unwrap_err();
    assert_eq!(err.to_string(), "b is gone");
}

#[tokio::test]
async fn an_empty_failover_fails_poll_ready() {
    let mut failover = Failover::<Endpoint>::new([]);
    let err = failover.ready().await.unwrap_err();
    assert!(err
        .downcast_ref::<tower_breaker::failover::error::NoServices>()
        .is_some());
}

#[tokio::test]
#[should_panic(expected = "without a ready poll_ready")]
async fn call_without_poll_ready_panics() {
    let mut failover = Failover::new([endpoint("a", flag(false))]);
    drop(failover.call(0));
}

/// Two endpoints, the primary always failing, each behind a default-mode breaker.
fn two_endpoints() -> (Vec<CircuitBreaker<Endpoint>>, Handle) {
    let bad = breaker("bad", 3, Duration::from_secs(30));
    let handle = bad.handle();
    let good = breaker("good", 3, Duration::from_secs(30));
    (
        vec![
            bad.layer(endpoint("bad", flag(true))),
            good.layer(endpoint("good", flag(false))),
        ],
        handle,
    )
}

#[tokio::test(start_paused = true)]
async fn failover_400_requests_one_endpoint_always_failing() {
    let (services, bad) = two_endpoints();
    let mut failover = Failover::new(services);
    let mut ok = 0;
    for i in 0..400 {
        if send(&mut failover, i).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 397, "{ok} successes");
    assert_eq!(bad.stats().failed_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn failover_inside_buffer_400_requests() {
    let (services, _bad) = two_endpoints();
    let failover = Failover::new(services);
    let routes = failover.routes();
    let mut buffered = tower::buffer::Buffer::new(failover, 8);
    let mut ok = 0;
    for i in 0..400 {
        if send(&mut buffered, i).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 397, "{ok} successes");
    assert_eq!(routes.served(), vec![3, 397]);
}

#[tokio::test(start_paused = true)]
async fn balance_400_requests_one_endpoint_always_failing() {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::Constant;

    let (services, bad) = two_endpoints();
    let endpoints: Vec<_> = services
        .into_iter()
        .map(|svc| Constant::new(svc, 1u32))
        .collect();
    let mut balance = Balance::new(ServiceList::new(endpoints));
    let mut ok = 0;
    for i in 0..400 {
        if send(&mut balance, i).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 397, "{ok} successes");
    assert!(bad.stats().failed_calls <= 3);
}

#[tokio::test(start_paused = true)]
async fn failovers_compose_under_balance() {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::Constant;

    let make = || {
        let (services, _) = two_endpoints();
        Constant::new(Failover::new(services), 1u32)
    };
    let mut balance = Balance::new(ServiceList::new(vec![make(), make()]));
    let mut ok = 0;
    for i in 0..400 {
        if send(&mut balance, i).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok >= 394, "{ok} successes");
}

#[tokio::test(start_paused = true)]
async fn steer_with_skip_open_and_fail_fast_breakers_400_requests() {
    use tower::steer::Steer;

    let fail_fast = |name: &str| {
        CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(30))
            .fail_fast()
            .build()
            .unwrap()
    };
    let bad = fail_fast("bad");
    let good = fail_fast("good");
    let picker = skip_open([bad.handle(), good.handle()]);
    let mut steer = Steer::new(
        vec![
            bad.layer(endpoint("bad", flag(true))),
            good.layer(endpoint("good", flag(false))),
        ],
        picker,
    );
    let mut ok = 0;
    let mut served_by_good = 0;
    for i in 0..400 {
        if let Ok(name) = send(&mut steer, i).await {
            ok += 1;
            assert_eq!(name, "good");
            served_by_good += 1;
        }
    }
    assert!(ok >= 397, "{ok} successes");
    assert_eq!(served_by_good, ok);
    assert_eq!(bad.handle().stats().failed_calls, 3);
    // The open circuit is skipped: at most the one rejection its fail-fast breaker reserved
    // when Steer polled it ready.
    assert!(bad.handle().stats().rejected_calls <= 1);
}

#[tokio::test(start_paused = true)]
async fn skip_open_picks_the_circuit_that_admits_soonest_when_all_are_open() {
    use tower::steer::Steer;
    use tower_breaker::circuit_breaker::error::CircuitOpen;

    let layer = |name: &str, open: u64| {
        CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(open))
            .fail_fast()
            .build()
            .unwrap()
    };
    let (a, b) = (layer("a", 60), layer("b", 20));
    let down = flag(true);
    let mut steer = Steer::new(
        vec![
            a.layer(endpoint("a", down.clone())),
            b.layer(endpoint("b", down.clone())),
        ],
        skip_open([a.handle(), b.handle()]),
    );
    assert!(send(&mut steer, 0).await.is_err()); // a trips
    assert!(send(&mut steer, 1).await.is_err()); // b trips
    let err = send(&mut steer, 2).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.name(), "b");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(20)));

    // b admits again first; a stays skipped.
    down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(send(&mut steer, 3).await.unwrap(), "b");
}

#[tokio::test(start_paused = true)]
async fn failover_layer_puts_the_primary_first() {
    let layer = FailoverLayer::with_names("primary", [("backup", endpoint("backup", flag(false)))]);
    let primary_down = flag(true);
    let mut svc = layer.layer(endpoint("primary", primary_down.clone()));
    let routes = svc.routes();
    assert_eq!(routes.name(0), Some("primary"));
    assert_eq!(routes.name(1), Some("backup"));
    // Without breakers, the primary is always ready, so it is always chosen.
    assert_eq!(send(&mut svc, 0).await.unwrap_err().to_string(), "primary");
    primary_down.store(false, Ordering::SeqCst);
    assert_eq!(send(&mut svc, 1).await.unwrap(), "primary");
    assert_eq!(
        FailoverLayer::new([endpoint("x", flag(false))])
            .layer(endpoint("y", flag(false)))
            .routes()
            .name(1),
        Some("1")
    );
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_responses_carry_the_member_that_served_them() {
    use tower_breaker::failover::ServedBy;

    let member = |name: &'static str, down: Arc<AtomicBool>| {
        breaker(name, 1, Duration::from_secs(10)).layer(tower::util::BoxCloneSyncService::new(
            service_fn(move |_: ()| {
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        Err::<http::Response<&str>, BoxError>("down".into())
                    } else {
                        Ok(http::Response::new(name))
                    }
                }
            }),
        ))
    };
    let primary_down = flag(true);
    let mut svc = Failover::with_names([
        ("primary", member("primary", primary_down.clone())),
        ("backup", member("backup", flag(false))),
    ])
    .tag_served_by();
    assert!(svc.ready().await.unwrap().call(()).await.is_err());
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    let served_by = response.extensions().get::<ServedBy>().unwrap();
    assert_eq!((served_by.index(), served_by.name()), (1, "backup"));
    assert_eq!(svc.routes().last_name().as_deref(), Some("backup"));

    primary_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10)).await;
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(
        response.extensions().get::<ServedBy>().unwrap().name(),
        "primary"
    );
    assert_eq!(*response.body(), "primary");
}

#[test]
fn failover_types_are_send_sync_clone() {
    fn assert_all<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_all::<Failover<CircuitBreaker<Endpoint>>>();
    assert_all::<FailoverLayer<Endpoint>>();
    assert_all::<tower_breaker::failover::Routes>();
    assert_all::<tower_breaker::failover::SkipOpen>();
}

#[tokio::test(start_paused = true)]
async fn steer_with_skip_open_returns_to_the_primary_after_recovery() {
    use tower::steer::Steer;

    // The probe settings spelled out (they are the defaults): 3 probes per half-open phase,
    // 3 successes close.
    let fail_fast = |name: &str| {
        CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(30))
            .half_open_permits(3)
            .success_threshold(3)
            .fail_fast()
            .build()
            .unwrap()
    };
    let (primary, backup) = (fail_fast("primary"), fail_fast("backup"));
    let primary_down = flag(true);
    let mut steer = Steer::new(
        vec![
            primary.layer(endpoint("primary", primary_down.clone())),
            backup.layer(endpoint("backup", flag(false))),
        ],
        skip_open([primary.handle(), backup.handle()]),
    );
    for i in 0..3 {
        assert!(send(&mut steer, i).await.is_err());
    }
    assert_eq!(primary.handle().state(), State::Open);
    for i in 0..5 {
        assert_eq!(send(&mut steer, 10 + i).await.unwrap(), "backup");
    }

    primary_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut routes = Vec::new();
    for i in 0..10 {
        routes.push(send(&mut steer, 20 + i).await.map_err(|e| e.to_string()));
    }
    // At most the first request is lost: Steer still holds the primary's readiness from when
    // its circuit was open (fail-fast readiness is sticky), so that call fails fast once.
    let errors = routes.iter().filter(|r| r.is_err()).count();
    assert!(errors <= 1, "{routes:?}");
    assert!(
        routes[1..].iter().all(|r| r == &Ok("primary")),
        "{routes:?}"
    );
    assert_eq!(primary.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn inside_buffer_a_waiting_request_is_sent_when_the_primary_admits_again() {
    let primary_down = flag(true);
    let primary = breaker("primary", 1, Duration::from_secs(10));
    let (backup, mut backup_handle) = tower_test::mock::pair::<u32, &'static str>();
    backup_handle.allow(0);
    let backup = tower::util::BoxCloneSyncService::new(backup.map_err(|_| "backup failed"));
    let failover = Failover::new([
        primary.layer(endpoint("primary", primary_down.clone())),
        primary_layer_passthrough().layer(backup),
    ]);
    let routes = failover.routes();
    let mut buffered = tower::buffer::Buffer::new(failover, 4);
    assert!(send(&mut buffered, 0).await.is_err());
    assert_eq!(primary.handle().state(), State::Open);
    primary_down.store(false, Ordering::SeqCst);

    let started = tokio::time::Instant::now();
    // The Buffer's worker waits on the Failover, which is woken by the primary's open deadline
    // (the paused clock jumps there once everything is idle).
    assert_eq!(send(&mut buffered, 1).await.unwrap(), "primary");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "sent at the open deadline"
    );
    assert_eq!(routes.served(), vec![2, 0]);
}
