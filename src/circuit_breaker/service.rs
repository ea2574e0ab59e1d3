//! The [`CircuitBreaker`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::classify::{DefaultClassifier, ResponseClassifier};
use super::future::ResponseFuture;
use super::guard::{CallGuard, Owner};
use super::handle::Handle;
use super::shared::{Admission, Shared};
use super::ticket::PackedTicket;
use crate::failover::scope;
use crate::BoxError;

/// A circuit breaker around the service `S`, classifying results with `C`.
///
/// Made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer); every clone shares the layer's
/// circuit but holds its own reservation (a clone never uses another clone's readiness).
///
/// # `poll_ready`
///
/// The circuit is checked *before* the inner service (an open circuit never waits on inner
/// readiness). Then:
///
/// - **Closed** or **Disabled**: the call is admitted (one atomic load); returns what the inner
///   `poll_ready` returns.
/// - **Half-open** with a free probe permit: takes the permit (held by this clone until `call`,
///   or given back if the clone is dropped or the inner `poll_ready` fails) and returns what the
///   inner `poll_ready` returns.
/// - **Open**, **forced open**, or **half-open** with every permit taken:
///   - default mode: returns `Poll::Pending`. The task's waker is registered with the circuit
///     and is woken when the circuit may admit again: at the open deadline (by a
///     `tokio::time::Sleep` this clone arms at the circuit's shared deadline), at the earliest
///     probe deadline while half-open, when a probe permit is freed, and at once by
///     `force_closed`, `reset` or `disable`. Only the waker of the most recent `poll_ready`
///     is kept. Outside a Tokio runtime no timer is armed, and only those manual or permit
///     events wake the task.
///   - fail-fast mode: returns `Poll::Ready(Ok(()))` without polling the inner service; the
///     next `call` returns a [`CircuitOpen`](super::error::CircuitOpen) error.
/// - `Poll::Ready(Err(_))` only when the inner service's `poll_ready` returned an error
///   (boxed); any permit taken is given back first. The breaker never fails `poll_ready` on its
///   own, because `Err` from `poll_ready` is terminal in tower.
///
/// Readiness is sticky: after `Ready(Ok(()))`, the next `call` is admitted (or, in fail-fast
/// mode, rejected) as decided then, even if the circuit has changed since. If `poll_ready` is
/// called again first, a reservation from an earlier generation is given back and the circuit
/// is checked again.
///
/// # `call`
///
/// Panics if `poll_ready` has not returned `Ready(Ok(()))` since the last `call`, like tower's
/// own middleware.
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    /// The circuit (also reachable through `common`, but `poll_ready` reads it on every call,
    /// and one pointer less to follow is worth a field).
    shared: Arc<Shared>,
    classifier: C,
    reservation: Reservation,
    wait: Wait,
    /// The owner the layer's services share (see [`Owner`]).
    common: Arc<Owner>,
    /// The owner this clone's calls hold: `common` until the clone's second call, which makes
    /// the clone its own.
    owner: Arc<Owner>,
    owner_stage: OwnerStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerStage {
    BeforeFirstCall,
    AfterFirstCall,
    Own,
}

#[derive(Debug)]
enum Reservation {
    None,
    Admitted(PackedTicket),
    /// Fail-fast: `call` will reject (its error is built then, with a current `retry_after`).
    Rejected,
}

/// What a clone holds once `poll_ready` is ready.
enum Reserved {
    Admission,
    Rejection,
}

/// A waiting clone's registration: its slot in the circuit's waiter list and its timer.
#[derive(Default)]
struct Wait {
    key: Option<usize>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Wait {
    /// Polls the timer armed at `deadline`; `Pending` also when no timer can be armed.
    fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if self.sleep.is_none() && tokio::runtime::Handle::try_current().is_err() {
            return Poll::Pending;
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, common: Arc<Owner>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            shared: common.shared().clone(),
            classifier,
            reservation: Reservation::None,
            wait: Wait::default(),
            owner: common.clone(),
            common,
            owner_stage: OwnerStage::BeforeFirstCall,
        }
    }

    /// What this call's guard holds on to (see [`Owner`]).
    #[inline]
    fn owner(&mut self) -> Arc<Owner> {
        if self.owner_stage != OwnerStage::Own {
            self.next_owner_stage();
        }
        self.owner.clone()
    }

    /// The first call uses the common owner; the second makes this clone's own.
    #[cold]
    #[inline(never)]
    fn next_owner_stage(&mut self) {
        if self.owner_stage == OwnerStage::BeforeFirstCall {
            self.owner_stage = OwnerStage::AfterFirstCall;
        } else {
            self.owner = Arc::new(Owner::new(self.shared.clone()));
            self.owner_stage = OwnerStage::Own;
        }
    }

    /// A [`Handle`] on this service's circuit.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Whether this clone's next `call` would reach the inner service: it holds an admission,
    /// or holds nothing and the circuit would admit now. For `Steer` pickers that skip open
    /// circuits.
    pub fn is_admitting(&self) -> bool {
        match &self.reservation {
            Reservation::Admitted(_) => true,
            Reservation::Rejected => false,
            Reservation::None => self.shared.is_admitting(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn give_back(&mut self) {
        if let Reservation::Admitted(ticket) =
            std::mem::replace(&mut self.reservation, Reservation::None)
        {
            self.shared.release(ticket);
        }
    }

    /// `poll_ready`'s reservation when the closed-circuit fast path did not decide: keeps a
    /// reservation still current, gives back a stale one, and asks the circuit again.
    #[cold]
    #[inline(never)]
    fn poll_reservation(&mut self, cx: &mut Context<'_>) -> Poll<Reserved> {
        match &self.reservation {
            Reservation::None => {}
            Reservation::Admitted(ticket) if self.shared.is_current(*ticket) => {}
            _ => self.give_back(),
        }
        if let Reservation::None = self.reservation {
            match self.shared.admit_fast() {
                Some(ticket) => self.reservation = Reservation::Admitted(ticket),
                None if self.shared.config.fail_fast && self.shared.refuses_without_lock() => {
                    self.reservation = Reservation::Rejected;
                }
                None => {
                    if self.poll_admission(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        Poll::Ready(match self.reservation {
            Reservation::Rejected => Reserved::Rejection,
            _ => Reserved::Admission,
        })
    }

    /// Fail-fast, refusing: ready, so that `call` rejects at once — unless a `Failover` is
    /// polling, which would rather move on to its next member: then `Pending`, holding no
    /// rejection (the `Failover` polls again outside its scope before it could wait on this).
    #[cold]
    fn ready_to_reject(&mut self) -> Poll<Result<(), BoxError>> {
        if scope::defer_rejection() {
            self.reservation = Reservation::None;
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes an admission (or, fail-fast, a rejection) from the cold path; `Pending` while the
    /// default mode must wait.
    fn poll_admission(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let fail_fast = self.shared.config.fail_fast;
        // Bounded: each round either decides or arms a timer for a deadline that was still in
        // the future when the circuit was checked.
        for _ in 0..3 {
            let waiter = (!fail_fast).then_some((&mut self.wait.key, cx.waker()));
            match self.shared.admit_slow(waiter) {
                Admission::Admitted(ticket) => {
                    self.reservation = Reservation::Admitted(ticket);
                    return Poll::Ready(());
                }
                Admission::Rejected => {
                    self.reservation = Reservation::Rejected;
                    return Poll::Ready(());
                }
                Admission::Wait { wake_at: None } => return Poll::Pending,
                Admission::Wait {
                    wake_at: Some(deadline),
                } => {
                    if self.wait.poll_until(deadline, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ResponseClassifier<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The common case inline (no reservation yet, the circuit closed); the rest out of line.
        let admitted = match self.reservation {
            Reservation::None => match self.shared.admit_fast() {
                Some(ticket) => {
                    self.reservation = Reservation::Admitted(ticket);
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !admitted {
            match self.poll_reservation(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Reserved::Rejection) => return self.ready_to_reject(),
                Poll::Ready(Reserved::Admission) => {}
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => {
                self.give_back();
                Poll::Ready(Err(error.into()))
            }
        }
    }

    // Forced inline, like the response future's `poll` and the guard's `finish`: LLVM kept
    // them out of line, and their call frames were a measurable share of the admitted path
    // (the numbers live in BENCHMARKS.md).
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.reservation, Reservation::None) {
            Reservation::Admitted(ticket) => {
                let guard = CallGuard::new(self.owner(), ticket);
                let started = self.shared.start_time();
                let future = self.inner.call(request);
                ResponseFuture::called(future, guard, started, self.classifier.clone())
            }
            Reservation::Rejected => rejection(&self.shared, &self.classifier),
            Reservation::None => not_ready(),
        }
    }
}

/// A fail-fast rejection's future (out of line: the admitted call is the one to keep fast).
#[cold]
#[inline(never)]
fn rejection<F, C: Clone>(shared: &Shared, classifier: &C) -> ResponseFuture<F, C> {
    ResponseFuture::rejected(shared.reject(), classifier.clone())
}

#[cold]
#[inline(never)]
#[track_caller]
fn not_ready() -> ! {
    panic!("CircuitBreaker::call without a ready poll_ready; call poll_ready first")
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker::new(
            self.inner.clone(),
            self.common.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S, C> Drop for CircuitBreaker<S, C> {
    fn drop(&mut self) {
        self.give_back();
        if let Some(key) = self.wait.key.take() {
            self.shared.remove_waiter(key);
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("reservation", &self.reservation)
            .finish_non_exhaustive()
    }
}

/// The inner service's load, so a p2c `Balance` can weigh breakers directly. (A
/// default-mode breaker whose circuit is open is `Pending`, which `Balance` already skips.)
impl<S: tower::load::Load, C> tower::load::Load for CircuitBreaker<S, C> {
    type Metric = S::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}
