//! Bulkhead semantics (docs/semantics.md, Bulkhead), on tokio's paused clock.

mod admission;
mod integration;
mod resize;
mod seed_and_table;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_test::assert_ready;
use tokio_test::task::{self, Spawn};
use tower::Service;
use tower_breaker::bulkhead::{Bulkhead, BulkheadLayer, ReleaseOnResponse, ResponseFuture};
use tower_breaker::BoxError;
use tower_layer::Layer;

/// What a controlled call does when its sender fires.
pub(crate) enum Out {
    Ok(u32),
    Err,
    Panic,
}

/// An inner service whose calls finish when the test says so; counts its calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inner {
    calls: Arc<AtomicUsize>,
}

pub(crate) type InnerFuture = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

impl Service<oneshot::Receiver<Out>> for Inner {
    type Response = u32;
    type Error = BoxError;
    type Future = InnerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, rx: oneshot::Receiver<Out>) -> InnerFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match rx.await {
                Ok(Out::Ok(v)) => Ok(v),
                Ok(Out::Err) | Err(_) => Err("inner failed".into()),
                Ok(Out::Panic) => panic!("inner panicked"),
            }
        })
    }
}

pub(crate) type Svc = Bulkhead<Inner, ReleaseOnResponse>;
pub(crate) type Fut = ResponseFuture<InnerFuture, ReleaseOnResponse>;

/// One caller: a service clone driven by its own mock task.
pub(crate) struct Caller(Spawn<Svc>);

impl Caller {
    fn poll_ready(&mut self) -> Poll<Result<(), BoxError>> {
        self.0.enter(|cx, mut svc| svc.poll_ready(cx))
    }

    fn is_woken(&self) -> bool {
        self.0.is_woken()
    }

    /// Calls with a controllable request; returns the response future and its trigger.
    fn call(&mut self) -> (Spawn<Fut>, oneshot::Sender<Out>) {
        let (tx, rx) = oneshot::channel();
        (task::spawn(self.0.call(rx)), tx)
    }

    /// Calls and expects an immediate rejection.
    fn call_rejected(&mut self) -> BoxError {
        let (mut fut, _tx) = self.call();
        match assert_ready!(fut.poll()) {
            Ok(v) => panic!("expected a rejection, got Ok({v})"),
            Err(e) => e,
        }
    }
}

pub(crate) fn layer(max_concurrent: usize, max_queue: usize, max_wait: Duration) -> BulkheadLayer {
    BulkheadLayer::builder()
        .name("test")
        .max_concurrent(max_concurrent)
        .max_queue(max_queue)
        .max_wait(max_wait)
        .build()
        .unwrap()
}

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn callers(layer: &BulkheadLayer, inner: &Inner, n: usize) -> Vec<Caller> {
    let svc = layer.layer(inner.clone());
    (0..n).map(|_| Caller(task::spawn(svc.clone()))).collect()
}

pub(crate) fn send(tx: oneshot::Sender<Out>, out: Out) {
    assert!(tx.send(out).is_ok(), "the call is still running");
}
