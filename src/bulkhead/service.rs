//! The [`Bulkhead`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::{BulkheadFull, BulkheadTimeout};
use super::future::{Rejection, ResponseFuture};
use super::handle::Handle;
use super::hold::{HoldPermit, Permit, ReleaseOnResponse};
use super::queue::{Acquire, Shared, WaitState, REJECTED, TIMED_OUT};
use crate::failover::scope;
use crate::sync::Arc;
use crate::BoxError;

/// A bulkhead around the service `S`: at most `max_concurrent` calls run at once, at most
/// `max_queue` callers wait (in FIFO order) for a slot, and none waits longer than `max_wait`.
///
/// Made by [`BulkheadLayer`](super::BulkheadLayer); every clone shares the layer's slots and
/// queue but holds its own reservation (a clone never uses another clone's slot). `H` decides
/// how long a call keeps its slot once the response is there (see [`HoldPermit`]).
///
/// # `poll_ready`
///
/// - `Poll::Ready(Ok(()))` when this clone holds a slot (a [`Permit`]) and the inner service is
///   ready. The slot is taken at once when one is free and nobody waits (one atomic
///   compare-and-swap, no lock, no allocation); it is then held by this clone until `call`
///   moves it into the response future, or until this clone is dropped. Calling `poll_ready`
///   again keeps the same slot.
/// - `Poll::Ready(Ok(()))` also when the call is **rejected** (ready-with-rejection): the
///   bulkhead is at capacity and `max_queue` callers already wait (with `max_queue(0)`, as soon
///   as it is at capacity), or this caller has waited `max_wait`. The inner service is not
///   polled, and the next `call` returns a [`BulkheadFull`] or [`BulkheadTimeout`] error
///   without calling it.
/// - `Poll::Pending` while this clone waits in the queue, or when it holds a slot and the inner
///   service is not ready (then the inner service arranges the wake-up). A waiting clone's
///   entry remembers the waker of its most recent `poll_ready`; that waker is woken once, when
///   a released slot (or a [`set_max_concurrent`](Handle::set_max_concurrent) that adds
///   slots) is handed to this clone — in FIFO order, oldest waiter first. Independently, the
///   same task is woken by a `tokio::time::Sleep` that this clone arms at `enqueue time +
///   max_wait`; on that poll the wait is over with a [`BulkheadTimeout`] rejection (unless the
///   slot was handed over at the same instant: the grant wins). Outside a Tokio runtime no
///   timer is armed and a waiter waits until it is granted a slot.
/// - `Poll::Ready(Err(_))` only when the inner service's `poll_ready` fails (the error boxed);
///   the slot is released first. The bulkhead never fails `poll_ready` on its own, because
///   `Err` from `poll_ready` is terminal in tower.
///
/// A waiting clone that is dropped leaves the queue (and passes on a slot it was handed
/// meanwhile); a clone dropped while holding a slot releases it.
///
/// # `call`
///
/// Moves the slot into the [`ResponseFuture`], which releases it when the call completes,
/// fails, panics or is dropped (or later, as `H` decides). Panics if `poll_ready` has not
/// returned `Ready(Ok(()))` since the last `call`, like tower's own middleware.
pub struct Bulkhead<S, H = ReleaseOnResponse> {
    inner: S,
    shared: Arc<Shared>,
    hold: H,
    state: State,
    /// The wait timer, boxed once per clone on its first wait and reused.
    sleep: Option<Pin<Box<Sleep>>>,
}

enum State {
    Idle,
    Waiting(u64),
    /// The wait ran out while a `Failover` was polling: not yet a rejection (see
    /// [`poll_expired`](Bulkhead::poll_expired)).
    Expired,
    Ready(Permit),
    Rejected(Rejection),
}

impl<S, H> Bulkhead<S, H> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, hold: H) -> Self {
        Bulkhead {
            inner,
            shared,
            hold,
            state: State::Idle,
            sleep: None,
        }
    }

    /// A [`Handle`] on this service's bulkhead.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Arms the wait timer at `deadline`; `false` outside a Tokio runtime.
    fn arm(&mut self, deadline: Instant) -> bool {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return false;
                }
                self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline)));
            }
        }
        true
    }

    fn reject(&mut self, rejection: Rejection) {
        self.state = State::Rejected(rejection);
    }

    /// Drives the admission; `Ready` once this clone holds a permit or a rejection.
    fn poll_admission(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let id = match self.state {
            State::Ready(_) | State::Rejected(_) => return Poll::Ready(()),
            State::Expired => return self.poll_expired(),
            State::Waiting(id) => match self.shared.poll_wait(id, cx.waker()) {
                WaitState::Granted => {
                    self.state = State::Ready(Permit::new(self.shared.clone()));
                    return Poll::Ready(());
                }
                WaitState::Waiting => id,
            },
            State::Idle => {
                if self.shared.try_acquire() {
                    self.state = State::Ready(Permit::new(self.shared.clone()));
                    return Poll::Ready(());
                }
                match self.shared.acquire_slow(cx.waker()) {
                    Acquire::Acquired => {
                        self.state = State::Ready(Permit::new(self.shared.clone()));
                        return Poll::Ready(());
                    }
                    Acquire::Full => {
                        if scope::defer_rejection() {
                            return Poll::Pending;
                        }
                        self.shared.count(REJECTED);
                        trace_debug!(
                            bulkhead = %self.shared.name,
                            max_queue = self.shared.max_queue,
                            "bulkhead full, call rejected"
                        );
                        let error = BulkheadFull::new(self.shared.name.clone());
                        self.reject(Rejection::Full(error));
                        return Poll::Ready(());
                    }
                    Acquire::Queued(id) => {
                        self.state = State::Waiting(id);
                        if !self.arm(Instant::now() + self.shared.max_wait) {
                            return Poll::Pending;
                        }
                        id
                    }
                }
            }
        };
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The wait is over, unless a slot was handed over at the same time: the grant wins.
        if self.shared.cancel(id) {
            self.state = State::Ready(Permit::new(self.shared.clone()));
            return Poll::Ready(());
        }
        self.state = State::Expired;
        self.poll_expired()
    }

    /// After the wait ran out: a slot freed since is taken; otherwise the call is rejected with
    /// [`BulkheadTimeout`] — unless a `Failover` is polling, which would rather move on: then the
    /// bulkhead stays expired and `Pending`, and rejects when polled outside the `Failover`'s
    /// scope (as the `Failover` does when no other member is ready).
    fn poll_expired(&mut self) -> Poll<()> {
        if self.shared.try_acquire() {
            self.state = State::Ready(Permit::new(self.shared.clone()));
            return Poll::Ready(());
        }
        if scope::defer_rejection() {
            return Poll::Pending;
        }
        self.shared.count(TIMED_OUT);
        trace_debug!(
            bulkhead = %self.shared.name,
            max_wait = ?self.shared.max_wait,
            "bulkhead wait timed out, call rejected"
        );
        let error = BulkheadTimeout::new(self.shared.name.clone());
        self.reject(Rejection::Timeout(error));
        Poll::Ready(())
    }
}

impl<S, H, Req> Service<Req> for Bulkhead<S, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    H: HoldPermit<S::Response> + Clone,
{
    type Response = H::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.poll_admission(cx).is_pending() {
            return Poll::Pending;
        }
        if let State::Rejected(_) = self.state {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => {
                self.state = State::Idle;
                Poll::Ready(Err(error.into()))
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.hold.clone())
            }
            State::Rejected(rejection) => ResponseFuture::rejected(rejection, self.hold.clone()),
            State::Idle | State::Waiting(_) | State::Expired => {
                panic!("Bulkhead::call without a successful poll_ready")
            }
        }
    }
}

impl<S, H> Drop for Bulkhead<S, H> {
    fn drop(&mut self) {
        if let State::Waiting(id) = self.state {
            if self.shared.cancel(id) {
                // Handed a slot meanwhile: pass it on.
                drop(Permit::new(self.shared.clone()));
            }
        }
    }
}

impl<S: Clone, H: Clone> Clone for Bulkhead<S, H> {
    /// A clone shares the bulkhead but not this clone's slot, wait or timer.
    fn clone(&self) -> Self {
        Bulkhead::new(self.inner.clone(), self.shared.clone(), self.hold.clone())
    }
}

impl<S: fmt::Debug, H> fmt::Debug for Bulkhead<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Waiting(_) => "waiting",
            State::Expired => "wait expired",
            State::Ready(_) => "holds a slot",
            State::Rejected(_) => "rejected",
        };
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The inner service's load, so a p2c `Balance` can weigh bulkheads directly.
impl<S: tower::load::Load, H> tower::load::Load for Bulkhead<S, H> {
    type Metric = S::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}
