#![cfg(feature = "metrics")]
//! Zero heap allocations per admitted call with the `metrics` feature on, a recorder installed
//! globally and the services registered with `Metrics`: the series are pushed by reports and
//! transition listeners, never by calls. Same harness as tests/alloc.rs: a counting global
//! allocator (the `allocation-counter` crate, per thread) over a loop of `poll_ready` + `call`
//! + poll to completion, after a warm-up.

use std::future::{ready, Future, Ready};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::Service;
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::keyed::KeyedLayer;
use tower_breaker::metrics::Metrics;
use tower_layer::Layer;

/// The inner service's error: zero-sized, so boxing it allocates nothing.
#[derive(Debug)]
struct Odd;

impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("odd")
    }
}

impl std::error::Error for Odd {}

/// A service that never allocates; fails 1 call in 7, never twice in a row (nothing trips).
#[derive(Clone)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Odd;
    type Future = Ready<Result<u64, Odd>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(if req % 7 == 3 { Err(Odd) } else { Ok(req) })
    }
}

fn drive<S: Service<u64>>(svc: &mut S, calls: u64) -> u64 {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let info = allocation_counter::measure(|| {
        for i in 0..calls {
            assert!(svc.poll_ready(&mut cx).is_ready());
            let mut future = std::pin::pin!(svc.call(i));
            assert!(future.as_mut().poll(&mut cx).is_ready());
        }
    });
    info.count_total
}

/// The global recorder, installed once for every test of this binary.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        snapshotter
    })
}

/// The value of the calls counter with `outcome` among the series labelled `label`.
fn calls(snapshotter: &Snapshotter, label: (&str, &str), outcome: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let key = key.key();
            let found = key.name() == "tower_breaker_calls_total"
                && key.labels().any(|l| (l.key(), l.value()) == label)
                && key
                    .labels()
                    .any(|l| (l.key(), l.value()) == ("outcome", outcome));
            match value {
                DebugValue::Counter(n) if found => Some(n),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no calls_total series for {label:?}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn registered_breaker_and_bulkhead_admitted_calls_do_not_allocate() {
    let snapshotter = snapshotter();
    let rt = runtime();
    let _guard = rt.enter();
    let breaker = CircuitBreakerLayer::builder()
        .name("alloc")
        .build()
        .unwrap();
    let bulkhead = BulkheadLayer::builder()
        .name("alloc-bulkhead")
        .max_concurrent(4)
        .build()
        .unwrap();
    let metrics = Metrics::new()
        .breaker(breaker.handle())
        .bulkhead(bulkhead.handle());
    let mut svc = breaker.layer(bulkhead.layer(Echo));

    drive(&mut svc, 1_000); // warm-up
    metrics.report();
    let allocations = drive(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10 000 admitted calls"
    );

    // The series are bound to the global recorder and carry the calls.
    metrics.report();
    let _ = snapshotter.snapshot(); // counters restart from 0 at each snapshot
    drive(&mut svc, 700);
    metrics.report();
    assert_eq!(calls(snapshotter, ("name", "alloc"), "success"), 600);
    // The snapshot above emptied the counters: read the failures after another report.
    drive(&mut svc, 700);
    metrics.report();
    assert_eq!(calls(snapshotter, ("name", "alloc"), "failure"), 100);
}

#[test]
fn registered_keyed_breaker_admitted_calls_on_known_keys_do_not_allocate() {
    let snapshotter = snapshotter();
    let rt = runtime();
    let _guard = rt.enter();
    let layer = KeyedLayer::builder(|x: &u64| x % 4)
        .bulkhead(BulkheadLayer::builder().max_concurrent(4))
        .build()
        .unwrap();
    let metrics = Metrics::new().keyed("alloc-keyed", &layer.breakers());
    let mut svc = layer.layer(Echo);

    drive(&mut svc, 1_000); // warm-up: the four keys exist
    metrics.report();
    let allocations = drive(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10 000 admitted keyed calls"
    );
    metrics.report();
    assert!(calls(snapshotter, ("name", "alloc-keyed"), "success") > 0);
}
