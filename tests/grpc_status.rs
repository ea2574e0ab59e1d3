#![cfg(feature = "grpc")]
//! The crate's errors as gRPC statuses through real tonic servers and clients on loopback,
//! with no mapping layer: a bulkhead in a tonic server's layers answers `RESOURCE_EXHAUSTED`, a
//! breaker there `UNAVAILABLE` with `grpc-retry-pushback-ms`, a fail-fast breaker around a
//! client's `Channel` fails calls with `UNAVAILABLE` and the pushback, and a server's
//! `google.rpc.RetryInfo` throttles the client's breaker for the delay it gives.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tonic::transport::{server::TcpIncoming, Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_types::{ErrorDetails, StatusExt};
use tower::ServiceBuilder;
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Handle, Reason, State};
use tower_breaker::grpc::{self, GrpcClassifier};

/// The delay the scripted server asks for in its `RetryInfo`.
const RETRY_INFO_DELAY: Duration = Duration::from_secs(7);

/// A health service scripted by the request's `service` field:
///
/// - `"block"`: reports that it has started, then waits until released; `SERVING`;
/// - `"unavailable"`: `UNAVAILABLE` without a hint;
/// - `"retry-info"`: `UNAVAILABLE` with a `RetryInfo` of [`RETRY_INFO_DELAY`] (`Watch`: after
///   one message, so the status comes in trailers);
/// - anything else: `SERVING`.
struct Scripted {
    hits: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

fn retry_info_status() -> Status {
    Status::with_error_details(
        Code::Unavailable,
        "slow down",
        ErrorDetails::with_retry_info(Some(RETRY_INFO_DELAY)),
    )
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        match request.into_inner().service.as_str() {
            "block" => {
                let _ = self.started.send(());
                self.release.notified().await;
            }
            "unavailable" => return Err(Status::unavailable("down")),
            "retry-info" => return Err(retry_info_status()),
            _ => {}
        }
        Ok(tonic::Response::new(serving()))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let mut items = vec![Ok(serving())];
        if request.into_inner().service == "retry-info" {
            items.push(Err(retry_info_status()));
        }
        Ok(tonic::Response::new(futures::stream::iter(items).boxed()))
    }
}

/// A tonic server on 127.0.0.1 port 0, stopped by [`shutdown`](Running::shutdown).
struct Running {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    /// One message per `"block"` call that has reached the handler.
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts `serve(service, incoming, shutdown)`: a `Server::builder()...` chain, so each test
/// picks its own server layers.
async fn start<F, Fut>(serve: F) -> Running
where
    F: FnOnce(HealthServer<Scripted>, TcpIncoming, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (started_tx, started) = mpsc::unbounded_channel();
    let service = HealthServer::new(Scripted {
        hits: hits.clone(),
        started: started_tx,
        release: release.clone(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown: Shutdown = Box::pin(async {
        let _ = stopped.await;
    });
    let task = tokio::spawn(serve(service, TcpIncoming::from(listener), shutdown));
    Running {
        addr,
        hits,
        started,
        release,
        stop,
        task,
    }
}

impl Running {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server shuts down")
            .unwrap()
            .unwrap();
    }
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

fn pushback(status: &Status) -> Duration {
    let ms = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap_or_else(|| panic!("grpc-retry-pushback-ms in {status:?}"))
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    Duration::from_millis(ms)
}

/// A fail-fast breaker with [`GrpcClassifier`] around a client `Channel`, and nothing else.
fn breaker_client(
    channel: Channel,
    consecutive_failures: u32,
) -> (
    HealthClient<CircuitBreaker<Channel, GrpcClassifier>>,
    Handle,
) {
    let breaker = CircuitBreakerLayer::builder()
        .name("upstream")
        .consecutive_failures(consecutive_failures)
        .open_duration(Duration::from_secs(30))
        .fail_fast()
        .response_classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new().layer(breaker).service(channel);
    (HealthClient::new(svc), handle)
}

#[tokio::test]
async fn server_bulkhead_answers_resource_exhausted() {
    let bulkhead = BulkheadLayer::builder()
        .name("grpc-server")
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let bulkhead_handle = bulkhead.handle();
    let mut server = start(move |svc, incoming, shutdown| {
        Server::builder()
            .layer(bulkhead)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
    })
    .await;
    let client = HealthClient::new(server.channel().await);

    // The first call takes the only slot and holds it inside the handler.
    let mut first_client = client.clone();
    let first = tokio::spawn(async move { first_client.check(check("block")).await });
    server
        .started
        .recv()
        .await
        .expect("the first call reached the handler");

    // The second call is rejected by the bulkhead; tonic's server answers with the status in
    // BulkheadFull's source chain instead of resetting the stream.
    let status = client.clone().check(check("")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "bulkhead `grpc-server` is full");
    assert_eq!(server.hits(), 1);
    assert_eq!(bulkhead_handle.stats().rejected, 1);

    server.release.notify_one();
    let res = first.await.unwrap().expect("the first call succeeds");
    assert_eq!(res.into_inner().status(), ServingStatus::Serving);

    // With the slot free again, calls go through.
    let res = client.clone().check(check("")).await.unwrap();
    assert_eq!(res.into_inner().status(), ServingStatus::Serving);
    assert_eq!(server.hits(), 2);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn server_breaker_answers_unavailable_with_pushback() {
    let breaker = CircuitBreakerLayer::builder()
        .name("grpc-server")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(30))
        .fail_fast()
        .response_classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let server = start(move |svc, incoming, shutdown| {
        Server::builder()
            .layer(breaker)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
    })
    .await;
    let mut client = HealthClient::new(server.channel().await);

    let status = client.check(check("unavailable")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "down");
    assert_eq!(handle.state(), State::Open);

    // Rejected by the server's breaker: the status travels as a trailers-only response, with
    // the pushback as metadata. It came over the wire, so it has no CircuitOpen source.
    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("circuit `grpc-server` is open"),
        "{status:?}"
    );
    let hint = pushback(&status);
    assert!(
        hint > Duration::from_secs(25) && hint <= Duration::from_secs(30),
        "{hint:?}"
    );
    assert_eq!(grpc::status_retry_after(&status), Some(hint));
    assert!(grpc::circuit_open(&status).is_none());
    assert_eq!(server.hits(), 1);
    assert_eq!(handle.stats().rejected_calls, 1);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn client_breaker_rejection_is_unavailable_with_pushback() {
    let server = start(|svc, incoming, shutdown| {
        Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
    })
    .await;
    let (mut client, handle) = breaker_client(server.channel().await, 2);

    for _ in 0..2 {
        let status = client.check(check("unavailable")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "down");
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.stats().failed_calls, 2);
    assert_eq!(server.hits(), 2);

    // The open circuit rejects without calling the server. No UnavailableOnOpenLayer: tonic
    // finds the UNAVAILABLE status in CircuitOpen's source chain, pushback included, and keeps
    // the CircuitOpen as the status's source.
    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("circuit `upstream` is open"),
        "{status:?}"
    );
    let hint = pushback(&status);
    assert!(
        hint > Duration::from_secs(25) && hint <= Duration::from_secs(30),
        "{hint:?}"
    );
    assert_eq!(grpc::status_retry_after(&status), Some(hint));
    let open = grpc::circuit_open(&status).expect("the CircuitOpen behind the status");
    assert_eq!(open.name(), "upstream");
    assert_eq!(server.hits(), 2);
    assert_eq!(handle.stats().rejected_calls, 1);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn retry_info_throttles_the_client_breaker() {
    let server = start(|svc, incoming, shutdown| {
        Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
    })
    .await;

    // Trailers-only: tonic answers a unary error with the status in the response headers.
    let (mut client, handle) = breaker_client(server.channel().await, 5);
    let status = client.check(check("retry-info")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(grpc::status_retry_after(&status), Some(RETRY_INFO_DELAY));
    assert_throttled_for_retry_info(&handle);

    // The next call is rejected locally, for what is left of those 7 s.
    let status = client.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let hint = pushback(&status);
    assert!(
        hint > Duration::from_secs(5) && hint <= RETRY_INFO_DELAY,
        "{hint:?}"
    );
    assert_eq!(server.hits(), 1);

    // In trailers, after a streamed message.
    let (mut client, handle) = breaker_client(server.channel().await, 5);
    let mut watch = client
        .watch(check("retry-info"))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    assert_eq!(
        handle.stats().total_calls,
        0,
        "undecided until the trailers"
    );
    let status = watch.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(grpc::status_retry_after(&status), Some(RETRY_INFO_DELAY));
    assert_throttled_for_retry_info(&handle);
    assert_eq!(server.hits(), 2);

    drop((client, watch));
    server.shutdown().await;
}

/// One call recorded as `Throttled` (not a failure), which opened the circuit for the
/// `RetryInfo` delay.
fn assert_throttled_for_retry_info(handle: &Handle) {
    let stats = handle.stats();
    assert_eq!(
        (stats.throttled_calls, stats.failed_calls, stats.total_calls),
        (1, 0, 1)
    );
    assert_eq!(stats.state, State::Open);
    let last = stats.transitions.last().expect("a transition");
    assert_eq!(last.reason, Reason::Throttled(RETRY_INFO_DELAY));
    let left = stats.retry_after.expect("time left while open");
    assert!(
        left > Duration::from_secs(5) && left <= RETRY_INFO_DELAY,
        "{left:?}"
    );
}
