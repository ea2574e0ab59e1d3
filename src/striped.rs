//! Striped event counters (like Java's `LongAdder`): each thread adds to its own cache-padded
//! stripe and readers sum the stripes, so two threads counting calls on one breaker do not
//! fight over a cache line.
//!
//! The first [`EXCLUSIVE`] threads alive at once each own a stripe *slot*: such a thread is the
//! only writer of its stripe in every `Counters`, so it adds with a plain load and store — no
//! locked instruction, which would be a large part of a whole call through the default breaker
//! (the numbers live in BENCHMARKS.md). Further threads
//! share the last [`SHARED`] stripes and add with atomic read-modify-writes. A slot is given
//! back when its thread exits and handed to a later thread; the free list's lock orders the
//! old owner's last write before the new owner's first.

use std::cell::Cell;
use std::sync::atomic::AtomicUsize;

use crate::sync::{AtomicU64, Ordering::Relaxed};

/// Stripes owned by one thread each.
const EXCLUSIVE: usize = 12;
/// Stripes shared, with atomic adds, by the threads beyond the first `EXCLUSIVE`.
const SHARED: usize = 4;
pub(crate) const STRIPES: usize = EXCLUSIVE + SHARED;

/// Whether owners add with a plain load and store. Not under loom, which runs a model's threads
/// on one OS thread (they would share a slot).
const OWNED_WRITES: bool = !cfg!(loom);

/// A fixed set of `N` counters, striped.
#[derive(Debug)]
pub(crate) struct Counters<const N: usize> {
    stripes: Box<[Stripe<N>; STRIPES]>,
    /// The totals at the last [`clear`](Counters::clear), subtracted by [`get`](Counters::get):
    /// stripes are only ever written by their owners, so a reset cannot zero them.
    base: [AtomicU64; N],
}

#[derive(Debug)]
#[repr(align(128))]
struct Stripe<const N: usize>([AtomicU64; N]);

impl<const N: usize> Counters<N> {
    pub(crate) fn new() -> Self {
        Self {
            stripes: Box::new(std::array::from_fn(|_| {
                Stripe(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
            base: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds one to counter `which`.
    #[inline]
    pub(crate) fn incr(&self, which: usize) {
        let slot = thread_slot();
        // `% STRIPES` (a power of two: a mask) proves the index in range.
        let counter = &self.stripes[slot % STRIPES].0[which];
        if OWNED_WRITES && slot < EXCLUSIVE {
            // This thread is the only writer of this stripe: no read-modify-write needed.
            counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
        } else {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// The sum of counter `which` over all stripes, since the last [`clear`](Self::clear).
    pub(crate) fn get(&self, which: usize) -> u64 {
        self.sum(which)
            .saturating_sub(self.base[which].load(Relaxed))
    }

    fn sum(&self, which: usize) -> u64 {
        self.stripes.iter().map(|s| s.0[which].load(Relaxed)).sum()
    }

    /// Sets every counter to zero. Concurrent increments may survive; callers use this for a
    /// manual reset, where that is acceptable.
    pub(crate) fn clear(&self) {
        for (which, base) in self.base.iter().enumerate() {
            base.store(self.sum(which), Relaxed);
        }
    }
}

/// This thread's stripe slot: one of the first [`EXCLUSIVE`] that it owns, or a shared one
/// (below [`STRIPES`] either way). Also picks the per-thread owner of a keyed breaker's circuit.
#[inline]
pub(crate) fn thread_slot() -> usize {
    // A const-initialised cell without a destructor: reading it is one thread-local load, and it
    // stays readable during thread-local teardown.
    let slot = SLOT.with(Cell::get);
    if slot != UNCLAIMED {
        return slot;
    }
    claim_slot()
}

const UNCLAIMED: usize = usize::MAX;

std::thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Gives an exclusive slot back when the thread exits.
    static RELEASE: Release = const { Release(Cell::new(UNCLAIMED)) };
}

/// Exclusive slots given back by exited threads, and the next never-used one (a plain std
/// mutex and atomic: handing out slots is not part of any loom model).
static FREE_SLOTS: std::sync::Mutex<(usize, Vec<usize>)> = std::sync::Mutex::new((0, Vec::new()));

#[cold]
#[inline(never)]
fn claim_slot() -> usize {
    static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);
    let shared = EXCLUSIVE + NEXT_SHARED.fetch_add(1, Relaxed) % SHARED;
    let mut free = FREE_SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exclusive = free.1.pop().or_else(|| {
        (free.0 < EXCLUSIVE).then(|| {
            free.0 += 1;
            free.0 - 1
        })
    });
    let slot = match exclusive {
        // Registering the release fails only while this thread's thread-locals are being torn
        // down; then the slot goes straight back and the thread shares.
        Some(slot) if RELEASE.try_with(|release| release.0.set(slot)).is_ok() => slot,
        Some(slot) => {
            free.1.push(slot);
            shared
        }
        None => shared,
    };
    drop(free);
    SLOT.with(|cell| cell.set(slot));
    slot
}

struct Release(Cell<usize>);

impl Drop for Release {
    fn drop(&mut self) {
        let slot = self.0.get();
        if slot < EXCLUSIVE {
            // From now on this thread (in later thread-local destructors) adds to a shared stripe.
            SLOT.with(|cell| cell.set(EXCLUSIVE));
            FREE_SLOTS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .1
                .push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// More threads alive at once than there are exclusive slots, all adding at the same time:
    /// owners and sharers together lose no increment.
    #[test]
    fn sums_across_more_threads_than_slots() {
        const THREADS: usize = 3 * EXCLUSIVE;
        const ADDS: u64 = 20_000;
        let c = Arc::new(Counters::<2>::new());
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (c, start) = (c.clone(), start.clone());
                std::thread::spawn(move || {
                    // Claimed before the barrier: every thread holds its slot at the same time.
                    let slot = thread_slot();
                    start.wait();
                    for _ in 0..ADDS {
                        c.incr(1);
                    }
                    slot
                })
            })
            .collect();
        let slots: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(c.get(1), THREADS as u64 * ADDS);
        assert_eq!(c.get(0), 0);
        // No exclusive slot was held by two live threads at once, and the test really had
        // threads beyond the exclusive slots.
        let mut exclusive: Vec<usize> = slots.into_iter().filter(|&s| s < EXCLUSIVE).collect();
        let owners = exclusive.len();
        exclusive.sort_unstable();
        exclusive.dedup();
        assert_eq!(exclusive.len(), owners, "an exclusive slot was shared");
        assert!(owners < THREADS);
    }

    /// Threads that exit give their slot back; the next owner continues the stripe's count.
    #[test]
    fn recycled_slots_keep_counting() {
        let c = Arc::new(Counters::<1>::new());
        for _ in 0..3 * EXCLUSIVE {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    c.incr(0);
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(c.get(0), 3 * EXCLUSIVE as u64 * 1000);
    }

    #[test]
    fn clear_starts_from_zero_and_counts_on() {
        let c = Counters::<2>::new();
        for _ in 0..5 {
            c.incr(0);
        }
        c.incr(1);
        c.clear();
        assert_eq!((c.get(0), c.get(1)), (0, 0));
        c.incr(0);
        assert_eq!((c.get(0), c.get(1)), (1, 0));
    }
}
