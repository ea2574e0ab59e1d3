//! `RejectionResponseLayer` in an axum `Router` on loopback, called by a real reqwest client:
//! an open circuit answers 503 + `Retry-After`, a full bulkhead 503 (or a chosen status), a
//! bulkhead wait that expires 503, and other errors 500 — and the router keeps serving.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::{header, Request, Response, StatusCode};
use tokio::sync::Notify;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::http::server::RejectionResponseLayer;
use tower_breaker::http::HttpClassifier;
use tower_breaker::BoxError;

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            base,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> (StatusCode, Option<String>) {
    let res = client.get(url).send().await.unwrap();
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let status = res.status();
    res.bytes().await.unwrap();
    (status, retry_after)
}

#[tokio::test]
async fn an_open_circuit_in_front_of_a_handler_answers_503_with_retry_after() {
    let breaker = CircuitBreakerLayer::builder()
        .name("handler")
        .fail_fast()
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(30))
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app = Router::new()
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(RejectionResponseLayer::new())
                .layer(breaker),
        );
    let server = Server::start(app).await;
    let client = reqwest::Client::new();

    // The handler's own 500s pass through untouched and trip the breaker.
    for _ in 0..2 {
        assert_eq!(
            fetch(&client, &server.url("/broken")).await,
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
    }
    assert_eq!(handle.state(), State::Open);

    let (status, retry_after) = fetch(&client, &server.url("/broken")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((29..=30).contains(&secs), "Retry-After: {secs}");
    assert_eq!(handle.stats().rejected_calls, 1);
    server.shutdown().await;
}

/// A route whose handler holds each request until `release` is notified.
fn held_route(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/held",
        get(move || {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        }),
    )
}

#[tokio::test]
async fn a_full_bulkhead_answers_the_chosen_status_and_the_held_call_completes() {
    let bulkhead = BulkheadLayer::builder()
        .name("held")
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let stats = bulkhead.handle();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = held_route(entered.clone(), release.clone()).layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new().bulkhead_status(StatusCode::TOO_MANY_REQUESTS))
            .layer(bulkhead),
    );
    let server = Server::start(app).await;
    let client = reqwest::Client::new();

    let first = tokio::spawn({
        let (client, url) = (client.clone(), server.url("/held"));
        async move { fetch(&client, &url).await }
    });
    entered.notified().await;
    assert_eq!(
        fetch(&client, &server.url("/held")).await,
        (StatusCode::TOO_MANY_REQUESTS, None)
    );
    assert_eq!(stats.stats().rejected, 1);

    release.notify_one();
    assert_eq!(first.await.unwrap(), (StatusCode::OK, None));
    server.shutdown().await;
}

#[tokio::test]
async fn a_bulkhead_wait_that_expires_answers_503() {
    let bulkhead = BulkheadLayer::builder()
        .name("held")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let stats = bulkhead.handle();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = held_route(entered.clone(), release.clone()).layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(bulkhead),
    );
    let server = Server::start(app).await;
    let client = reqwest::Client::new();

    let first = tokio::spawn({
        let (client, url) = (client.clone(), server.url("/held"));
        async move { fetch(&client, &url).await }
    });
    entered.notified().await;
    // The slot stays taken until `release`, so this wait can only end by expiring.
    assert_eq!(
        fetch(&client, &server.url("/held")).await,
        (StatusCode::SERVICE_UNAVAILABLE, None)
    );
    assert_eq!(stats.stats().timed_out, 1);

    release.notify_one();
    assert_eq!(first.await.unwrap(), (StatusCode::OK, None));
    server.shutdown().await;
}

#[tokio::test]
async fn other_errors_get_the_error_status_and_a_nested_rejection_is_found() {
    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    let open = CircuitBreakerLayer::builder().fail_fast().build().unwrap();
    open.handle().force_open();
    // A rejection wrapped by another layer's error is still found in the source chain.
    let mut nested = ServiceBuilder::new()
        .layer(RejectionResponseLayer::new())
        .map_err(|e: BoxError| BoxError::from(Wrapped(e)))
        .layer(open)
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let res = nested
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    let mut failing = ServiceBuilder::new()
        .layer(RejectionResponseLayer::new().error_status(StatusCode::BAD_GATEWAY))
        .service(service_fn(|_: Request<()>| async {
            Err::<Response<String>, BoxError>("upstream said no".into())
        }));
    let res = failing
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.body().is_empty());
}

/// A service whose `poll_ready` fails once, then is ready.
#[derive(Clone, Default)]
struct FailsReadyOnce {
    failed: bool,
    calls: usize,
}

impl Service<Request<()>> for FailsReadyOnce {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.failed {
            Poll::Ready(Ok(()))
        } else {
            self.failed = true;
            Poll::Ready(Err("not ready".into()))
        }
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        self.calls += 1;
        std::future::ready(Ok(Response::new("served".to_owned())))
    }
}

#[tokio::test]
async fn a_poll_ready_error_is_answered_by_the_next_call_without_calling_the_inner_service() {
    let mut svc = RejectionResponseLayer::new().layer(FailsReadyOnce::default());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(svc.get_ref().calls, 0);

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body(), "served");
    assert_eq!(svc.get_ref().calls, 1);
}
