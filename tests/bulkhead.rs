//! Bulkhead semantics (DESIGN section 5), on tokio's paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_test::task::{self, Spawn};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::{
    error::{BulkheadFull, BulkheadTimeout},
    Bulkhead, BulkheadLayer, ReleaseOnResponse, ResponseFuture,
};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

/// What a controlled call does when its sender fires.
enum Out {
    Ok(u32),
    Err,
    Panic,
}

/// An inner service whose calls finish when the test says so; counts its calls.
#[derive(Clone, Debug, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

type InnerFuture = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

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

type Svc = Bulkhead<Inner, ReleaseOnResponse>;
type Fut = ResponseFuture<InnerFuture, ReleaseOnResponse>;

/// One caller: a service clone driven by its own mock task.
struct Caller(Spawn<Svc>);

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

fn layer(max_concurrent: usize, max_queue: usize, max_wait: Duration) -> BulkheadLayer {
    BulkheadLayer::builder()
        .name("test")
        .max_concurrent(max_concurrent)
        .max_queue(max_queue)
        .max_wait(max_wait)
        .build()
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

fn callers(layer: &BulkheadLayer, inner: &Inner, n: usize) -> Vec<Caller> {
    let svc = layer.layer(inner.clone());
    (0..n).map(|_| Caller(task::spawn(svc.clone()))).collect()
}

#[tokio::test(start_paused = true)]
async fn caps_concurrency_and_rejects_at_once_when_the_queue_is_full() {
    let inner = Inner::default();
    let layer = layer(2, 1, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);

    assert_ready_ok!(c[0].poll_ready());
    assert_ready_ok!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());
    // Full queue: ready-with-rejection, and the inner service is never called.
    assert_ready_ok!(c[3].poll_ready());
    let err = c[3].call_rejected();
    let full = err.downcast_ref::<BulkheadFull>().expect("BulkheadFull");
    assert_eq!(full.name(), "test");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    let stats = handle.stats();
    assert_eq!(
        (stats.active, stats.queued, stats.available, stats.rejected),
        (2, 1, 0, 1)
    );
    assert_eq!(stats.max_concurrent, 2);
    assert_eq!(stats.timed_out, 0);
    assert_eq!(stats.name, "test");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_times_out_exactly_at_max_wait() {
    let inner = Inner::default();
    let layer = layer(1, 1, Duration::from_millis(100));
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 2);

    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());

    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(!c[1].is_woken());
    assert_pending!(c[1].poll_ready());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(c[1].is_woken(), "the wait timer wakes the waiter");
    assert_ready_ok!(c[1].poll_ready());
    let err = c[1].call_rejected();
    assert!(err.is::<BulkheadTimeout>(), "{err}");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    let stats = handle.stats();
    assert_eq!((stats.queued, stats.timed_out, stats.rejected), (0, 1, 0));
    assert_eq!((stats.active, stats.available), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_in_fifo_order_without_barging() {
    let inner = Inner::default();
    let layer = layer(1, 10, WAIT);
    let mut c = callers(&layer, &inner, 5);

    assert_ready_ok!(c[0].poll_ready());
    let (mut running, tx) = c[0].call();
    for w in &mut c[1..4] {
        assert_pending!(w.poll_ready());
    }

    // Finish the running call: only the oldest waiter is woken.
    send(tx, Out::Ok(0));
    assert_eq!(assert_ready_ok!(running.poll()), 0);
    assert!(c[1].is_woken());
    assert!(!c[2].is_woken() && !c[3].is_woken());
    // A newcomer cannot take the slot handed to the oldest waiter.
    assert_pending!(c[4].poll_ready());
    assert_ready_ok!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());

    let (mut f1, tx1) = c[1].call();
    send(tx1, Out::Ok(1));
    assert_eq!(assert_ready_ok!(f1.poll()), 1);
    assert!(c[2].is_woken() && !c[3].is_woken() && !c[4].is_woken());
    assert_ready_ok!(c[2].poll_ready());
    assert_pending!(c[3].poll_ready());

    let (f2, _tx2) = c[2].call();
    drop(f2);
    assert!(c[3].is_woken() && !c[4].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    assert_pending!(c[4].poll_ready());
    drop(c.remove(3));
    assert!(c[3].is_woken(), "the newcomer, queued last, comes last");
    assert_ready_ok!(c[3].poll_ready());
}

fn send(tx: oneshot::Sender<Out>, out: Out) {
    assert!(tx.send(out).is_ok(), "the call is still running");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_frees_its_queue_slot() {
    let inner = Inner::default();
    let layer = layer(1, 1, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);

    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    assert_ready_ok!(c[2].poll_ready()); // queue full: rejected
    assert!(c[2].call_rejected().is::<BulkheadFull>());
    assert_eq!(handle.stats().queued, 1);

    drop(c.remove(1));
    assert_eq!(handle.stats().queued, 0);
    // The freed queue slot takes a new waiter instead of a rejection...
    assert_pending!(c[2].poll_ready());
    assert_eq!(handle.stats().queued, 1);
    // ...which, not the dropped one, gets the next slot.
    drop(c.remove(0));
    assert!(c[1].is_woken());
    assert_ready_ok!(c[1].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.rejected), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_after_being_handed_a_slot_passes_it_on() {
    let inner = Inner::default();
    let layer = layer(1, 2, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 3);
    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());
    drop(c.remove(0)); // hands the slot to c[1], which never polls again
    drop(c.remove(0)); // so the slot goes on to the next waiter
    assert!(c[0].is_woken());
    assert_ready_ok!(c[0].poll_ready());
    assert_eq!(handle.stats().active, 1);
}

/// Ways an admitted call gives its slot back.
#[derive(Debug, Clone, Copy)]
enum Release {
    DropReadyClone,
    DropResponseFuture,
    Complete,
    InnerError,
    InnerPanic,
}

#[tokio::test(start_paused = true)]
async fn every_way_out_frees_the_permit_and_wakes_only_the_oldest_waiter() {
    for how in [
        Release::DropReadyClone,
        Release::DropResponseFuture,
        Release::Complete,
        Release::InnerError,
        Release::InnerPanic,
    ] {
        let inner = Inner::default();
        let layer = layer(1, 2, WAIT);
        let handle = layer.handle();
        let mut c = callers(&layer, &inner, 3);
        assert_ready_ok!(c[0].poll_ready());
        assert_pending!(c[1].poll_ready());
        assert_pending!(c[2].poll_ready());
        assert_eq!(handle.stats().active, 1, "{how:?}");

        match how {
            Release::DropReadyClone => drop(c.remove(0)),
            Release::DropResponseFuture => {
                let (fut, _tx) = c[0].call();
                assert!(!c[1].is_woken(), "{how:?}: the call still holds its slot");
                drop(fut);
            }
            Release::Complete => {
                let (mut fut, tx) = c[0].call();
                send(tx, Out::Ok(7));
                assert_eq!(assert_ready_ok!(fut.poll()), 7);
            }
            Release::InnerError => {
                let (mut fut, tx) = c[0].call();
                send(tx, Out::Err);
                let err = assert_ready!(fut.poll()).unwrap_err();
                assert_eq!(err.to_string(), "inner failed");
            }
            Release::InnerPanic => {
                let (fut, tx) = c[0].call();
                send(tx, Out::Panic);
                let joined = tokio::spawn(fut.into_inner()).await;
                assert!(joined.unwrap_err().is_panic(), "{how:?}");
            }
        }
        let (w1, w2) = match how {
            Release::DropReadyClone => (0, 1),
            _ => (1, 2),
        };
        assert!(c[w1].is_woken(), "{how:?}: the oldest waiter is woken");
        assert!(
            !c[w2].is_woken(),
            "{how:?}: only the oldest waiter is woken"
        );
        assert_ready_ok!(c[w1].poll_ready());
        assert_pending!(c[w2].poll_ready());
        let stats = handle.stats();
        assert_eq!((stats.active, stats.queued), (1, 1), "{how:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn growing_admits_waiters_at_once() {
    let inner = Inner::default();
    let layer = layer(1, 5, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 5);
    assert_ready_ok!(c[0].poll_ready());
    for w in &mut c[1..4] {
        assert_pending!(w.poll_ready());
    }

    handle.set_max_concurrent(3);
    assert!(c[1].is_woken() && c[2].is_woken());
    assert!(!c[3].is_woken());
    assert_ready_ok!(c[1].poll_ready());
    assert_ready_ok!(c[2].poll_ready());
    assert_pending!(c[3].poll_ready());
    let stats = handle.stats();
    assert_eq!(
        (
            stats.max_concurrent,
            stats.active,
            stats.queued,
            stats.available
        ),
        (3, 3, 1, 0)
    );

    // Growing past the queue frees the rest.
    handle.set_max_concurrent(6);
    assert!(c[3].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    assert_ready_ok!(c[4].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.available), (5, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn shrinking_never_blocks_and_lets_running_calls_finish() {
    let inner = Inner::default();
    let layer = layer(3, 5, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);
    let mut running = Vec::new();
    for caller in &mut c[..3] {
        assert_ready_ok!(caller.poll_ready());
        running.push(caller.call());
    }

    handle.set_max_concurrent(1); // returns at once with 3 calls running
    let stats = handle.stats();
    assert_eq!(
        (stats.max_concurrent, stats.active, stats.available),
        (1, 3, 0)
    );
    assert_pending!(c[3].poll_ready());

    // The running calls finish normally; the first two releases pay off the shrink.
    for (i, (mut fut, tx)) in running.into_iter().enumerate() {
        send(tx, Out::Ok(i as u32));
        assert_eq!(assert_ready_ok!(fut.poll()), i as u32);
        if i < 2 {
            assert!(!c[3].is_woken(), "release {i} only pays off the shrink");
            assert_pending!(c[3].poll_ready());
        }
    }
    assert!(c[3].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.available, stats.queued), (1, 0, 0));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn seed_defaults_queue_100_callers_and_time_them_out_after_30s() {
    // The seed's Bulkhead(name, max_concurrent, queue_size=100) with submit(timeout=30): a
    // caller at capacity must wait (the seed's queue never queued), up to queue_size of them.
    let inner = Inner::default();
    let layer = BulkheadLayer::builder()
        .name("chat")
        .max_concurrent(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let stats = handle.stats();
    assert_eq!(stats.max_queue, 100);
    assert_eq!(stats.max_wait, Duration::from_secs(30));
    let mut c = callers(&layer, &inner, 103);

    assert_ready_ok!(c[0].poll_ready());
    for w in &mut c[1..101] {
        assert_pending!(w.poll_ready());
    }
    assert_eq!(handle.stats().queued, 100);
    assert_ready_ok!(c[101].poll_ready());
    assert!(c[101].call_rejected().is::<BulkheadFull>());

    // A queued caller is admitted when a slot frees...
    drop(c.remove(0));
    assert_ready_ok!(c[0].poll_ready());
    // ...and the others give up after 30 s, not before.
    tokio::time::advance(Duration::from_secs(30) - Duration::from_millis(1)).await;
    assert_pending!(c[1].poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    for w in &mut c[1..100] {
        assert_ready_ok!(w.poll_ready());
        assert!(w.call_rejected().is::<BulkheadTimeout>());
    }
    let stats = handle.stats();
    assert_eq!(
        (stats.active, stats.queued, stats.rejected, stats.timed_out),
        (1, 0, 1, 99)
    );
    // The last caller, who never waited, now finds a queue slot again.
    assert_pending!(c[100].poll_ready());
}

#[tokio::test(start_paused = true)]
async fn the_grant_wins_over_a_timeout_at_the_same_instant() {
    let inner = Inner::default();
    let layer = layer(1, 1, Duration::from_millis(50));
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 2);
    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    tokio::time::advance(Duration::from_millis(50)).await;
    drop(c.remove(0)); // handed over before the waiter sees its timer
    assert_ready_ok!(c[0].poll_ready());
    let (mut fut, tx) = c[0].call();
    send(tx, Out::Ok(1));
    assert_eq!(assert_ready_ok!(fut.poll()), 1);
    assert_eq!(handle.stats().timed_out, 0);
}

/// `(max_concurrent P, max_queue Q, n)`: n calls at once.
#[tokio::test(start_paused = true)]
async fn table_of_concurrent_launches() {
    for (p, q, n) in [(5, 0, 3), (3, 0, 4), (3, 1, 5), (5, 3, 8), (1, 6, 5)] {
        let case = format!("P={p} Q={q} n={n}");
        let inner = Inner::default();
        let layer = layer(p, q, WAIT);
        let handle = layer.handle();
        let mut c = callers(&layer, &inner, n);

        let mut running = Vec::new();
        let mut waiting = Vec::new();
        let mut rejected = 0;
        for (i, caller) in c.iter_mut().enumerate() {
            match caller.poll_ready() {
                Poll::Pending => waiting.push(i),
                Poll::Ready(Ok(())) => {
                    let (mut fut, tx) = caller.call();
                    match fut.poll() {
                        Poll::Pending => running.push((fut, tx)),
                        Poll::Ready(Err(e)) if e.is::<BulkheadFull>() => rejected += 1,
                        Poll::Ready(other) => panic!("{case}: {other:?}"),
                    }
                }
                Poll::Ready(Err(e)) => panic!("{case}: {e}"),
            }
        }
        let executing = inner.calls.load(Ordering::SeqCst);
        assert_eq!(executing, n.min(p), "{case}: executing");
        assert_eq!(running.len(), executing, "{case}");
        assert_eq!(waiting.len(), q.min(n.saturating_sub(p)), "{case}: queued");
        assert_eq!(rejected, n.saturating_sub(p + q), "{case}: rejected");
        let stats = handle.stats();
        assert_eq!(
            (stats.active, stats.queued, stats.rejected as usize),
            (executing, waiting.len(), rejected),
            "{case}: stats"
        );

        // Drain: finish running calls, admit woken waiters, until nothing is left.
        let mut completed = 0;
        while let Some((mut fut, tx)) = running.pop() {
            send(tx, Out::Ok(1));
            assert_ready_ok!(fut.poll());
            completed += 1;
            let mut still = Vec::new();
            for i in waiting.drain(..) {
                match c[i].poll_ready() {
                    Poll::Ready(Ok(())) => {
                        let (mut fut, tx) = c[i].call();
                        assert_pending!(fut.poll());
                        running.push((fut, tx));
                    }
                    Poll::Pending => still.push(i),
                    Poll::Ready(Err(e)) => panic!("{case}: {e}"),
                }
            }
            waiting = still;
        }
        assert!(waiting.is_empty(), "{case}: a waiter was never admitted");
        assert_eq!(completed, n - rejected, "{case}: completed");
        let stats = handle.stats();
        assert_eq!((stats.active, stats.queued, stats.available), (0, 0, p));
    }
}

#[tokio::test(start_paused = true)]
async fn an_outer_breaker_ignores_the_bulkheads_rejections() {
    let breaker = CircuitBreakerLayer::builder()
        .name("outer")
        .consecutive_failures(1)
        .fail_fast()
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let bulkhead = layer(1, 1, Duration::from_millis(100));
    let inner = Inner::default();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(bulkhead)
        .service(inner.clone());

    // One call holds the only slot; one waits (and will time out); two are rejected.
    let mut holder = task::spawn(svc.clone());
    assert_ready_ok!(holder.enter(|cx, mut s| s.poll_ready(cx)));
    let (_tx_hold, rx) = oneshot::channel();
    let mut held = task::spawn(holder.call(rx));
    assert_pending!(held.poll());

    let mut waiter = task::spawn(svc.clone());
    assert_pending!(waiter.enter(|cx, mut s| s.poll_ready(cx)));
    for _ in 0..2 {
        let mut other = svc.clone();
        let err = other
            .ready()
            .await
            .unwrap()
            .call(oneshot::channel().1)
            .await;
        assert!(err.unwrap_err().is::<BulkheadFull>());
    }
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_ready_ok!(waiter.enter(|cx, mut s| s.poll_ready(cx)));
    let err = waiter.call(oneshot::channel().1).await.unwrap_err();
    assert!(err.is::<BulkheadTimeout>());

    assert_eq!(breaker_handle.state(), State::Closed);
    let stats = breaker_handle.stats();
    assert_eq!((stats.ignored_calls, stats.failed_calls), (3, 0));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

    // A real failure still trips it: the breaker works, it just ignores backpressure.
    drop(_tx_hold);
    assert!(held.await.is_err());
    assert_eq!(breaker_handle.state(), State::Open);
}

#[test]
fn the_builder_names_bad_fields() {
    let field = |b: tower_breaker::bulkhead::Builder| b.build().unwrap_err().field();
    assert_eq!(
        field(BulkheadLayer::builder().max_concurrent(0)),
        "max_concurrent"
    );
    assert_eq!(
        field(BulkheadLayer::builder().max_wait(Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(field(BulkheadLayer::builder().name("")), "name");
    let layer = BulkheadLayer::builder().max_queue(0).build().unwrap();
    let stats = layer.handle().stats();
    assert_eq!((stats.max_concurrent, stats.max_queue), (10, 0));
    assert_eq!(stats.max_wait, Duration::from_secs(30));
    assert_eq!((stats.name.as_str(), stats.available), ("default", 10));
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_releases_the_slot() {
    let layer = layer(1, 1, WAIT);
    let handle = layer.handle();
    let mut other = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut svc = task::spawn(layer.layer(NotReady));
    let err = assert_ready!(svc.enter(|cx, mut s| Service::<()>::poll_ready(&mut *s, cx)));
    assert_eq!(err.unwrap_err().to_string(), "inner not ready");
    assert_eq!(handle.stats().active, 0);
    assert!(other.ready().await.is_ok());
    assert_eq!(handle.stats().active, 1);
}

/// A service whose `poll_ready` fails.
#[derive(Clone)]
struct NotReady;

impl Service<()> for NotReady {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        Poll::Ready(Err("inner not ready"))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[test]
fn clones_on_many_threads_never_exceed_the_cap() {
    const THREADS: usize = 4;
    const CALLS: usize = 2_000;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let layer = layer(2, THREADS, Duration::from_secs(3600));
    let handle = layer.handle();
    let svc = {
        let (running, peak) = (running.clone(), peak.clone());
        layer.layer(tower::service_fn(move |_: ()| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            running.fetch_sub(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, BoxError>(()))
        }))
    };
    // Meanwhile the capacity is resized back and forth (ending at 2).
    let resizer = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                handle.set_max_concurrent(1 + i % 2);
                std::thread::yield_now();
            }
        })
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut svc = svc.clone();
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    for _ in 0..CALLS {
                        svc.ready().await.unwrap().call(()).await.unwrap();
                    }
                })
            })
        })
        .collect();
    resizer.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // A shrink lets running calls finish, so the peak is bounded by the largest capacity.
    assert!(peak.load(Ordering::SeqCst) <= 2);
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.available), (0, 0, 2));
    assert_eq!((stats.rejected, stats.timed_out), (0, 0));
}

#[test]
fn public_types_are_send_sync_and_debug() {
    fn send_sync<T: Send + Sync + std::fmt::Debug>() {}
    fn send<T: Send>() {}
    send_sync::<BulkheadLayer>();
    send_sync::<Svc>();
    send_sync::<tower_breaker::bulkhead::Handle>();
    send_sync::<tower_breaker::bulkhead::Permit>();
    send_sync::<tower_breaker::bulkhead::Stats>();
    send::<Fut>();
    let layer = layer(1, 1, WAIT);
    let text = format!("{layer:?} {:?}", layer.handle());
    assert!(text.contains("test"), "{text}");
}

#[cfg(feature = "tracing")]
#[tokio::test(start_paused = true)]
async fn rejections_and_timeouts_emit_tracing_events() {
    use std::sync::Mutex;

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

    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let inner = Inner::default();
    let layer = layer(1, 1, Duration::from_millis(10));
    let mut c = callers(&layer, &inner, 3);
    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    assert_ready_ok!(c[2].poll_ready());
    tokio::time::advance(Duration::from_millis(10)).await;
    assert_ready_ok!(c[1].poll_ready());

    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("bulkhead full"), "{logged}");
    assert!(logged.contains("wait timed out"), "{logged}");
    assert_eq!(logged.matches("bulkhead=test").count(), 2, "{logged}");
}
