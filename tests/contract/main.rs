//! The tower `Service` contract, checked the same way for every service type in the crate:
//! the circuit breaker (default and fail-fast modes), the bulkhead, failover and keyed breakers.
//!
//! Each property is one generic function over a [`Subject`]; `subjects.rs` runs every property
//! against every subject. A subject is set up *scarce*: exactly one admission is free (a
//! half-open circuit with one probe permit, a bulkhead with one slot), so that a leaked, shared
//! or stolen reservation shows. The inner service ([`Inner`]) enforces its side of the contract
//! itself: it panics if called without a successful `poll_ready` on the same clone, and its
//! `poll_ready` can be made `Pending` (remembering the waker) or made to fail once.
//!
//! Properties:
//! - `poll_ready` before `call`: `call` without it panics; the inner service is never called
//!   without its own `poll_ready` (enforced by [`Inner`] in every test).
//! - readiness is sticky: a second `poll_ready` keeps the reservation; a manual change after
//!   `Ready` does not take it back.
//! - `Pending` registers a waker that is woken: when the inner service becomes ready, when a
//!   reservation is released, when the circuit is closed by hand, when the open period ends.
//! - dropping a ready clone, a response future, or a response future whose inner future
//!   panicked gives back what it reserved.
//! - clones do not share reservations.
//! - `Err` from `poll_ready` only when the inner service returned it (then nothing stays
//!   reserved).

mod subjects;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_test::task::{self, Spawn};
use tower::Service;
use tower_breaker::circuit_breaker::Handle;
use tower_breaker::BoxError;

/// What a controlled call does when released.
pub enum Out {
    Ok,
    Err,
    Panic,
}

pub type Req = oneshot::Receiver<Out>;

#[derive(Default)]
pub struct InnerShared {
    pending: Mutex<bool>,
    wakers: Mutex<Vec<Waker>>,
    fail_next_ready: AtomicUsize,
    calls: AtomicUsize,
}

/// The inner service: readiness under test control, and strict about its own contract.
#[derive(Clone, Default)]
pub struct Inner {
    shared: Arc<InnerShared>,
    /// This clone's readiness (not shared with clones).
    ready: bool,
}

impl Inner {
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Makes every `poll_ready` `Pending` (`true`) or ready again (`false`, waking every
    /// waiter).
    pub fn set_pending(&self, pending: bool) {
        *self.shared.pending.lock().unwrap() = pending;
        if !pending {
            for waker in self.shared.wakers.lock().unwrap().drain(..) {
                waker.wake();
            }
        }
    }

    /// Makes the next `poll_ready` (of any clone) fail.
    pub fn fail_next_ready(&self) {
        self.shared.fail_next_ready.fetch_add(1, Ordering::SeqCst);
    }
}

impl Service<Req> for Inner {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let failing = self.shared.fail_next_ready.load(Ordering::SeqCst);
        if failing > 0 {
            self.shared
                .fail_next_ready
                .store(failing - 1, Ordering::SeqCst);
            self.ready = false;
            return Poll::Ready(Err("inner poll_ready failed".into()));
        }
        if *self.shared.pending.lock().unwrap() {
            self.shared.wakers.lock().unwrap().push(cx.waker().clone());
            return Poll::Pending;
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, rx: Req) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "contract: the inner service was called without a successful poll_ready"
        );
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match rx.await {
                Ok(Out::Ok) => Ok(1),
                Ok(Out::Err) | Err(_) => Err("inner call failed".into()),
                Ok(Out::Panic) => panic!("inner panic"),
            }
        })
    }
}

/// A service type under test, set up with exactly one admission free.
#[allow(async_fn_in_trait)]
pub trait Subject {
    type S: Service<Req, Response = u32, Error = BoxError> + Clone + Unpin + Send + 'static;

    /// Whether the service reserves its admission in `poll_ready` (else at `call`: keyed).
    const RESERVES_AT_READY: bool;
    /// Whether a caller with no admission free is `Pending` (else ready, then rejected).
    const WAITS: bool;
    /// Whether `call` without `poll_ready` panics in the service itself (keyed: only when the
    /// call would reach the inner service, which then panics).
    const PANICS_WITHOUT_READY: bool;

    /// The service around `inner`, with exactly one admission free.
    async fn scarce(inner: Inner) -> Self::S;

    /// The circuit deciding admissions, if there is one.
    fn circuit(svc: &Self::S) -> Option<Handle>;

    /// After a failed (or panicked) admitted call: whatever it takes (time) until one admission
    /// is free again.
    async fn recover();
}

pub const OPEN: Duration = Duration::from_secs(10);

/// Polls `svc` once on its mock task; an `Err` fails the test (no test here expects one
/// except [`err_from_poll_ready_only_from_inner`]).
pub fn ready<S: Service<Req, Error = BoxError> + Unpin>(svc: &mut Spawn<S>) -> Poll<()> {
    match svc.enter(|cx, mut s| s.poll_ready(cx)) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) => Poll::Ready(()),
        Poll::Ready(Err(e)) => panic!("contract: poll_ready failed on its own: {e}"),
    }
}

/// Whether a fresh clone is admitted now: its `poll_ready` is ready *and* its call reaches the
/// inner service. Neutral: the call's response future is dropped unpolled (a dropped call
/// records nothing and gives back what it reserved).
pub fn admits<S: Service<Req, Error = BoxError> + Clone + Unpin>(svc: &S, inner: &Inner) -> bool {
    let mut probe = task::spawn(svc.clone());
    if ready(&mut probe).is_pending() {
        return false;
    }
    let before = inner.calls();
    let (_tx, rx) = oneshot::channel();
    let fut = probe.call(rx);
    let reached = inner.calls() > before;
    drop(fut);
    reached
}

/// Takes the one free admission with a fresh clone; returns the ready clone.
fn take<T: Subject>(svc: &T::S) -> Spawn<T::S> {
    let mut holder = task::spawn(svc.clone());
    assert!(ready(&mut holder).is_ready(), "the free admission is taken");
    holder
}

async fn setup<T: Subject>() -> (T::S, Inner) {
    let inner = Inner::default();
    let svc = T::scarce(inner.clone()).await;
    assert!(admits(&svc, &inner), "setup: one admission is free");
    assert!(admits(&svc, &inner), "setup: a dropped call gave it back");
    (svc, inner)
}

// ---------------------------------------------------------------------------------------------
// The properties.

/// `call` without a successful `poll_ready` panics (and never reaches the inner service
/// unprepared).
pub async fn call_without_poll_ready_panics<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let before = inner.calls();
    if T::PANICS_WITHOUT_READY {
        let mut fresh = svc.clone();
        let (_tx, rx) = oneshot::channel();
        let result = catch_unwind(AssertUnwindSafe(|| drop(fresh.call(rx))));
        assert!(result.is_err(), "call without poll_ready must panic");
        assert_eq!(inner.calls(), before, "the inner service was not called");
        // Nothing was reserved by the refused call.
        assert!(admits(&svc, &inner));
    }

    // After one call, the next call needs a new poll_ready too.
    let mut holder = take::<T>(&svc);
    let (tx, rx) = oneshot::channel();
    let mut fut = task::spawn(holder.call(rx));
    let before = inner.calls();
    let (_tx2, rx2) = oneshot::channel();
    let again = catch_unwind(AssertUnwindSafe(|| drop(holder.call(rx2))));
    if T::PANICS_WITHOUT_READY {
        assert!(
            again.is_err(),
            "a second call after one poll_ready must panic"
        );
    }
    assert_eq!(
        inner.calls(),
        before,
        "contract: the inner service was not called unready"
    );
    let _ = tx.send(Out::Ok);
    assert!(tokio_test::assert_ready!(fut.poll()).is_ok());
}

/// Readiness is sticky: `poll_ready` again keeps the same reservation (it takes no second
/// one), another caller cannot take it, and a manual change after `Ready` does not take it
/// back: the next `call` reaches the inner service.
pub async fn readiness_is_sticky<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let mut holder = take::<T>(&svc);
    for _ in 0..3 {
        assert!(ready(&mut holder).is_ready(), "still ready");
    }
    if T::RESERVES_AT_READY {
        assert!(!admits(&svc, &inner), "nobody else gets the held admission");
        if let Some(circuit) = T::circuit(&svc) {
            circuit.force_open();
        }
    }
    let before = inner.calls();
    let (tx, rx) = oneshot::channel();
    let mut fut = task::spawn(holder.call(rx));
    assert_eq!(
        inner.calls(),
        before + 1,
        "the ready call reaches the inner service"
    );
    let _ = tx.send(Out::Ok);
    assert_eq!(tokio_test::assert_ready!(fut.poll()).unwrap(), 1);
}

/// `Pending` because the inner service is not ready registers the task's waker, which is
/// woken when the inner service becomes ready; then the caller is ready and admitted.
pub async fn pending_inner_wakes<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    inner.set_pending(true);
    let mut caller = task::spawn(svc.clone());
    assert!(ready(&mut caller).is_pending());
    assert!(
        ready(&mut caller).is_pending(),
        "polled again: still pending"
    );
    assert!(!caller.is_woken());
    inner.set_pending(false);
    assert!(
        caller.is_woken(),
        "contract: Pending registered a waker that is woken"
    );
    assert!(ready(&mut caller).is_ready());
    let before = inner.calls();
    let (_tx, rx) = oneshot::channel();
    drop(caller.call(rx));
    assert_eq!(inner.calls(), before + 1);
    if T::RESERVES_AT_READY {
        // A reservation taken before the inner service turned out not ready is not stuck.
        assert!(admits(&svc, &inner));
    }
}

/// `Pending` because no admission is free registers a waker that is woken when one is given
/// back: by a ready clone dropped, by a response future dropped, by a call that completes.
pub async fn pending_admission_wakes<T: Subject>() {
    if !T::WAITS {
        return;
    }
    let (svc, inner) = setup::<T>().await;
    // A ready clone dropped.
    let holder = take::<T>(&svc);
    let mut waiter = task::spawn(svc.clone());
    assert!(ready(&mut waiter).is_pending());
    drop(holder);
    assert!(waiter.is_woken(), "a dropped ready clone wakes the waiter");
    assert!(ready(&mut waiter).is_ready());

    // A response future dropped mid-flight.
    let (_tx, rx) = oneshot::channel();
    let fut = waiter.call(rx);
    let mut waiter2 = task::spawn(svc.clone());
    assert!(ready(&mut waiter2).is_pending());
    drop(fut);
    assert!(
        waiter2.is_woken(),
        "a dropped response future wakes the waiter"
    );
    assert!(ready(&mut waiter2).is_ready());
    drop(waiter2);
    assert!(admits(&svc, &inner));
}

/// With a circuit: `Pending` on a forced-open circuit is woken by `force_closed` and by
/// `reset` (every manual change that admits wakes every waiter).
pub async fn manual_close_wakes<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let Some(circuit) = T::circuit(&svc) else {
        return;
    };
    for close in [Handle::force_closed as fn(&Handle), Handle::reset] {
        circuit.force_open();
        assert!(!admits(&svc, &inner), "forced open admits nothing");
        if !T::WAITS {
            close(&circuit);
            assert!(admits(&svc, &inner));
            continue;
        }
        let mut waiters: Vec<_> = (0..3).map(|_| task::spawn(svc.clone())).collect();
        for w in &mut waiters {
            assert!(ready(w).is_pending());
        }
        close(&circuit);
        for w in &mut waiters {
            assert!(w.is_woken(), "contract: a manual close wakes every waiter");
            assert!(ready(w).is_ready());
        }
    }
}

/// With a circuit in default mode: `Pending` on an open circuit registers a waker (and a timer)
/// that is woken when the open period ends; then the caller is admitted as a probe.
pub async fn pending_open_circuit_wakes_at_the_deadline<T: Subject>() {
    if !T::WAITS {
        return;
    }
    let (svc, inner) = setup::<T>().await;
    let Some(circuit) = T::circuit(&svc) else {
        return;
    };
    // The probe fails: open again for `OPEN`.
    let mut holder = take::<T>(&svc);
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Out::Err);
    assert!(holder.call(rx).await.is_err());
    assert_eq!(circuit.state(), tower_breaker::circuit_breaker::State::Open);
    let mut waiter = task::spawn(svc.clone());
    assert!(ready(&mut waiter).is_pending());
    tokio::time::advance(OPEN - Duration::from_millis(1)).await;
    assert!(!waiter.is_woken(), "not before the deadline");
    assert!(ready(&mut waiter).is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(waiter.is_woken(), "contract: woken at the open deadline");
    assert!(ready(&mut waiter).is_ready());
    drop(waiter);
    assert!(admits(&svc, &inner));
}

/// Dropping a ready clone gives back what it reserved.
pub async fn dropping_a_ready_clone_releases<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let holder = take::<T>(&svc);
    if T::RESERVES_AT_READY {
        assert!(!admits(&svc, &inner));
    }
    drop(holder);
    assert!(
        admits(&svc, &inner),
        "contract: the dropped clone's admission is free"
    );
}

/// Dropping a response future before it completes gives back what the call reserved.
pub async fn dropping_a_response_future_releases<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let mut holder = take::<T>(&svc);
    let (_tx, rx) = oneshot::channel();
    let mut fut = task::spawn(holder.call(rx));
    assert!(fut.poll().is_pending());
    assert!(
        !admits(&svc, &inner),
        "the running call holds the admission"
    );
    drop(fut);
    assert!(
        admits(&svc, &inner),
        "contract: the dropped call's admission is free"
    );
}

/// A call whose inner future panics gives back what it reserved, also when its response
/// future is dropped while the panic unwinds (as tokio's task harness does). A circuit counts
/// the panic as a failure (a half-open probe reopens it), so admission comes back after the
/// subject's recovery time.
pub async fn a_panicking_call_releases<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let mut holder = take::<T>(&svc);
    let (tx, rx) = oneshot::channel();
    let fut = task::spawn(holder.call(rx));
    let _ = tx.send(Out::Panic);
    let unwound = catch_unwind(AssertUnwindSafe(move || {
        let mut fut = fut;
        let _ = fut.poll();
    }));
    assert!(unwound.is_err(), "the inner future panicked");
    T::recover().await;
    assert!(
        admits(&svc, &inner),
        "contract: the panicked call's admission is free"
    );
}

/// Clones do not share reservations: a clone of a ready service is not ready (its `call`
/// panics), and does not get the original's admission.
pub async fn clones_do_not_share_reservations<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let mut holder = take::<T>(&svc);
    let mut twin = task::spawn(holder.clone());
    if T::RESERVES_AT_READY {
        let (_tx, rx) = oneshot::channel();
        let result = catch_unwind(AssertUnwindSafe(|| drop(twin.call(rx))));
        assert!(
            result.is_err(),
            "contract: a clone of a ready service is not ready"
        );
        if T::WAITS {
            assert!(
                ready(&mut twin).is_pending(),
                "the clone does not share the admission"
            );
        } else {
            assert!(!admits::<T::S>(&twin, &inner));
        }
    }
    // The original still holds its admission.
    let before = inner.calls();
    let (tx, rx) = oneshot::channel();
    let mut fut = task::spawn(holder.call(rx));
    assert_eq!(inner.calls(), before + 1);
    let _ = tx.send(Out::Ok);
    assert!(tokio_test::assert_ready!(fut.poll()).is_ok());
    drop(twin);
    drop(holder);
    assert!(admits(&svc, &inner));
}

/// `Err` from `poll_ready` comes only from the inner service (every other poll in this suite
/// fails the test on `Err`), and then nothing stays reserved.
pub async fn err_from_poll_ready_only_from_inner<T: Subject>() {
    let (svc, inner) = setup::<T>().await;
    let mut caller = task::spawn(svc.clone());
    inner.fail_next_ready();
    match caller.enter(|cx, mut s| s.poll_ready(cx)) {
        Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "inner poll_ready failed"),
        other => panic!("contract: the inner error is passed on, got {other:?}"),
    }
    drop(caller);
    assert!(
        admits(&svc, &inner),
        "contract: nothing stays reserved after Err"
    );
}
