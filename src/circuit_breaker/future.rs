//! The breaker's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::classify::{Outcome, ResponseClassifier};
use super::error::CircuitOpen;
use super::shared::Shared;
use super::ticket::PackedTicket;
use crate::failover::scope;
use crate::time::Stamp;
use crate::BoxError;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// Resolves to the inner result (errors boxed), or to a
    /// [`CircuitOpen`](super::error::CircuitOpen) error when a fail-fast breaker rejected the
    /// call. Records the classified outcome when the inner future completes; if it is dropped
    /// first, records nothing and gives back any probe permit it held. A panic in the inner
    /// future or the classifier counts as a failure.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        guard: Option<CallGuard>,
        // When the call started, if the slow-call rule needs it.
        started: Option<Stamp>,
        // Set while the inner future is polled: dropped with it set, the inner future panicked.
        in_inner_poll: bool,
        classifier: C,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.in_inner_poll {
                // Whether the drop is part of the unwinding or comes later (an executor that
                // caught the panic), the call failed.
                if let Some(guard) = this.guard.take() {
                    guard.finish(Outcome::Failure, *this.started);
                }
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(
        future: F,
        guard: CallGuard,
        started: Option<Stamp>,
        classifier: C,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            guard: Some(guard),
            started,
            in_inner_poll: false,
            classifier,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
            guard: None,
            started: None,
            in_inner_poll: false,
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ResponseClassifier<T, E>,
{
    type Output = Result<C::Response, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(error.into()))
            }
            KindProj::Called { future } => {
                if this.guard.is_none() {
                    panic!("polled after completion");
                }
                *this.in_inner_poll = true;
                let result = match future.poll(cx) {
                    Poll::Pending => {
                        *this.in_inner_poll = false;
                        return Poll::Pending;
                    }
                    Poll::Ready(result) => result,
                };
                *this.in_inner_poll = false;
                let guard = this.guard.take().expect("polled after completion");
                guard.responded();
                // The classifier owns the guard (in the `Recorder`) while it runs, so that a
                // panic in it drops the guard during unwinding, which records a failure.
                let recorder = Recorder {
                    guard,
                    started: *this.started,
                };
                Poll::Ready(
                    this.classifier
                        .classify_response(result, recorder)
                        .map_err(Into::into),
                )
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// Records the outcome of one admitted call, once.
///
/// Handed to [`ResponseClassifier::classify_response`]; a classifier that defers its verdict moves
/// it into the response (an HTTP body wrapper, say) and calls [`record`](Recorder::record) when
/// the verdict is known. Dropped without recording, it is neutral: nothing is counted and a
/// half-open probe permit is given back. Dropped while the thread panics, it records a failure
/// (not timed: a call whose classifier panicked never counts as slow, only as failed).
#[derive(Debug)]
pub struct Recorder {
    guard: CallGuard,
    started: Option<Stamp>,
}

impl Recorder {
    /// Records `outcome` for the call.
    #[inline]
    pub fn record(self, outcome: Outcome) {
        scope::note_outcome(outcome);
        self.guard.finish(outcome, self.started);
    }
}

/// One admitted call's claim on the breaker. Consumed by [`finish`](CallGuard::finish); dropped
/// unfinished it is neutral (it records nothing and gives back its permit) — unless the thread
/// is panicking, when the call counts as a failure.
///
/// Two words on purpose (the start time travels beside it, in the response future and the
/// [`Recorder`]): a struct of at most two words moves in registers, while a third word made
/// every move a 16-byte copy that, on x86, stalled on the narrower stores that had just written
/// it, a large share of the admitted path's time (the numbers live in BENCHMARKS.md). The
/// cost is that a guard dropped in a panic cannot tell whether the call was slow.
#[derive(Debug)]
pub(crate) struct CallGuard {
    owner: Arc<Owner>,
    ticket: Option<PackedTicket>,
}

impl CallGuard {
    #[inline]
    pub(crate) fn new(owner: Arc<Owner>, ticket: PackedTicket) -> Self {
        let shared = owner.shared();
        if ticket.is_probe() {
            shared.probe_started(ticket);
        }
        CallGuard {
            owner,
            ticket: Some(ticket),
        }
    }

    /// The inner service answered: a probe's `probe_timeout` covers only the wait for this,
    /// so a streamed body that decides later is not cut short by it.
    #[inline(always)]
    pub(crate) fn responded(&self) {
        if let Some(ticket) = self.ticket {
            if ticket.is_probe() {
                self.owner.shared().probe_responded(ticket);
            }
        }
    }

    #[inline(always)]
    pub(crate) fn finish(mut self, outcome: Outcome, started: Option<Stamp>) {
        if let Some(ticket) = self.ticket.take() {
            self.owner.shared().record(ticket, outcome, started);
        }
    }
}

impl Drop for CallGuard {
    #[inline(always)]
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if std::thread::panicking() {
            self.owner.shared().record(ticket, Outcome::Failure, None);
        } else {
            self.owner.shared().release(ticket);
        }
    }
}

/// What a call's guard holds to keep the breaker alive until the call is recorded: a handle on
/// the breaker's [`Shared`] state, counted by its own `Arc`.
///
/// Every call needs a strong reference to the breaker, and bumping one shared reference count
/// per call makes every thread write the same cache line. So a
/// [`CircuitBreaker`](super::CircuitBreaker) clone that is used more than once gets its own
/// owner (one allocation per such clone, never per call) and its calls bump that one; a clone's
/// first call, and every call through a keyed breaker, bumps the owner its layer (or key)
/// shares — so a clone used once (axum clones a service per request) never allocates.
///
/// Cache-line aligned so that two clones' owners, used from two threads, never share a line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Owner {
    shared: Arc<Shared>,
}

impl Owner {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Owner { shared }
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
