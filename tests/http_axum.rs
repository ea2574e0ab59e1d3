//! An axum server whose handler calls a failing upstream; the breaker's `CircuitOpen` errors
//! become `503 Service Unavailable` with `Retry-After`.
#![cfg(feature = "http")]

mod common;

use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{serve, Proto};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{
    error::CircuitOpen, CircuitBreaker, CircuitBreakerLayer, Immediate, State,
};
use tower_breaker::http::{circuit_open_response, HttpClassifier};
use tower_breaker::BoxError;

type HyperClient = Client<HttpConnector, Empty<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Runs `app` on 127.0.0.1:0 until the returned sender fires.
async fn serve_axum(
    app: Router,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop, task)
}

async fn get_status(client: &HyperClient, url: &str) -> (StatusCode, Option<String>) {
    let res = client
        .request(Request::get(url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let status = res.status();
    res.into_body().collect().await.unwrap();
    (status, retry_after)
}

/// The breaker guards the upstream client *inside* the handler; the handler maps
/// `CircuitOpen` to 503.
#[tokio::test]
async fn axum_handler_calls_upstream_through_a_breaker() {
    let upstream = serve(Proto::Http1, |_req, _n| async {
        Response::builder()
            .status(500)
            .body(Full::new(Bytes::from("upstream broke")))
            .unwrap()
    })
    .await;

    let breaker = CircuitBreakerLayer::builder()
        .name("upstream")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(30))
        .fail_fast() // a request handler must not wait for the circuit
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();

    #[derive(Clone)]
    struct AppState {
        upstream: CircuitBreaker<HyperClient, Immediate<HttpClassifier>>,
        url: String,
    }

    async fn handler(AxumState(state): AxumState<AppState>) -> AxumResponse {
        let mut svc = state.upstream.clone();
        let req = Request::get(&state.url).body(Empty::new()).unwrap();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(res) if res.status().is_success() => "upstream ok".into_response(),
            Ok(res) => (
                StatusCode::BAD_GATEWAY,
                format!("upstream said {}", res.status()),
            )
                .into_response(),
            Err(err) => match err.downcast_ref::<CircuitOpen>() {
                Some(open) => circuit_open_response::<AxumBody>(open),
                None => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
            },
        }
    }

    let state = AppState {
        upstream: tower_layer::Layer::layer(&breaker, hyper_client()),
        url: upstream.url("/"),
    };
    let app = Router::new().route("/", get(handler)).with_state(state);
    let (addr, stop, server) = serve_axum(app).await;
    let client = hyper_client();
    let url = format!("http://{addr}/");

    assert_eq!(
        get_status(&client, &url).await,
        (StatusCode::BAD_GATEWAY, None)
    );
    assert_eq!(
        get_status(&client, &url).await,
        (StatusCode::BAD_GATEWAY, None)
    );
    assert_eq!(handle.state(), State::Open);
    let (status, retry_after) = get_status(&client, &url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((29..=30).contains(&secs), "{secs}");
    assert_eq!(upstream.hits(), 2, "the open circuit spared the upstream");

    let _ = stop.send(());
    server.await.unwrap();
    upstream.shutdown().await;
}

/// The breaker wraps the route itself (its classifier sees the handler's 502s), and a
/// `HandleErrorLayer` turns its `CircuitOpen` errors into 503s.
#[tokio::test]
async fn axum_route_breaker_with_handle_error_layer() {
    let upstream = serve(Proto::Http1, |_req, _n| async {
        Response::builder()
            .status(503)
            .body(Empty::<Bytes>::new())
            .unwrap()
    })
    .await;

    async fn handle_error(err: BoxError) -> AxumResponse {
        match err.downcast_ref::<CircuitOpen>() {
            Some(open) => circuit_open_response::<AxumBody>(open),
            None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }

    let breaker = CircuitBreakerLayer::builder()
        .name("route")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(10))
        .fail_fast()
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let upstream_url = upstream.url("/");
    let upstream_client = hyper_client();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let client = upstream_client.clone();
                let url = upstream_url.clone();
                async move {
                    let req = Request::get(&url).body(Empty::new()).unwrap();
                    match client.request(req).await {
                        Ok(res) if res.status().is_success() => StatusCode::OK,
                        _ => StatusCode::BAD_GATEWAY,
                    }
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(breaker),
        );
    let (addr, stop, server) = serve_axum(app).await;
    let client = hyper_client();
    let url = format!("http://{addr}/");

    for _ in 0..3 {
        assert_eq!(get_status(&client, &url).await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(handle.state(), State::Open);
    let (status, retry_after) = get_status(&client, &url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((9..=10).contains(&secs), "{secs}");
    assert_eq!(upstream.hits(), 3);
    assert_eq!(handle.stats().rejected_calls, 1);

    let _ = stop.send(());
    server.await.unwrap();
    upstream.shutdown().await;
}
