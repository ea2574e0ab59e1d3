//! Circuit breaker behaviour, one module per concern. Each test pins a rule of
//! docs/semantics.md (cited by its heading) on tokio's paused clock.

mod adaptive;
mod config;
mod lifecycle;
mod readiness;
mod rules;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tower::{Service, ServiceExt};
use tower_breaker::circuit_breaker::{Builder, CircuitBreaker, CircuitBreakerLayer, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

/// What the test service does with a request.
#[derive(Debug)]
pub enum Req {
    Ok,
    Fail,
    Panic,
    /// Sleep this long, then succeed.
    Slow(Duration),
    /// Finish when the test says (`Ok(())` succeeds, `Err(())` fails).
    Held(oneshot::Receiver<Result<(), ()>>),
}

/// A service that counts its `poll_ready` and `call` invocations.
#[derive(Clone, Default)]
pub struct Inner {
    pub polls: Arc<AtomicUsize>,
    pub calls: Arc<AtomicUsize>,
    /// When set, `poll_ready` fails.
    pub fail_ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Inner {
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Req> for Inner {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.fail_ready.load(Ordering::SeqCst) {
            return Poll::Ready(Err("inner not ready".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match req {
                Req::Ok => Ok("ok"),
                Req::Fail => Err("boom".into()),
                Req::Panic => panic!("inner service panicked"),
                Req::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok("slow")
                }
                Req::Held(rx) => match rx.await {
                    Ok(Ok(())) => Ok("held"),
                    _ => Err("held call failed".into()),
                },
            }
        })
    }
}

pub type Svc = CircuitBreaker<Inner>;

/// A breaker with `builder`'s settings around a fresh [`Inner`].
pub fn breaker(builder: Builder) -> (Svc, Inner) {
    let inner = Inner::default();
    let layer: CircuitBreakerLayer = builder.build().expect("valid config");
    (layer.layer(inner.clone()), inner)
}

/// Drives one request through `poll_ready` + `call`.
pub async fn call(svc: &mut Svc, req: Req) -> Result<&'static str, BoxError> {
    svc.ready().await?.call(req).await
}

/// Fails `n` calls in a row.
pub async fn fail(svc: &mut Svc, n: usize) {
    for _ in 0..n {
        assert!(call(svc, Req::Fail).await.is_err());
    }
}

/// Trips a breaker that trips on 5 consecutive failures (the default).
pub async fn trip(svc: &mut Svc) {
    fail(svc, 5).await;
    assert_eq!(svc.handle().state(), State::Open);
}

pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub const fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
