//! A hyper-util client behind the breaker, against hyper servers on loopback.
#![cfg(feature = "http")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{serve, Proto};
use futures::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};
use tower_breaker::http::{EndOfStream, HttpClassifier};

type Body = Empty<Bytes>;

fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Body::new()).unwrap()
}

#[tokio::test]
async fn hyper_503_with_retry_after_opens_for_the_hint() {
    let server = serve(Proto::Http1, |_req, _n| async {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "2")
            .body(Full::new(Bytes::from("busy")))
            .unwrap()
    })
    .await;

    let breaker = CircuitBreakerLayer::builder()
        .name("hyper")
        .fail_fast()
        // Keep the server's 2 s as it is (the default bounds would allow it too, but be explicit).
        .retry_after_bounds(Duration::from_millis(100), Duration::from_secs(60))
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut svc = ServiceBuilder::new().layer(breaker).service(client);

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(handle.state(), State::Open);
    let stats = handle.stats();
    assert_eq!(stats.failed_calls, 0, "a throttle is not a failure");
    let hint = stats.retry_after.expect("open with a retry_after");
    assert!(
        hint > Duration::from_millis(1500) && hint <= Duration::from_secs(2),
        "{hint:?}"
    );

    // The next call is rejected without reaching the server, and says when to come back.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.name(), "hyper");
    let retry = open.retry_after().expect("retry_after while open");
    assert!(
        retry > Duration::from_millis(1500) && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    assert_eq!(server.hits(), 1);
    assert_eq!(handle.stats().rejected_calls, 1);

    // Opens for the 2 s the server asked for: freeze tokio's clock (no IO from here on) and
    // step over the deadline. Less than 0.5 s of real time has passed since the trip.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(handle.state(), State::HalfOpen);
    tokio::time::resume();

    server.shutdown().await;
}

#[tokio::test]
async fn hyper_5xx_trips_and_4xx_does_not() {
    let server = serve(Proto::Http1, |req: Request<_>, _n| async move {
        let status = if req.uri().path() == "/missing" {
            404
        } else {
            500
        };
        Response::builder()
            .status(status)
            .body(Empty::<Bytes>::new())
            .unwrap()
    })
    .await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .fail_fast()
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer_client();
    for _ in 0..3 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/missing")))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.stats().ignored_calls, 3);
    for _ in 0..2 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.stats().failed_calls, 2);
    server.shutdown().await;
}

/// Shorthand: the layer around a fresh hyper-util HTTP/1 client.
trait LayerClient {
    type Svc;
    fn layer_client(&self) -> Self::Svc;
}

impl<C: Clone> LayerClient for CircuitBreakerLayer<C> {
    type Svc = tower_breaker::circuit_breaker::CircuitBreaker<
        Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
        C,
    >;
    fn layer_client(&self) -> Self::Svc {
        tower_layer::Layer::layer(
            self,
            Client::builder(TokioExecutor::new()).build_http::<Body>(),
        )
    }
}

#[tokio::test]
async fn hyper_stream_breaking_mid_way_is_a_failure() {
    let release = Arc::new(Notify::new());
    let server = {
        let release = release.clone();
        serve(Proto::Http1, move |req: Request<_>, _n| {
            let release = release.clone();
            async move {
                let frames = stream::unfold(0, move |step| {
                    let release = release.clone();
                    async move {
                        match step {
                            0 => Some((Ok(Frame::data(Bytes::from("data: 1\n\n"))), 1)),
                            1 => {
                                release.notified().await;
                                Some((Err(std::io::Error::other("upstream died")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                let ok = req.uri().path() == "/ok";
                let body = if ok {
                    Full::new(Bytes::from("data: done\n\n"))
                        .map_err(|e| match e {})
                        .boxed()
                } else {
                    StreamBody::new(frames).boxed()
                };
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap()
            }
        })
        .await
    };

    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .fail_fast()
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer_client();
    let counts = || {
        let s = handle.stats();
        (s.successful_calls, s.failed_calls, s.total_calls)
    };

    // A stream read to its end is a success, decided at the end.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/ok")))
        .await
        .unwrap();
    assert_eq!(counts(), (0, 0, 0));
    res.into_body().collect().await.unwrap();
    assert_eq!(counts(), (1, 0, 1));

    // A stream dropped after its first event is neutral.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/sse")))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: 1\n\n");
    drop(body);
    assert_eq!(counts(), (1, 0, 1));

    // A stream that breaks after its first event is a failure, recorded when it breaks.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/sse")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: 1\n\n");
    assert_eq!(counts(), (1, 0, 1));
    release.notify_one();
    let broken = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the broken stream ends");
    assert!(broken.is_err(), "the client sees the stream break");
    assert_eq!(counts(), (1, 1, 2));
    assert_eq!(handle.state(), State::Open);

    server.shutdown().await;
}
