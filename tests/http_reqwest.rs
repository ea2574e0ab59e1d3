//! A `reqwest::Client` (a `tower::Service<reqwest::Request>`) behind the breaker, against a
//! loopback server that fails, then recovers.
#![cfg(feature = "http")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{serve, Proto};
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{
    CircuitBreakerLayer, Classify, DefaultClassifier, Outcome, State,
};
use tower_breaker::http::HttpClassifier;

/// `reqwest::Response` is not an `http::Response`, so classify it from its parts.
fn reqwest_classifier<E: 'static>(
) -> impl Fn(Result<&reqwest::Response, &E>) -> Outcome + Clone + Send + Sync + 'static {
    let http = HttpClassifier::new();
    move |result| match result {
        Ok(res) => http.classify_parts(res.status(), res.headers()),
        // Transport errors fail; a bulkhead's rejections (local backpressure) would be ignored.
        Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
    }
}

#[tokio::test]
async fn reqwest_client_trips_then_recovers() {
    // 500 for the first three requests, 200 after.
    let server = serve(Proto::Http1, |_req, n| async move {
        let status = if n < 3 { 500 } else { 200 };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(format!("request {n}"))))
            .unwrap()
    })
    .await;

    let breaker = CircuitBreakerLayer::builder()
        .name("reqwest")
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(300))
        .half_open_permits(1)
        .success_threshold(1)
        .classifier(reqwest_classifier())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let bulkhead = tower_breaker::bulkhead::BulkheadLayer::builder()
        .name("reqwest")
        .max_concurrent(4)
        .build()
        .unwrap();
    let slots = bulkhead.handle();
    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        // The bulkhead goes inside the breaker, so its rejections reach the breaker's
        // classifier (which ignores them) instead of tripping the circuit.
        .layer(bulkhead)
        .service(client.clone());
    let url = server.url("/");
    let request = || client.get(&url).build().unwrap();

    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.stats().failed_calls, 3);

    // Default mode: an open circuit is `Pending` in `poll_ready`, not an error.
    assert!(futures::poll!(std::pin::pin!(svc.ready())).is_pending());
    assert_eq!(server.hits(), 3);

    // `ready()` waits out the open duration (real time: reqwest runs on real sockets), then the
    // probe reaches the recovered server and closes the circuit.
    let ready = tokio::time::timeout(Duration::from_secs(10), svc.ready())
        .await
        .expect("the circuit half-opens")
        .unwrap();
    let res = ready.call(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "request 3");
    assert_eq!(handle.state(), State::Closed);

    let res = svc.ready().await.unwrap().call(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let stats = handle.stats();
    assert_eq!((stats.successful_calls, stats.failed_calls), (2, 3));
    assert_eq!(server.hits(), 5);
    let slots = slots.stats();
    assert_eq!(
        (slots.active, slots.available, slots.rejected),
        (0, 4, 0),
        "every slot back"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn reqwest_connection_refused_is_a_failure() {
    // Bind, learn the port, close: nothing listens there any more.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .fail_fast()
        .classifier(reqwest_classifier())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new().layer(breaker).service(client.clone());
    let req = client.get(format!("http://{addr}/")).build().unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(err.downcast_ref::<reqwest::Error>().is_some(), "{err}");
    assert_eq!(handle.state(), State::Open);
    let req = client.get(format!("http://{addr}/")).build().unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(err.is::<tower_breaker::circuit_breaker::error::CircuitOpen>());
}
