//! A tonic client over a `Channel`, behind the breaker, against real gRPC servers on loopback:
//! tonic-health's own server, and a raw HTTP/2 gRPC server that fails with `UNAVAILABLE` in
//! a trailers-only response and after streamed messages.
#![cfg(feature = "grpc")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{serve, Proto};
use futures::stream;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use tonic::transport::{server::TcpIncoming, Channel, Endpoint, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Handle, State};
use tower_breaker::grpc::{self, GrpcClassifier};

type Client = HealthClient<CircuitBreaker<Channel, GrpcClassifier>>;

async fn client(addr: std::net::SocketAddr, consecutive_failures: u32) -> (Client, Handle) {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .name("health")
        .consecutive_failures(consecutive_failures)
        .fail_fast()
        .response_classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new().layer(breaker).service(channel);
    (HealthClient::new(svc), handle)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

fn counts(h: &Handle) -> (u64, u64, u64) {
    let s = h.stats();
    (s.successful_calls, s.failed_calls, s.ignored_calls)
}

#[tokio::test]
async fn tonic_health_server_ok_not_found_and_watch() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("db", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    let (mut client, handle) = client(addr, 1).await;

    // OK (even NOT_SERVING is a successful RPC: the server answered).
    let res = client.check(check("")).await.unwrap().into_inner();
    assert_eq!(res.status(), ServingStatus::Serving);
    let res = client.check(check("db")).await.unwrap().into_inner();
    assert_eq!(res.status(), ServingStatus::NotServing);
    assert_eq!(counts(&handle), (2, 0, 0));

    // NOT_FOUND (a trailers-only response) is not the server's fault.
    let status = client.check(check("nope")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(counts(&handle), (2, 0, 1));

    // A Watch stream dropped after its first message is neutral.
    let mut watch = client.watch(check("db")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);
    reporter
        .set_service_status("db", tonic_health::ServingStatus::Serving)
        .await;
    let second = watch.message().await.unwrap().unwrap();
    assert_eq!(second.status(), ServingStatus::Serving);
    drop(watch);
    assert_eq!(counts(&handle), (2, 0, 1));
    assert_eq!(handle.state(), State::Closed);

    drop(client);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server shuts down")
        .unwrap()
        .unwrap();
}

/// One encoded `HealthCheckResponse { status: SERVING }` message with its gRPC frame header.
const SERVING_MESSAGE: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

#[tokio::test]
async fn tonic_unavailable_trailers_only_and_after_streamed_messages() {
    // A hand-written gRPC server: Check fails at once (trailers-only), Watch sends two messages
    // and then fails in its trailers.
    let server = serve(Proto::Http2, |req: Request<_>, _n| async move {
        let response = Response::builder().header("content-type", "application/grpc");
        if req.uri().path() == "/grpc.health.v1.Health/Check" {
            return response
                .header("grpc-status", "14")
                .header("grpc-message", "down for maintenance")
                .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                .unwrap();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        trailers.insert("grpc-message", "backend lost".parse().unwrap());
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(SERVING_MESSAGE))),
            Ok(Frame::data(Bytes::from_static(SERVING_MESSAGE))),
            Ok(Frame::trailers(trailers)),
        ];
        response
            .body(StreamBody::new(stream::iter(frames)).boxed())
            .unwrap()
    })
    .await;

    let (mut client, handle) = client(server.addr, 2).await;

    // Trailers-only UNAVAILABLE: recorded from the response head.
    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "down for maintenance");
    assert_eq!(counts(&handle), (0, 1, 0));

    // Messages first, UNAVAILABLE in the trailers: recorded when the trailers arrive.
    let mut watch = client.watch(check("")).await.unwrap().into_inner();
    for _ in 0..2 {
        let msg = watch.message().await.unwrap().unwrap();
        assert_eq!(msg.status(), ServingStatus::Serving);
        assert_eq!(counts(&handle), (0, 1, 0));
        assert_eq!(handle.state(), State::Closed);
    }
    let status = watch.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(counts(&handle), (0, 2, 0));
    assert_eq!(handle.state(), State::Open);
    assert_eq!(server.hits(), 2);

    // Open: the RPC fails at once without reaching the server. tonic finds the UNAVAILABLE
    // status in the CircuitOpen's source chain and keeps the CircuitOpen as its source.
    let status = client.check(check("")).await.unwrap_err();
    let open = grpc::circuit_open(&status).expect("a CircuitOpen behind the status");
    assert_eq!(open.name(), "health");
    assert!(open.retry_after().is_some());
    let unavailable = tonic::Status::from(open.clone());
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    assert!(grpc::status_retry_after(&unavailable).is_some());
    assert_eq!(server.hits(), 2);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn tonic_sees_unavailable_with_pushback_when_the_circuit_is_open() {
    let server = serve(Proto::Http2, |_req, _n| async {
        Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "13")
            .body(Empty::<Bytes>::new())
            .unwrap()
    })
    .await;
    let channel = Endpoint::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .name("health")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .fail_fast()
        .response_classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(grpc::UnavailableOnOpenLayer::new())
        .layer(breaker)
        .service(channel);
    let mut client = HealthClient::new(svc);

    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(handle.state(), State::Open);

    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("circuit `health` is open"),
        "{status:?}"
    );
    let pushback = grpc::status_retry_after(&status).expect("pushback");
    assert!(pushback > Duration::from_secs(4) && pushback <= Duration::from_secs(5));
    assert_eq!(server.hits(), 1);

    drop(client);
    server.shutdown().await;
}
