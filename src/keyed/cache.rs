//! Each service clone's own cache of the keys it called last: a call on a cached key compares
//! keys, checks one flag and admits, without hashing the key or taking any lock. Two threads
//! calling through their own clones then write no shared cache line (the circuit's owners are
//! per thread; see `KeyCircuit`).
//!
//! A clone starts with an empty cache (a clone made per request, as axum does, looks its key up
//! in the registry: one shard's read lock). The cache holds [`SLOTS`] keys, filled in order and
//! then replaced round robin; an entry evicted from the registry is marked, and its slot is
//! refilled on the next call for that key. A cached entry stays in memory until its slot is
//! refilled or the clone is dropped.

use std::sync::Arc;

use super::registry::Entry;

/// Keys per service clone.
pub(super) const SLOTS: usize = 8;

pub(super) struct Cache<K, C> {
    /// Filled from the front; a slot is never emptied, only refilled.
    slots: [Option<Cached<K, C>>; SLOTS],
    /// The slot the next new key replaces once every slot is full.
    next: usize,
}

struct Cached<K, C> {
    key: K,
    entry: Arc<Entry<C>>,
}

/// Where a key is in the cache.
pub(super) enum Lookup {
    /// In this slot, and still in the registry (now marked used).
    Hit(usize),
    /// Not cached (or evicted from the registry since): fill this slot.
    Miss(usize),
}

impl<K, C> Cache<K, C> {
    pub(super) fn new() -> Self {
        Cache {
            slots: std::array::from_fn(|_| None),
            next: 0,
        }
    }

    /// Finds `key`.
    #[inline]
    pub(super) fn lookup(&mut self, key: &K) -> Lookup
    where
        K: Eq,
    {
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Some(cached) if cached.key == *key => {
                    return match cached.entry.touch() {
                        true => Lookup::Hit(i),
                        false => Lookup::Miss(i),
                    }
                }
                Some(_) => {}
                None => return Lookup::Miss(i),
            }
        }
        let i = self.next;
        self.next = (i + 1) % SLOTS;
        Lookup::Miss(i)
    }

    /// Puts `key`'s entry in slot `i` (from a [`Lookup::Miss`]).
    pub(super) fn fill(&mut self, i: usize, key: K, entry: Arc<Entry<C>>) {
        self.slots[i] = Some(Cached { key, entry });
    }

    /// The entry in slot `i` (from a [`Lookup::Hit`], or filled).
    #[inline]
    pub(super) fn entry(&self, i: usize) -> &Entry<C> {
        match &self.slots[i] {
            Some(cached) => &cached.entry,
            None => unreachable!("the slot was filled"),
        }
    }
}
