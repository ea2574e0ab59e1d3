//! The [`KeyedLayer`] and its [`Builder`].

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::cache::Cache;
use super::registry::Registry;
use super::{Breakers, Keyed};
use crate::bulkhead;
use crate::circuit_breaker::{self as cb, CircuitBreakerLayer, DefaultClassifier};
use crate::ConfigError;

/// The default [`max_keys`](Builder::max_keys).
pub const DEFAULT_MAX_KEYS: usize = 1024;

pub(super) type Configure<K, C> = Arc<dyn Fn(&K, cb::Builder<C>) -> cb::Builder<C> + Send + Sync>;

/// Builds a [`KeyedLayer`]; start with [`KeyedLayer::builder`].
pub struct Builder<K, F, C = DefaultClassifier> {
    key_fn: F,
    breaker: cb::Builder<C>,
    bulkhead: Option<bulkhead::Builder>,
    configure: Option<Configure<K, C>>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    _key: PhantomData<fn() -> K>,
}

impl<K, F, C> Builder<K, F, C> {
    /// The circuit-breaker settings every key starts from (default: the breaker's defaults). Each
    /// key's breaker is named after the key (its `Display`) unless [`configure`](Self::configure)
    /// names it. Every key's breaker is in [`fail_fast`](cb::Builder::fail_fast) mode, whether
    /// or not `breaker` (or `configure`) selects it: the only mode a keyed breaker can honour
    /// (see [Modes](super#modes)).
    pub fn breaker<C2>(self, breaker: cb::Builder<C2>) -> Builder<K, F, C2> {
        Builder {
            key_fn: self.key_fn,
            breaker,
            bulkhead: self.bulkhead,
            configure: None,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
            _key: PhantomData,
        }
    }

    /// Also gives each key its own bulkhead, built from `bulkhead` (named after the key): at
    /// most `max_concurrent` calls in flight per key. Like the keyed breakers, keyed bulkheads
    /// cannot wait before the key is known, so they do not queue: a call over a key's limit
    /// fails at once with [`BulkheadFull`](crate::bulkhead::error::BulkheadFull) (which a breaker
    /// outside ignores) without calling the inner service, and `max_queue` and `max_wait` are
    /// unused. The key's circuit admits first, so a rejected call takes no probe permit.
    pub fn bulkhead(mut self, bulkhead: bulkhead::Builder) -> Self {
        self.bulkhead = Some(bulkhead);
        self
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
    ///
    /// Calls do not read the clock: a key's use is noted when the registry next looks at
    /// recency (at an eviction or an idle sweep), so keys used since the last look count as
    /// used at this one, and among equally recent keys the oldest goes first.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// Also evicts keys with no call in flight and no call for `d` (default: never), checked
    /// when new keys arrive (at most every `d / 2`) and by [`Breakers::evict_idle`].
    ///
    /// As with [`max_keys`](Self::max_keys), a call is noted at the next such check rather
    /// than read from the clock, and `d` counts from that check: an idle key is never evicted
    /// before `d` has passed since its last call, and may stay one check longer.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<KeyedLayer<K, F, C>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
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
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead.clone().build()?;
        }
        let registry = Arc::new(Registry::new(
            self.breaker,
            self.bulkhead,
            self.configure,
            self.max_keys,
            self.idle_timeout,
        ));
        Ok(KeyedLayer {
            key_fn: self.key_fn,
            registry,
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
    registry: Arc<Registry<K, C>>,
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
            bulkhead: None,
            configure: None,
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: None,
            _key: PhantomData,
        }
    }
}

impl<K, F, C> KeyedLayer<K, F, C> {
    /// The per-key circuits shared by every service this layer makes.
    pub fn breakers(&self) -> Breakers<K> {
        self.registry.breakers()
    }
}

impl<K, F: Clone, C> Clone for KeyedLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedLayer {
            key_fn: self.key_fn.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<S, K, F: Clone, C> Layer<S> for KeyedLayer<K, F, C> {
    type Service = Keyed<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Keyed {
            inner,
            key_fn: self.key_fn.clone(),
            registry: self.registry.clone(),
            cache: Cache::new(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedLayer<K, F, C>
where
    K: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLayer")
            .field("breakers", &self.breakers())
            .finish_non_exhaustive()
    }
}
