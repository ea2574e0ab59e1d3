//! One circuit breaker per key taken from the request: per provider, per host, per operation.
//!
//! A [`Keyed`] service computes a key from each request with a `Fn(&Req) -> K` and gates the
//! call on that key's own circuit, built on first use from a circuit-breaker
//! [`Builder`](crate::circuit_breaker::Builder) (customised per key with
//! [`configure`](Builder::configure), so `"anthropic"` can trip after 3 failures and stay open
//! 120 s while the others use 5 and 60 s). This is the seed's `LLMCircuitBreaker` in tower form:
//! [`Breakers::available`] is its `get_available_providers`, [`Breakers::handle`] gives each
//! key's [`Handle`], and [`HealthCheck::with_keyed`](crate::health::HealthCheck::with_keyed)
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
//! returns a ready [`CircuitOpen`] error (with the
//! key's name and `retry_after`) without calling the inner service. (The inner service's
//! readiness is then unused until the next `call`, as with a fail-fast breaker.) To *wait* on
//! an open circuit instead, route with [`Failover`](crate::failover::Failover) over one
//! default-mode breaker per destination.
//!
//! # Cost
//!
//! Each `call` locks one `std::sync::Mutex` around the key map for a hash lookup (and, for a
//! new key, a circuit build), then admits on the key's circuit like a fail-fast breaker. This
//! is the cold-ish path of a per-key router; keys that need the ~10 ns single-breaker path should
//! get their own [`CircuitBreakerLayer`].
//!
//! # Per-key bulkheads
//!
//! Not yet. The design leaves room: each key's entry would gain an optional bulkhead next to
//! its circuit (built per key from a bulkhead builder, customised by the same `configure`
//! hook), taken at `call` after the circuit admits. Because the key is unknown at `poll_ready`,
//! a per-key bulkhead must either reject at once when full (`BulkheadFull`) or wait inside the
//! response future and call a clone of the inner service once a permit is granted (as tower's
//! `Oneshot` does).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::future::ResponseFuture as BreakerFuture;
use crate::circuit_breaker::shared::{Admission, Shared};
use crate::circuit_breaker::{self as cb, ClassifyResponse, DefaultClassifier, Handle, State};
use crate::circuit_breaker::{CircuitBreakerLayer, ConfigError};
use crate::sync::lock;
use crate::BoxError;

/// The default [`max_keys`](Builder::max_keys).
pub const DEFAULT_MAX_KEYS: usize = 1024;

type Configure<K, C> = Arc<dyn Fn(&K, cb::Builder<C>) -> cb::Builder<C> + Send + Sync>;

/// Builds a [`KeyedLayer`]; start with [`KeyedLayer::builder`].
pub struct Builder<K, F, C = DefaultClassifier> {
    key_fn: F,
    breaker: cb::Builder<C>,
    configure: Option<Configure<K, C>>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    _key: PhantomData<fn() -> K>,
}

impl<K, F, C> Builder<K, F, C> {
    /// The circuit-breaker settings every key starts from (default: the seed's card). Each
    /// key's breaker is named after the key (its `Display`) unless [`configure`](Self::configure)
    /// names it; the builder's mode is ignored (keyed breakers are fail-fast, see the
    /// [module docs](self)).
    pub fn breaker<C2>(self, breaker: cb::Builder<C2>) -> Builder<K, F, C2> {
        Builder {
            key_fn: self.key_fn,
            breaker,
            configure: None,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            _key: PhantomData,
        }
    }

    /// Adjusts the breaker settings for one key, when its circuit is first built: e.g. 3
    /// failures and 120 s open for `"anthropic"`. An invalid result makes that key's calls fail
    /// with the [`ConfigError`] (and builds nothing).
    pub fn configure<G>(mut self, configure: G) -> Self
    where
        G: Fn(&K, cb::Builder<C>) -> cb::Builder<C> + Send + Sync + 'static,
    {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The most keys tracked at once (default [`DEFAULT_MAX_KEYS`]; at least 1). When a new
    /// key arrives at the limit, one key is evicted: the least recently used key with no call
    /// in flight, preferring closed circuits to open ones (so a flood of new keys does not
    /// readily reset an open circuit); if every key has calls in flight, the least recently
    /// used of them (its calls finish on the evicted circuit, and are forgotten with it). Keys
    /// added with [`Breakers::register`] are kept and not counted.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// Also evicts keys with no call in flight and no call for `d` (default: never), checked
    /// when new keys arrive (at most every `d / 2`) and by [`Breakers::evict_idle`].
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<KeyedLayer<K, F, C>, ConfigError>
    where
        C: Clone,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be greater than zero",
            ));
        }
        self.breaker.clone().build()?;
        Ok(KeyedLayer {
            key_fn: self.key_fn,
            breakers: Breakers {
                inner: Arc::new(Registry {
                    base: self.breaker,
                    configure: self.configure,
                    max_keys: self.max_keys,
                    idle_timeout: self.idle_timeout,
                    state: Mutex::new(Map {
                        entries: HashMap::new(),
                        unpinned: 0,
                        next_seq: 0,
                        last_sweep: Instant::now(),
                    }),
                    evicted: AtomicU64::new(0),
                }),
            },
        })
    }
}

impl<K, F, C> fmt::Debug for Builder<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Makes [`Keyed`] services; every service it makes shares one set of per-key circuits.
pub struct KeyedLayer<K, F, C = DefaultClassifier> {
    key_fn: F,
    breakers: Breakers<K, C>,
}

impl KeyedLayer<(), (), DefaultClassifier> {
    /// Starts a builder with the function that takes the key from a request.
    pub fn builder<Req, K, F>(key_fn: F) -> Builder<K, F, DefaultClassifier>
    where
        F: Fn(&Req) -> K,
    {
        Builder {
            key_fn,
            breaker: CircuitBreakerLayer::builder(),
            configure: None,
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: None,
            _key: PhantomData,
        }
    }
}

impl<K, F, C> KeyedLayer<K, F, C> {
    /// The per-key circuits shared by every service this layer makes.
    pub fn breakers(&self) -> Breakers<K, C> {
        self.breakers.clone()
    }
}

impl<K, F: Clone, C> Clone for KeyedLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedLayer {
            key_fn: self.key_fn.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<S, K, F: Clone, C> Layer<S> for KeyedLayer<K, F, C> {
    type Service = Keyed<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Keyed {
            inner,
            key_fn: self.key_fn.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedLayer<K, F, C>
where
    K: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLayer")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

/// A service gating each call on the circuit of the request's key; see the [module docs](self).
///
/// `poll_ready` is the inner service's; `call` admits on the key's circuit (building it on
/// first use) or returns a [`CircuitOpen`] error without calling the inner service. The
/// response future records the outcome on that key's circuit.
pub struct Keyed<S, K, F, C = DefaultClassifier> {
    inner: S,
    key_fn: F,
    breakers: Breakers<K, C>,
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
    C: ClassifyResponse<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key_fn)(&request);
        let (shared, classifier, in_flight) = match self.breakers.inner.checkout(key) {
            Ok(parts) => parts,
            Err(error) => {
                return ResponseFuture {
                    kind: Kind::Failed {
                        error: Some(error.into()),
                    },
                }
            }
        };
        let ticket = match shared.admit_fast() {
            Some(ticket) => ticket,
            None => match shared.admit_slow(None) {
                Admission::Admitted(ticket) => ticket,
                Admission::Rejected(error) => return ResponseFuture::rejected(error, classifier),
                // `admit_slow(None)` never waits; treat it as a rejection if it ever does.
                Admission::Wait { .. } => {
                    let error = CircuitOpen::new(shared.name().clone(), None);
                    return ResponseFuture::rejected(error, classifier);
                }
            },
        };
        let guard = cb::future::CallGuard::new(shared, ticket);
        ResponseFuture {
            kind: Kind::Called {
                future: BreakerFuture::called(self.inner.call(request), guard, classifier),
                in_flight: Some(in_flight),
            },
        }
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

pin_project! {
    /// Response future of [`Keyed`]: the key's breaker future, which records the outcome on the
    /// key's circuit (or resolves at once to a [`CircuitOpen`] or [`ConfigError`]).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: BreakerFuture<F, C>,
            // Marks the key busy (not evicted first) while the call is in flight.
            in_flight: Option<Arc<()>>,
        },
        Failed { error: Option<BoxError> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    fn rejected(error: CircuitOpen, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future: BreakerFuture::rejected(error, classifier),
                in_flight: None,
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyResponse<T, E>,
{
    type Output = Result<C::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, in_flight } => {
                let output = std::task::ready!(future.poll(cx));
                in_flight.take();
                Poll::Ready(output)
            }
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The per-key circuits of a [`KeyedLayer`] and its services: look keys up, list the available
/// ones, get a [`Handle`] per key. Cheap to clone, `Send + Sync`.
///
/// Methods that list keys return them oldest first (in the order their circuits were built).
pub struct Breakers<K, C = DefaultClassifier> {
    inner: Arc<Registry<K, C>>,
}

struct Registry<K, C> {
    base: cb::Builder<C>,
    configure: Option<Configure<K, C>>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    state: Mutex<Map<K, C>>,
    evicted: AtomicU64,
}

struct Map<K, C> {
    entries: HashMap<K, Entry<C>>,
    unpinned: usize,
    next_seq: u64,
    last_sweep: Instant,
}

/// One key's circuit, and what eviction needs to know about it.
struct Entry<C> {
    shared: Arc<Shared>,
    classifier: C,
    /// One clone per call in flight, plus this one.
    in_flight: Arc<()>,
    last_used: Instant,
    seq: u64,
    pinned: bool,
}

impl<C> Entry<C> {
    fn busy(&self) -> bool {
        Arc::strong_count(&self.in_flight) > 1
    }
}

impl<K, C> Registry<K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    fn build_entry(
        &self,
        key: &K,
        seq: u64,
        now: Instant,
        pinned: bool,
    ) -> Result<Entry<C>, ConfigError> {
        let mut builder = self.base.clone().name(key.to_string());
        if let Some(configure) = &self.configure {
            builder = configure(key, builder);
        }
        let (shared, classifier) = builder.fail_fast().build()?.into_parts();
        Ok(Entry {
            shared,
            classifier,
            in_flight: Arc::new(()),
            last_used: now,
            seq,
            pinned,
        })
    }

    /// The key's circuit for one call, built (and room made for it) on first use.
    fn checkout(&self, key: K) -> Result<(Arc<Shared>, C, Arc<()>), ConfigError> {
        let now = Instant::now();
        let mut map = lock(&self.state);
        if let Some(entry) = map.entries.get_mut(&key) {
            entry.last_used = now;
            return Ok((
                entry.shared.clone(),
                entry.classifier.clone(),
                entry.in_flight.clone(),
            ));
        }
        let seq = map.next_seq;
        let entry = self.build_entry(&key, seq, now, false)?;
        map.next_seq += 1;
        self.make_room(&mut map, now);
        let parts = (
            entry.shared.clone(),
            entry.classifier.clone(),
            entry.in_flight.clone(),
        );
        map.entries.insert(key, entry);
        map.unpinned += 1;
        Ok(parts)
    }

    /// Before inserting one unpinned key: sweeps idle keys when due, then evicts until there is
    /// room for one more.
    fn make_room(&self, map: &mut Map<K, C>, now: Instant) {
        if let Some(timeout) = self.idle_timeout {
            if now.saturating_duration_since(map.last_sweep) >= timeout / 2 {
                self.sweep(map, now, timeout);
            }
        }
        while map.unpinned >= self.max_keys {
            let victim = map
                .entries
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| {
                    let open = e.shared.word().state() != State::Closed;
                    (e.busy(), open, e.last_used, e.seq)
                })
                .map(|(k, _)| k.clone());
            match victim {
                Some(key) => {
                    map.entries.remove(&key);
                    map.unpinned -= 1;
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
    }

    fn sweep(&self, map: &mut Map<K, C>, now: Instant, timeout: Duration) {
        map.last_sweep = now;
        let before = map.entries.len();
        map.entries.retain(|_, e| {
            e.pinned || e.busy() || now.saturating_duration_since(e.last_used) < timeout
        });
        let removed = before - map.entries.len();
        map.unpinned -= removed;
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
    }
}

impl<K, C> Breakers<K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    /// Builds `key`'s circuit now (if it does not exist yet) and keeps it: a registered key is
    /// never evicted and does not count towards `max_keys`. Use it for a fixed set of
    /// destinations (the seed's three providers), so they are listed and reported before their
    /// first call.
    pub fn register(&self, key: K) -> Result<Handle, ConfigError> {
        let now = Instant::now();
        let mut guard = lock(&self.inner.state);
        let map = &mut *guard;
        if let Some(entry) = map.entries.get_mut(&key) {
            if !entry.pinned {
                entry.pinned = true;
                map.unpinned -= 1;
            }
            return Ok(Handle::new(entry.shared.clone()));
        }
        let seq = map.next_seq;
        let entry = self.inner.build_entry(&key, seq, now, true)?;
        map.next_seq += 1;
        let handle = Handle::new(entry.shared.clone());
        map.entries.insert(key, entry);
        Ok(handle)
    }

    /// Evicts every key with no call in flight and no call for the
    /// [`idle_timeout`](Builder::idle_timeout) (registered keys excepted). Does nothing without
    /// an idle timeout.
    pub fn evict_idle(&self) {
        if let Some(timeout) = self.inner.idle_timeout {
            let mut map = lock(&self.inner.state);
            self.inner.sweep(&mut map, Instant::now(), timeout);
        }
    }
}

impl<K, C> Breakers<K, C>
where
    K: Hash + Eq + Clone,
{
    /// The [`Handle`] of `key`'s circuit, if it exists.
    pub fn handle(&self, key: &K) -> Option<Handle> {
        lock(&self.inner.state)
            .entries
            .get(key)
            .map(|e| Handle::new(e.shared.clone()))
    }

    /// Every key and its [`Handle`], oldest first.
    pub fn handles(&self) -> Vec<(K, Handle)> {
        let map = lock(&self.inner.state);
        let mut all: Vec<_> = map
            .entries
            .iter()
            .map(|(k, e)| (e.seq, k.clone(), Handle::new(e.shared.clone())))
            .collect();
        drop(map);
        all.sort_by_key(|(seq, _, _)| *seq);
        all.into_iter().map(|(_, k, h)| (k, h)).collect()
    }

    /// The keys whose circuit would admit a call now (closed, disabled, or half-open with a
    /// free probe permit), oldest first: the seed's `get_available_providers`.
    pub fn available(&self) -> Vec<K> {
        // Handles are taken under the map lock and queried outside it: a query may run
        // transition listeners (user code), which may call back into this registry.
        self.handles()
            .into_iter()
            .filter(|(_, h)| h.is_admitting())
            .map(|(k, _)| k)
            .collect()
    }

    /// Every tracked key, oldest first.
    pub fn keys(&self) -> Vec<K> {
        self.handles().into_iter().map(|(k, _)| k).collect()
    }

    /// How many keys are tracked (registered ones included).
    pub fn len(&self) -> usize {
        lock(&self.inner.state).entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `key`'s circuit (its calls in flight finish on it, unrecorded here); returns
    /// whether it existed.
    pub fn remove(&self, key: &K) -> bool {
        let mut map = lock(&self.inner.state);
        match map.entries.remove(key) {
            Some(entry) => {
                if !entry.pinned {
                    map.unpinned -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// How many keys have been evicted (by the `max_keys` bound or as idle) so far.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// The `max_keys` bound.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }
}

impl<K, C> Clone for Breakers<K, C> {
    fn clone(&self) -> Self {
        Breakers {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug, C> fmt::Debug for Breakers<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = lock(&self.inner.state);
        let keys: Vec<&K> = map.entries.keys().collect();
        f.debug_struct("Breakers")
            .field("keys", &keys)
            .field("max_keys", &self.inner.max_keys)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}
