//! Per-call overhead in the closed state over a bare `service_fn`, single task, one process;
//! plus the open-state rejection cost in fail-fast mode and the cost of one clock read.
//!
//! Every variant drives the same loop body: `poll_ready` + `call` + poll the future to
//! completion with a no-op waker, on an inner service whose future is already ready — so the
//! differences are the middleware's own cost. Every variant runs with a current-thread Tokio
//! runtime entered, as a user's would. Peers and their configurations: see
//! `benches/common/mod.rs`. Run: `cargo bench -p tower-breaker-benches --bench overhead`.

use std::future::Future;
use std::hint::black_box;
use std::task::Context;

use divan::Bencher;
use tower::Service;
use tower_layer::Layer;

mod common;
use common::*;

/// Iterations per sample, the same for every variant. Left to itself, divan sizes samples from
/// a variant's first runs, and after a slow first run it sometimes picked 100-iteration samples,
/// whose per-call times came out up to 2× the steady state (harness work between samples
/// evicts what the variant keeps warm) — for ours and the peers alike, at random.
const SAMPLE_SIZE: u32 = 2_000;

fn main() {
    divan::Divan::from_args().sample_size(SAMPLE_SIZE).main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_service<S: Service<u64>>(bencher: Bencher<'_, '_>, mut svc: S) {
    let rt = runtime();
    let _guard = rt.enter();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut x = 0u64;
    bencher.bench_local(|| {
        x = x.wrapping_add(1);
        drive(&mut svc, &mut cx, black_box(x));
    });
}

mod closed_single_thread {
    use super::*;

    #[divan::bench]
    fn a_bare(b: Bencher<'_, '_>) {
        bench_service(b, bare());
    }

    #[divan::bench]
    fn tower_concurrency_limit(b: Bencher<'_, '_>) {
        bench_service(b, concurrency_limit());
    }

    #[divan::bench]
    fn breaker_default(b: Bencher<'_, '_>) {
        bench_service(b, breaker_default_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_fail_fast(b: Bencher<'_, '_>) {
        bench_service(b, breaker_fail_fast_layer().layer(bare()));
    }

    /// A keyed breaker (default breaker settings, so fail-fast), every call on one key.
    #[divan::bench]
    fn keyed_one_key(b: Bencher<'_, '_>) {
        bench_service(b, keyed_layer(one_key).layer(bare()));
    }

    /// The same, the calls cycling over eight keys.
    #[divan::bench]
    fn keyed_eight_keys(b: Bencher<'_, '_>) {
        bench_service(b, keyed_layer(eight_keys).layer(bare()));
    }

    #[divan::bench]
    fn breaker_count_window_rate(b: Bencher<'_, '_>) {
        bench_service(b, breaker_count_window_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_time_window_rate_slow(b: Bencher<'_, '_>) {
        bench_service(b, breaker_time_window_slow_layer().layer(bare()));
    }

    #[divan::bench]
    fn bulkhead(b: Bencher<'_, '_>) {
        bench_service(b, bulkhead_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_plus_bulkhead(b: Bencher<'_, '_>) {
        let svc = breaker_default_layer().layer(bulkhead_layer().layer(bare()));
        bench_service(b, svc);
    }

    #[divan::bench]
    fn peer_recloser(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let recloser = recloser();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            drive_recloser(&recloser, &mut cx, x);
        });
    }

    #[divan::bench]
    fn peer_failsafe(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let breaker = failsafe_breaker();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            drive_failsafe(&breaker, &mut cx, x);
        });
    }

    #[divan::bench]
    fn peer_tower_resilience_circuitbreaker(b: Bencher<'_, '_>) {
        // Its boxed futures complete on the first poll (an uncontended async mutex), so it is
        // driven by the same loop as every other service.
        bench_service(b, tr_breaker());
    }

    #[divan::bench]
    fn peer_tower_resilience_bulkhead(b: Bencher<'_, '_>) {
        bench_service(b, tr_bulkhead());
    }
}

/// A fresh clone of the service per call, dropped after it (as axum does per request): a
/// keyed breaker's clone then has no key of its own yet, so every call looks its key up in the
/// shared map; next to the plain breaker used the same way.
mod clone_per_call {
    use super::*;

    fn bench_clones<S: Service<u64> + Clone>(bencher: Bencher<'_, '_>, svc: S) {
        let rt = runtime();
        let _guard = rt.enter();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        bencher.bench_local(|| {
            x = x.wrapping_add(1);
            drive(&mut svc.clone(), &mut cx, black_box(x));
        });
    }

    #[divan::bench]
    fn breaker_default(b: Bencher<'_, '_>) {
        bench_clones(b, breaker_default_layer().layer(bare()));
    }

    #[divan::bench]
    fn keyed_one_key(b: Bencher<'_, '_>) {
        bench_clones(b, keyed_layer(one_key).layer(bare()));
    }

    #[divan::bench]
    fn keyed_eight_keys(b: Bencher<'_, '_>) {
        bench_clones(b, keyed_layer(eight_keys).layer(bare()));
    }
}

/// The same services with and without registration with `tower_breaker::metrics::Metrics`, a
/// recorder installed globally (for every variant of the run) and a report pushed before
/// measuring: the series are pushed by reports and transition listeners, so the registered
/// variants should cost what the unregistered ones do. Run alone with
/// `cargo bench -p tower-breaker-benches --bench overhead -- metrics_registered`.
mod metrics_registered {
    use super::*;
    use std::sync::OnceLock;
    use tower_breaker::metrics::Metrics;

    /// Installs the global recorder once per process, so the two variants of each pair run
    /// under the same recorder.
    fn recorder() {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            metrics_util::debugging::DebuggingRecorder::new()
                .install()
                .expect("the only recorder");
        });
    }

    /// Reports once before the loop, so every series exists and holds values, and once after,
    /// so the registration stays alive through the measurement.
    fn registered<S: Service<u64>>(b: Bencher<'_, '_>, metrics: Metrics, svc: S) {
        metrics.report();
        bench_service(b, svc);
        metrics.report();
    }

    #[divan::bench]
    fn breaker_a_unregistered(b: Bencher<'_, '_>) {
        recorder();
        bench_service(b, breaker_default_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_registered(b: Bencher<'_, '_>) {
        recorder();
        let layer = breaker_default_layer();
        let metrics = Metrics::new().breaker(layer.handle());
        registered(b, metrics, layer.layer(bare()));
    }

    #[divan::bench]
    fn breaker_plus_bulkhead_a_unregistered(b: Bencher<'_, '_>) {
        recorder();
        let svc = breaker_default_layer().layer(bulkhead_layer().layer(bare()));
        bench_service(b, svc);
    }

    #[divan::bench]
    fn breaker_plus_bulkhead_registered(b: Bencher<'_, '_>) {
        recorder();
        let breaker = breaker_default_layer();
        let bulkhead = bulkhead_layer();
        let metrics = Metrics::new()
            .breaker(breaker.handle())
            .bulkhead(bulkhead.handle());
        registered(b, metrics, breaker.layer(bulkhead.layer(bare())));
    }

    #[divan::bench]
    fn keyed_eight_keys_a_unregistered(b: Bencher<'_, '_>) {
        recorder();
        bench_service(b, keyed_layer(eight_keys).layer(bare()));
    }

    #[divan::bench]
    fn keyed_eight_keys_registered(b: Bencher<'_, '_>) {
        recorder();
        let layer = keyed_layer(eight_keys);
        let mut svc = layer.layer(bare());
        // The eight keys exist before registration, so the first report sees them all.
        {
            let rt = runtime();
            let _guard = rt.enter();
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            for x in 0..8 {
                drive(&mut svc, &mut cx, x);
            }
        }
        let metrics = Metrics::new().keyed("bench", &layer.breakers());
        registered(b, metrics, svc);
    }
}

/// A breaker shared with a `tower_breaker::fleet::Fleet` next to the same breaker unshared, in
/// one run: sharing adds a transition listener and a failure hook, never work on an admitted
/// success. The fleet's task runs on a runtime of its own (another thread), against
/// `TOWER_BREAKER_BENCH_REDIS` if set (e.g. `redis://127.0.0.1:6379/`), else a port where
/// nothing listens (it keeps reconnecting meanwhile); either way the call path is the same.
/// `cargo bench -p tower-breaker-benches --bench overhead -- fleet_shared`.
mod fleet_shared {
    use super::*;
    use tower_breaker::fleet::Fleet;

    #[divan::bench]
    fn breaker_a_unshared(b: Bencher<'_, '_>) {
        bench_service(b, breaker_default_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_shared(b: Bencher<'_, '_>) {
        let fleet_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let url = std::env::var("TOWER_BREAKER_BENCH_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:1/".to_owned());
        let fleet = Fleet::builder()
            .url(url)
            .fleet("bench")
            .runtime(fleet_rt.handle().clone())
            .build()
            .unwrap();
        let layer = breaker_default_layer();
        fleet.share(&layer.handle());
        bench_service(b, layer.layer(bare()));
        fleet.shutdown();
    }
}

/// `Failover` over three members (each breaker + bulkhead over the bare service), the primary
/// healthy, against calling the primary's stack directly: what routing costs when nothing is
/// wrong. With `resend_failures`, each call also keeps a copy of its request and clones of the
/// later members, so it can go on to them.
mod failover {
    use super::*;
    use tower_breaker::failover::{Failover, Resend};

    fn member() -> impl Service<u64, Response = u64, Error = tower_breaker::BoxError> + Clone {
        breaker_default_layer().layer(bulkhead_layer().layer(bare()))
    }

    #[divan::bench]
    fn a_primary_stack_direct(b: Bencher<'_, '_>) {
        bench_service(b, member());
    }

    #[divan::bench]
    fn three_members(b: Bencher<'_, '_>) {
        bench_service(b, Failover::new([member(), member(), member()]));
    }

    #[divan::bench]
    fn three_members_resend_failures(b: Bencher<'_, '_>) {
        let failover =
            Failover::new([member(), member(), member()]).resend_failures(Resend::cloned());
        bench_service(b, failover);
    }
}

/// The same calls written the way an application writes them — `svc.ready().await?.call(x).await`
/// for tower services, `breaker.call(future).await` for recloser and failsafe — inside an
/// `async` block polled once per iteration. Compared with `closed_single_thread` (which drives
/// `poll_ready`/`call`/`poll` by hand), this shows how much of each figure depends on the
/// harness rather than on the middleware.
mod async_style {
    use super::*;
    use tower::ServiceExt;

    fn poll_once<F: Future>(cx: &mut Context<'_>, future: F) {
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                black_box(&out);
            }
            std::task::Poll::Pending => panic!("not ready"),
        }
    }

    fn bench_tower<S: Service<u64>>(b: Bencher<'_, '_>, mut svc: S) {
        let rt = runtime();
        let _guard = rt.enter();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            let x = black_box(x);
            poll_once(&mut cx, async {
                match svc.ready().await {
                    Ok(ready) => ready.call(x).await.is_ok(),
                    Err(_) => panic!("not ready"),
                }
            });
        });
    }

    #[divan::bench]
    fn a_bare(b: Bencher<'_, '_>) {
        bench_tower(b, bare());
    }

    #[divan::bench]
    fn breaker_default(b: Bencher<'_, '_>) {
        bench_tower(b, breaker_default_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_count_window_rate(b: Bencher<'_, '_>) {
        bench_tower(b, breaker_count_window_layer().layer(bare()));
    }

    #[divan::bench]
    fn breaker_time_window_rate_slow(b: Bencher<'_, '_>) {
        bench_tower(b, breaker_time_window_slow_layer().layer(bare()));
    }

    #[divan::bench]
    fn peer_recloser(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let recloser = recloser();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            let x = black_box(x);
            poll_once(&mut cx, async {
                recloser.call(bare_future(x)).await.is_ok()
            });
        });
    }

    #[divan::bench]
    fn peer_failsafe(b: Bencher<'_, '_>) {
        use failsafe::futures::CircuitBreaker as _;
        let rt = runtime();
        let _guard = rt.enter();
        let breaker = failsafe_breaker();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            let x = black_box(x);
            poll_once(&mut cx, async {
                breaker.call(bare_future(x)).await.is_ok()
            });
        });
    }

    #[divan::bench]
    fn peer_tower_resilience_circuitbreaker(b: Bencher<'_, '_>) {
        bench_tower(b, tr_breaker());
    }
}

/// Fail-fast mode with the circuit forced open: `poll_ready` is ready and `call` returns a
/// `CircuitOpen` error (boxed into `BoxError`: one allocation, the only one a rejection makes).
mod open_fail_fast {
    use super::*;

    #[divan::bench]
    fn breaker_rejection(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let layer = breaker_fail_fast_layer();
        layer.handle().force_open();
        let mut svc = layer.layer(bare());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut x = 0u64;
        b.bench_local(|| {
            x = x.wrapping_add(1);
            drive_rejected(&mut svc, &mut cx, black_box(x));
        });
    }

    /// failsafe, tripped by 5 failures: its future rejects without polling the inner one.
    #[divan::bench]
    fn peer_failsafe_rejection(b: Bencher<'_, '_>) {
        use failsafe::futures::CircuitBreaker as _;
        let rt = runtime();
        let _guard = rt.enter();
        let breaker = failsafe_breaker();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            let mut f = std::pin::pin!(breaker.call(std::future::ready(Err::<u64, _>(Never))));
            let _ = f.as_mut().poll(&mut cx);
        }
        assert!(!breaker.is_call_permitted());
        b.bench_local(|| {
            let mut f = std::pin::pin!(breaker.call(bare_future(1)));
            match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => assert!(black_box(r.is_err())),
                std::task::Poll::Pending => panic!("a rejection must be immediate"),
            }
        });
    }

    /// recloser, tripped by a full ring of failures.
    #[divan::bench]
    fn peer_recloser_rejection(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        let recloser = recloser();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..200 {
            let mut f = std::pin::pin!(recloser.call(std::future::ready(Err::<u64, _>(Never))));
            let _ = f.as_mut().poll(&mut cx);
        }
        b.bench_local(|| {
            let mut f = std::pin::pin!(recloser.call(bare_future(1)));
            match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => assert!(black_box(r.is_err())),
                std::task::Poll::Pending => panic!("a rejection must be immediate"),
            }
        });
    }
}

/// Building blocks: one clock read, for reading the time-window and slow-call figures (each
/// such call reads the clock twice), and one `Arc` clone + drop. `tokio::time::Instant::now()` is what the crate uses; with tokio's `test-util`
/// feature (on in dev builds) it is one extra atomic load unless some test paused the clock.
mod clock {
    use super::*;

    #[divan::bench]
    fn std_instant_now(b: Bencher<'_, '_>) {
        b.bench_local(std::time::Instant::now);
    }

    /// The `Arc` clone + drop the breaker's response future makes per call (two locked
    /// read-modify-writes), for reading the breaker's figures.
    #[divan::bench]
    fn arc_clone_drop(b: Bencher<'_, '_>) {
        let arc = std::sync::Arc::new(0u64);
        b.bench_local(|| drop(black_box(arc.clone())));
    }

    #[divan::bench]
    fn tokio_instant_now(b: Bencher<'_, '_>) {
        let rt = runtime();
        let _guard = rt.enter();
        b.bench_local(tokio::time::Instant::now);
    }
}
