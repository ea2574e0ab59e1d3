//! The per-key circuits: lookup, creation, eviction.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::layer::Configure;
use crate::bulkhead::{self, queue::Shared as BulkheadShared};
use crate::circuit_breaker::guard::Owner;
use crate::circuit_breaker::{self as cb, DefaultClassifier, Handle, State};
use crate::sync::lock;
use crate::ConfigError;

/// The per-key circuits of a [`KeyedLayer`](super::KeyedLayer) and its services: look keys up, list the available
/// ones, get a [`Handle`] per key. Cheap to clone, `Send + Sync`.
///
/// Methods that list keys return them oldest first (in the order their circuits were built).
pub struct Breakers<K, C = DefaultClassifier> {
    inner: Arc<Registry<K, C>>,
}

struct Registry<K, C> {
    base: cb::Builder<C>,
    bulkhead: Option<bulkhead::Builder>,
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
    /// The key's circuit, through the owner every call on this key holds.
    owner: Arc<Owner>,
    bulkhead: Option<crate::sync::Arc<BulkheadShared>>,
    classifier: C,
    /// One clone per call in flight, plus this one.
    in_flight: Arc<()>,
    last_used: Instant,
    seq: u64,
    pinned: bool,
}

/// What one call needs from an entry.
pub(super) struct Parts<C> {
    pub(super) owner: Arc<Owner>,
    pub(super) classifier: C,
    /// Marks the key busy (not evicted first) while a call is in flight.
    pub(super) in_flight: Arc<()>,
    pub(super) bulkhead: Option<crate::sync::Arc<BulkheadShared>>,
}

impl<C> Entry<C> {
    fn busy(&self) -> bool {
        Arc::strong_count(&self.in_flight) > 1
    }

    fn parts(&self) -> Parts<C>
    where
        C: Clone,
    {
        Parts {
            owner: self.owner.clone(),
            classifier: self.classifier.clone(),
            in_flight: self.in_flight.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<K, C> Breakers<K, C> {
    pub(super) fn new(
        base: cb::Builder<C>,
        bulkhead: Option<bulkhead::Builder>,
        configure: Option<Configure<K, C>>,
        max_keys: usize,
        idle_timeout: Option<Duration>,
    ) -> Self {
        Breakers {
            inner: Arc::new(Registry {
                base,
                bulkhead,
                configure,
                max_keys,
                idle_timeout,
                state: Mutex::new(Map {
                    entries: HashMap::new(),
                    unpinned: 0,
                    next_seq: 0,
                    last_sweep: Instant::now(),
                }),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// The key's circuit, classifier and in-flight marker for one call.
    pub(super) fn checkout(&self, key: K) -> Result<Parts<C>, ConfigError>
    where
        K: Hash + Eq + Clone + fmt::Display,
        C: Clone,
    {
        self.inner.checkout(key, false)
    }
}

impl<K, C> Registry<K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    /// Builds `key`'s entry (not inserted yet). Runs the user's `configure`, so it is called
    /// without the map lock held (a `configure` that calls back into the registry must not
    /// deadlock).
    fn build_entry(&self, key: &K, now: Instant, pinned: bool) -> Result<Entry<C>, ConfigError> {
        let mut builder = self.base.clone().name(key.to_string());
        if let Some(configure) = &self.configure {
            builder = configure(key, builder);
        }
        let (owner, classifier) = builder.fail_fast().build()?.into_parts();
        let bulkhead = match &self.bulkhead {
            Some(template) => Some(
                template
                    .clone()
                    .name(key.to_string())
                    .build()?
                    .shared()
                    .clone(),
            ),
            None => None,
        };
        Ok(Entry {
            owner,
            bulkhead,
            classifier,
            in_flight: Arc::new(()),
            last_used: now,
            seq: 0,
            pinned,
        })
    }

    /// An existing entry's parts, marking it used (and pinned, with `pin`).
    fn lookup(map: &mut Map<K, C>, key: &K, now: Instant, pin: bool) -> Option<Parts<C>> {
        let entry = map.entries.get_mut(key)?;
        entry.last_used = now;
        if pin && !entry.pinned {
            entry.pinned = true;
            map.unpinned -= 1;
        }
        Some(entry.parts())
    }

    /// The key's circuit for one call (or for [`Breakers::register`], with `pin`), built (and
    /// room made for it) on first use.
    fn checkout(&self, key: K, pin: bool) -> Result<Parts<C>, ConfigError> {
        let now = Instant::now();
        if let Some(parts) = Self::lookup(&mut lock(&self.state), &key, now, pin) {
            return Ok(parts);
        }
        let mut entry = self.build_entry(&key, now, pin)?;
        let mut guard = lock(&self.state);
        let map = &mut *guard;
        // Another caller may have built it meanwhile: theirs wins, ours is dropped unused.
        if let Some(parts) = Self::lookup(map, &key, now, pin) {
            return Ok(parts);
        }
        entry.seq = map.next_seq;
        map.next_seq += 1;
        if !pin {
            self.make_room(map, now);
            map.unpinned += 1;
        }
        let parts = entry.parts();
        map.entries.insert(key, entry);
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
                    let open = e.owner.shared().word().state() != State::Closed;
                    (e.busy(), open, e.last_used, e.seq)
                })
                .map(|(k, _)| k.clone());
            match victim {
                Some(key) => {
                    map.entries.remove(&key);
                    map.unpinned -= 1;
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    trace_debug!(%key, max_keys = self.max_keys, "keyed breaker evicted a key");
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
    /// destinations (three LLM providers, say), so they are listed and reported before their
    /// first call.
    pub fn register(&self, key: K) -> Result<Handle, ConfigError> {
        let owner = self.inner.checkout(key, true)?.owner;
        Ok(Handle::new(owner.shared().clone()))
    }

    /// Evicts every key with no call in flight and no call for the
    /// [`idle_timeout`](super::Builder::idle_timeout) (registered keys excepted). Does nothing without
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
            .map(|e| Handle::new(e.owner.shared().clone()))
    }

    /// The [`Handle`](bulkhead::Handle) of `key`'s bulkhead, if the layer has per-key
    /// bulkheads and the key exists.
    pub fn bulkhead(&self, key: &K) -> Option<bulkhead::Handle> {
        lock(&self.inner.state)
            .entries
            .get(key)
            .and_then(|e| e.bulkhead.clone())
            .map(bulkhead::Handle::new)
    }

    /// Every key and its [`Handle`], oldest first.
    pub fn handles(&self) -> Vec<(K, Handle)> {
        let map = lock(&self.inner.state);
        let mut all: Vec<_> = map
            .entries
            .iter()
            .map(|(k, e)| (e.seq, k.clone(), Handle::new(e.owner.shared().clone())))
            .collect();
        drop(map);
        all.sort_by_key(|(seq, _, _)| *seq);
        all.into_iter().map(|(_, k, h)| (k, h)).collect()
    }

    /// The keys whose circuit would admit a call now (closed, disabled, or half-open with a
    /// free probe permit), oldest first: the destinations a caller may use now.
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
