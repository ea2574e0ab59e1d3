//! A `reqwest::Client` (a `tower::Service<reqwest::Request>`) behind the breaker with the
//! `reqwest` feature: `HttpClassifier` and `EndOfStream` directly over the client, against
//! loopback servers.
#![cfg(feature = "reqwest")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{serve, Proto};
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::http::HttpClassifier;

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
        .classifier(HttpClassifier::new())
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
        .classifier(HttpClassifier::new())
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

mod end_of_stream {
    use super::*;
    use common::{script_server, End, Script};
    use futures::StreamExt;
    use tower_breaker::circuit_breaker::{error::CircuitOpen, Handle};
    use tower_breaker::http::EndOfStream;

    fn counts(h: &Handle) -> (u64, u64, u64) {
        let s = h.stats();
        (s.successful_calls, s.failed_calls, s.ignored_calls)
    }

    fn breaker(failures: u32) -> CircuitBreakerLayer<EndOfStream> {
        CircuitBreakerLayer::builder()
            .name("provider")
            .consecutive_failures(failures)
            .fail_fast()
            .retry_after_bounds(Duration::from_millis(100), Duration::from_secs(60))
            .response_classifier(EndOfStream::new())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn json_and_the_real_url_through_the_breaker() {
        let server = serve(Proto::Http1, |req, _n| async move {
            let body = format!("{{\"path\":\"{}\",\"ok\":true}}", req.uri().path());
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        })
        .await;
        let layer = breaker(1);
        let handle = layer.handle();
        let client = reqwest::Client::new();
        // The type users name: the client's own request and response, errors boxed.
        let mut svc: tower_breaker::circuit_breaker::CircuitBreaker<reqwest::Client, EndOfStream> =
            ServiceBuilder::new().layer(layer).service(client.clone());

        let url = server.url("/v1/models?limit=2");
        let req = client.get(&url).build().unwrap();
        let res: reqwest::Response = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.url().as_str(), url);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(counts(&handle), (0, 0, 0), "decided when the body ends");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["path"], "/v1/models");
        assert_eq!(counts(&handle), (1, 0, 0));

        let req = client.get(&url).build().unwrap();
        let text = svc
            .ready()
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap()
            .text()
            .await;
        assert!(text.unwrap().contains("\"ok\":true"));
        assert_eq!(counts(&handle), (2, 0, 0));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bytes_stream_read_to_done_and_dropped_counts_one_success() {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let server = script_server(vec![
            Script::sse(&events, End::Hang),
            Script::sse(&events[..1], End::Cut),
        ])
        .await;
        let layer = breaker(1);
        let handle = layer.handle();
        let client = reqwest::Client::new();
        let mut svc = ServiceBuilder::new().layer(layer).service(client.clone());

        let req = client
            .post(server.url("/v1/chat/completions"))
            .build()
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        let mut stream = res.bytes_stream();
        let mut text = String::new();
        while !text.contains("[DONE]") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("a chunk")
                .expect("not the end")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(stream);
        assert_eq!(counts(&handle), (1, 0, 0));

        // The same stream cut before [DONE]: a failure, and reqwest reports the body error.
        let req = client
            .post(server.url("/v1/chat/completions"))
            .build()
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        let err = res.bytes().await.unwrap_err();
        assert!(err.is_body() || err.is_decode(), "{err}");
        assert_eq!(counts(&handle), (1, 1, 0));
        assert_eq!(handle.state(), State::Open);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn statuses_5xx_trips_404_is_neutral() {
        let server = serve(Proto::Http1, |req, _n| async move {
            let status = if req.uri().path() == "/missing" {
                404
            } else {
                502
            };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from("x")))
                .unwrap()
        })
        .await;
        let layer = breaker(2);
        let handle = layer.handle();
        let client = reqwest::Client::new();
        let mut svc = ServiceBuilder::new().layer(layer).service(client.clone());
        for _ in 0..3 {
            let req = client.get(server.url("/missing")).build().unwrap();
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(res.status(), 404);
        }
        assert_eq!(counts(&handle), (0, 0, 3));
        assert_eq!(handle.state(), State::Closed);
        for _ in 0..2 {
            let req = client.get(server.url("/")).build().unwrap();
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(res.status(), 502);
            // Decided from the head: the body still reads through, untouched.
            assert_eq!(res.text().await.unwrap(), "x");
        }
        assert_eq!(handle.state(), State::Open);
        assert_eq!(server.hits(), 5);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_503_with_retry_after_one_opens_for_about_a_second() {
        let server = serve(Proto::Http1, |_req, n| async move {
            let mut res = Response::builder();
            if n == 0 {
                res = res.status(503).header("retry-after", "1");
            }
            res.body(Full::new(Bytes::from("y"))).unwrap()
        })
        .await;
        let layer = breaker(5);
        let handle = layer.handle();
        let client = reqwest::Client::new();
        let mut svc = ServiceBuilder::new().layer(layer).service(client.clone());
        let req = client.get(server.url("/")).build().unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(handle.state(), State::Open);
        assert_eq!(
            handle.stats().failed_calls,
            0,
            "a throttle is not a failure"
        );
        let req = client.get(server.url("/")).build().unwrap();
        let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
        let retry = open.retry_after().unwrap();
        assert!(
            retry > Duration::from_millis(500) && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        // Real sockets, so real time: after the second, a probe goes and closes the circuit.
        tokio::time::sleep(retry).await;
        let req = client.get(server.url("/")).build().unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.text().await.unwrap(), "y");
        assert_eq!(server.hits(), 2);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_builder_error_is_the_callers_mistake() {
        let layer = breaker(1);
        let handle = layer.handle();
        let client = reqwest::Client::new();
        let mut svc = ServiceBuilder::new().layer(layer).service(client);
        // reqwest refuses a scheme it cannot speak before sending anything.
        let url = reqwest::Url::parse("ftp://127.0.0.1/file").unwrap();
        let req = reqwest::Request::new(reqwest::Method::GET, url);
        let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
        let reqwest_err = err
            .downcast_ref::<reqwest::Error>()
            .expect("reqwest::Error");
        assert!(reqwest_err.is_builder(), "{reqwest_err}");
        assert_eq!(counts(&handle), (0, 0, 1));
        assert_eq!(handle.state(), State::Closed);
    }
}
