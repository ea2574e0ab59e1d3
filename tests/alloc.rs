//! Zero heap allocations per admitted call, for every breaker configuration.
//! A counting global allocator (the `allocation-counter` crate) watches a single-threaded loop of `poll_ready` + `call` + poll
//! to completion, after a warm-up that lets one-time allocations (thread-local stripe index,
//! lazily grown structures) happen.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;
use tower_breaker::circuit_breaker::{Builder, CircuitBreakerLayer, Outcome};
use tower_layer::Layer;

#[path = "support/no_alloc.rs"]
mod no_alloc;
use no_alloc::{count_allocations, Echo, Odd};

fn check(name: &str, builder: Builder) {
    let layer = builder.build().unwrap();
    let mut svc = layer.layer(Echo);
    count_allocations(&mut svc, 1_000); // warm-up
    let allocations = count_allocations(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{name}: {allocations} allocations in 10 000 admitted calls"
    );
    assert_eq!(
        layer.handle().stats().state,
        tower_breaker::circuit_breaker::State::Closed
    );
}

#[test]
fn admitted_calls_do_not_allocate() {
    // A runtime context so tokio's clock is the one a user would have.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let b = CircuitBreakerLayer::builder;
    // Failures are 1 in 7 and never consecutive: no configuration below trips.
    check("default", b());
    check("fail-fast", b().fail_fast());
    check(
        "count window + failure rate",
        b().failure_rate(0.5).count_window(100),
    );
    check(
        "time window + failure rate + slow calls",
        b().failure_rate(0.5)
            .time_window(Duration::from_secs(60))
            .slow_calls(Duration::from_secs(10), 0.8),
    );
    check(
        "back-off + probe timeout",
        b().max_open_duration(Duration::from_secs(600)),
    );

    // A closure classifier, too.
    let layer = b()
        .classifier(|r: Result<&u64, &Odd>| {
            if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::Ignored
            }
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(Echo);
    count_allocations(&mut svc, 1_000);
    assert_eq!(count_allocations(&mut svc, 10_000), 0, "closure classifier");
}

#[test]
fn stacked_breaker_and_bulkhead_admitted_calls_do_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let b = CircuitBreakerLayer::builder;
    let bulkhead = || {
        tower_breaker::bulkhead::BulkheadLayer::builder()
            .max_concurrent(4)
            .build()
            .unwrap()
    };
    for (name, breaker) in [
        ("default + bulkhead", b()),
        ("fail-fast + bulkhead", b().fail_fast()),
        (
            "count window + bulkhead",
            b().failure_rate(0.5).count_window(100),
        ),
        (
            "time window + slow calls + bulkhead",
            b().failure_rate(0.5)
                .time_window(Duration::from_secs(60))
                .slow_calls(Duration::from_secs(10), 0.8),
        ),
    ] {
        let breaker = breaker.build().unwrap();
        let mut svc = breaker.layer(bulkhead().layer(Echo));
        count_allocations(&mut svc, 1_000);
        let allocations = count_allocations(&mut svc, 10_000);
        assert_eq!(
            allocations, 0,
            "{name}: {allocations} allocations in 10 000 admitted calls"
        );
    }
}

#[test]
fn a_fail_fast_rejection_allocates_only_its_boxed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let layer = CircuitBreakerLayer::builder().fail_fast().build().unwrap();
    layer.handle().force_open();
    let mut svc = layer.layer(Echo);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut reject = |calls: u64| {
        allocation_counter::measure(|| {
            for i in 0..calls {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let mut future = std::pin::pin!(svc.call(i));
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(Err(e)) => {
                        assert!(e.is::<tower_breaker::circuit_breaker::error::CircuitOpen>())
                    }
                    _ => panic!("expected a rejection"),
                }
            }
        })
        .count_total
    };
    reject(100);
    let allocations = reject(1_000);
    assert!(
        allocations <= 1_000,
        "{allocations} allocations in 1 000 rejections (at most one each: the boxed error)"
    );
}

/// axum clones the service for every request: a clone used for one call must not allocate
/// (its call holds the layer's shared owner); a clone used again allocates its own owner once,
/// and never after.
#[test]
fn a_clone_allocates_its_own_owner_only_at_its_second_call() {
    let layer = CircuitBreakerLayer::new();
    let prototype = layer.layer(Echo);
    let mut warm = prototype.clone();
    count_allocations(&mut warm, 1_000); // one-time allocations (thread-local stripe index)

    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let one_call_per_clone = allocation_counter::measure(|| {
        for i in 0..1_000 {
            let mut svc = prototype.clone();
            assert!(svc.poll_ready(&mut cx).is_ready());
            let mut future = std::pin::pin!(svc.call(i));
            assert!(future.as_mut().poll(&mut cx).is_ready());
        }
    });
    assert_eq!(one_call_per_clone.count_total, 0, "one call per clone");

    let mut svc = prototype.clone();
    assert_eq!(count_allocations(&mut svc, 1), 0, "first call");
    assert_eq!(
        count_allocations(&mut svc, 1),
        1,
        "second call: the clone's own owner"
    );
    assert_eq!(count_allocations(&mut svc, 1_000), 0, "every later call");
}

/// Keyed breakers: a call on an existing key allocates nothing, whether the service clone has
/// the key cached (one key, or eight cycling), or is a fresh clone per call (axum) that looks it
/// up in the shared map. With a per-key bulkhead, too.
#[test]
fn keyed_calls_on_existing_keys_do_not_allocate() {
    use tower_breaker::keyed::KeyedLayer;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let one_key = (|_: &u64| 0u64) as fn(&u64) -> u64;
    let eight_keys = (|x: &u64| x % 8) as fn(&u64) -> u64;
    for (name, key_fn) in [("one key", one_key), ("eight keys", eight_keys)] {
        let layer = KeyedLayer::builder(key_fn).build().unwrap();
        let mut svc = layer.layer(Echo);
        count_allocations(&mut svc, 1_000); // builds the keys (and this thread's owners of their circuits)
        let allocations = count_allocations(&mut svc, 10_000);
        assert_eq!(allocations, 0, "keyed, {name}: {allocations} allocations");

        let prototype = layer.layer(Echo);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let clone_per_call = allocation_counter::measure(|| {
            for i in 0..1_000 {
                let mut svc = prototype.clone();
                assert!(svc.poll_ready(&mut cx).is_ready());
                let mut future = std::pin::pin!(svc.call(i));
                assert!(future.as_mut().poll(&mut cx).is_ready());
            }
        });
        assert_eq!(
            clone_per_call.count_total, 0,
            "keyed, {name}, a clone per call"
        );

        let layer = KeyedLayer::builder(key_fn)
            .bulkhead(
                tower_breaker::bulkhead::BulkheadLayer::builder()
                    .max_concurrent(4)
                    .max_queue(0),
            )
            .build()
            .unwrap();
        let mut svc = layer.layer(Echo);
        count_allocations(&mut svc, 1_000);
        let allocations = count_allocations(&mut svc, 10_000);
        assert_eq!(
            allocations, 0,
            "keyed + bulkhead, {name}: {allocations} allocations"
        );
    }
}

/// `EndOfStream` adds no allocation per call: neither for a plain body nor for an SSE stream
/// whose events arrive whole (a line split across frames is the one case that allocates, once
/// per body). The responses are built before counting, so only the breaker and the body
/// wrapper are measured.
#[cfg(feature = "http")]
#[test]
fn end_of_stream_bodies_do_not_allocate() {
    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::Full;
    use tower_breaker::http::EndOfStream;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for content_type in ["text/event-stream", "application/json"] {
        let layer = CircuitBreakerLayer::builder()
            .response_classifier(EndOfStream::new())
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(tower::service_fn(|res: http::Response<Full<Bytes>>| {
            std::future::ready(Ok::<_, Odd>(res))
        }));
        let response = || {
            let body = Full::new(Bytes::from_static(b"data: {\"t\":1}\n\ndata: [DONE]\n\n"));
            http::Response::builder()
                .header("content-type", content_type)
                .body(body)
                .unwrap()
        };
        let mut run = |responses: Vec<http::Response<Full<Bytes>>>| {
            allocation_counter::measure(|| {
                for res in responses {
                    assert!(svc.poll_ready(&mut cx).is_ready());
                    let mut future = std::pin::pin!(svc.call(res));
                    let Poll::Ready(Ok(res)) = future.as_mut().poll(&mut cx) else {
                        panic!("ready")
                    };
                    let mut body = std::pin::pin!(res.into_body());
                    assert!(body.as_mut().poll_frame(&mut cx).is_ready());
                }
            })
            .count_total
        };
        run((0..100).map(|_| response()).collect());
        let allocations = run((0..1_000).map(|_| response()).collect());
        assert_eq!(allocations, 0, "{content_type}: {allocations} allocations");
        assert_eq!(handle.stats().successful_calls, 1_100, "{content_type}");
    }
}
