//! Breaker and bulkhead series for Prometheus, served from axum next to a `/health` summary.
//!
//! The example installs the Prometheus recorder, registers a breaker and a bulkhead with
//! `tower_breaker::metrics::Metrics`, and serves on 127.0.0.1 (a free port):
//! - `/metrics`: `metrics.report()` (pushes the latest totals), then the Prometheus text;
//! - `/health`: a one-line-per-circuit summary from `HealthCheck`, 200 or 503.
//!
//! It then sends calls through the breaker to a dependency that goes down, until the circuit
//! trips and a call is rejected, scrapes its own `/metrics` and `/health` over HTTP, prints
//! both, shuts the server down and exits.
//!
//! Run with `cargo run --example prometheus --features metrics`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer};
use tower_breaker::health::HealthCheck;
use tower_breaker::metrics::Metrics;
use tower_breaker::BoxError;

/// GET /metrics: the latest totals, in Prometheus' text format.
async fn scrape(metrics: Metrics, prometheus: PrometheusHandle) -> impl IntoResponse {
    metrics.report();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus.render(),
    )
}

/// GET /health: the summary and one line per circuit; 503 when unhealthy.
async fn health(check: HealthCheck) -> impl IntoResponse {
    let report = check.report();
    let mut body = format!("{}\n", report.summary);
    for circuit in &report.circuits {
        body += &format!(
            "{}: {} (failure rate {:.0} %)\n",
            circuit.name,
            circuit.state,
            circuit.failure_rate * 100.0
        );
    }
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The recorder first: `Metrics` binds its handles to the recorder current when a breaker is
    // registered. The idle timeout drops series nobody reports any more (evicted keyed
    // breakers); it must be longer than the scrape interval.
    let prometheus = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(300)))
        .install_recorder()?;

    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .fail_fast()
        .build()?;
    let bulkhead = BulkheadLayer::builder()
        .name("inventory")
        .max_concurrent(8)
        .max_queue(16)
        .build()?;
    let metrics = Metrics::new()
        .breaker(breaker.handle())
        .bulkhead(bulkhead.handle());
    let check = HealthCheck::new().with_handle(breaker.handle());

    let app = Router::new()
        .route(
            "/metrics",
            get(move || scrape(metrics.clone(), prometheus.clone())),
        )
        .route("/health", get(move || health(check.clone())));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving http://{addr}/metrics and http://{addr}/health\n");

    // The dependency answers the first four calls, then goes down.
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(bulkhead)
        .service(service_fn(|order: u32| async move {
            if order < 4 {
                Ok(order)
            } else {
                Err::<u32, BoxError>("inventory service unavailable".into())
            }
        }));
    for order in 0.. {
        match svc.ready().await?.call(order).await {
            Ok(_) => println!("order {order}: ok"),
            Err(e) if e.is::<CircuitOpen>() => {
                println!("order {order}: rejected ({e})");
                break;
            }
            Err(e) => println!("order {order}: failed ({e})"),
        }
    }

    let client = reqwest::Client::new();
    let scraped = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    println!("\nGET /metrics\n{scraped}");
    let response = client.get(format!("http://{addr}/health")).send().await?;
    let status = response.status();
    println!("GET /health -> {status}\n{}", response.text().await?);

    // What a reader should see above, checked so that the example cannot silently rot.
    for line in [
        r#"tower_breaker_circuit_state{name="inventory",state="open"} 1"#,
        r#"tower_breaker_calls_total{name="inventory",outcome="success"} 4"#,
        r#"tower_breaker_calls_total{name="inventory",outcome="failure"} 3"#,
        r#"tower_breaker_calls_total{name="inventory",outcome="rejected"} 1"#,
        r#"tower_breaker_transitions_total{name="inventory",from="closed",to="open"} 1"#,
        r#"tower_breaker_bulkhead_active{name="inventory"} 0"#,
    ] {
        assert!(scraped.lines().any(|l| l == line), "missing: {line}");
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let _ = stop.send(());
    server.await??;
    Ok(())
}
