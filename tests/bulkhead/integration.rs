//! With a circuit breaker, tracing, threads, the builder, auto traits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower_breaker::bulkhead::error::{BulkheadFull, BulkheadTimeout};

use crate::{layer, Inner, WAIT};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio_test::task;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

use crate::{Fut, Svc};

#[tokio::test(start_paused = true)]
async fn an_outer_breaker_ignores_the_bulkheads_rejections() {
    let breaker = CircuitBreakerLayer::builder()
        .name("outer")
        .consecutive_failures(1)
        .fail_fast()
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let bulkhead = layer(1, 1, Duration::from_millis(100));
    let inner = Inner::default();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(bulkhead)
        .service(inner.clone());

    // One call holds the only slot; one waits (and will time out); two are rejected.
    let mut holder = task::spawn(svc.clone());
    assert_ready_ok!(holder.enter(|cx, mut s| s.poll_ready(cx)));
    let (_tx_hold, rx) = oneshot::channel();
    let mut held = task::spawn(holder.call(rx));
    assert_pending!(held.poll());

    let mut waiter = task::spawn(svc.clone());
    assert_pending!(waiter.enter(|cx, mut s| s.poll_ready(cx)));
    for _ in 0..2 {
        let mut other = svc.clone();
        let err = other
            .ready()
            .await
            .unwrap()
            .call(oneshot::channel().1)
            .await;
        assert!(err.unwrap_err().is::<BulkheadFull>());
    }
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_ready_ok!(waiter.enter(|cx, mut s| s.poll_ready(cx)));
    let err = waiter.call(oneshot::channel().1).await.unwrap_err();
    assert!(err.is::<BulkheadTimeout>());

    assert_eq!(breaker_handle.state(), State::Closed);
    let stats = breaker_handle.stats();
    assert_eq!((stats.ignored_calls, stats.failed_calls), (3, 0));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

    // A real failure still trips it: the breaker works, it just ignores backpressure.
    drop(_tx_hold);
    assert!(held.await.is_err());
    assert_eq!(breaker_handle.state(), State::Open);
}

#[test]
fn the_builder_names_bad_fields() {
    let field = |b: tower_breaker::bulkhead::Builder| b.build().unwrap_err().field();
    assert_eq!(
        field(BulkheadLayer::builder().max_concurrent(0)),
        "max_concurrent"
    );
    assert_eq!(
        field(BulkheadLayer::builder().max_wait(Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(field(BulkheadLayer::builder().name("")), "name");
    let layer = BulkheadLayer::builder().max_queue(0).build().unwrap();
    let stats = layer.handle().stats();
    assert_eq!((stats.max_concurrent, stats.max_queue), (10, 0));
    assert_eq!(stats.max_wait, Duration::from_secs(30));
    assert_eq!((stats.name.as_str(), stats.available), ("default", 10));
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_releases_the_slot() {
    let layer = layer(1, 1, WAIT);
    let handle = layer.handle();
    let mut other = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut svc = task::spawn(layer.layer(NotReady));
    let err = assert_ready!(svc.enter(|cx, mut s| Service::<()>::poll_ready(&mut *s, cx)));
    assert_eq!(err.unwrap_err().to_string(), "inner not ready");
    assert_eq!(handle.stats().active, 0);
    assert!(other.ready().await.is_ok());
    assert_eq!(handle.stats().active, 1);
}

/// A service whose `poll_ready` fails.
#[derive(Clone)]
struct NotReady;

impl Service<()> for NotReady {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        Poll::Ready(Err("inner not ready"))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[test]
fn clones_on_many_threads_never_exceed_the_cap() {
    const THREADS: usize = 4;
    const CALLS: usize = 2_000;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let layer = layer(2, THREADS, Duration::from_secs(3600));
    let handle = layer.handle();
    let svc = {
        let (running, peak) = (running.clone(), peak.clone());
        layer.layer(tower::service_fn(move |_: ()| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            running.fetch_sub(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, BoxError>(()))
        }))
    };
    // Meanwhile the capacity is resized back and forth (ending at 2).
    let resizer = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                handle.set_max_concurrent(1 + i % 2);
                std::thread::yield_now();
            }
        })
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut svc = svc.clone();
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    for _ in 0..CALLS {
                        svc.ready().await.unwrap().call(()).await.unwrap();
                    }
                })
            })
        })
        .collect();
    resizer.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // A shrink lets running calls finish, so the peak is bounded by the largest capacity.
    assert!(peak.load(Ordering::SeqCst) <= 2);
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.available), (0, 0, 2));
    assert_eq!((stats.rejected, stats.timed_out), (0, 0));
}

#[test]
fn public_types_are_send_sync_and_debug() {
    fn send_sync<T: Send + Sync + std::fmt::Debug>() {}
    fn send<T: Send>() {}
    send_sync::<BulkheadLayer>();
    send_sync::<Svc>();
    send_sync::<tower_breaker::bulkhead::Handle>();
    send_sync::<tower_breaker::bulkhead::Permit>();
    send_sync::<tower_breaker::bulkhead::Stats>();
    send::<Fut>();
    let layer = layer(1, 1, WAIT);
    let text = format!("{layer:?} {:?}", layer.handle());
    assert!(text.contains("test"), "{text}");
}
