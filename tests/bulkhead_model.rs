//! Model-based test of the bulkhead: random sequences of callers (admitted, queued, rejected),
//! held calls finishing, failing, panicking or being dropped, ready clones dropped without
//! calling, waiting callers dropped, time advances (waits timing out) and live resizes, run
//! against the real bulkhead on tokio's paused clock and against a small sequential model.
//! Admissions, rejections, time-outs, wake-ups and `stats()` must agree after every step.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_test::task::{self, Spawn};
use tower::Service;
use tower_breaker::bulkhead::error::{BulkheadFull, BulkheadTimeout};
use tower_breaker::bulkhead::{Bulkhead, BulkheadLayer, Handle, ResponseFuture};
use tower_breaker::BoxError;
use tower_layer::Layer;

#[path = "support/quiet_panics.rs"]
mod quiet_panics;
use quiet_panics::quiet_expected_panics;

const START_CONCURRENT: usize = 2;
const MAX_QUEUE: usize = 3;
/// Half a millisecond over a whole number of milliseconds: time advances in whole milliseconds,
/// so no step ends exactly on a deadline (tokio's timer rounds deadlines up to the millisecond).
const MAX_WAIT: Duration = Duration::from_micros(1_000_500);

#[derive(Debug, Clone)]
enum Op {
    /// A new caller polls for a slot (admitted, queued or rejected).
    Start,
    /// A new caller takes a slot and holds it without calling (a ready clone).
    Reserve,
    /// The `n`-th held slot (mod len) finishes: `true` ok, `false` error.
    Finish(usize, bool),
    /// The `n`-th held slot's inner future panics (the response future is dropped while the
    /// panic unwinds, as tokio's task harness does).
    Panic(usize),
    /// The `n`-th held slot is dropped: a response future mid-flight, or a ready clone.
    Drop(usize),
    /// The `n`-th waiting caller is dropped.
    DropWaiter(usize),
    Advance(u64),
    Resize(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Start),
        2 => Just(Op::Reserve),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        1 => any::<usize>().prop_map(Op::Panic),
        2 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::DropWaiter),
        3 => (1u64..1_500).prop_map(Op::Advance),
        2 => (0usize..5).prop_map(Op::Resize),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model: a counting semaphore with debt, a FIFO queue with deadlines, two counters.

#[derive(Debug)]
struct Model {
    now: Instant,
    cap: usize,
    /// Slots held (calls running, ready clones, and waiters just handed a slot).
    active: usize,
    /// Waiting callers, oldest first: (caller id, deadline).
    queue: VecDeque<(u64, Instant)>,
    /// Waiters handed a slot since the last step, oldest first.
    granted: Vec<u64>,
    rejected: u64,
    timed_out: u64,
    /// Calls that reached the inner service.
    admitted: usize,
}

enum Admit {
    Now,
    Queued,
    Full,
}

impl Model {
    fn admit(&mut self, id: u64) -> Admit {
        if self.queue.is_empty() && self.active < self.cap {
            self.active += 1;
            Admit::Now
        } else if self.queue.len() < MAX_QUEUE {
            self.queue.push_back((id, self.now + MAX_WAIT));
            Admit::Queued
        } else {
            self.rejected += 1;
            Admit::Full
        }
    }

    fn release(&mut self) {
        if self.active > self.cap {
            self.active -= 1; // paying off a shrink
        } else if let Some((id, _)) = self.queue.pop_front() {
            self.granted.push(id); // the slot moves to the oldest waiter
        } else {
            self.active -= 1;
        }
    }

    fn resize(&mut self, n: usize) {
        self.cap = n.max(1);
        while self.active < self.cap {
            let Some((id, _)) = self.queue.pop_front() else {
                break;
            };
            self.active += 1;
            self.granted.push(id);
        }
    }

    /// Waiters whose deadline has passed (and were not handed a slot).
    fn expire(&mut self) -> Vec<u64> {
        let now = self.now;
        let expired: Vec<u64> = self
            .queue
            .iter()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        self.queue.retain(|(_, deadline)| *deadline > now);
        self.timed_out += expired.len() as u64;
        expired
    }
}

// ---------------------------------------------------------------------------------------------
// The real bulkhead.

enum Out {
    Ok,
    Err,
    Panic,
}

#[derive(Clone, Default)]
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
                Ok(Out::Ok) => Ok(7),
                Ok(Out::Err) | Err(_) => Err("inner failed".into()),
                Ok(Out::Panic) => panic!("inner panic"),
            }
        })
    }
}

type Svc = Bulkhead<Inner>;
type Fut = ResponseFuture<InnerFuture, tower_breaker::bulkhead::ReleaseOnResponse>;

enum Held {
    Called(Spawn<Fut>, oneshot::Sender<Out>),
    Reserved(Spawn<Svc>),
}

struct Waiter {
    id: u64,
    svc: Spawn<Svc>,
    reserve: bool,
}

fn poll_ready(svc: &mut Spawn<Svc>) -> Poll<Result<(), BoxError>> {
    svc.enter(|cx, mut s| s.poll_ready(cx))
}

fn call(svc: &mut Spawn<Svc>) -> Held {
    let (tx, rx) = oneshot::channel();
    Held::Called(task::spawn(svc.call(rx)), tx)
}

fn check(handle: &Handle, model: &Model, inner: &Inner, step: usize, op: &Op) {
    let s = handle.stats();
    let ctx = format!("step {step} {op:?}; model {model:?}");
    assert_eq!(s.max_concurrent, model.cap, "max_concurrent: {ctx}");
    assert_eq!(s.active, model.active, "active: {ctx}");
    assert_eq!(s.queued, model.queue.len(), "queued: {ctx}");
    assert_eq!(
        s.available,
        model.cap.saturating_sub(model.active),
        "available: {ctx}"
    );
    assert_eq!(s.rejected, model.rejected, "rejected: {ctx}");
    assert_eq!(s.timed_out, model.timed_out, "timed_out: {ctx}");
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        model.admitted,
        "calls reaching the inner service: {ctx}"
    );
}

async fn run(ops: Vec<Op>) {
    let layer = BulkheadLayer::builder()
        .name("model")
        .max_concurrent(START_CONCURRENT)
        .max_queue(MAX_QUEUE)
        .max_wait(MAX_WAIT)
        .build()
        .unwrap();
    let handle = layer.handle();
    let inner = Inner::default();
    let svc: Svc = layer.layer(inner.clone());
    let mut model = Model {
        now: Instant::now(),
        cap: START_CONCURRENT,
        active: 0,
        queue: VecDeque::new(),
        granted: Vec::new(),
        rejected: 0,
        timed_out: 0,
        admitted: 0,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut next_id = 0u64;

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Start | Op::Reserve => {
                let id = next_id;
                next_id += 1;
                let reserve = matches!(op, Op::Reserve);
                let mut caller = task::spawn(svc.clone());
                let polled = poll_ready(&mut caller);
                match model.admit(id) {
                    Admit::Now => {
                        assert!(
                            matches!(polled, Poll::Ready(Ok(()))),
                            "step {step}: admitted"
                        );
                        held.push(if reserve {
                            Held::Reserved(caller)
                        } else {
                            model.admitted += 1;
                            call(&mut caller)
                        });
                    }
                    Admit::Queued => {
                        assert!(polled.is_pending(), "step {step}: queued");
                        waiters.push(Waiter {
                            id,
                            svc: caller,
                            reserve,
                        });
                    }
                    Admit::Full => {
                        assert!(
                            matches!(polled, Poll::Ready(Ok(()))),
                            "step {step}: ready-with-rejection"
                        );
                        let (_tx, rx) = oneshot::channel();
                        let err = caller.call(rx).await.expect_err("rejected");
                        assert!(err.is::<BulkheadFull>(), "step {step}: {err}");
                    }
                }
            }
            Op::Finish(i, ok) if !held.is_empty() => {
                let i = i % held.len();
                match held.swap_remove(i) {
                    Held::Called(mut fut, tx) => {
                        let _ = tx.send(if *ok { Out::Ok } else { Out::Err });
                        let result = tokio_test::assert_ready!(fut.poll());
                        assert_eq!(result.is_ok(), *ok, "step {step}: result");
                    }
                    Held::Reserved(mut caller) => {
                        // A ready clone calls, and the call finishes at once.
                        assert!(matches!(poll_ready(&mut caller), Poll::Ready(Ok(()))));
                        model.admitted += 1;
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(if *ok { Out::Ok } else { Out::Err });
                        assert_eq!(caller.call(rx).await.is_ok(), *ok, "step {step}");
                    }
                }
                model.release();
            }
            Op::Panic(i) if !held.is_empty() => {
                let i = i % held.len();
                match held.swap_remove(i) {
                    Held::Called(fut, tx) => {
                        let _ = tx.send(Out::Panic);
                        // The future is owned by the closure, so it is dropped while the
                        // panic unwinds.
                        let unwound = catch_unwind(AssertUnwindSafe(move || {
                            let mut fut = fut;
                            let _ = fut.poll();
                        }));
                        assert!(unwound.is_err(), "step {step}: the inner future panics");
                    }
                    Held::Reserved(caller) => drop(caller),
                }
                model.release();
            }
            Op::Drop(i) if !held.is_empty() => {
                let i = i % held.len();
                drop(held.swap_remove(i));
                model.release();
            }
            Op::DropWaiter(i) if !waiters.is_empty() => {
                let w = waiters.remove(i % waiters.len());
                model.queue.retain(|(id, _)| *id != w.id);
                drop(w);
            }
            Op::Advance(ms) => {
                let d = Duration::from_millis(*ms);
                tokio::time::advance(d).await;
                model.now += d;
            }
            Op::Resize(n) => {
                handle.set_max_concurrent(*n);
                model.resize(*n);
            }
            Op::Finish(..) | Op::Panic(_) | Op::Drop(_) | Op::DropWaiter(_) => {}
        }

        // Waiters handed a slot were woken; they take it on their next poll and call.
        let granted = std::mem::take(&mut model.granted);
        let expired = model.expire();
        let mut still = Vec::new();
        for mut w in waiters.drain(..) {
            let is_granted = granted.contains(&w.id);
            let is_expired = expired.contains(&w.id);
            if is_granted || is_expired {
                assert!(
                    w.svc.is_woken(),
                    "step {step} {op:?}: waiter {} was not woken (granted {is_granted})",
                    w.id
                );
            }
            let polled = poll_ready(&mut w.svc);
            if is_granted {
                assert!(
                    matches!(polled, Poll::Ready(Ok(()))),
                    "step {step}: granted"
                );
                if w.reserve {
                    held.push(Held::Reserved(w.svc));
                } else {
                    model.admitted += 1;
                    held.push(call(&mut w.svc));
                }
            } else if is_expired {
                assert!(
                    matches!(polled, Poll::Ready(Ok(()))),
                    "step {step}: timed out"
                );
                let (_tx, rx) = oneshot::channel();
                let err = w.svc.call(rx).await.expect_err("timed out");
                assert!(err.is::<BulkheadTimeout>(), "step {step}: {err}");
            } else {
                assert!(polled.is_pending(), "step {step}: waiter {} waits", w.id);
                still.push(w);
            }
        }
        waiters = still;
        assert_eq!(Instant::now(), model.now, "step {step}: clocks diverged");
        check(&handle, &model, &inner, step, op);
    }

    // Everything given back: every slot returns and the queue drains.
    drop(waiters);
    model.queue.clear();
    for h in held.drain(..) {
        drop(h);
        model.release();
    }
    let s = handle.stats();
    assert_eq!((s.active, s.queued), (0, 0), "all slots back: {s:?}");
    assert_eq!(s.available, s.max_concurrent, "all slots back: {s:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn bulkhead_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        quiet_expected_panics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
