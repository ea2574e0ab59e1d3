//! Every service type in the crate, set up scarce, and every property run against each.

use tower::ServiceExt;
use tower_breaker::bulkhead::{Bulkhead, BulkheadLayer};
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use tower_breaker::failover::Failover;
use tower_breaker::keyed::{Keyed, KeyedLayer};
use tower_layer::Layer;

use super::*;

/// Trips `svc`'s circuit with one failed call and waits out the open period: half-open with
/// one probe permit.
async fn half_open<S>(svc: &S, circuit: &Handle)
where
    S: Service<Req, Response = u32, Error = BoxError> + Clone,
{
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Out::Err);
    assert!(svc.clone().oneshot(rx).await.is_err());
    assert_eq!(circuit.state(), State::Open);
    tokio::time::advance(OPEN).await;
    assert_eq!(circuit.state(), State::HalfOpen);
}

fn breaker_layer(fail_fast: bool) -> CircuitBreakerLayer {
    let builder = CircuitBreakerLayer::builder()
        .name("contract")
        .consecutive_failures(1)
        .open_duration(OPEN)
        .half_open_permits(1)
        .success_threshold(1);
    let builder = if fail_fast {
        builder.fail_fast()
    } else {
        builder
    };
    builder.build().unwrap()
}

pub struct Breaker;

impl Subject for Breaker {
    type S = CircuitBreaker<Inner>;
    const RESERVES_AT_READY: bool = true;
    const WAITS: bool = true;
    const PANICS_WITHOUT_READY: bool = true;

    async fn scarce(inner: Inner) -> Self::S {
        let svc = breaker_layer(false).layer(inner);
        half_open(&svc, &svc.handle()).await;
        svc
    }

    fn circuit(svc: &Self::S) -> Option<Handle> {
        Some(svc.handle())
    }

    async fn recover() {
        tokio::time::advance(OPEN).await;
    }
}

pub struct FailFastBreaker;

impl Subject for FailFastBreaker {
    type S = CircuitBreaker<Inner>;
    const RESERVES_AT_READY: bool = true;
    const WAITS: bool = false;
    const PANICS_WITHOUT_READY: bool = true;

    async fn scarce(inner: Inner) -> Self::S {
        let svc = breaker_layer(true).layer(inner);
        half_open(&svc, &svc.handle()).await;
        svc
    }

    fn circuit(svc: &Self::S) -> Option<Handle> {
        Some(svc.handle())
    }

    async fn recover() {
        tokio::time::advance(OPEN).await;
    }
}

pub struct OneSlotBulkhead;

impl Subject for OneSlotBulkhead {
    type S = Bulkhead<Inner>;
    const RESERVES_AT_READY: bool = true;
    const WAITS: bool = true;
    const PANICS_WITHOUT_READY: bool = true;

    async fn scarce(inner: Inner) -> Self::S {
        BulkheadLayer::builder()
            .name("contract")
            .max_concurrent(1)
            .max_queue(8)
            .max_wait(Duration::from_secs(3600))
            .build()
            .unwrap()
            .layer(inner)
    }

    fn circuit(_: &Self::S) -> Option<Handle> {
        None
    }

    async fn recover() {}
}

/// A failover over one default-mode breaker (half-open, one permit): the failover's own
/// reservation is its member's.
pub struct FailoverOverBreaker;

impl Subject for FailoverOverBreaker {
    type S = Failover<CircuitBreaker<Inner>>;
    const RESERVES_AT_READY: bool = true;
    const WAITS: bool = true;
    const PANICS_WITHOUT_READY: bool = true;

    async fn scarce(inner: Inner) -> Self::S {
        let member = breaker_layer(false).layer(inner);
        let svc = Failover::new([member.clone()]);
        half_open(&svc, &member.handle()).await;
        svc
    }

    fn circuit(svc: &Self::S) -> Option<Handle> {
        svc.services().next().map(CircuitBreaker::handle)
    }

    async fn recover() {
        tokio::time::advance(OPEN).await;
    }
}

pub type KeyFn = fn(&Req) -> &'static str;

fn key(_: &Req) -> &'static str {
    "k"
}

/// Keyed breakers; the request's key `"k"` has a half-open circuit with one probe permit.
pub struct KeyedBreaker;

impl Subject for KeyedBreaker {
    type S = Keyed<Inner, &'static str, KeyFn>;
    const RESERVES_AT_READY: bool = false;
    const WAITS: bool = false;
    const PANICS_WITHOUT_READY: bool = false;

    async fn scarce(inner: Inner) -> Self::S {
        let layer = KeyedLayer::builder(key as KeyFn)
            .breaker(
                CircuitBreakerLayer::builder()
                    .consecutive_failures(1)
                    .open_duration(OPEN)
                    .half_open_permits(1)
                    .success_threshold(1),
            )
            .build()
            .unwrap();
        let breakers = layer.breakers();
        let svc = layer.layer(inner);
        let circuit = breakers.register("k").unwrap();
        half_open(&svc, &circuit).await;
        svc
    }

    fn circuit(svc: &Self::S) -> Option<Handle> {
        svc.breakers().handle(&"k")
    }

    async fn recover() {
        tokio::time::advance(OPEN).await;
    }
}

macro_rules! contract {
    ($module:ident, $subject:ty) => {
        mod $module {
            use super::*;

            #[tokio::test(start_paused = true)]
            async fn call_without_poll_ready_panics() {
                super::super::call_without_poll_ready_panics::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn readiness_is_sticky() {
                super::super::readiness_is_sticky::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn pending_inner_wakes() {
                super::super::pending_inner_wakes::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn pending_admission_wakes() {
                super::super::pending_admission_wakes::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn manual_close_wakes() {
                super::super::manual_close_wakes::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn pending_open_circuit_wakes_at_the_deadline() {
                super::super::pending_open_circuit_wakes_at_the_deadline::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn dropping_a_ready_clone_releases() {
                super::super::dropping_a_ready_clone_releases::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn dropping_a_response_future_releases() {
                super::super::dropping_a_response_future_releases::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn a_panicking_call_releases() {
                super::super::a_panicking_call_releases::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn clones_do_not_share_reservations() {
                super::super::clones_do_not_share_reservations::<$subject>().await;
            }

            #[tokio::test(start_paused = true)]
            async fn err_from_poll_ready_only_from_inner() {
                super::super::err_from_poll_ready_only_from_inner::<$subject>().await;
            }
        }
    };
}

contract!(breaker, Breaker);
contract!(breaker_fail_fast, FailFastBreaker);
contract!(bulkhead, OneSlotBulkhead);
contract!(failover, FailoverOverBreaker);
contract!(keyed, KeyedBreaker);

/// `Failover` retires a member whose `poll_ready` fails and goes on with the others; it fails
/// `poll_ready` only when no member is left, with the last member's error.
#[tokio::test(start_paused = true)]
async fn failover_errs_only_when_every_member_failed() {
    let primary = Inner::default();
    let backup = Inner::default();
    let mut svc = task::spawn(Failover::new([primary.clone(), backup.clone()]));
    primary.fail_next_ready();
    assert!(ready(&mut svc).is_ready(), "the backup serves");
    assert!(svc.is_retired(0) && !svc.is_retired(1));
    let (_tx, rx) = oneshot::channel();
    drop(svc.call(rx));
    assert_eq!((primary.calls(), backup.calls()), (0, 1));
    backup.fail_next_ready();
    match svc.enter(|cx, mut s| s.poll_ready(cx)) {
        Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "inner poll_ready failed"),
        other => panic!("no member left: the last error, got {other:?}"),
    }
}
