//! Two threads on one shared instance: aggregate calls per second with one thread, then with two
//! threads each holding its own clone of the *same* breaker (or bulkhead, or peer), in one
//! process; the ratio two/one is the scaling. `bare` is the ceiling: the machine's own scaling
//! with nothing shared.
//!
//! On a loaded machine the second thread may not get a core of its own, and then no scaling
//! can show; so each measurement also reports how many cores the threads actually got (their
//! CPU time, from `/proc/thread-self/schedstat`, over the wall time). `bare`'s ratio is the
//! ceiling the machine allowed in that run.
//!
//! Run: `cargo bench -p tower-breaker-benches --bench scaling` (`SCALING_MS` sets the time per
//! measurement, default 500; `SCALING_ROUNDS` the rounds, default 3, whose median is reported).
//! Arguments after `--` keep only the variants whose name contains one of them, e.g.
//! `-- bare breaker_default keyed`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// This thread's CPU time so far (Linux), or `None`.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Calls per second summed over the threads, and the cores they got (CPU time / wall time).
fn run(
    maker: &Maker,
    threads: usize,
    for_how_long: Duration,
    rt: &tokio::runtime::Handle,
) -> (f64, f64) {
    let barrier = Barrier::new(threads);
    let counts: Vec<(u64, Duration, Option<Duration>)> = std::thread::scope(|scope| {
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
                    let cpu_start = thread_cpu_time();
                    let start = Instant::now();
                    let mut n = 0u64;
                    loop {
                        for _ in 0..1024 {
                            call(n);
                            n += 1;
                        }
                        let elapsed = start.elapsed();
                        if elapsed >= for_how_long {
                            let cpu = thread_cpu_time()
                                .zip(cpu_start)
                                .map(|(end, start)| end.saturating_sub(start));
                            return (n, elapsed, cpu);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rate = counts
        .iter()
        .map(|(n, elapsed, _)| *n as f64 / elapsed.as_secs_f64())
        .sum();
    let cores = counts
        .iter()
        .map(|(_, elapsed, cpu)| cpu.map_or(f64::NAN, |c| c.as_secs_f64() / elapsed.as_secs_f64()))
        .sum();
    (rate, cores)
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
    // `cargo bench` passes `--bench`; every other argument filters the variants by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!(
        "{:<38} {:>12} {:>12} {:>8} {:>11}",
        "variant (one shared instance)", "1 thread /s", "2 threads /s", "2t / 1t", "cores (2t)"
    );
    for name in VARIANTS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let maker = maker(name);
        let mut one = Vec::new();
        let mut two = Vec::new();
        let mut cores = Vec::new();
        for _ in 0..rounds {
            one.push(run(&maker, 1, for_how_long, rt.handle()).0);
            let (rate, c) = run(&maker, 2, for_how_long, rt.handle());
            two.push(rate);
            cores.push(c);
        }
        let (one, two, cores) = (median(one), median(two), median(cores));
        println!(
            "{:<38} {:>12.0} {:>12.0} {:>8.2} {:>11.2}",
            name,
            one,
            two,
            two / one,
            cores
        );
    }
}
