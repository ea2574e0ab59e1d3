//! A flaky in-process service that fails for a while and recovers, behind a circuit breaker.
//!
//! Run with `cargo run --example quickstart`. Takes about four seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer};
use tower_layer::Layer;

#[tokio::main]
async fn main() {
    let healthy = Arc::new(AtomicBool::new(true));
    let dependency = {
        let healthy = healthy.clone();
        service_fn(move |id: u32| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if healthy {
                    Ok(format!("answer #{id}"))
                } else {
                    Err(format!("dependency down (request #{id})"))
                }
            }
        })
    };

    let layer = CircuitBreakerLayer::builder()
        .name("flaky-dependency")
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(600))
        .half_open_permits(2)
        .success_threshold(2)
        .fail_fast()
        .build()
        .expect("valid configuration");
    let handle = layer.handle();
    let start = Instant::now();
    handle.on_transition(move |t| {
        println!(
            "  [{:>5.2}s] transition: {} -> {} because {}",
            t.at.duration_since(start).as_secs_f64(),
            t.from,
            t.to,
            t.reason
        );
    });
    let mut svc = layer.layer(dependency);

    println!("Sending a request every 100 ms; the dependency fails from 0.5 s to 1.8 s.\n");
    for id in 0..40u32 {
        let elapsed = start.elapsed();
        healthy.store(
            !(Duration::from_millis(500)..Duration::from_millis(1800)).contains(&elapsed),
            Ordering::SeqCst,
        );
        let result = svc
            .ready()
            .await
            .expect("never fails readiness")
            .call(id)
            .await;
        let line = match result {
            Ok(answer) => format!("ok        {answer}"),
            Err(err) => match err.downcast_ref::<CircuitOpen>() {
                Some(open) => format!(
                    "rejected  circuit open, retry in {:.0?} (dependency not called)",
                    open.retry_after().unwrap_or_default()
                ),
                None => format!("failed    {err}"),
            },
        };
        println!("{:>5.2}s  #{id:<2} {line}", elapsed.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stats = handle.stats();
    println!("\nFinal stats for `{}`:", stats.name);
    println!("  state:        {}", stats.state);
    println!(
        "  calls:        {} total, {} ok, {} failed, {} rejected without calling the dependency",
        stats.total_calls, stats.successful_calls, stats.failed_calls, stats.rejected_calls
    );
    println!(
        "  failure rate: {:.0} %",
        stats.failure_rate.unwrap_or(0.0) * 100.0
    );
    println!("  transitions:");
    for t in &stats.transitions {
        println!(
            "    {:>5.2}s  {t}",
            t.at.duration_since(start).as_secs_f64()
        );
    }
}
