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
//! # Modes
//!
//! Keyed breakers are always fail-fast, and this is the builder's mode honoured, not ignored:
//! `poll_ready` comes before the request, so the key — and with it the circuit — is unknown
//! until `call`, and a `call` cannot wait. `poll_ready` forwards the inner service's readiness;
//! `call` checks the key's circuit and, when it is open, returns a ready
//! [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error (with the key's name and
//! `retry_after`) without calling the inner service. (The inner service's readiness is then
//! unused until the next `call`, as with a fail-fast breaker.)
//!
//! [`fail_fast`](crate::circuit_breaker::Builder::fail_fast) is the only mode a breaker builder
//! can select; the waiting mode is what a builder means when it selects none, and a keyed
//! layer cannot offer it, so every key's breaker is built with `fail_fast()` applied — on the
//! [`breaker`](Builder::breaker) settings and after [`configure`](Builder::configure). No
//! setting can ask for a mode that is then not used, so there is nothing to reject. To *wait*
//! on an open circuit instead, route with [`Failover`](crate::failover::Failover) over one
//! default-mode breaker per destination.
//!
//! # Cost
//!
//! Each service clone remembers the last few keys it called (8). A call on one of them compares
//! keys, checks a flag and admits on the key's circuit like a fail-fast breaker: no hashing, no
//! lock, no clock read, and no write to a cache line another thread writes, so clones used from
//! several threads scale like a plain breaker's. Any other call hashes its key and takes one
//! shard's read lock of the key map (the keys are spread over 16 shards); a new key also
//! builds its circuit and takes the mutex that serialises changes to the set of keys.
//! BENCHMARKS.md has the figures.
//!
//! # Per-key bulkheads
//!
//! With [`Builder::bulkhead`], each key also gets its own bulkhead (its limit from the given
//! bulkhead builder, named after the key; [`Breakers::bulkhead`] gives its handle), taken at
//! `call` after the key's circuit admits. Because the key is unknown at `poll_ready`, a keyed
//! bulkhead does not queue: a call over the key's limit fails at once with
//! [`BulkheadFull`](crate::bulkhead::error::BulkheadFull). To queue per destination, give each
//! destination its own [`BulkheadLayer`](crate::bulkhead::BulkheadLayer) behind a
//! [`Failover`](crate::failover::Failover) or a `Steer`.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::circuit_breaker::{DefaultClassifier, ResponseClassifier};
use crate::BoxError;

mod cache;
pub mod future;
mod layer;
mod registry;

use cache::{Cache, Lookup};
pub use future::ResponseFuture;
pub use layer::{Builder, KeyedLayer, DEFAULT_MAX_KEYS};
pub use registry::Breakers;
use registry::Registry;

/// A service gating each call on the circuit of the request's key; see the [module docs](self).
///
/// `poll_ready` is the inner service's; `call` admits on the key's circuit (building it on
/// first use) or returns a [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error
/// without calling the inner service. The response future records the outcome on that key's
/// circuit.
///
/// Each clone keeps its own cache of the keys it called last (see [Cost](self#cost)); a clone
/// starts with an empty one.
pub struct Keyed<S, K, F, C = DefaultClassifier> {
    inner: S,
    key_fn: F,
    registry: Arc<Registry<K, C>>,
    cache: Cache<K, C>,
}

impl<S, K, F, C> Keyed<S, K, F, C> {
    /// The per-key circuits (shared with the layer and every clone).
    pub fn breakers(&self) -> Breakers<K> {
        self.registry.breakers()
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

impl<S, K, F, C> Keyed<S, K, F, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    /// Puts `key`'s entry in cache slot `slot`, from the registry (building it on first use).
    #[cold]
    #[inline(never)]
    fn fill(&mut self, slot: usize, key: K) -> Result<(), BoxError> {
        let entry = self.registry.checkout(&key)?;
        self.cache.fill(slot, key, entry);
        Ok(())
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

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key_fn)(&request);
        let slot = match self.cache.lookup(&key) {
            Lookup::Hit(slot) => slot,
            Lookup::Miss(slot) => match self.fill(slot, key) {
                Ok(()) => slot,
                Err(error) => return ResponseFuture::failed(error),
            },
        };
        let entry = self.cache.entry(slot);
        let admitted = match entry.circuit.admit() {
            Ok(admitted) => admitted,
            Err(open) => return ResponseFuture::rejected(open, entry.classifier.clone()),
        };
        let permit = match &entry.bulkhead {
            None => None,
            Some(bulkhead) => match bulkhead.try_acquire() {
                Ok(permit) => Some(permit),
                // `admitted` is dropped unused: a full bulkhead spends no probe permit.
                Err(full) => return ResponseFuture::failed(full.into()),
            },
        };
        let inner = &mut self.inner;
        let future = admitted.call(entry.classifier.clone(), || inner.call(request));
        ResponseFuture::called(future, permit)
    }
}

impl<S: Clone, K, F: Clone, C> Clone for Keyed<S, K, F, C> {
    /// A clone shares the circuits, with an empty cache of its own.
    fn clone(&self) -> Self {
        Keyed {
            inner: self.inner.clone(),
            key_fn: self.key_fn.clone(),
            registry: self.registry.clone(),
            cache: Cache::new(),
        }
    }
}

impl<S: fmt::Debug, K: fmt::Debug, F, C> fmt::Debug for Keyed<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers())
            .finish_non_exhaustive()
    }
}
