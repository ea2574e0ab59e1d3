//! The bulkhead's shared state: a FIFO semaphore with a lock-free fast path.
//!
//! One packed atomic word holds the number of available permits (signed: it goes negative
//! after a shrink, and releases pay that debt off) and a "has waiters" flag:
//!
//! ```text
//!   bit 63 ..................... 1 | bit 0
//!   available permits (i63)        | has waiters
//! ```
//!
//! - **Acquire, fast path**: one CAS that takes a permit if one is available and nobody waits.
//! - **Release, fast path**: one CAS that gives the permit back if nobody waits. With waiters,
//!   the releaser takes the queue lock and hands its permit straight to the oldest waiter (FIFO,
//!   no barging).
//! - **Acquire, slow path**: under the queue lock, a CAS either takes a permit or sets the flag
//!   and enqueues. A release that races with it either lands before the CAS (which then fails and
//!   retries, now seeing the permit) or sees the flag and waits for the lock (and then hands its
//!   permit to the new waiter), so no wake-up is lost.
//!
//! While the flag is set, the word is changed only under the lock. Invariant (under the lock):
//! the flag is set iff the queue of ungranted waiters is non-empty, and then no permit is
//! available.

use std::collections::VecDeque;
use std::fmt;
use std::task::Waker;
use std::time::Duration;

use super::handle::Stats;
use crate::striped::Counters;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

const WAITERS: u64 = 1;
const ONE_PERMIT: u64 = 2;

/// Counter slots in [`Shared::counters`].
pub(crate) const REJECTED: usize = 0;
pub(crate) const TIMED_OUT: usize = 1;

#[inline]
fn pack(permits: i64, waiters: bool) -> u64 {
    ((permits << 1) as u64) | u64::from(waiters)
}

#[inline]
fn permits(state: u64) -> i64 {
    (state as i64) >> 1
}

#[inline]
fn has_waiters(state: u64) -> bool {
    state & WAITERS != 0
}

/// What the slow path decided for a caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// A permit was taken.
    Acquired,
    /// The caller waits in the queue under this id.
    Queued(u64),
    /// At capacity with a full queue.
    Full,
}

/// What a waiter finds when it polls its queue entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitState {
    /// A releaser (or a resize) handed this waiter a permit; it now holds it.
    Granted,
    /// Still queued (its waker is updated).
    Waiting,
}

struct Entry {
    id: u64,
    waker: Option<Waker>,
}

struct Waiters {
    /// Ungranted waiters, oldest first; ids strictly increase, so lookups binary-search.
    queue: VecDeque<Entry>,
    /// Ids of waiters handed a permit that have not polled since.
    granted: Vec<u64>,
    next_id: u64,
    max_concurrent: usize,
}

impl Waiters {
    fn position(&self, id: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&id, |e| e.id).ok()
    }
}

/// The state every service of one bulkhead layer shares.
pub(crate) struct Shared {
    state: AtomicU64,
    waiters: Mutex<Waiters>,
    counters: Counters<2>,
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) max_queue: usize,
    pub(crate) max_wait: Duration,
}

impl Shared {
    pub(crate) fn new(
        name: std::sync::Arc<str>,
        max_concurrent: usize,
        max_queue: usize,
        max_wait: Duration,
    ) -> Self {
        Shared {
            state: AtomicU64::new(pack(to_i64(max_concurrent), false)),
            waiters: Mutex::new(Waiters {
                queue: VecDeque::with_capacity(max_queue.min(1024)),
                granted: Vec::new(),
                next_id: 0,
                max_concurrent,
            }),
            counters: Counters::new(),
            name,
            max_queue,
            max_wait,
        }
    }

    /// Takes a permit without locking if one is available and nobody waits.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if has_waiters(s) || permits(s) <= 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                s.wrapping_sub(ONE_PERMIT),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    /// Under the lock: takes a permit, or enqueues the caller with `waker`, or reports the queue
    /// full.
    pub(crate) fn acquire_slow(&self, waker: &Waker) -> Acquire {
        let mut w = lock(&self.waiters);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (new, outcome) = if !has_waiters(s) && permits(s) > 0 {
                (s.wrapping_sub(ONE_PERMIT), Acquire::Acquired)
            } else if w.queue.len() >= self.max_queue {
                return Acquire::Full;
            } else {
                (s | WAITERS, Acquire::Queued(w.next_id))
            };
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Acquire::Queued(id) = outcome {
                        w.next_id += 1;
                        w.queue.push_back(Entry {
                            id,
                            waker: Some(waker.clone()),
                        });
                    }
                    return outcome;
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// Gives one permit back: to the pool if nobody waits, else to the oldest waiter (woken
    /// after the lock is released).
    #[inline]
    pub(crate) fn release(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        while !has_waiters(s) {
            match self.state.compare_exchange_weak(
                s,
                s.wrapping_add(ONE_PERMIT), // two's complement: permits may be negative (a shrink's debt)
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => s = actual,
            }
        }
        self.release_slow();
    }

    #[cold]
    fn release_slow(&self) {
        let waker = {
            let mut w = lock(&self.waiters);
            self.release_locked(&mut w)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Under the lock: pays off debt, else hands the permit to the oldest waiter, else returns
    /// it to the pool. Returns the waker to wake once the lock is released.
    fn release_locked(&self, w: &mut Waiters) -> Option<Waker> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let p = permits(s);
            let hand_off = p >= 0 && !w.queue.is_empty();
            let new = if hand_off {
                pack(p, w.queue.len() > 1)
            } else {
                pack(p + 1, !w.queue.is_empty())
            };
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if hand_off => {
                    let entry = w.queue.pop_front().expect("queue is non-empty");
                    w.granted.push(entry.id);
                    return entry.waker;
                }
                Ok(_) => return None,
                Err(actual) => s = actual,
            }
        }
    }

    /// A waiter checks its entry: takes a granted permit, or refreshes its waker.
    pub(crate) fn poll_wait(&self, id: u64, waker: &Waker) -> WaitState {
        let mut w = lock(&self.waiters);
        if let Some(i) = w.granted.iter().position(|&g| g == id) {
            w.granted.swap_remove(i);
            return WaitState::Granted;
        }
        if let Some(i) = w.position(id) {
            let entry = &mut w.queue[i];
            if !entry.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
                entry.waker = Some(waker.clone());
            }
        }
        WaitState::Waiting
    }

    /// A waiter leaves the queue (timed out or dropped). Returns `true` if it had been granted a
    /// permit meanwhile: the caller now holds that permit.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut w = lock(&self.waiters);
        if let Some(i) = w.granted.iter().position(|&g| g == id) {
            w.granted.swap_remove(i);
            return true;
        }
        if let Some(i) = w.position(id) {
            w.queue.remove(i);
            if w.queue.is_empty() {
                // Only lock holders change the word while the flag is set.
                self.state.fetch_and(!WAITERS, Ordering::AcqRel);
            }
        }
        false
    }

    /// Sets the permit count to `new`: added permits go to waiters first (oldest first);
    /// removed ones become debt that releases pay off. Never waits for running calls.
    pub(crate) fn resize(&self, new: usize) {
        let mut wakers = Vec::new();
        {
            let mut w = lock(&self.waiters);
            let delta = to_i64(new) - to_i64(w.max_concurrent);
            w.max_concurrent = new;
            let mut s = self.state.load(Ordering::Relaxed);
            let handed = loop {
                let p = permits(s) + delta;
                let handed = usize::try_from(p).unwrap_or(0).min(w.queue.len());
                let left = w.queue.len() - handed;
                let next = pack(p - to_i64(handed), left > 0);
                match self
                    .state
                    .compare_exchange(s, next, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => break handed,
                    Err(actual) => s = actual,
                }
            };
            for _ in 0..handed {
                let entry = w.queue.pop_front().expect("counted above");
                w.granted.push(entry.id);
                wakers.extend(entry.waker);
            }
        }
        for waker in wakers {
            waker.wake();
        }
    }

    pub(crate) fn count(&self, which: usize) {
        self.counters.incr(which);
    }

    pub(crate) fn stats(&self) -> Stats {
        let (max, p, queued) = {
            let w = lock(&self.waiters);
            let p = permits(self.state.load(Ordering::Acquire));
            (w.max_concurrent, p, w.queue.len())
        };
        Stats {
            name: self.name.to_string(),
            active: usize::try_from(to_i64(max) - p).unwrap_or(0),
            queued,
            available: usize::try_from(p).unwrap_or(0),
            max_concurrent: max,
            rejected: self.counters.get(REJECTED),
            timed_out: self.counters.get(TIMED_OUT),
            max_queue: self.max_queue,
            max_wait: self.max_wait,
        }
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX >> 2)
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("available", &permits(s))
            .field("has_waiters", &has_waiters(s))
            .field("max_queue", &self.max_queue)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max: usize, queue: usize) -> Shared {
        Shared::new("t".into(), max, queue, Duration::from_secs(1))
    }

    #[test]
    fn packing_round_trips_negative_counts() {
        for p in [-5_i64, -1, 0, 1, 7] {
            for flag in [false, true] {
                let s = pack(p, flag);
                assert_eq!(permits(s), p);
                assert_eq!(has_waiters(s), flag);
            }
        }
    }

    #[test]
    fn hand_off_is_fifo_and_debt_is_paid_first() {
        let s = shared(1, 3);
        let noop = futures::task::noop_waker_ref();
        assert!(s.try_acquire());
        assert_eq!(s.acquire_slow(noop), Acquire::Queued(0));
        assert_eq!(s.acquire_slow(noop), Acquire::Queued(1));
        assert!(!s.try_acquire(), "no barging past waiters");
        s.release();
        assert_eq!(s.poll_wait(1, noop), WaitState::Waiting);
        assert_eq!(s.poll_wait(0, noop), WaitState::Granted);
        // Shrink to 0 while one call runs: debt of one; the next release pays it.
        s.resize(0);
        s.release();
        assert_eq!(s.poll_wait(1, noop), WaitState::Waiting);
        let st = s.stats();
        assert_eq!((st.active, st.available, st.queued), (0, 0, 1));
        s.resize(1);
        assert_eq!(s.poll_wait(1, noop), WaitState::Granted);
        s.release();
        assert_eq!(s.stats().available, 1);
    }
    #[test]
    fn the_slow_path_takes_a_permit_freed_after_the_fast_path_gave_up() {
        // A release between `try_acquire` failing and `acquire_slow` taking the lock leaves a
        // free permit and no waiters: the caller must take it, not queue behind nobody.
        let s = shared(1, 3);
        assert_eq!(
            s.acquire_slow(futures::task::noop_waker_ref()),
            Acquire::Acquired
        );
        assert_eq!(s.stats().active, 1);
    }

    #[test]
    fn cancelling_a_waiter_that_was_not_granted_holds_no_permit() {
        let s = shared(1, 3);
        let noop = futures::task::noop_waker_ref();
        assert!(s.try_acquire());
        let Acquire::Queued(id) = s.acquire_slow(noop) else {
            panic!("must queue");
        };
        assert!(!s.cancel(id));
        assert!(!s.cancel(id), "gone: cancelling again holds nothing either");
        s.release();
        assert!(s.try_acquire(), "the flag is clear and the permit back");
    }

    /// Random sequences of every operation, checking after each one that the waiters flag is
    /// set exactly while someone is queued (the fast paths trust it) and that no permit is lost
    /// or made up.
    #[test]
    fn the_waiters_flag_and_the_permit_count_stay_exact() {
        let noop = futures::task::noop_waker_ref();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..200 {
            let s = shared(2, 4);
            let mut max = 2_usize;
            let mut held = 0_usize;
            let mut queued: Vec<u64> = Vec::new();
            for _ in 0..60 {
                match next(6) {
                    0 => held += usize::from(s.try_acquire()),
                    1 => match s.acquire_slow(noop) {
                        Acquire::Acquired => held += 1,
                        Acquire::Queued(id) => queued.push(id),
                        Acquire::Full => assert_eq!(s.stats().queued, 4),
                    },
                    2 if held > 0 => {
                        held -= 1;
                        s.release();
                    }
                    3 if !queued.is_empty() => {
                        let id = queued.remove(next(queued.len() as u64) as usize);
                        held += usize::from(s.cancel(id));
                    }
                    4 => {
                        max = next(4) as usize;
                        s.resize(max);
                    }
                    _ => queued.retain(|&id| match s.poll_wait(id, noop) {
                        WaitState::Granted => {
                            held += 1;
                            false
                        }
                        WaitState::Waiting => true,
                    }),
                }
                let w = lock(&s.waiters);
                let word = s.state.load(Ordering::Acquire);
                assert_eq!(has_waiters(word), !w.queue.is_empty(), "flag vs queue");
                let granted_unpolled = w.granted.len() as i64;
                assert_eq!(
                    permits(word),
                    to_i64(max) - to_i64(held) - granted_unpolled,
                    "permits = capacity - held - granted"
                );
                drop(w);
            }
        }
    }
}

/// Model checks of the lock-free protocol: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use loom::thread;

    fn shared(max: usize) -> Arc<Shared> {
        Arc::new(Shared::new("loom".into(), max, 4, Duration::from_secs(1)))
    }

    fn noop() -> &'static Waker {
        futures::task::noop_waker_ref()
    }

    #[test]
    fn a_release_racing_an_enqueue_is_never_lost() {
        loom::model(|| {
            let s = shared(1);
            assert!(s.try_acquire());
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release())
            };
            let got = match s.acquire_slow(noop()) {
                Acquire::Acquired => true,
                Acquire::Queued(id) => {
                    releaser.join().unwrap();
                    assert_eq!(s.poll_wait(id, noop()), WaitState::Granted);
                    s.release();
                    let st = s.stats();
                    assert_eq!((st.available, st.queued, st.active), (1, 0, 0));
                    return;
                }
                Acquire::Full => panic!("queue has room"),
            };
            assert!(got);
            releaser.join().unwrap();
            s.release();
            let st = s.stats();
            assert_eq!((st.available, st.queued, st.active), (1, 0, 0));
        });
    }

    #[test]
    fn a_cancel_racing_a_hand_off_loses_no_permit() {
        loom::model(|| {
            let s = shared(1);
            assert!(s.try_acquire());
            let Acquire::Queued(id) = s.acquire_slow(noop()) else {
                panic!("must queue");
            };
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release())
            };
            if s.cancel(id) {
                s.release(); // handed over meanwhile: pass it on
            }
            releaser.join().unwrap();
            let st = s.stats();
            assert_eq!((st.available, st.queued, st.active), (1, 0, 0));
            assert!(s.try_acquire(), "the flag is clear again");
        });
    }

    #[test]
    fn a_resize_racing_a_release_and_a_fast_acquire() {
        loom::model(|| {
            let s = shared(2);
            assert!(s.try_acquire());
            let resizer = {
                let s = s.clone();
                thread::spawn(move || s.resize(1))
            };
            let releaser = {
                let s = s.clone();
                thread::spawn(move || s.release())
            };
            let took = s.try_acquire();
            resizer.join().unwrap();
            releaser.join().unwrap();
            let st = s.stats();
            assert_eq!(st.max_concurrent, 1);
            assert_eq!(st.active, usize::from(took));
            assert_eq!(st.available, 1 - usize::from(took));
        });
    }
}
