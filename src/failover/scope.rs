//! What a [`Failover`](super::Failover) tells the members it polls, and learns from them,
//! without changing their types.
//!
//! tower's `Service` gives a router no way to ask a member "would you only reject this call
//! locally?" or "what did your breaker make of that response?". Both answers exist on the
//! router's own thread while it is inside a member's `poll_ready` or inside the `poll` of a
//! member's response future — however deep this crate's breakers and bulkheads sit in the
//! member's stack (under `map_request`, `timeout`, ...). So the router opens a scope for exactly
//! that span, and the breakers and bulkheads read or write it.
//!
//! A member behind a task boundary (a `Buffer`, a spawned worker) runs outside the scope and
//! simply behaves as without a `Failover`.

use std::cell::Cell;

use crate::circuit_breaker::Outcome;

thread_local! {
    /// Whether a `Failover` is polling a member's readiness and would rather see `Pending` than
    /// a ready-to-reject member.
    static DEFER: Cell<bool> = const { Cell::new(false) };
    /// Whether a member deferred a rejection during the current readiness poll.
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
    /// Whether a `Failover` is polling a member's response future and wants its verdict.
    static CAPTURE: Cell<bool> = const { Cell::new(false) };
    /// The verdict recorded while capturing: the last one, which is the outermost breaker's.
    static OUTCOME: Cell<Option<Outcome>> = const { Cell::new(None) };
}

/// Called by a bulkhead or fail-fast breaker that is about to become ready only to reject the
/// call locally. `true`: a `Failover` is polling it, so it returns `Pending` instead, keeping
/// no rejection and arranging no wake-up — the `Failover` promises to poll it again outside
/// the scope, in the same `poll_ready`, before it could wait on it.
pub(crate) fn defer_rejection() -> bool {
    let defer = DEFER.with(Cell::get);
    if defer {
        DEFERRED.with(|d| d.set(true));
    }
    defer
}

/// Whether a readiness scope is open on this thread (a `Failover` inside another's member).
pub(crate) fn deferring() -> bool {
    DEFER.with(Cell::get)
}

/// A `Failover`'s readiness poll of one member: local rejections are deferred while it lives.
pub(crate) struct Readiness {
    outer: (bool, bool),
}

impl Readiness {
    pub(crate) fn enter() -> Self {
        let outer = (
            DEFER.with(|d| d.replace(true)),
            DEFERRED.with(|d| d.replace(false)),
        );
        Readiness { outer }
    }

    /// Whether a member deferred a rejection since [`enter`](Self::enter).
    pub(crate) fn deferred(&self) -> bool {
        DEFERRED.with(Cell::get)
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        DEFER.with(|d| d.set(self.outer.0));
        DEFERRED.with(|d| d.set(self.outer.1));
    }
}

/// Called by a breaker's recorder for every outcome it records.
#[inline]
pub(crate) fn note_outcome(outcome: Outcome) {
    if CAPTURE.with(Cell::get) {
        OUTCOME.with(|o| o.set(Some(outcome)));
    }
}

/// A `Failover`'s poll of one member's response future: records the verdict of the breakers
/// that finish during it.
pub(crate) struct Capture {
    outer: (bool, Option<Outcome>),
}

impl Capture {
    pub(crate) fn enter() -> Self {
        let outer = (
            CAPTURE.with(|c| c.replace(true)),
            OUTCOME.with(|o| o.take()),
        );
        Capture { outer }
    }

    /// The last outcome recorded since [`enter`](Self::enter).
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        OUTCOME.with(Cell::get)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.set(self.outer.0));
        OUTCOME.with(|o| o.set(self.outer.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_scopes_nest_and_restore() {
        assert!(!defer_rejection(), "no scope, no deferral");
        let outer = Readiness::enter();
        assert!(!outer.deferred());
        {
            let inner = Readiness::enter();
            assert!(defer_rejection());
            assert!(inner.deferred());
        }
        assert!(
            !outer.deferred(),
            "the inner scope's deferral stays inside it"
        );
        assert!(deferring());
        drop(outer);
        assert!(!deferring());
    }

    #[test]
    fn capture_sees_the_last_outcome_inside_it_only() {
        note_outcome(Outcome::Failure);
        let capture = Capture::enter();
        assert_eq!(capture.outcome(), None, "nothing from before");
        note_outcome(Outcome::Ignored);
        note_outcome(Outcome::Success);
        assert_eq!(capture.outcome(), Some(Outcome::Success));
        {
            let inner = Capture::enter();
            note_outcome(Outcome::Failure);
            assert_eq!(inner.outcome(), Some(Outcome::Failure));
        }
        assert_eq!(capture.outcome(), Some(Outcome::Success));
        drop(capture);
        note_outcome(Outcome::Failure);
        assert_eq!(
            OUTCOME.with(Cell::get),
            None,
            "not captured outside a scope"
        );
    }
}
