//! The variants every benchmark drives, built in one place so each bench measures the same
//! configurations.
//!
//! Every variant wraps the same bare inner service, a `tower::service_fn` over an already-ready
//! future, and every call is `poll_ready` + `call` + poll the future to completion with a no-op
//! waker — so the differences are the middleware's own cost.
//!
//! Peers are configured as close to our configurations as their APIs allow:
//! - recloser 1.4 (`AsyncRecloser`): ring buffer of 100 calls, 50 % error rate (it has no
//!   consecutive-failure rule), open 60 s; a future wrapper (it is not a tower layer), so it is
//!   driven as `recloser.call(inner_future)`.
//! - failsafe 1.3 (`failsafe::futures::CircuitBreaker`): 5 consecutive failures (our default),
//!   constant 60 s back-off; a future wrapper, driven like recloser.
//! - tower-resilience-circuitbreaker 0.14: count window 100, failure rate 50 %, open 60 s,
//!   3 half-open calls (its default failure model; it has no consecutive-failure rule).
//! - tower-resilience-bulkhead 0.14: `max_concurrent_calls(1_000_000)` in `backpressure()` mode
//!   (the permit is taken in `poll_ready`, like ours and tower's).
//! - tower `ConcurrencyLimit(1_000_000)` and our bulkhead with `max_concurrent(1_000_000)`: a
//!   limit that never binds, so both measure the cost of taking and freeing a permit.
#![allow(dead_code)]

use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::keyed::KeyedLayer;
use tower_layer::Layer;

#[derive(Debug)]
pub struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

pub type Bare = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Never>>>;

/// The bare inner service: `service_fn` over an already-ready future.
pub fn bare() -> Bare {
    tower::service_fn(|x: u64| ready(Ok::<u64, Never>(x)))
}

/// One call: `poll_ready`, `call`, poll to completion. Panics if not ready.
#[inline(always)]
pub fn drive<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, x: u64) {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut future = std::pin::pin!(svc.call(x));
    loop {
        if let Poll::Ready(result) = future.as_mut().poll(cx) {
            black_box(result.is_ok());
            return;
        }
    }
}

/// One call that is expected to be rejected (the response future resolves to `Err`).
#[inline(always)]
pub fn drive_rejected<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, x: u64) {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut future = std::pin::pin!(svc.call(x));
    match future.as_mut().poll(cx) {
        Poll::Ready(result) => assert!(black_box(result.is_err())),
        Poll::Pending => panic!("a rejection must be immediate"),
    }
}

pub fn concurrency_limit() -> tower::limit::ConcurrencyLimit<Bare> {
    tower::limit::ConcurrencyLimit::new(bare(), 1_000_000)
}

pub fn breaker_default_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new()
}

pub fn breaker_fail_fast_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder().fail_fast().build().unwrap()
}

pub fn breaker_count_window_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .failure_rate(0.5)
        .count_window(100)
        .build()
        .unwrap()
}

pub fn breaker_time_window_slow_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .failure_rate(0.5)
        .time_window(Duration::from_secs(60))
        .slow_calls(Duration::from_secs(10), 0.8)
        .build()
        .unwrap()
}

pub fn bulkhead_layer() -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent(1_000_000)
        .build()
        .unwrap()
}

/// A keyed breaker's key function, as a plain function pointer (so the layer type is nameable).
pub type KeyFn = fn(&u64) -> u64;

/// Every call on one key.
pub fn one_key(_: &u64) -> u64 {
    0
}

/// Calls cycle over eight keys (the argument increments by one per call).
pub fn eight_keys(x: &u64) -> u64 {
    x % 8
}

/// A keyed breaker with the default breaker settings per key (keyed breakers are fail-fast).
pub fn keyed_layer(key_fn: KeyFn) -> KeyedLayer<u64, KeyFn> {
    KeyedLayer::builder(key_fn).build().unwrap()
}

pub fn tr_breaker() -> impl Service<u64, Response = u64> + Clone + Send + 'static {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .wait_duration_in_open(Duration::from_secs(60))
        .permitted_calls_in_half_open(3)
        .build()
        .unwrap()
        .layer(bare())
}

pub fn tr_bulkhead() -> impl Service<u64, Response = u64> + Clone + Send + 'static {
    tower_resilience_bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1_000_000)
        .backpressure()
        .build()
        .unwrap()
        .layer(bare())
}

pub fn failsafe_breaker() -> impl failsafe::futures::CircuitBreaker + Clone + Send + Sync + 'static
{
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(60)),
        ))
        .build()
}

pub fn recloser() -> recloser::AsyncRecloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .open_wait(Duration::from_secs(60))
        .build()
        .into()
}

#[inline(always)]
pub fn drive_failsafe<B: failsafe::futures::CircuitBreaker>(
    breaker: &B,
    cx: &mut Context<'_>,
    x: u64,
) {
    let mut future = std::pin::pin!(breaker.call(bare_future(x)));
    match future.as_mut().poll(cx) {
        Poll::Ready(r) => {
            black_box(r.is_ok());
        }
        Poll::Pending => panic!("not ready"),
    }
}

#[inline(always)]
pub fn drive_recloser(recloser: &recloser::AsyncRecloser, cx: &mut Context<'_>, x: u64) {
    let mut future = std::pin::pin!(recloser.call(bare_future(x)));
    match future.as_mut().poll(cx) {
        Poll::Ready(r) => {
            black_box(r.is_ok());
        }
        Poll::Pending => panic!("not ready"),
    }
}

/// What the bare service's `call` returns, for the future-wrapper peers.
#[inline(always)]
pub fn bare_future(x: u64) -> Ready<Result<u64, Never>> {
    ready(Ok::<u64, Never>(black_box(x)))
}

/// A per-thread caller: makes one call per invocation, with the given argument.
pub type Call = Box<dyn FnMut(u64) + Send>;

/// Makes callers that share one instance of the variant (each caller holds its own clone, as a
/// tower user's tasks would).
pub type Maker = Box<dyn Fn() -> Call + Send + Sync>;

fn service_maker<S>(svc: S) -> Maker
where
    S: Service<u64> + Clone + Send + 'static,
{
    let proto = Mutex::new(svc);
    Box::new(move || {
        let mut svc = proto.lock().unwrap().clone();
        Box::new(move |x| {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            drive(&mut svc, &mut cx, x);
        })
    })
}

/// The variants for the multi-thread and instruction-count benches, by name.
pub const VARIANTS: &[&str] = &[
    "bare",
    "tower_concurrency_limit",
    "breaker_default",
    "breaker_fail_fast",
    "breaker_count_window_rate",
    "breaker_time_window_rate_slow",
    "keyed_one_key",
    "keyed_eight_keys",
    "bulkhead",
    "breaker_plus_bulkhead",
    "peer_failsafe",
    "peer_recloser",
    "peer_tower_resilience_circuitbreaker",
    "peer_tower_resilience_bulkhead",
];

/// A [`Maker`] for the variant called `name`.
pub fn maker(name: &str) -> Maker {
    match name {
        "bare" => service_maker(bare()),
        "tower_concurrency_limit" => service_maker(concurrency_limit()),
        "breaker_default" => service_maker(breaker_default_layer().layer(bare())),
        "breaker_fail_fast" => service_maker(breaker_fail_fast_layer().layer(bare())),
        "breaker_count_window_rate" => service_maker(breaker_count_window_layer().layer(bare())),
        "breaker_time_window_rate_slow" => {
            service_maker(breaker_time_window_slow_layer().layer(bare()))
        }
        "keyed_one_key" => service_maker(keyed_layer(one_key).layer(bare())),
        "keyed_eight_keys" => service_maker(keyed_layer(eight_keys).layer(bare())),
        "bulkhead" => service_maker(bulkhead_layer().layer(bare())),
        "breaker_plus_bulkhead" => {
            service_maker(breaker_default_layer().layer(bulkhead_layer().layer(bare())))
        }
        "peer_tower_resilience_circuitbreaker" => service_maker(tr_breaker()),
        "peer_tower_resilience_bulkhead" => service_maker(tr_bulkhead()),
        "peer_failsafe" => {
            let breaker = failsafe_breaker();
            Box::new(move || {
                let breaker = breaker.clone();
                Box::new(move |x| {
                    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
                    drive_failsafe(&breaker, &mut cx, x);
                })
            })
        }
        "peer_recloser" => {
            let recloser = recloser();
            Box::new(move || {
                let recloser = recloser.clone();
                Box::new(move |x| {
                    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
                    drive_recloser(&recloser, &mut cx, x);
                })
            })
        }
        "breaker_fail_fast_open_rejection" => {
            let layer = breaker_fail_fast_layer();
            layer.handle().force_open();
            let proto = Mutex::new(layer.layer(bare()));
            Box::new(move || {
                let mut svc = proto.lock().unwrap().clone();
                Box::new(move |x| {
                    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
                    drive_rejected(&mut svc, &mut cx, x);
                })
            })
        }
        other => panic!("unknown variant {other}"),
    }
}
