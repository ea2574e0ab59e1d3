//! Fallback that callers do not see, over real loopback HTTP servers and reqwest clients: a
//! `Failover` of three providers, each a breaker over its own `reqwest::Client`, re-sends a
//! request the primary failed (5xx, 429) to the next provider; a stream whose head was already
//! returned is never re-sent.
#![cfg(feature = "reqwest")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{script_server, serve, End, Proto, Script, TestServer};
use futures::StreamExt;
use http::Response;
use http_body_util::Full;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, State};
use tower_breaker::failover::{Failover, Resend};
use tower_breaker::http::EndOfStream;
use tower_breaker::BoxError;

type Provider = BoxCloneSyncService<reqwest::Request, reqwest::Response, BoxError>;

/// A provider member: the request (built against any base URL) is pointed at `server`, behind
/// a bulkhead and a breaker that judges streams by their events.
fn provider(name: &str, server: &TestServer) -> (Provider, Handle) {
    let breaker = CircuitBreakerLayer::builder()
        .name(name)
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let bulkhead = BulkheadLayer::builder()
        .name(name)
        .max_concurrent(8)
        .max_queue(0)
        .build()
        .unwrap();
    let addr = server.addr;
    let svc = ServiceBuilder::new()
        .map_request(move |mut req: reqwest::Request| {
            let url = req.url_mut();
            url.set_ip_host(addr.ip()).unwrap();
            url.set_port(Some(addr.port())).unwrap();
            req
        })
        .layer(breaker)
        .layer(bulkhead)
        .service(reqwest::Client::new());
    (Provider::new(svc), handle)
}

fn json(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if status == 429 {
        res = res.header("retry-after", "20");
    }
    res.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn failed_requests_are_served_by_the_next_provider() {
    let primary = serve(Proto::Http1, |_req, _n| async {
        json(500, "{\"error\":{}}")
    })
    .await;
    let secondary = serve(Proto::Http1, |_req, n| async move {
        if n % 2 == 0 {
            json(429, "{\"error\":{\"type\":\"rate_limit_error\"}}")
        } else {
            json(200, "{\"from\":\"secondary\"}")
        }
    })
    .await;
    let tertiary = serve(Proto::Http1, |_req, _n| async {
        json(200, "{\"from\":\"tertiary\"}")
    })
    .await;
    let (a, a_handle) = provider("a", &primary);
    let (b, b_handle) = provider("b", &secondary);
    let (c, _) = provider("c", &tertiary);
    let mut llm = Failover::with_names([("a", a), ("b", b), ("c", c)])
        .resend_failures(Resend::with(|req: &reqwest::Request| req.try_clone()));
    let routes = llm.routes();
    let client = reqwest::Client::new();

    let mut failed = 0;
    for _ in 0..10 {
        let req = client
            .post("http://provider.invalid/v1/chat/completions")
            .body("{\"stream\":false}")
            .build()
            .unwrap();
        match llm.ready().await.unwrap().call(req).await {
            Ok(res) if res.status().is_success() => {
                let body: serde_json::Value = res.json().await.unwrap();
                assert!(body["from"].is_string());
            }
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "no failure reached a caller");
    // a: three 500s trip it; b: its 429 (with a hint) opens it at once; c serves the rest.
    assert_eq!(a_handle.state(), State::Open);
    assert_eq!(a_handle.stats().failed_calls, 3);
    assert_eq!(b_handle.state(), State::Open);
    assert_eq!((primary.hits(), secondary.hits()), (3, 1));
    assert_eq!(routes.served(), [3, 1, 10]);
    for server in [primary, secondary, tertiary] {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_stream_whose_head_was_returned_is_not_resent() {
    let primary = script_server(vec![Script::sse(&["data: {\"t\":1}\n\n"], End::Cut)]).await;
    let secondary = serve(Proto::Http1, |_req, _n| async { json(200, "{}") }).await;
    let (a, a_handle) = provider("a", &primary);
    let (b, _) = provider("b", &secondary);
    let mut llm = Failover::new([a, b])
        .resend_failures(Resend::with(|req: &reqwest::Request| req.try_clone()));
    let client = reqwest::Client::new();
    let req = client
        .get("http://provider.invalid/stream")
        .build()
        .unwrap();
    let res = llm.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 200, "the primary's head reached the caller");
    let mut stream = res.bytes_stream();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(
        stream.next().await.unwrap().is_err(),
        "the caller sees the cut"
    );
    assert_eq!(a_handle.stats().failed_calls, 1);
    assert_eq!(secondary.hits(), 0, "nothing was re-sent");
    primary.shutdown().await;
    secondary.shutdown().await;
}

#[tokio::test]
async fn reqwest_responses_carry_the_provider_that_served_them() {
    use tower_breaker::failover::ServedBy;

    let primary = serve(Proto::Http1, |_req, _n| async { json(500, "{}") }).await;
    let secondary = serve(Proto::Http1, |_req, _n| async { json(200, "{}") }).await;
    let (a, _) = provider("a", &primary);
    let (b, _) = provider("b", &secondary);
    let mut llm = Failover::with_names([("openai", a), ("anthropic", b)])
        .tag_served_by()
        .resend_failures(Resend::with(|req: &reqwest::Request| req.try_clone()));
    let client = reqwest::Client::new();
    let req = client.get("http://provider.invalid/").build().unwrap();
    let res = llm.ready().await.unwrap().call(req).await.unwrap();
    let served_by = res.extensions().get::<ServedBy>().expect("tagged");
    assert_eq!((served_by.index(), served_by.name()), (1, "anthropic"));
    primary.shutdown().await;
    secondary.shutdown().await;
}
