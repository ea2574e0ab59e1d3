//! `tracing` events (docs/semantics.md, Observability): a transition is an `info` event and a rejection a
//! `debug` event, each carrying the breaker's or bulkhead's name.
//!
//! These tests live in a binary of their own: `tracing` caches each callsite's interest
//! process-wide, and a test on another thread that reaches a callsite while a subscriber is
//! being registered here could leave it cached as disabled. Here each test registers its
//! subscriber before it reaches its own callsites, the cache is rebuilt, and the tests run one
//! at a time.
#![cfg(feature = "tracing")]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::BoxError;
use tower_layer::Layer;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Runs `test` on a paused current-thread runtime, one test at a time.
fn run(test: impl Future<Output = ()>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(test);
}

/// Captures this thread's events at `DEBUG` and above until the guard drops.
fn capture() -> (Buf, tracing::subscriber::DefaultGuard) {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (buf, guard)
}

#[test]
fn breaker_transition_at_info_and_rejection_at_debug_with_the_name() {
    run(async {
        let (buf, _guard) = capture();
        let layer = CircuitBreakerLayer::builder()
            .name("traced")
            .consecutive_failures(2)
            .fail_fast()
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
        for _ in 0..2 {
            assert!(svc.ready().await.unwrap().call(true).await.is_err());
        }
        assert!(
            svc.ready().await.unwrap().call(false).await.is_err(),
            "rejected while open"
        );

        let log = buf.text();
        let transition = log
            .lines()
            .find(|l| l.contains("circuit breaker transition"))
            .expect(&log);
        assert!(
            transition.contains("INFO") && transition.contains("name=traced"),
            "{transition}"
        );
        assert!(
            transition.contains("from=closed") && transition.contains("to=open"),
            "{transition}"
        );
        let rejection = log
            .lines()
            .find(|l| l.contains("rejected a call"))
            .expect(&log);
        assert!(
            rejection.contains("DEBUG") && rejection.contains("name=traced"),
            "{rejection}"
        );
    });
}

#[test]
fn bulkhead_rejection_and_timeout_at_debug_with_the_name() {
    run(async {
        let (buf, _guard) = capture();
        let layer = BulkheadLayer::builder()
            .name("traced")
            .max_concurrent(1)
            .max_queue(1)
            .max_wait(Duration::from_millis(10))
            .build()
            .unwrap();
        let inner = service_fn(|()| async { Ok::<(), BoxError>(()) });
        let mut holder = layer.layer(inner);
        let mut waiter = layer.layer(inner);
        let mut rejected = layer.layer(inner);
        let (mut t1, mut t2, mut t3) = (task::spawn(()), task::spawn(()), task::spawn(()));
        assert_ready_ok!(t1.enter(|cx, _| holder.poll_ready(cx)));
        assert_pending!(t2.enter(|cx, _| waiter.poll_ready(cx)));
        assert_ready_ok!(
            t3.enter(|cx, _| rejected.poll_ready(cx)),
            "queue full: ready to reject"
        );
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_ready_ok!(
            t2.enter(|cx, _| waiter.poll_ready(cx)),
            "timed out: ready to reject"
        );

        let log = buf.text();
        assert!(log.contains("bulkhead full"), "{log}");
        assert!(log.contains("wait timed out"), "{log}");
        assert_eq!(log.matches("bulkhead=traced").count(), 2, "{log}");
        assert!(
            log.lines()
                .filter(|l| l.contains("bulkhead=traced"))
                .all(|l| l.contains("DEBUG")),
            "{log}"
        );
    });
}
