//! HTTP on loopback: a hyper HTTP/1.1 server on 127.0.0.1 and a hyper-util client driven by
//! concurrent tasks for a fixed time, requests per second bare vs. through this crate's layers
//! (breaker; breaker + bulkhead; fail-fast breaker + bulkhead). Every round measures every
//! variant once, in an order that alternates round by round; each variant's ratio to bare is
//! taken within the round (so drift between rounds cancels) and the median over rounds is
//! reported. Every variant, bare included, is boxed the same way (`BoxCloneSyncService`).
//!
//! Run: `cargo bench -p tower-breaker-benches --bench http` (`HTTP_SECS` per measurement,
//! default 1; `HTTP_ROUNDS`, default 11; `HTTP_TASKS` concurrent client tasks, default 32).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::BoxError;

type HttpService = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Incoming>, BoxError>;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn variant(name: &str, client: &Client<HttpConnector, Empty<Bytes>>) -> HttpService {
    let client = client.clone();
    let bulkhead = || {
        BulkheadLayer::builder()
            .max_concurrent(1024)
            .build()
            .unwrap()
    };
    match name {
        "bare" => BoxCloneSyncService::new(client.map_err(BoxError::from)),
        "breaker" => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new())
                .service(client),
        ),
        "breaker + bulkhead" => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new())
                .layer(bulkhead())
                .service(client),
        ),
        "fail-fast breaker + bulkhead" => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::builder().fail_fast().build().unwrap())
                .layer(bulkhead())
                .service(client),
        ),
        other => panic!("unknown variant {other}"),
    }
}

async fn measure(svc: HttpService, uri: &hyper::Uri, tasks: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    // Warm the connection pool first.
    for _ in 0..tasks {
        let mut svc = svc.clone();
        let uri = uri.clone();
        joins.push(tokio::spawn(async move {
            let req = Request::get(uri).body(Empty::new()).unwrap();
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }));
    }
    for j in joins.drain(..) {
        j.await.unwrap();
    }
    let start = Instant::now();
    for _ in 0..tasks {
        let mut svc = svc.clone();
        let uri = uri.clone();
        let stop = stop.clone();
        let done = done.clone();
        joins.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                assert!(resp.status().is_success());
                resp.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for j in joins {
        j.await.unwrap();
    }
    counted as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let secs: f64 = env("HTTP_SECS", 1.0);
    let rounds: usize = env("HTTP_ROUNDS", 11);
    let tasks: usize = env("HTTP_TASKS", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = server().await;
        let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(tasks)
            .build(HttpConnector::new());
        let names = [
            "bare",
            "breaker",
            "breaker + bulkhead",
            "fail-fast breaker + bulkhead",
        ];
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for round in 0..rounds {
            // Alternate the order each round so no variant always runs first.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..names.len()).collect()
            } else {
                (0..names.len()).rev().collect()
            };
            for i in order {
                let rps = measure(variant(names[i], &client), &uri, tasks, secs).await;
                results[i].push(rps);
            }
        }
        println!(
            "HTTP/1.1 loopback, {tasks} client tasks, {rounds} rounds of {secs} s; \
             median req/s, median of the per-round ratios to bare"
        );
        println!(
            "{:<30} {:>9} {:>9} {:>7} {:>19}",
            "variant", "req/s", "vs bare", "lost", "ratio min..max"
        );
        for (name, r) in names.iter().zip(&results) {
            let ratios: Vec<f64> = r.iter().zip(&results[0]).map(|(v, b)| v / b).collect();
            let lo = ratios.iter().cloned().fold(f64::MAX, f64::min);
            let hi = ratios.iter().cloned().fold(f64::MIN, f64::max);
            let ratio = median(ratios);
            println!(
                "{:<30} {:>9.0} {:>9.3} {:>6.1}% {:>9.3}..{:<9.3}",
                name,
                median(r.clone()),
                ratio,
                (1.0 - ratio) * 100.0,
                lo,
                hi
            );
        }
    });
}
