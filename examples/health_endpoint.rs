//! A `/health` endpoint over three provider circuits, served by axum: 200 with the JSON report
//! while healthy, 503 with the same JSON when half or more of the circuits are open (the seed's
//! FastAPI endpoint).
//!
//! The example starts the server on 127.0.0.1 (a free port), asks it for `/health` three times
//! over a plain TCP connection — all closed, then two of three circuits tripped by failing calls,
//! then after recovery — prints each answer, and exits.
//!
//! Run with `cargo run --example health_endpoint --features serde`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle};
use tower_breaker::health::HealthCheck;
use tower_breaker::BoxError;
use tower_layer::Layer;

/// GET /health: the report as JSON, 200 when healthy, 503 when not.
async fn health(check: HealthCheck) -> impl IntoResponse {
    let report = check.report();
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&report).expect("a report always serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// One HTTP/1.1 GET over a fresh connection; returns the status code and body.
async fn get_health(addr: std::net::SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// Trips `handle`'s circuit by sending failing calls through its breaker.
async fn fail_until_open(layer: &CircuitBreakerLayer, handle: &Handle) -> Result<(), BoxError> {
    let mut svc = layer.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>("provider down".into())
    }));
    while handle.state() != tower_breaker::circuit_breaker::State::Open {
        let _ = svc.ready().await?.call(()).await;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The seed's three providers.
    let make = |name: &str, failures, secs| {
        CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(failures)
            .open_duration(Duration::from_secs(secs))
            .build()
    };
    let openai = make("openai", 5, 60)?;
    let azure = make("azure", 5, 60)?;
    let anthropic = make("anthropic", 3, 120)?;
    let check = HealthCheck::new()
        .with("openai", openai.handle())
        .with("azure", azure.handle())
        .with("anthropic", anthropic.handle());

    let app = Router::new().route(
        "/health",
        get({
            let check = check.clone();
            move || health(check.clone())
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving http://{addr}/health");

    let mut statuses = Vec::new();
    let ask = |label: &'static str| async move {
        let (status, body) = get_health(addr).await?;
        println!("\n== {label}: GET /health -> {status}\n{body}");
        Ok::<u16, std::io::Error>(status)
    };

    statuses.push(ask("all circuits closed").await?);

    fail_until_open(&openai, &openai.handle()).await?;
    fail_until_open(&anthropic, &anthropic.handle()).await?;
    statuses.push(ask("openai and anthropic tripped").await?);

    openai.handle().force_closed();
    statuses.push(ask("openai closed by hand").await?);

    stop.send(()).ok();
    server.await??;

    assert_eq!(
        statuses,
        vec![200, 503, 200],
        "healthy, unhealthy, healthy again"
    );
    println!("\nstatuses: {statuses:?}");
    Ok(())
}
