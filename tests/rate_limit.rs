//! Proactive throttling from rate-limit headers, end to end: a loopback server that enforces its
//! own rate limit (a request before the reset would get a 429), a `reqwest::Client` behind a
//! fail-fast breaker with `HttpClassifier::new()`. The `200` that reports the limit used up
//! opens the circuit until the reset, so no request ever reaches the server early.
#![cfg(feature = "reqwest")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::{serve, Proto, TestServer};
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::error::CircuitOpen;
use tower_breaker::circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Handle, Immediate, State,
};
use tower_breaker::http::HttpClassifier;

/// What the server saw: requests it had to refuse because they came before its reset.
#[derive(Default)]
struct Limit {
    refused: AtomicUsize,
}

fn breaker() -> CircuitBreakerLayer<Immediate<HttpClassifier>> {
    CircuitBreakerLayer::builder()
        .name("provider")
        .fail_fast()
        .half_open_permits(1)
        .success_threshold(1)
        .retry_after_bounds(Duration::from_millis(100), Duration::from_secs(60))
        .classifier(HttpClassifier::new())
        .build()
        .unwrap()
}

type Svc = CircuitBreaker<reqwest::Client, Immediate<HttpClassifier>>;

async fn call(
    svc: &mut Svc,
    client: &reqwest::Client,
    url: &str,
) -> Result<reqwest::Response, tower_breaker::BoxError> {
    let req = client.get(url).build().unwrap();
    svc.ready().await?.call(req).await
}

/// The first call drains the limit; then calls every 20 ms until the breaker admits one, which
/// must find the limit reset. The first `CircuitOpen`'s `retry_after` must be in `expect`.
async fn drain_then_wait_out_the_reset(
    server: &TestServer,
    limit: &Limit,
    expect: std::ops::RangeInclusive<Duration>,
) {
    let layer = breaker();
    let handle: Handle = layer.handle();
    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new().layer(layer).service(client.clone());
    let url = server.url("/v1/messages");

    let res = call(&mut svc, &client, &url).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "ok");
    assert_eq!(handle.state(), State::Open, "the 200 opened the circuit");
    let stats = handle.stats();
    assert_eq!(stats.failed_calls, 0, "a used-up limit is not a failure");

    let err = call(&mut svc, &client, &url).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    let retry = open.retry_after().expect("the reset is known");
    assert!(
        expect.contains(&retry),
        "{retry:?} for a reset in {expect:?}"
    );
    assert_eq!(server.hits(), 1, "the open circuit kept the call local");

    // Fail fast: every call before the reset is a `CircuitOpen` that never leaves; the first
    // admitted one is the probe.
    let started = Instant::now();
    let res = loop {
        match call(&mut svc, &client, &url).await {
            Ok(res) => break res,
            Err(err) => {
                assert!(err.is::<CircuitOpen>(), "{err}");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never admitted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(started.elapsed() + Duration::from_millis(100) >= retry);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(server.hits(), 2);
    assert_eq!(
        limit.refused.load(Ordering::SeqCst),
        0,
        "no request came before the reset"
    );
}

#[tokio::test]
async fn openai_remaining_zero_opens_until_the_reset() {
    let limit = Arc::new(Limit::default());
    let reset_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let server = {
        let limit = limit.clone();
        serve(Proto::Http1, move |_req, _n| {
            let (limit, reset_at) = (limit.clone(), reset_at.clone());
            async move {
                let mut reset_at = reset_at.lock().unwrap();
                let res = Response::builder();
                let res = match *reset_at {
                    Some(at) if Instant::now() < at => {
                        limit.refused.fetch_add(1, Ordering::SeqCst);
                        res.status(429).header("retry-after", "1")
                    }
                    Some(_) => res
                        .header("x-ratelimit-remaining-requests", "59")
                        .header("x-ratelimit-reset-requests", "1s"),
                    None => {
                        // The last request of the window: one second until the next.
                        *reset_at = Some(Instant::now() + Duration::from_secs(1));
                        res.header("x-ratelimit-limit-requests", "60")
                            .header("x-ratelimit-remaining-requests", "0")
                            .header("x-ratelimit-reset-requests", "1s")
                            .header("x-ratelimit-remaining-tokens", "149984")
                            .header("x-ratelimit-reset-tokens", "6m0s")
                    }
                };
                res.body(Full::new(Bytes::from("ok"))).unwrap()
            }
        })
        .await
    };
    let expect = Duration::from_millis(500)..=Duration::from_secs(1);
    drain_then_wait_out_the_reset(&server, &limit, expect).await;
    server.shutdown().await;
}

/// RFC 3339, UTC, whole seconds rounded up (Anthropic sends whole seconds).
fn rfc3339_ceil(at: SystemTime) -> (String, SystemTime) {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    let utc = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap();
    (
        format!("{}T{}Z", utc.date_naive(), utc.time()),
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    )
}

#[tokio::test]
async fn anthropic_remaining_zero_opens_until_the_reset() {
    let limit = Arc::new(Limit::default());
    let reset_at: Arc<Mutex<Option<SystemTime>>> = Arc::default();
    let server = {
        let limit = limit.clone();
        serve(Proto::Http1, move |_req, _n| {
            let (limit, reset_at) = (limit.clone(), reset_at.clone());
            async move {
                let mut reset_at = reset_at.lock().unwrap();
                let res = Response::builder();
                let res = match *reset_at {
                    Some(at) if SystemTime::now() < at => {
                        limit.refused.fetch_add(1, Ordering::SeqCst);
                        res.status(429).header("retry-after", "1")
                    }
                    Some(_) => res.header("anthropic-ratelimit-requests-remaining", "49"),
                    None => {
                        // Requests are left; the input tokens are not, for about two seconds.
                        let (text, at) = rfc3339_ceil(SystemTime::now() + Duration::from_secs(2));
                        *reset_at = Some(at);
                        let later = rfc3339_ceil(SystemTime::now() + Duration::from_secs(30)).0;
                        res.header("anthropic-ratelimit-requests-limit", "50")
                            .header("anthropic-ratelimit-requests-remaining", "49")
                            .header("anthropic-ratelimit-requests-reset", &later)
                            .header("anthropic-ratelimit-input-tokens-remaining", "0")
                            .header("anthropic-ratelimit-input-tokens-reset", &text)
                            .header("anthropic-ratelimit-output-tokens-remaining", "8000")
                            .header("anthropic-ratelimit-output-tokens-reset", &later)
                    }
                };
                res.body(Full::new(Bytes::from("ok"))).unwrap()
            }
        })
        .await
    };
    // Two seconds from the server's clock, rounded up to a whole second.
    let expect = Duration::from_millis(1500)..=Duration::from_secs(3);
    drain_then_wait_out_the_reset(&server, &limit, expect).await;
    server.shutdown().await;
}

#[tokio::test]
async fn turned_off_the_200_is_a_plain_success() {
    let server = serve(Proto::Http1, |_req, _n| async move {
        Response::builder()
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "1s")
            .body(Full::new(Bytes::from("ok")))
            .unwrap()
    })
    .await;
    let layer = CircuitBreakerLayer::builder()
        .fail_fast()
        .classifier(HttpClassifier::new().rate_limit_headers(false))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new().layer(layer).service(client.clone());
    for _ in 0..2 {
        let req = client.get(server.url("/")).build().unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.stats().successful_calls, 2);
    assert_eq!(server.hits(), 2);
    server.shutdown().await;
}
