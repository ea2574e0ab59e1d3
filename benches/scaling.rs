//! Two threads on one shared instance: aggregate calls per second with one thread, then with two
//! threads each holding its own clone of the *same* breaker (or bulkhead, or peer), in one
//! process; the ratio two/one is the scaling. `bare` is the ceiling: the machine's own scaling
//! with nothing shared.
//!
//! Run: `cargo bench --bench scaling` (`SCALING_MS` sets the time per measurement, default 500;
//! `SCALING_ROUNDS` the rounds, default 3, whose median is reported).

use std::sync::Barrier;
use std::time::{Duration, Instant};

mod common;
use common::*;

fn run(maker: &Maker, threads: usize, for_how_long: Duration, rt: &tokio::runtime::Handle) -> f64 {
    let barrier = Barrier::new(threads);
    let counts: Vec<(u64, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut call = maker();
                let barrier = &barrier;
                scope.spawn(move || {
                    let _guard = rt.enter();
                    // Warm-up (thread-local stripe index, caches).
                    for i in 0..10_000 {
                        call(i);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    loop {
                        for _ in 0..1024 {
                            call(n);
                            n += 1;
                        }
                        let elapsed = start.elapsed();
                        if elapsed >= for_how_long {
                            return (n, elapsed);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    counts
        .iter()
        .map(|(n, elapsed)| *n as f64 / elapsed.as_secs_f64())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let ms: u64 = std::env::var("SCALING_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rounds: usize = std::env::var("SCALING_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let for_how_long = Duration::from_millis(ms);
    println!(
        "{:<40} {:>14} {:>14} {:>8}",
        "variant (one shared instance)", "1 thread /s", "2 threads /s", "2t / 1t"
    );
    for name in VARIANTS {
        let maker = maker(name);
        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..rounds {
            one.push(run(&maker, 1, for_how_long, rt.handle()));
            two.push(run(&maker, 2, for_how_long, rt.handle()));
        }
        let (one, two) = (median(one), median(two));
        println!(
            "{:<40} {:>14.0} {:>14.0} {:>8.2}",
            name,
            one,
            two,
            two / one
        );
    }
}
