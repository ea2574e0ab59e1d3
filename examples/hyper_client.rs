//! A hyper-util client behind a fail-fast circuit breaker, against a loopback server that
//! answers `503 Service Unavailable` with `Retry-After: 2`.
//!
//! Run with `cargo run --example hyper_client --features http`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer};
use tower_breaker::http::EndOfStream;

#[tokio::main]
async fn main() -> Result<(), tower_breaker::BoxError> {
    // A server that is "overloaded": every request gets 503 with a back-off hint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::SERVICE_UNAVAILABLE)
                            .header("retry-after", "2")
                            .body(Full::new(Bytes::from("overloaded, come back in 2 s")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let breaker = CircuitBreakerLayer::builder()
        .name("backend")
        .fail_fast()
        .retry_after_bounds(Duration::from_millis(100), Duration::from_secs(60))
        // Decide from the status; a 2xx stream would be judged at its end.
        .response_classifier(EndOfStream::new())
        .build()?;
    let handle = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(breaker).service(client);
    let url = format!("http://{addr}/");

    for attempt in 1..=3 {
        let req = Request::get(&url).body(Empty::new())?;
        match svc.ready().await?.call(req).await {
            Ok(res) => {
                let status = res.status();
                let retry_after = res.headers().get("retry-after").cloned();
                let body = res.into_body().collect().await?.to_bytes();
                println!("attempt {attempt}: {status} (Retry-After: {retry_after:?}) {body:?}");
            }
            Err(err) => match err.downcast_ref::<CircuitOpen>() {
                Some(open) => println!(
                    "attempt {attempt}: rejected by circuit `{}`, retry in {:?}",
                    open.name(),
                    open.retry_after().unwrap_or_default()
                ),
                None => println!("attempt {attempt}: transport error: {err}"),
            },
        }
        println!("  circuit: {:?}", handle.state());
    }
    let stats = handle.stats();
    println!(
        "calls: {} (failed {}, throttled {}, rejected {}), open for {:?}",
        stats.total_calls,
        stats.failed_calls,
        stats.throttled_calls,
        stats.rejected_calls,
        stats.retry_after
    );
    server.abort();
    Ok(())
}
