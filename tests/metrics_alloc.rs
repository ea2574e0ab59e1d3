#![cfg(feature = "metrics")]
//! Zero heap allocations per admitted call with the `metrics` feature on, a recorder installed
//! globally and the services registered with `Metrics`: the series are pushed by reports and
//! transition listeners, never by calls. Same harness as tests/alloc.rs: a counting global
//! allocator (the `allocation-counter` crate, per thread) over a loop of `poll_ready` + `call`
//! + poll to completion, after a warm-up.

use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::keyed::KeyedLayer;
use tower_breaker::metrics::Metrics;
use tower_layer::Layer;

#[path = "support/no_alloc.rs"]
mod no_alloc;
use no_alloc::{count_allocations, Echo};

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

/// The debugging recorder's snapshots drain its counters, and the recorder is global: the tests
/// of this binary take turns so that one's snapshot never swallows the other's counts.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    let _turn = one_at_a_time();
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

    count_allocations(&mut svc, 1_000); // warm-up
    metrics.report();
    let allocations = count_allocations(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10 000 admitted calls"
    );

    // The series are bound to the global recorder and carry the calls.
    metrics.report();
    let _ = snapshotter.snapshot(); // counters restart from 0 at each snapshot
    count_allocations(&mut svc, 700);
    metrics.report();
    assert_eq!(calls(snapshotter, ("name", "alloc"), "success"), 600);
    // The snapshot above emptied the counters: read the failures after another report.
    count_allocations(&mut svc, 700);
    metrics.report();
    assert_eq!(calls(snapshotter, ("name", "alloc"), "failure"), 100);
}

#[test]
fn registered_keyed_breaker_admitted_calls_on_known_keys_do_not_allocate() {
    let _turn = one_at_a_time();
    let snapshotter = snapshotter();
    let rt = runtime();
    let _guard = rt.enter();
    let layer = KeyedLayer::builder(|x: &u64| x % 4)
        .bulkhead(BulkheadLayer::builder().max_concurrent(4))
        .build()
        .unwrap();
    let metrics = Metrics::new().keyed("alloc-keyed", &layer.breakers());
    let mut svc = layer.layer(Echo);

    count_allocations(&mut svc, 1_000); // warm-up: the four keys exist
    metrics.report();
    let allocations = count_allocations(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10 000 admitted keyed calls"
    );
    metrics.report();
    assert!(calls(snapshotter, ("name", "alloc-keyed"), "success") > 0);
}
