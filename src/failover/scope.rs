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

// One word of flags, so that entering and leaving a scope is one thread-local access each.
/// A `Failover` is polling a member's readiness and would rather see `Pending` than a member
/// that is ready only to reject.
const DEFER: u8 = 1;
/// A member deferred a rejection during the current readiness poll.
const DEFERRED: u8 = 2;
/// A `Failover` is polling a member's response future and wants its verdict.
const CAPTURE: u8 = 4;

thread_local! {
    static FLAGS: Cell<u8> = const { Cell::new(0) };
    /// The verdict recorded while capturing: the last one, which is the outermost breaker's.
    static OUTCOME: Cell<Option<Outcome>> = const { Cell::new(None) };
}

/// Called by a bulkhead or fail-fast breaker that is about to become ready only to reject the
/// call locally. `true`: a `Failover` is polling it, so it returns `Pending` instead, keeping
/// no rejection and arranging no wake-up — the `Failover` promises to poll it again outside
/// the scope, in the same `poll_ready`, before it could wait on it.
pub(crate) fn defer_rejection() -> bool {
    FLAGS.with(|flags| {
        let f = flags.get();
        if f & DEFER != 0 {
            flags.set(f | DEFERRED);
        }
        f & DEFER != 0
    })
}

/// Whether a readiness scope is open on this thread (a `Failover` inside another's member).
pub(crate) fn deferring() -> bool {
    FLAGS.with(Cell::get) & DEFER != 0
}

/// A `Failover`'s readiness poll of one member: local rejections are deferred while it lives.
pub(crate) struct Readiness {
    outer: u8,
}

impl Readiness {
    #[inline]
    pub(crate) fn enter() -> Self {
        let outer = FLAGS.with(|f| f.replace((f.get() & CAPTURE) | DEFER));
        Readiness { outer }
    }

    /// Whether a member deferred a rejection since [`enter`](Self::enter).
    #[inline]
    pub(crate) fn deferred(&self) -> bool {
        FLAGS.with(Cell::get) & DEFERRED != 0
    }
}

impl Drop for Readiness {
    #[inline]
    fn drop(&mut self) {
        FLAGS.with(|f| f.set((self.outer & !CAPTURE) | (f.get() & CAPTURE)));
    }
}

/// Called by a breaker's recorder for every outcome it records.
#[inline]
pub(crate) fn note_outcome(outcome: Outcome) {
    if FLAGS.with(Cell::get) & CAPTURE != 0 {
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
        let was = FLAGS.with(|f| {
            let was = f.get();
            f.set(was | CAPTURE);
            was & CAPTURE != 0
        });
        Capture {
            outer: (was, OUTCOME.with(Cell::take)),
        }
    }

    /// The last outcome recorded since [`enter`](Self::enter).
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        OUTCOME.with(Cell::get)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let was = self.outer.0;
        FLAGS.with(|f| {
            f.set(if was {
                f.get() | CAPTURE
            } else {
                f.get() & !CAPTURE
            })
        });
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

    #[test]
    fn the_two_scopes_do_not_disturb_each_other() {
        let capture = Capture::enter();
        {
            let readiness = Readiness::enter();
            note_outcome(Outcome::Ignored);
            assert!(defer_rejection() && readiness.deferred());
        }
        assert!(!deferring());
        note_outcome(Outcome::Success);
        assert_eq!(capture.outcome(), Some(Outcome::Success));
        let readiness = Readiness::enter();
        drop(capture);
        assert!(
            deferring(),
            "a capture ending inside a readiness poll keeps it"
        );
        drop(readiness);
        assert!(!deferring());
    }
}
