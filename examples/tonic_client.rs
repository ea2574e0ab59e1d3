//! A tonic health client over a `Channel`, behind a fail-fast circuit breaker that reads
//! `grpc-status`, against tonic-health's server on loopback.
//!
//! Run with `cargo run --example tonic_client --features grpc`.

use std::time::Duration;

use tonic::transport::{server::TcpIncoming, Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::grpc::{GrpcClassifier, UnavailableOnOpenLayer};

#[tokio::main]
async fn main() -> Result<(), tower_breaker::BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let breaker = CircuitBreakerLayer::builder()
        .name("health")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(5))
        .fail_fast()
        // NOT_FOUND counts against the server here, so the example can trip it.
        .response_classifier(
            GrpcClassifier::new().failure_codes([tonic::Code::NotFound, tonic::Code::Unavailable]),
        )
        .build()?;
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        // A rejection already reaches the client as UNAVAILABLE (tonic reads the status in
        // CircuitOpen's source chain); this layer answers with a response instead of an error,
        // which matters to layers outside it.
        .layer(UnavailableOnOpenLayer::new())
        .layer(breaker)
        .service(channel);
    let mut client = HealthClient::new(svc);

    for service in ["orders", "billing", "billing", "orders"] {
        let req = HealthCheckRequest {
            service: service.into(),
        };
        match client.check(req).await {
            Ok(res) => println!("check {service}: {:?}", res.into_inner().status()),
            Err(status) => println!(
                "check {service}: {:?} {} (pushback {:?})",
                status.code(),
                status.message(),
                tower_breaker::grpc::status_retry_after(&status)
            ),
        }
        println!("  circuit: {:?}", handle.state());
    }
    let stats = handle.stats();
    println!(
        "calls: {} (ok {}, failed {}), rejected {}",
        stats.total_calls, stats.successful_calls, stats.failed_calls, stats.rejected_calls
    );

    drop(client);
    let _ = stop.send(());
    server.await??;
    Ok(())
}
