//! Striped event counters (like Java's `LongAdder`): each thread adds to its own cache-padded
//! stripe and readers sum the stripes, so two threads counting calls on one breaker do not
//! fight over a cache line.

use std::cell::Cell;

use crate::sync::{AtomicU64, Ordering::Relaxed};

const STRIPES: usize = 8;

/// A fixed set of `N` counters, striped.
#[derive(Debug)]
pub(crate) struct Counters<const N: usize> {
    stripes: Box<[Stripe<N>; STRIPES]>,
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
        }
    }

    /// Adds one to counter `which`.
    #[inline]
    pub(crate) fn incr(&self, which: usize) {
        // `% STRIPES` (a power of two: a mask) proves the index in range.
        self.stripes[stripe_index() % STRIPES].0[which].fetch_add(1, Relaxed);
    }

    /// The sum of counter `which` over all stripes.
    pub(crate) fn get(&self, which: usize) -> u64 {
        self.stripes.iter().map(|s| s.0[which].load(Relaxed)).sum()
    }

    /// Sets every counter to zero. Concurrent increments may survive; callers use this for a
    /// manual reset, where that is acceptable.
    pub(crate) fn clear(&self) {
        for stripe in self.stripes.iter() {
            for c in &stripe.0 {
                c.store(0, Relaxed);
            }
        }
    }
}

#[inline]
fn stripe_index() -> usize {
    // A plain std atomic: handing out stripe numbers is not part of any loom model.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Relaxed) % STRIPES;
            index.set(i);
        }
        i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads() {
        let c = std::sync::Arc::new(Counters::<2>::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.incr(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(1), 4000);
        assert_eq!(c.get(0), 0);
        c.clear();
        assert_eq!(c.get(1), 0);
    }
}
