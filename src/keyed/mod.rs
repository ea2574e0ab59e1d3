//! One circuit breaker per key taken from the request: per provider, per host, per operation.
//!
//! A [`Keyed`] service computes a key from each request with a `Fn(&Req) -> K` and gates the
//! call on that key's own circuit, built on first use from a circuit-breaker
//! [`Builder`](crate::circuit_breaker::Builder) (customised per key with
//! [`configure`](Builder::configure), so `"anthropic"` can trip after 3 failures and stay open
//! 120 s while the others use 5 and 60 s). [`Breakers::available`] lists the keys whose
//! circuit would admit a call now, [`Breakers::handle`] gives each
//! key's [`Handle`](crate::circuit_breaker::Handle), and [`HealthCheck::with_keyed`](crate::health::HealthCheck::with_keyed)
//! reports on every key.
//!
//! The number of keys is bounded ([`max_keys`](Builder::max_keys), with idle eviction), so a
//! flood of distinct keys cannot grow memory without bound.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer};
//! use tower_breaker::keyed::KeyedLayer;
//!
//! struct Prompt { provider: &'static str, text: &'static str }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let layer = KeyedLayer::builder(|p: &Prompt| p.provider)
//!     .breaker(CircuitBreakerLayer::builder().consecutive_failures(5))
//!     .configure(|provider, b| match *provider {
//!         "anthropic" => b.consecutive_failures(3).open_duration(Duration::from_secs(120)),
//!         _ => b,
//!     })
//!     .max_keys(100)
//!     .build()?;
//! let breakers = layer.breakers();
//! let mut svc = layer.layer(service_fn(|p: Prompt| async move {
//!     if p.provider == "anthropic" { Err("overloaded") } else { Ok(p.text) }
//! }));
//!
//! for _ in 0..3 {
//!     let _ = svc.ready().await?.call(Prompt { provider: "anthropic", text: "hi" }).await;
//! }
//! let err = svc.ready().await?.call(Prompt { provider: "anthropic", text: "hi" }).await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! assert_eq!(svc.ready().await?.call(Prompt { provider: "openai", text: "hi" }).await?, "hi");
//! assert_eq!(breakers.available(), vec!["openai"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Fail-fast by nature
//!
//! Keyed breakers are always fail-fast (whatever the builder's mode): `poll_ready` comes before
//! the request, so the key — and with it the circuit — is unknown until `call`. `poll_ready`
//! forwards the inner service's readiness; `call` checks the key's circuit and, when it is open,
//! returns a ready [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error (with the
//! key's name and `retry_after`) without calling the inner service. (The inner service's
//! readiness is then unused until the next `call`, as with a fail-fast breaker.) To *wait* on
//! an open circuit instead, route with [`Failover`](crate::failover::Failover) over one
//! default-mode breaker per destination.
//!
//! # Cost
//!
//! Each `call` locks one `std::sync::Mutex` around the key map for a hash lookup (and, for a
//! new key, a circuit build), then admits on the key's circuit like a fail-fast breaker. This
//! is the cold-ish path of a per-key router; keys that need a plain breaker's lock-free path should
//! get their own [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer).
//!
//! # Per-key bulkheads
//!
//! With [`Builder::bulkhead`], each key also gets its own bulkhead (its limit from the given
//! bulkhead builder, named after the key; [`Breakers::bulkhead`] gives its handle), taken at
//! `call` after the key's circuit admits. Because the key is unknown at `poll_ready`, a keyed
//! bulkhead does not queue: a call over the key's limit fails at once with
//! [`BulkheadFull`]. To queue per destination, give each
//! destination its own [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) behind a
//! [`Failover`](crate::failover::Failover) or a `Steer`.

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::bulkhead::error::BulkheadFull;
use crate::bulkhead::Permit;
use crate::circuit_breaker::future::ResponseFuture as BreakerFuture;
use crate::circuit_breaker::shared::Admission;
use crate::circuit_breaker::{self as cb, DefaultClassifier, ResponseClassifier};
use crate::BoxError;

pub mod future;
mod layer;
mod registry;

pub use future::ResponseFuture;
pub use layer::{Builder, KeyedLayer, DEFAULT_MAX_KEYS};
pub use registry::Breakers;
use registry::Parts;

/// A service gating each call on the circuit of the request's key; see the [module docs](self).
///
/// `poll_ready` is the inner service's; `call` admits on the key's circuit (building it on
/// first use) or returns a [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error without calling the inner service. The
/// response future records the outcome on that key's circuit.
pub struct Keyed<S, K, F, C = DefaultClassifier> {
    pub(super) inner: S,
    pub(super) key_fn: F,
    pub(super) breakers: Breakers<K, C>,
}

impl<S, K, F, C> Keyed<S, K, F, C> {
    /// The per-key circuits (shared with the layer and every clone).
    pub fn breakers(&self) -> Breakers<K, C> {
        self.breakers.clone()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, K, F, C, Req> Service<Req> for Keyed<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + fmt::Display,
    C: ResponseClassifier<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key_fn)(&request);
        let Parts {
            owner,
            classifier,
            in_flight,
            bulkhead,
        } = match self.breakers.checkout(key) {
            Ok(parts) => parts,
            Err(error) => return ResponseFuture::failed(error.into()),
        };
        let shared = owner.shared();
        let ticket = match shared.admit_fast() {
            Some(ticket) => ticket,
            None => match shared.admit_slow(None) {
                Admission::Admitted(ticket) => ticket,
                // Without a waiter `admit_slow` never asks to wait.
                Admission::Rejected | Admission::Wait { .. } => {
                    return ResponseFuture::rejected(shared.reject(), classifier)
                }
            },
        };
        let permit = match bulkhead {
            None => None,
            Some(bulkhead) if bulkhead.try_acquire() => Some(Permit::new(bulkhead)),
            Some(bulkhead) => {
                shared.release(ticket); // unused: no probe permit is spent on a full bulkhead
                bulkhead.count(crate::bulkhead::queue::REJECTED);
                trace_debug!(name = %shared.name(), "keyed bulkhead full");
                return ResponseFuture::failed(BulkheadFull::new(shared.name().clone()).into());
            }
        };
        let started = shared.start_time();
        let guard = cb::guard::CallGuard::new(owner, ticket);
        let future = BreakerFuture::called(self.inner.call(request), guard, started, classifier);
        ResponseFuture::called(future, in_flight, permit)
    }
}

impl<S: Clone, K, F: Clone, C> Clone for Keyed<S, K, F, C> {
    fn clone(&self) -> Self {
        Keyed {
            inner: self.inner.clone(),
            key_fn: self.key_fn.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<S: fmt::Debug, K: fmt::Debug, F, C> fmt::Debug for Keyed<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}
