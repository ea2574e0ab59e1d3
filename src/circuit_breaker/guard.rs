//! A call's claim on the breaker, from `call` until its outcome is recorded.
//!
//! [`CallGuard`] holds one admitted call's ticket and the [`Owner`] that keeps the breaker alive;
//! it records the outcome once, or, dropped unfinished, gives the ticket back. [`Recorder`] is
//! the guard as classifiers see it. Recording goes to [`Shared::record`], which applies the
//! trip rules and publishes any transition.

use std::sync::Arc;

use super::classify::Outcome;
use super::shared::Shared;
use super::ticket::PackedTicket;
use crate::time::Stamp;

/// Records the outcome of one admitted call, once.
///
/// Handed to
/// [`ResponseClassifier::classify_response`](super::ResponseClassifier::classify_response); a
/// classifier that defers its verdict moves it into the response (an HTTP body wrapper, say) and
/// calls [`record`](Recorder::record) when the verdict is known. Dropped without recording, it is
/// neutral: nothing is counted and a half-open probe permit is given back. Dropped while the
/// thread panics, it records a failure (not timed: a call whose classifier panicked never counts
/// as slow, only as failed).
#[derive(Debug)]
pub struct Recorder {
    guard: CallGuard,
    started: Option<Stamp>,
}

impl Recorder {
    /// The guard handed to the classifier, with the call's start time (when the slow-call rule
    /// needs it).
    #[inline(always)]
    pub(crate) fn new(guard: CallGuard, started: Option<Stamp>) -> Self {
        Recorder { guard, started }
    }

    /// Records `outcome` for the call.
    #[inline]
    pub fn record(self, outcome: Outcome) {
        self.guard.finish(outcome, self.started);
    }

    /// Tells the breaker that the response head has arrived and the verdict now waits for the
    /// body: a half-open probe's [`probe_timeout`](super::Builder::probe_timeout) stops counting
    /// for this call, so a long healthy stream is not cut short by it. A [`ResponseClassifier`]
    /// that moves the recorder into the response calls this first (this crate's `EndOfStream`
    /// and `GrpcClassifier` do). A probe whose timeout had already run out is not rescued.
    ///
    /// [`ResponseClassifier`]: super::ResponseClassifier
    pub fn head_arrived(&self) {
        self.guard.responded();
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

    /// The response head arrived and the verdict waits for the body (see
    /// [`Recorder::head_arrived`]).
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
/// first call bumps the owner its layer shares — so a clone used once (axum clones a service per
/// request) never allocates. A keyed breaker's key keeps one owner per thread that calls it.
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
