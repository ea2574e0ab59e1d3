//! Per-call overhead in the closed state over a bare `service_fn`, single task, one process.
//!
//! Every variant drives the same loop body: `poll_ready` + `call` + poll the future to
//! completion with a no-op waker, on an inner service whose future is already ready — so the
//! differences are the middleware's own cost. Run: `cargo bench --bench overhead`.
//!
//! Peers are configured as close to our default as their APIs allow:
//! - recloser 1.4 (`AsyncRecloser`): ring buffer of 100 calls, 50 % error rate (it has no
//!   consecutive-failure rule), open 60 s; driven as a future wrapper (it is not a tower layer).
//! - failsafe 1.3 (`failsafe::futures::CircuitBreaker`): consecutive failures 5, constant 60 s
//!   back-off; a future wrapper (not a tower layer).
//! - tower-resilience-circuitbreaker 0.14: count window 100, failure rate 50 %, open 60 s,
//!   3 half-open calls (its default failure model).
//! - tower `ConcurrencyLimit(1_000_000)`: a limit that never binds, as the cost of a semaphore.

use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use divan::Bencher;
use tower::{Service, ServiceExt};
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_layer::Layer;

fn main() {
    divan::main();
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

/// The bare inner service: `service_fn` over an already-ready future.
fn bare(
) -> impl Service<u64, Response = u64, Error = Never, Future = Ready<Result<u64, Never>>> + Clone {
    tower::service_fn(|x: u64| ready(Ok::<u64, Never>(x)))
}

#[inline(always)]
fn drive<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, x: u64) {
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

fn bench_service<S: Service<u64>>(bencher: Bencher<'_, '_>, mut svc: S) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut x = 0u64;
    bencher.bench_local(|| {
        x = x.wrapping_add(1);
        drive(&mut svc, &mut cx, black_box(x));
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

mod closed_single_thread {
    use super::*;

    #[divan::bench]
    fn a_bare(b: Bencher<'_, '_>) {
        bench_service(b, bare());
    }

    #[divan::bench]
    fn tower_concurrency_limit(b: Bencher<'_, '_>) {
        bench_service(b, tower::limit::ConcurrencyLimit::new(bare(), 1_000_000));
    }

    #[divan::bench]
    fn breaker_default(b: Bencher<'_, '_>) {
        let layer = CircuitBreakerLayer::new();
        bench_service(b, layer.layer(bare()));
    }

    #[divan::bench]
    fn breaker_fail_fast(b: Bencher<'_, '_>) {
        let layer = CircuitBreakerLayer::builder().fail_fast().build().unwrap();
        bench_service(b, layer.layer(bare()));
    }

    #[divan::bench]
    fn breaker_count_window_rate(b: Bencher<'_, '_>) {
        let layer = CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(100)
            .build()
            .unwrap();
        bench_service(b, layer.layer(bare()));
    }

    #[divan::bench]
    fn breaker_time_window_rate_slow(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let layer = CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .time_window(Duration::from_secs(60))
            .slow_calls(Duration::from_secs(10), 0.8)
            .build()
            .unwrap();
        bench_service(b, layer.layer(bare()));
    }

    #[divan::bench]
    fn peer_recloser(b: Bencher<'_, '_>) {
        let recloser: recloser::AsyncRecloser = recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(100)
            .open_wait(Duration::from_secs(60))
            .build()
            .into();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            let mut future = std::pin::pin!(recloser.call(ready(Ok::<u64, Never>(black_box(x)))));
            if let Poll::Ready(r) = future.as_mut().poll(&mut cx) {
                black_box(r.is_ok());
            }
        });
    }

    #[divan::bench]
    fn peer_failsafe(b: Bencher<'_, '_>) {
        use failsafe::futures::CircuitBreaker as _;
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                5,
                failsafe::backoff::constant(Duration::from_secs(60)),
            ))
            .build();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            let mut future = std::pin::pin!(breaker.call(ready(Ok::<u64, Never>(black_box(x)))));
            if let Poll::Ready(r) = future.as_mut().poll(&mut cx) {
                black_box(r.is_ok());
            }
        });
    }

    #[divan::bench]
    fn peer_tower_resilience(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .wait_duration_in_open(Duration::from_secs(60))
            .permitted_calls_in_half_open(3)
            .build()
            .unwrap();
        let svc = layer.layer(bare());
        // Its futures may need the runtime (async mutex); drive them on it.
        let mut svc = svc;
        b.bench_local(|| {
            rt.block_on(async {
                let r = svc.ready().await.unwrap().call(black_box(1)).await;
                black_box(r.is_ok());
            })
        });
    }

    #[divan::bench]
    fn z_bare_on_block_on(b: Bencher<'_, '_>) {
        // The baseline for `peer_tower_resilience`, which needs `block_on` per call.
        let rt = runtime();
        let mut svc = bare();
        b.bench_local(|| {
            rt.block_on(async {
                let r = svc.ready().await.unwrap().call(black_box(1)).await;
                black_box(r.is_ok());
            })
        });
    }
}
