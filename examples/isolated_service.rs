//! The seed's `IsolatedLLMService`: a separate bulkhead and circuit breaker per operation
//! (chat 10, embeddings 20, tools 5 concurrent calls), so a hung `tools` backend cannot slow
//! `chat` or `embeddings` down.
//!
//! Each operation is `breaker (fail-fast) → bulkhead → timeout → backend`: the timeout turns a
//! hung call into a failure the breaker counts; the bulkhead's own rejections are ignored by the
//! breaker (local backpressure, not a sick backend).
//!
//! Runs on tokio's paused clock, so the 30-second timeouts take no real time:
//! `cargo run --example isolated_service`.

use std::time::Duration;

use tokio::time::Instant;
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::{self, BulkheadLayer};
use tower_breaker::circuit_breaker::{self, CircuitBreakerLayer};
use tower_breaker::BoxError;

type Operation = BoxCloneService<String, String, BoxError>;

/// One isolated operation: its service and the handles to watch it.
struct Isolated {
    service: Operation,
    breaker: circuit_breaker::Handle,
    bulkhead: bulkhead::Handle,
}

/// A fake backend that answers after `latency` (or never, for a hung one).
fn backend(name: &'static str, latency: Option<Duration>) -> Operation {
    BoxCloneService::new(service_fn(move |request: String| async move {
        match latency {
            Some(latency) => {
                tokio::time::sleep(latency).await;
                Ok::<_, BoxError>(format!("{name}({request})"))
            }
            None => std::future::pending().await,
        }
    }))
}

fn isolate(
    name: &'static str,
    max_concurrent: usize,
    timeout: Duration,
    backend: Operation,
) -> Isolated {
    let breaker = CircuitBreakerLayer::builder()
        .name(name)
        .fail_fast()
        .build()
        .expect("valid breaker");
    let bulkhead = BulkheadLayer::builder()
        .name(name)
        .max_concurrent(max_concurrent)
        .max_queue(100)
        .max_wait(timeout)
        .build()
        .expect("valid bulkhead");
    let (breaker_handle, bulkhead_handle) = (breaker.handle(), bulkhead.handle());
    let service = ServiceBuilder::new()
        .layer(breaker)
        .layer(bulkhead)
        .layer(TimeoutLayer::new(timeout))
        .service(backend);
    Isolated {
        service: BoxCloneService::new(service),
        breaker: breaker_handle,
        bulkhead: bulkhead_handle,
    }
}

/// The seed's `IsolatedLLMService`.
struct IsolatedLlmService {
    chat: Isolated,
    embeddings: Isolated,
    tools: Isolated,
}

impl IsolatedLlmService {
    fn new() -> Self {
        let timeout = Duration::from_secs(30);
        IsolatedLlmService {
            chat: isolate(
                "chat",
                10,
                timeout,
                backend("chat", Some(Duration::from_millis(200))),
            ),
            embeddings: isolate(
                "embeddings",
                20,
                Duration::from_secs(10),
                backend("embed", Some(Duration::from_millis(50))),
            ),
            // The tools backend hangs.
            tools: isolate("tools", 5, timeout, backend("tool", None)),
        }
    }
}

/// Sends one request and returns how long it took and whether it succeeded.
async fn send(mut svc: Operation, request: String) -> (Duration, Result<String, BoxError>) {
    let start = Instant::now();
    let result = match svc.ready().await {
        Ok(svc) => svc.call(request).await,
        Err(e) => Err(e),
    };
    (start.elapsed(), result)
}

fn summary(label: &str, results: &[(Duration, Result<String, BoxError>)]) {
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    let slowest = results.iter().map(|(d, _)| *d).max().unwrap_or_default();
    println!(
        "  {label:<11} {ok:>2}/{} ok, slowest {:>6.1} s",
        results.len(),
        slowest.as_secs_f64()
    );
    let mut errors: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    errors.sort();
    errors.dedup();
    for error in errors {
        println!("  {:<11} error: {error}", "");
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let service = IsolatedLlmService::new();
    println!(
        "tools backend is hung; sending 20 tool calls, then 30 chats and 40 embeddings at once\n"
    );

    let tools: Vec<_> = (0..20)
        .map(|i| tokio::spawn(send(service.tools.service.clone(), format!("tool-{i}"))))
        .collect();
    tokio::task::yield_now().await;
    let tools_stats = service.tools.bulkhead.stats();
    println!(
        "tools bulkhead while hung: {} running, {} queued, {} free",
        tools_stats.active, tools_stats.queued, tools_stats.available
    );

    let chats: Vec<_> = (0..30)
        .map(|i| tokio::spawn(send(service.chat.service.clone(), format!("prompt-{i}"))))
        .collect();
    let embeddings: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(send(
                service.embeddings.service.clone(),
                format!("text-{i}"),
            ))
        })
        .collect();

    let mut chat_results = Vec::new();
    for handle in chats {
        chat_results.push(handle.await.expect("chat task"));
    }
    let mut embedding_results = Vec::new();
    for handle in embeddings {
        embedding_results.push(handle.await.expect("embedding task"));
    }
    let mut tool_results = Vec::new();
    for handle in tools {
        tool_results.push(handle.await.expect("tool task"));
    }
    println!("\nresults:");
    summary("chat", &chat_results);
    summary("embeddings", &embedding_results);
    summary("tools", &tool_results);
    println!(
        "  (the 5 running tool calls timed out at 30 s, which tripped the tools circuit; the 15\n   \
         queued ones got a slot at that moment, re-checked the circuit and were rejected without\n   \
         reaching the backend)"
    );

    // The five hung calls timed out: five failures in a row open the tools circuit, so the next
    // tool call fails at once instead of tying up a slot for 30 s.
    let (elapsed, result) = send(service.tools.service.clone(), "tool-late".into()).await;
    println!(
        "\na tool call after the trip: {} after {:.1} s",
        result
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ok".into()),
        elapsed.as_secs_f64()
    );

    println!("\nfinal status:");
    for (name, op) in [
        ("chat", &service.chat),
        ("embeddings", &service.embeddings),
        ("tools", &service.tools),
    ] {
        let b = op.breaker.stats();
        let h = op.bulkhead.stats();
        println!(
            "  {name:<11} circuit {:<9} ({} ok, {} failed, {} rejected)   bulkhead max {:>2}: {} timed out waiting, {} rejected",
            b.state.to_string(),
            b.successful_calls,
            b.failed_calls,
            b.rejected_calls,
            h.max_concurrent,
            h.timed_out,
            h.rejected
        );
    }

    // The point of the example, checked so CI notices if it stops being true.
    let chat_slowest = chat_results
        .iter()
        .map(|(d, _)| *d)
        .max()
        .unwrap_or_default();
    assert!(
        chat_results.iter().all(|(_, r)| r.is_ok()),
        "every chat succeeds"
    );
    assert!(
        chat_slowest <= Duration::from_millis(600),
        "chat is not slowed by tools"
    );
    assert!(
        embedding_results.iter().all(|(_, r)| r.is_ok()),
        "every embedding succeeds"
    );
    assert_eq!(service.tools.breaker.state(), circuit_breaker::State::Open);
}
