//! The per-key circuits: lookup, creation, eviction.
//!
//! # Layout
//!
//! The keys live in [`SHARDS`] hash maps, each behind its own `RwLock`, and a key's hash picks
//! its map: looking a key up takes one shard's read lock, never a lock that every call takes.
//! Each map value points to the key's [`Entry`] — its circuit, classifier and bulkhead — which
//! service clones also keep in their own small [`Cache`](super::cache::Cache), so a call on a key
//! its clone has called before takes no lock at all.
//!
//! Changes to the set of keys (a new key, a removal, an eviction, a sweep) take the `books`
//! mutex first and then one shard's write lock at a time, so they are serialised among
//! themselves while lookups go on; listing and counting the keys take the books too, so they
//! see the keys of one moment. No code ever holds two shard locks at once.
//!
//! # Recency without a clock
//!
//! Reading the clock on every call would cost about as much as the rest of a call, so a call
//! does not stamp its key with the time: it sets the entry's `USED` flag (a store only when the
//! flag is clear, so a busy key's flag is a read-mostly line). Whenever the registry looks at
//! recency — to pick a key to evict, or to sweep idle keys — it stamps every flagged key with
//! the time of that look and clears its flag. A key's "last use" is thus the first look after
//! its last call: never earlier than the call, so an idle key is never evicted early, and at
//! most one look later.
//!
//! # Calls in flight
//!
//! A call holds one of its circuit's owners until it is recorded (see
//! [`KeyCircuit`]); an entry is busy while one of them is held by a call.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::layer::Configure;
use crate::bulkhead::{self, keyed_admit::KeyBulkhead};
use crate::circuit_breaker::{self as cb, keyed_admit::KeyCircuit, Handle};
use crate::sync::{lock, read, write, AtomicU64, AtomicU8, Mutex, Ordering, RwLock};
use crate::ConfigError;

/// How many maps the keys are spread over (a power of two).
const SHARDS: usize = 16;

/// [`Entry::flags`]: a call used the key since the registry last looked.
const USED: u8 = 1;
/// [`Entry::flags`]: the key has left the registry; caches must look it up again.
const REMOVED: u8 = 2;

/// The per-key circuits of a [`KeyedLayer`](super::KeyedLayer) and its services: look keys up,
/// list the available ones, get a [`Handle`] per key. Cheap to clone, `Send + Sync`.
///
/// Methods that list keys return them oldest first (in the order their circuits were built).
pub struct Breakers<K> {
    inner: Arc<dyn Keys<K>>,
}

/// What [`Breakers`] needs from a registry, whatever its classifier type.
trait Keys<K>: Send + Sync {
    fn register(&self, key: K) -> Result<Handle, ConfigError>;
    fn evict_idle(&self);
    fn handle(&self, key: &K) -> Option<Handle>;
    fn bulkhead(&self, key: &K) -> Option<bulkhead::Handle>;
    fn handles(&self) -> Vec<(K, Handle)>;
    fn len(&self) -> usize;
    fn remove(&self, key: &K) -> bool;
    fn evicted(&self) -> u64;
    fn max_keys(&self) -> usize;
    fn idle_timeout(&self) -> Option<Duration>;
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    fn create_if_room(&self, key: K) -> Option<Handle>;
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    fn watch_new_keys(&self, hook: NewKeyHook<K>) -> Vec<(K, Handle)>;
}

/// Told about each key the registry builds, after it is in the registry and with no lock held
/// (the fleet shares keys as they appear). It runs on the thread that built the key — for a
/// call's first use of a key, the caller's — so it must not block.
pub(crate) type NewKeyHook<K> = Arc<dyn Fn(&K, &Handle) + Send + Sync>;

/// One key's circuit, classifier and bulkhead, shared by the registry, the service clones
/// that cached it and (through the circuit's owners) its calls in flight.
pub(super) struct Entry<C> {
    pub(super) circuit: KeyCircuit,
    pub(super) classifier: C,
    pub(super) bulkhead: Option<KeyBulkhead>,
    /// [`USED`] and [`REMOVED`].
    flags: AtomicU8,
}

impl<C> Entry<C> {
    /// For a call through a cache: `false` if the key has left the registry (look it up
    /// again); else marks it used.
    #[inline]
    pub(super) fn touch(&self) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & REMOVED != 0 {
            return false;
        }
        if flags & USED == 0 {
            self.flags.fetch_or(USED, Ordering::Relaxed);
        }
        true
    }

    fn mark_used(&self) {
        if self.flags.load(Ordering::Relaxed) & USED == 0 {
            self.flags.fetch_or(USED, Ordering::Relaxed);
        }
    }

    /// Whether a call used the key since the last look; clears the flag.
    fn take_used(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & USED != 0
            && self.flags.fetch_and(!USED, Ordering::Relaxed) & USED != 0
    }

    fn mark_removed(&self) {
        self.flags.fetch_or(REMOVED, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.circuit.has_calls_in_flight()
    }
}

/// A key as the registry tracks it (under its shard's lock).
struct Tracked<C> {
    entry: Arc<Entry<C>>,
    /// When the registry last saw the key used (see the module docs).
    last_used: Instant,
    /// Creation order, for "oldest first".
    seq: u64,
    /// Added by [`Breakers::register`]: never evicted, not counted towards `max_keys`.
    pinned: bool,
}

impl<C> Tracked<C> {
    /// Notes a use since the last look as a use now.
    fn observe(&mut self, now: Instant) {
        if self.entry.take_used() {
            self.last_used = now;
        }
    }
}

/// Picks a key's shard: a multiply-rotate hash (as rustc's `FxHasher`), whose high bits are the
/// shard. Cheap, and need not resist collisions: each shard's map hashes its keys with std's
/// randomly keyed hasher, so keys crafted to land in one shard only share its lock.
struct ShardHasher(u64);

impl ShardHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for ShardHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Cache-line aligned, so that two shards' locks never share a line.
#[repr(align(128))]
struct Shard<K, C> {
    map: RwLock<HashMap<K, Tracked<C>>>,
}

/// What changes to the set of keys keep track of (under the `books` mutex).
struct Books {
    /// Keys that count towards `max_keys` (every key but the registered ones).
    unpinned: usize,
    next_seq: u64,
    last_sweep: Instant,
}

pub(super) struct Registry<K, C> {
    /// [`Breakers::new`] for this registry's types, taken where their bounds are known, so that
    /// [`Registry::breakers`] needs none.
    to_breakers: fn(Arc<Registry<K, C>>) -> Breakers<K>,
    base: cb::Builder<C>,
    bulkhead: Option<bulkhead::Builder>,
    configure: Option<Configure<K, C>>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    shards: Box<[Shard<K, C>]>,
    books: Mutex<Books>,
    evicted: AtomicU64,
    /// See [`NewKeyHook`]. Locked only under the books, to add to or copy the list, so a hook
    /// added while keys are created sees every key the listing it came with does not.
    hooks: Mutex<Vec<NewKeyHook<K>>>,
}

impl<K, C> Registry<K, C> {
    pub(super) fn new(
        base: cb::Builder<C>,
        bulkhead: Option<bulkhead::Builder>,
        configure: Option<Configure<K, C>>,
        max_keys: usize,
        idle_timeout: Option<Duration>,
    ) -> Self
    where
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
    {
        Registry {
            to_breakers: |registry| Breakers { inner: registry },
            base,
            bulkhead,
            configure,
            max_keys,
            idle_timeout,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: RwLock::new(HashMap::new()),
                })
                .collect(),
            books: Mutex::new(Books {
                unpinned: 0,
                next_seq: 0,
                last_sweep: crate::time::now(),
            }),
            evicted: AtomicU64::new(0),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// This registry as [`Breakers`].
    pub(super) fn breakers(self: &Arc<Self>) -> Breakers<K> {
        (self.to_breakers)(self.clone())
    }
}

impl<K, C> Registry<K, C>
where
    K: Hash + Eq + Clone + fmt::Display,
    C: Clone,
{
    fn shard(&self, key: &K) -> &Shard<K, C> {
        let mut hasher = ShardHasher(0);
        key.hash(&mut hasher);
        &self.shards[(hasher.finish() >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    /// `key`'s entry for a call, built (and room made for it) on first use.
    pub(super) fn checkout(&self, key: &K) -> Result<Arc<Entry<C>>, ConfigError> {
        match self.lookup(key) {
            Some(entry) => Ok(entry),
            None => self.create(key.clone(), false),
        }
    }

    /// An existing key's entry, marked used: one shard's read lock.
    fn lookup(&self, key: &K) -> Option<Arc<Entry<C>>> {
        let map = read(&self.shard(key).map);
        let tracked = map.get(key)?;
        tracked.entry.mark_used();
        Some(tracked.entry.clone())
    }

    /// Builds `key`'s entry (not inserted yet). Runs the user's `configure`, so it is called
    /// with no lock held (a `configure` that calls back into the registry must not deadlock).
    fn build_entry(&self, key: &K) -> Result<Arc<Entry<C>>, ConfigError> {
        let mut builder = self.base.clone().name(key.to_string());
        if let Some(configure) = &self.configure {
            builder = configure(key, builder);
        }
        let (circuit, classifier) = KeyCircuit::build(builder)?;
        let bulkhead = match &self.bulkhead {
            Some(template) => Some(KeyBulkhead::build(template.clone(), key.to_string())?),
            None => None,
        };
        Ok(Arc::new(Entry {
            circuit,
            classifier,
            bulkhead,
            flags: AtomicU8::new(0),
        }))
    }

    /// Adds `key` (pinned, for [`Breakers::register`]), unless it exists by then.
    fn create(&self, key: K, pin: bool) -> Result<Arc<Entry<C>>, ConfigError> {
        let entry = self.build_entry(&key)?;
        let now = crate::time::now();
        let mut books = lock(&self.books);
        // Another caller may have added it meanwhile: theirs wins, ours is dropped unused.
        let existing = if pin {
            self.pin(&mut books, &key)
        } else {
            self.lookup(&key)
        };
        if let Some(existing) = existing {
            return Ok(existing);
        }
        if !pin {
            self.make_room(&mut books, now);
            books.unpinned += 1;
        }
        let told = self.insert(&mut books, key, &entry, now, pin);
        drop(books);
        tell(told, &entry);
        Ok(entry)
    }

    /// Adds `key` as a call would (unpinned, counted towards `max_keys`) if that takes no
    /// eviction: idle keys are swept when due, but no live key makes way. For the fleet, which
    /// creates keys that other processes tripped and must not push out the keys this process
    /// uses. `None` when there is no room, or the key's circuit cannot be built.
    fn add_if_room(&self, key: K) -> Option<Handle> {
        let entry = self.build_entry(&key).ok()?;
        let now = crate::time::now();
        let mut books = lock(&self.books);
        if let Some(existing) = read(&self.shard(&key).map).get(&key) {
            return Some(existing.entry.circuit.handle());
        }
        self.sweep_if_due(&mut books, now);
        if books.unpinned >= self.max_keys {
            return None;
        }
        books.unpinned += 1;
        let told = self.insert(&mut books, key, &entry, now, false);
        drop(books);
        tell(told, &entry);
        Some(entry.circuit.handle())
    }

    /// Inserts a new key (under the books, with room made); returns the key and the hooks to
    /// tell about it once the books are released.
    fn insert(
        &self,
        books: &mut Books,
        key: K,
        entry: &Arc<Entry<C>>,
        now: Instant,
        pin: bool,
    ) -> Option<(K, Vec<NewKeyHook<K>>)> {
        let seq = books.next_seq;
        books.next_seq += 1;
        let tracked = Tracked {
            entry: entry.clone(),
            last_used: now,
            seq,
            pinned: pin,
        };
        let hooks = lock(&self.hooks).clone();
        let told = (!hooks.is_empty()).then(|| (key.clone(), hooks));
        write(&self.shard(&key).map).insert(key, tracked);
        told
    }

    /// Pins an existing key (under the books).
    fn pin(&self, books: &mut Books, key: &K) -> Option<Arc<Entry<C>>> {
        let mut map = write(&self.shard(key).map);
        let tracked = map.get_mut(key)?;
        if !tracked.pinned {
            tracked.pinned = true;
            books.unpinned -= 1;
        }
        tracked.entry.mark_used();
        Some(tracked.entry.clone())
    }

    /// Before inserting one unpinned key: sweeps idle keys when due, then evicts until there is
    /// room for one more.
    fn make_room(&self, books: &mut Books, now: Instant) {
        self.sweep_if_due(books, now);
        while books.unpinned >= self.max_keys {
            // The least recently used key with no call in flight, closed circuits first; ties
            // go to the oldest key.
            let mut victim = None;
            for (i, shard) in self.shards.iter().enumerate() {
                let mut map = write(&shard.map);
                for (key, tracked) in map.iter_mut().filter(|(_, t)| !t.pinned) {
                    tracked.observe(now);
                    let entry = &tracked.entry;
                    let rank = (
                        entry.busy(),
                        !entry.circuit.is_closed(),
                        tracked.last_used,
                        tracked.seq,
                    );
                    if victim.as_ref().is_none_or(|(best, _, _)| rank < *best) {
                        victim = Some((rank, i, key.clone()));
                    }
                }
            }
            let Some((_, i, key)) = victim else { break };
            // Every removal holds the books, so the victim is still there.
            if let Some(tracked) = write(&self.shards[i].map).remove(&key) {
                tracked.entry.mark_removed();
            }
            books.unpinned -= 1;
            self.evicted.fetch_add(1, Ordering::Relaxed);
            trace_debug!(%key, max_keys = self.max_keys, "keyed breaker evicted a key");
        }
    }

    /// Every key and its handle, oldest first. The books (held by the caller) keep the set of
    /// keys still while the shards are read one by one.
    fn list(&self, _books: &Books) -> Vec<(K, Handle)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let map = read(&shard.map);
            all.extend(
                map.iter()
                    .map(|(k, t)| (t.seq, k.clone(), t.entry.circuit.handle())),
            );
        }
        all.sort_unstable_by_key(|(seq, _, _)| *seq);
        all.into_iter().map(|(_, k, h)| (k, h)).collect()
    }

    /// Sweeps idle keys if half the idle timeout has passed since the last sweep.
    fn sweep_if_due(&self, books: &mut Books, now: Instant) {
        if let Some(timeout) = self.idle_timeout {
            if now.saturating_duration_since(books.last_sweep) >= timeout / 2 {
                self.sweep(books, now, timeout);
            }
        }
    }

    /// Removes every unpinned key with no call in flight and no use for `timeout`.
    fn sweep(&self, books: &mut Books, now: Instant, timeout: Duration) {
        books.last_sweep = now;
        let mut removed = 0;
        for shard in self.shards.iter() {
            write(&shard.map).retain(|_, tracked| {
                tracked.observe(now);
                let keep = tracked.pinned
                    || tracked.entry.busy()
                    || now.saturating_duration_since(tracked.last_used) < timeout;
                if !keep {
                    tracked.entry.mark_removed();
                    removed += 1;
                }
                keep
            });
        }
        books.unpinned -= removed;
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
    }
}

impl<K, C> Keys<K> for Registry<K, C>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync,
    C: Clone + Send + Sync,
{
    fn register(&self, key: K) -> Result<Handle, ConfigError> {
        let existing = self.pin(&mut lock(&self.books), &key);
        let entry = match existing {
            Some(entry) => entry,
            None => self.create(key, true)?,
        };
        Ok(entry.circuit.handle())
    }

    fn evict_idle(&self) {
        if let Some(timeout) = self.idle_timeout {
            self.sweep(&mut lock(&self.books), crate::time::now(), timeout);
        }
    }

    fn handle(&self, key: &K) -> Option<Handle> {
        let map = read(&self.shard(key).map);
        map.get(key).map(|t| t.entry.circuit.handle())
    }

    fn bulkhead(&self, key: &K) -> Option<bulkhead::Handle> {
        let map = read(&self.shard(key).map);
        map.get(key)?
            .entry
            .bulkhead
            .as_ref()
            .map(KeyBulkhead::handle)
    }

    fn handles(&self) -> Vec<(K, Handle)> {
        self.list(&lock(&self.books))
    }

    fn len(&self) -> usize {
        let _books = lock(&self.books);
        self.shards.iter().map(|s| read(&s.map).len()).sum()
    }

    fn remove(&self, key: &K) -> bool {
        let mut books = lock(&self.books);
        let Some(tracked) = write(&self.shard(key).map).remove(key) else {
            return false;
        };
        tracked.entry.mark_removed();
        if !tracked.pinned {
            books.unpinned -= 1;
        }
        true
    }

    fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn max_keys(&self) -> usize {
        self.max_keys
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    fn create_if_room(&self, key: K) -> Option<Handle> {
        if let Some(handle) = Keys::handle(self, &key) {
            return Some(handle);
        }
        self.add_if_room(key)
    }

    fn watch_new_keys(&self, hook: NewKeyHook<K>) -> Vec<(K, Handle)> {
        // Under the books, no key is being inserted: every key is either listed here or, being
        // inserted after, told to the hook.
        let books = lock(&self.books);
        lock(&self.hooks).push(hook);
        self.list(&books)
    }
}

/// Tells the hooks [`Registry::insert`] returned about the new key, with no lock held.
fn tell<K, C>(told: Option<(K, Vec<NewKeyHook<K>>)>, entry: &Entry<C>) {
    if let Some((key, hooks)) = told {
        let handle = entry.circuit.handle();
        for hook in hooks {
            hook(&key, &handle);
        }
    }
}

impl<K> Breakers<K> {
    /// Builds `key`'s circuit now (if it does not exist yet) and keeps it: a registered key is
    /// never evicted and does not count towards `max_keys`. Use it for a fixed set of
    /// destinations (three LLM providers, say), so they are listed and reported before their
    /// first call.
    pub fn register(&self, key: K) -> Result<Handle, ConfigError> {
        self.inner.register(key)
    }

    /// Evicts every key with no call in flight and no call for the
    /// [`idle_timeout`](super::Builder::idle_timeout) (registered keys excepted). Does nothing
    /// without an idle timeout.
    pub fn evict_idle(&self) {
        self.inner.evict_idle();
    }

    /// The [`Handle`] of `key`'s circuit, if it exists.
    pub fn handle(&self, key: &K) -> Option<Handle> {
        self.inner.handle(key)
    }

    /// The [`Handle`](bulkhead::Handle) of `key`'s bulkhead, if the layer has per-key
    /// bulkheads and the key exists.
    pub fn bulkhead(&self, key: &K) -> Option<bulkhead::Handle> {
        self.inner.bulkhead(key)
    }

    /// Every key and its [`Handle`], oldest first.
    pub fn handles(&self) -> Vec<(K, Handle)> {
        self.inner.handles()
    }

    /// The keys whose circuit would admit a call now (closed, disabled, or half-open with a
    /// free probe permit), oldest first: the destinations a caller may use now.
    pub fn available(&self) -> Vec<K> {
        // Handles are taken under the shard locks and queried outside them: a query may run
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
        self.inner.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `key`'s circuit (its calls in flight finish on it, unrecorded here); returns
    /// whether it existed.
    pub fn remove(&self, key: &K) -> bool {
        self.inner.remove(key)
    }

    /// How many keys have been evicted (by the `max_keys` bound or as idle) so far.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted()
    }

    /// The `max_keys` bound.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys()
    }

    /// `key`'s circuit, made as a call would make it if it does not exist and the registry has
    /// room without evicting a key (idle keys aside); `None` otherwise. For the fleet: a trip
    /// elsewhere never pushes out a key in use here, so a flood of remote keys cannot grow the
    /// registry past `max_keys` nor empty it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    pub(crate) fn create_if_room(&self, key: K) -> Option<Handle> {
        self.inner.create_if_room(key)
    }

    /// Calls `hook` with every key built from now on (by a call, [`register`](Self::register)
    /// or [`create_if_room`](Self::create_if_room)), and returns the keys that exist now, oldest
    /// first: each key is in exactly one of the two. For the fleet, which shares every key.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    pub(crate) fn watch_new_keys(&self, hook: NewKeyHook<K>) -> Vec<(K, Handle)> {
        self.inner.watch_new_keys(hook)
    }
}

impl<K> Clone for Breakers<K> {
    fn clone(&self) -> Self {
        Breakers {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Breakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("keys", &self.keys())
            .field("max_keys", &self.inner.max_keys())
            .field("idle_timeout", &self.inner.idle_timeout())
            .finish_non_exhaustive()
    }
}
