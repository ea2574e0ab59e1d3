//! Admission at `call`, for [`keyed`](crate::keyed) breakers: the breaker's side of the keyed
//! registry, and the only part of the breaker that the registry uses.
//!
//! A keyed breaker learns which circuit to ask only from the request, so it admits at `call`
//! (a [`CircuitBreaker`](super::CircuitBreaker) admits in `poll_ready`), and it cannot wait: a
//! refusal is a [`CircuitOpen`] error at once, as in fail-fast mode. [`KeyCircuit::build`]
//! therefore builds every key's circuit in fail-fast mode.
//!
//! Every call holds an [`Owner`] of its circuit until it is recorded. A plain breaker gives each
//! service clone its own owner, so that calls from different threads never bump one reference
//! count; a keyed service clone calls many circuits, so a key's circuit keeps one owner per
//! thread stripe instead (made on a thread's first call on that key: at most
//! [`STRIPES`](crate::striped::STRIPES) allocations per key, never one per call). Those owners
//! also tell whether the key has calls in flight, which the registry's eviction asks.

use std::sync::{Arc, OnceLock};

use super::config::Builder;
use super::error::CircuitOpen;
use super::future::ResponseFuture;
use super::guard::{CallGuard, Owner};
use super::handle::Handle;
use super::shared::{Admission, Shared};
use super::ticket::PackedTicket;
use super::State;
use crate::striped::{thread_slot, STRIPES};
use crate::ConfigError;

/// One key's circuit: admits calls at `call`, fail-fast.
pub(crate) struct KeyCircuit {
    shared: Arc<Shared>,
    /// The owners calls hold, one per thread stripe, each made on first use.
    owners: [OnceLock<Arc<Owner>>; STRIPES],
}

impl KeyCircuit {
    /// Builds a circuit from `builder`, in fail-fast mode whatever `builder` says (see the module
    /// docs), and returns it with the builder's classifier.
    pub(crate) fn build<C>(builder: Builder<C>) -> Result<(KeyCircuit, C), ConfigError> {
        let (owner, classifier) = builder.fail_fast().build()?.into_parts();
        let circuit = KeyCircuit {
            shared: owner.shared().clone(),
            owners: std::array::from_fn(|_| OnceLock::new()),
        };
        Ok((circuit, classifier))
    }

    /// A [`Handle`] on the circuit.
    pub(crate) fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Whether the circuit is closed, from its published state (no lock, no clock).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.word().state() == State::Closed
    }

    /// Whether some call admitted here has not been recorded (or dropped) yet: some owner is
    /// held by more than this circuit.
    pub(crate) fn has_calls_in_flight(&self) -> bool {
        self.owners
            .iter()
            .filter_map(OnceLock::get)
            .any(|owner| Arc::strong_count(owner) > 1)
    }

    /// Admits one call now, or refuses it with its [`CircuitOpen`] error (counted as a
    /// rejection). Closed: one atomic load and a reference-count increment on this thread's
    /// owner.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admitted, CircuitOpen> {
        let ticket = match self.shared.admit_fast() {
            Some(ticket) => ticket,
            None => self.admit_slow()?,
        };
        let owner = self.owners[thread_slot() % STRIPES]
            .get_or_init(|| Arc::new(Owner::new(self.shared.clone())))
            .clone();
        Ok(Admitted {
            claim: Some((owner, ticket)),
        })
    }

    #[cold]
    #[inline(never)]
    fn admit_slow(&self) -> Result<PackedTicket, CircuitOpen> {
        if self.shared.refuses_without_lock() {
            return Err(self.shared.reject());
        }
        match self.shared.admit_slow(None) {
            Admission::Admitted(ticket) => Ok(ticket),
            // Without a waiter, `admit_slow` never asks to wait.
            Admission::Rejected | Admission::Wait { .. } => Err(self.shared.reject()),
        }
    }
}

/// An admitted call that has not started yet. [`call`](Admitted::call) starts it; dropped
/// instead (the key's bulkhead is full, say), it gives its admission back unused, so a
/// half-open circuit's probe permit is not spent.
pub(crate) struct Admitted {
    /// Always `Some` until `call` or drop takes it.
    claim: Option<(Arc<Owner>, PackedTicket)>,
}

impl Admitted {
    /// Starts the call: `call` calls the inner service, and the returned future records the
    /// outcome with `classifier`.
    #[inline]
    pub(crate) fn call<F, C>(
        mut self,
        classifier: C,
        call: impl FnOnce() -> F,
    ) -> ResponseFuture<F, C> {
        let (owner, ticket) = self.claim.take().expect("an admission is used once");
        // Nothing left to give back: skip the drop (it would only find `None`).
        std::mem::forget(self);
        let started = owner.shared().start_time();
        let guard = CallGuard::new(owner, ticket);
        ResponseFuture::called(call(), guard, started, classifier)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((owner, ticket)) = self.claim.take() {
            owner.shared().release(ticket);
        }
    }
}

/// The response future of a call the circuit refused.
pub(crate) fn rejected<F, C>(error: CircuitOpen, classifier: C) -> ResponseFuture<F, C> {
    ResponseFuture::rejected(error, classifier)
}
