//! Failover across three fake LLM providers, each behind its own circuit breaker with the seed's
//! settings (openai and azure: 5 failures / 60 s; anthropic: 3 failures / 120 s).
//!
//! The story, one request every 5 s on tokio's paused clock (so it runs in milliseconds):
//! openai goes down at t = 20 s and its circuit opens after 5 failures; traffic moves to azure;
//! azure goes down too at t = 60 s and its circuit opens; traffic moves to anthropic; openai
//! recovered at t = 70 s, and when its circuit half-opens it takes the traffic
//! back (about t = 100 s: 60 s after it opened). Every request's route is printed, then the final status of every circuit.
//!
//! Run with `cargo run --example llm_failover`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::{service_fn, util::BoxCloneSyncService, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use tower_breaker::failover::Failover;
use tower_breaker::health::HealthCheck;
use tower_breaker::BoxError;
use tower_layer::Layer;

const REQUESTS: u32 = 28;

type Provider = BoxCloneSyncService<String, String, BoxError>;

/// A fake provider: answers after 200 ms, or fails while `down` is set.
fn fake_provider(name: &'static str, down: Arc<AtomicBool>) -> Provider {
    BoxCloneSyncService::new(service_fn(move |prompt: String| {
        let down = down.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if down {
                Err::<String, BoxError>(format!("{name}: 503 service unavailable").into())
            } else {
                Ok(format!("{name} says: {prompt}"))
            }
        }
    }))
}

fn breaker(name: &'static str, failures: u32, open_secs: u64) -> CircuitBreakerLayer {
    let layer = CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(failures)
        .open_duration(Duration::from_secs(open_secs))
        .build()
        .expect("valid settings");
    let start = Instant::now();
    layer.handle().on_transition(move |t| {
        let at = t.at.duration_since(start).as_secs();
        println!("          [{name}] circuit {t} at t={at}s");
    });
    layer
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let start = Instant::now();
    let down = |v| Arc::new(AtomicBool::new(v));
    let (openai_down, azure_down, anthropic_down) = (down(false), down(false), down(false));

    let settings = [("openai", 5, 60), ("azure", 5, 60), ("anthropic", 3, 120)];
    let flags = [&openai_down, &azure_down, &anthropic_down];
    let mut members: Vec<(&str, CircuitBreaker<Provider>)> = Vec::new();
    let mut health = HealthCheck::new();
    for ((name, failures, open), flag) in settings.into_iter().zip(flags) {
        let layer = breaker(name, failures, open);
        health = health.with(name, layer.handle());
        members.push((name, layer.layer(fake_provider(name, flag.clone()))));
    }
    let handles: Vec<_> = members.iter().map(|(_, s)| s.handle()).collect();
    let mut llm = Failover::with_names(members);
    let routes = llm.routes();

    let mut served = Vec::new();
    for i in 1..=REQUESTS {
        let t = start.elapsed().as_secs();
        match t {
            20 => {
                println!("--- t=20s: openai starts failing");
                openai_down.store(true, Ordering::SeqCst);
            }
            60 => {
                println!("--- t=60s: azure starts failing");
                azure_down.store(true, Ordering::SeqCst);
            }
            70 => {
                println!(
                    "--- t=70s: openai recovers (its circuit stays open for 60 s after it tripped)"
                );
                openai_down.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
        let result = match llm.ready().await {
            Ok(svc) => svc.call(format!("prompt #{i}")).await,
            Err(e) => Err(e),
        };
        let route = routes.last_name().unwrap_or_default();
        match &result {
            Ok(answer) => println!("t={t:>3}s  request {i:>2} -> {route:<9}  ok: {answer}"),
            Err(e) => println!("t={t:>3}s  request {i:>2} -> {route:<9}  error: {e}"),
        }
        served.push((route, result.is_ok()));
        // One request every 5 s (the 200 ms of latency included).
        if i == REQUESTS {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_secs(5 * u64::from(i))).await;
    }

    println!("\nfinal status:");
    for handle in &handles {
        let s = handle.stats();
        println!(
            "  {:<9} state={:<9} calls={:>2} ok={:>2} failed={:>2} failure_rate={:.2}",
            s.name,
            s.state.to_string(),
            s.total_calls,
            s.successful_calls,
            s.failed_calls,
            s.failure_rate.unwrap_or(0.0),
        );
    }
    let report = health.report();
    println!(
        "  health: {} ({})",
        if report.healthy {
            "healthy"
        } else {
            "unhealthy"
        },
        report.summary
    );

    // The story must have happened (so CI notices if it does not).
    let used = |name: &str| served.iter().any(|(r, ok)| r == name && *ok);
    assert!(
        used("azure") && used("anthropic"),
        "traffic moved down the list"
    );
    assert_eq!(
        served.last().map(|(r, ok)| (r.as_str(), *ok)),
        Some(("openai", true))
    );
    assert_eq!(handles[0].state(), State::Closed, "openai recovered");
    assert_eq!(handles[1].state(), State::Open, "azure still down");
    assert_eq!(routes.served().iter().sum::<u64>(), u64::from(REQUESTS));
}
