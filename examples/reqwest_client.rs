//! A `reqwest::Client` behind a circuit breaker and a bulkhead, against a loopback
//! server that fails three times and then recovers.
//!
//! Run with `cargo run --example reqwest_client --features http`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Classify, DefaultClassifier};
use tower_breaker::http::HttpClassifier;

#[tokio::main]
async fn main() -> Result<(), tower_breaker::BoxError> {
    // A server whose first three answers are 500s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let server_hits = hits.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let hits = server_hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let status = if n < 3 { 500 } else { 200 };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(format!("answer #{n}"))))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    // reqwest's response is not an `http::Response`: classify it from its status and headers.
    let http = HttpClassifier::new();
    let classify = move |result: Result<&reqwest::Response, &tower_breaker::BoxError>| match result
    {
        Ok(res) => http.classify_parts(res.status(), res.headers()),
        Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
    };
    let breaker = CircuitBreakerLayer::builder()
        .name("api")
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(500))
        .half_open_permits(1)
        .success_threshold(1)
        .classifier(classify)
        .build()?;
    let handle = breaker.handle();
    handle.on_transition(|t| println!("  transition: {:?} -> {:?} ({:?})", t.from, t.to, t.reason));

    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        // This crate's bulkhead, inside the breaker: at most 8 calls in flight, 100 waiting;
        // its own rejections are local backpressure, which the classifier's error arm ignores.
        .layer(
            tower_breaker::bulkhead::BulkheadLayer::builder()
                .name("api")
                .max_concurrent(8)
                .build()?,
        )
        .service(client.clone());

    for attempt in 1..=5 {
        // Default mode: while the circuit is open, `ready()` waits (here ~0.5 s) instead of
        // failing; the request then goes out as a half-open probe.
        let ready = svc.ready().await?;
        let res = ready
            .call(client.get(format!("http://{addr}/")).build()?)
            .await?;
        println!("attempt {attempt}: {} {}", res.status(), res.text().await?);
    }
    let stats = handle.stats();
    println!(
        "circuit {:?}: {} successes, {} failures; the server saw {} requests",
        stats.state,
        stats.successful_calls,
        stats.failed_calls,
        hits.load(Ordering::SeqCst)
    );
    server.abort();
    Ok(())
}
