//! The state one breaker shares between its layer, services, futures and handles: the atomics
//! the hot path reads, the lock around the [`Machine`], the publication of the machine's state in
//! one packed [`Word`], and the waking of waiting services.
//!
//! Hot path: admission while closed is one `Acquire` load of the packed word; recording a
//! success is a generation compare plus a striped counter increment (and a CAS only when a
//! failure streak must be cleared). Everything else — transitions, probe permits, waiters,
//! listeners — is the cold path under one mutex (`cold`), taken only when something changes.
//! [`rules`](super::rules) decide when a closed circuit trips and the [`Machine`] what a
//! transition does; this module applies their verdicts, publishes them and wakes waiters.
//!
//! # Invariants
//!
//! 1. **The word follows the machine.** The word's state and generation change only under
//!    `cold`, in [`finish`](Shared::finish), which copies them from the machine, and every
//!    section that can change the machine's state ends in `finish`: whenever `cold` is free, the
//!    word shows the machine's state and generation. Every transition starts a new generation,
//!    so a reader that sees the generation it expects has missed no transition (short of 2³²).
//!
//! 2. **The failure streak is the current closed phase's.** The word's streak bits change
//!    outside the lock, by compare-and-swap in [`update_streak`](Shared::update_streak), only
//!    while the word shows `Closed` with the caller's generation; `finish` publishes every new
//!    generation with a zero streak. So the streak is zero in every state but `Closed`.
//!
//! 3. **A reader that sees `Open` sees its deadline.** `finish` stores `open_until` before the
//!    word of an open phase (`Release`, read with `Acquire`), so a lock-free reader of a word
//!    showing `Open` reads that phase's deadline or a later one's. It is read only then.
//!
//! 4. **The window describes the current closed phase.** `finish` empties it before publishing
//!    a new closed generation, and a recorder adds to it only after checking on the word that its
//!    call's generation is the current closed one. (A recorder delayed between that check and its
//!    write, across a trip and the next close, can add one late sample to the new window.)
//!
//! 5. **A result counts once, in the generation that admitted it.** An admitted call carries a
//!    [`Ticket`] with its generation, from the word (`admit_fast`: closed or disabled) or from the
//!    machine under the lock (`admit_slow`). Its holder (a service's reservation, then the call's
//!    guard) gives it up as it uses it, so it is recorded or released at most once. A closed
//!    result counts in the streak only through the checked swap of (2), and trips only if
//!    `Machine::trip` finds its generation current under the lock; a probe's result or release
//!    changes the machine only while its generation is current and the probe outstanding, so no
//!    permit is freed twice. The lifetime counters and the adaptive rate meter count every
//!    recorded call, whatever its generation.
//!
//! 6. **No lost wake-up.** A default-mode service that is refused registers its waker in the
//!    locked section that refused it ([`admit_slow`](Shared::admit_slow)). Every later change
//!    that could admit it (a transition, a freed probe permit) is made under the lock and ends in
//!    `finish`, which takes every registered waker and wakes them once the lock is released; a
//!    woken service polls again. Time passing is covered by the refusal's `wake_at` (the open
//!    deadline, or the earliest probe deadline), at which the service arms its own timer inside
//!    a Tokio runtime; forced open has none and ends only by a manual change, which wakes all.
//!
//! 7. **Nothing is woken or called under a lock.** Wakers are woken and listeners called only
//!    after `cold` is released (a waker is only cloned, compared or dropped under it);
//!    `listeners` is locked only to add to or copy the list. No section holds both locks.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::Adaptive;
use super::classify::Outcome;
use super::config::Config;
use super::error::CircuitOpen;
use super::machine::{Machine, Refusal};
use super::rules::{self, Rules};
use super::state::{Reason, State, Transition};
use super::ticket::{PackedTicket, Ticket};
use super::waiters::Waiters;
use super::window::{Totals, Window};
use crate::striped::Counters;
use crate::sync::{lock, AtomicU64, Mutex, MutexGuard, Ordering};
use crate::time::Stamp;

#[cfg(feature = "redis")]
mod fleet;
mod word;
pub(crate) use word::Word;

pub(crate) const SUCCESS: usize = 0;
pub(crate) const FAILED: usize = 1;
pub(crate) const IGNORED: usize = 2;
pub(crate) const REJECTED: usize = 3;
pub(crate) const SLOW: usize = 4;
pub(crate) const THROTTLED: usize = 5;
const COUNTERS: usize = 6;

type Listener = std::sync::Arc<dyn Fn(&Transition) + Send + Sync>;

/// What admission decided.
#[derive(Debug)]
pub(crate) enum Admission {
    Admitted(PackedTicket),
    /// Default mode: the caller's waker is registered; it should also sleep until `wake_at`.
    Wait {
        wake_at: Option<Instant>,
    },
    /// Fail-fast mode: reject the call (build its error with [`Shared::reject`] at `call`).
    Rejected,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    word: AtomicU64,
    window: Option<Window>,
    counters: Counters<COUNTERS>,
    /// Nanoseconds from `origin` to the last failure, plus one; 0 = none yet.
    last_failure: AtomicU64,
    /// Nanoseconds from `origin` to the end of the open duration while `Open`, published before
    /// the word (so a reader that sees `Open` sees its deadline): lets a fail-fast breaker
    /// reject without the lock.
    open_until: AtomicU64,
    origin: Instant,
    needs_clock: bool,
    /// No adaptive table, no slow-call rule and no time window: a closed-state success needs
    /// no clock, and changes only the success counter, the failure streak and a count window
    /// (see [`Shared::record`]'s fast path).
    clockless_success: bool,
    adaptive: Option<Adaptive>,
    cold: Mutex<Cold>,
    listeners: Mutex<Vec<Listener>>,
    /// Told of each failure counted in a closed circuit, so a fleet can count failures across
    /// processes. Set at most once; only failures (never the success fast path) look at it.
    #[cfg(feature = "redis")]
    failure_hook: std::sync::OnceLock<FailureHook>,
}

/// See [`Shared::set_failure_hook`].
#[cfg(feature = "redis")]
pub(crate) type FailureHook = Box<dyn Fn() + Send + Sync>;

struct Cold {
    machine: Machine,
    waiters: Waiters,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let origin = crate::time::now();
        let window = config
            .uses_window()
            .then(|| Window::new(config.window, origin));
        let needs_clock = config.slow_calls.is_some();
        let adaptive = config.adaptive.clone().map(|t| Adaptive::new(t, origin));
        let mut machine = Machine::new();
        if let Some(adaptive) = &adaptive {
            machine.set_base_open(adaptive.current().1);
        }
        let clockless_success =
            adaptive.is_none() && !needs_clock && !window.as_ref().is_some_and(Window::needs_clock);
        Shared {
            word: AtomicU64::new(Word::new(machine.state(), machine.generation()).0),
            window,
            counters: Counters::new(),
            last_failure: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            origin,
            needs_clock,
            clockless_success,
            adaptive,
            cold: Mutex::new(Cold {
                machine,
                waiters: Waiters::default(),
            }),
            listeners: Mutex::new(Vec::new()),
            #[cfg(feature = "redis")]
            failure_hook: std::sync::OnceLock::new(),
            config,
        }
    }

    pub(crate) fn name(&self) -> &std::sync::Arc<str> {
        &self.config.name
    }

    #[inline]
    pub(crate) fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// The trip rules, as configured.
    #[inline]
    fn rules(&self) -> Rules<'_> {
        Rules {
            config: &self.config,
            adaptive: &self.adaptive,
        }
    }

    /// A call's start time, when the slow-call rule needs it.
    #[inline]
    pub(crate) fn start_time(&self) -> Option<Stamp> {
        self.needs_clock
            .then(|| Stamp::new(crate::time::now(), self.origin))
    }

    /// The hot path: a ticket without locking while closed or disabled.
    #[inline]
    pub(crate) fn admit_fast(&self) -> Option<PackedTicket> {
        let word = self.word();
        match word.state() {
            State::Closed => Some(
                Ticket::Closed {
                    generation: word.generation(),
                }
                .pack(),
            ),
            State::Disabled => Some(Ticket::Unrecorded.pack()),
            _ => None,
        }
    }

    /// Whether `ticket` still belongs to the current generation.
    #[inline]
    pub(crate) fn is_current(&self, ticket: PackedTicket) -> bool {
        match ticket.unpack().generation() {
            Some(generation) => generation == self.word().generation(),
            None => self.word().state() == State::Disabled,
        }
    }

    /// The cold path. With `waiter`, a refusal registers the waker (under the same lock that
    /// decided, so no wake-up can be missed) and returns `Wait`; without, it counts a rejection
    /// and returns `Rejected`.
    pub(crate) fn admit_slow(&self, waiter: Option<(&mut Option<usize>, &Waker)>) -> Admission {
        let now = crate::time::now();
        let mut cold = lock(&self.cold);
        let transition = cold.machine.advance(now, &self.config);
        let decision = cold.machine.admit(now, &self.config);
        let admission = match decision {
            Ok(ticket) => Admission::Admitted(ticket.pack()),
            Err(Refusal { wake_at }) => match waiter {
                Some((key, waker)) => {
                    cold.waiters.register(key, waker);
                    Admission::Wait { wake_at }
                }
                None => Admission::Rejected,
            },
        };
        self.finish(cold, transition, false);
        admission
    }

    /// Fail-fast fast path for a refusal: `true` when the circuit is forced open, or open with
    /// time left — decided from two atomics, without the lock. `false` means "ask
    /// [`admit_slow`](Self::admit_slow)".
    #[inline]
    pub(crate) fn refuses_without_lock(&self) -> bool {
        match self.word().state() {
            State::ForcedOpen => true,
            State::Open => crate::time::now() < self.deadline(),
            _ => false,
        }
    }

    fn deadline(&self) -> Instant {
        self.origin + Duration::from_nanos(self.open_until.load(Ordering::Acquire))
    }

    /// The error for a call a fail-fast breaker rejects, built when the call is made so its
    /// `retry_after` is current: the time left while open, `None` when forced open or while
    /// half-open probes hold every permit, zero if the circuit admits again by now (the caller
    /// may retry at once). Counts the rejection.
    pub(crate) fn reject(&self) -> CircuitOpen {
        self.counters.incr(REJECTED);
        let retry_after = match self.word().state() {
            State::Open => Some(
                self.deadline()
                    .saturating_duration_since(crate::time::now()),
            ),
            State::ForcedOpen | State::HalfOpen => None,
            State::Closed | State::Disabled => Some(Duration::ZERO),
        };
        trace_debug!(name = %self.config.name, ?retry_after, "circuit breaker rejected a call");
        CircuitOpen::new(self.config.name.clone(), retry_after)
    }

    /// A probe's call has started (its timeout counts from here).
    pub(crate) fn probe_started(&self, ticket: PackedTicket) {
        if let Ticket::Probe { generation, id } = ticket.unpack() {
            let now = crate::time::now();
            lock(&self.cold).machine.probe_started(generation, id, now);
        }
    }

    /// A probe's response head arrived: its timeout stops counting — unless it has already
    /// run out, which is applied first (a late head does not rescue a timed-out probe).
    #[cold]
    pub(crate) fn probe_responded(&self, ticket: PackedTicket) {
        if let Ticket::Probe { generation, id } = ticket.unpack() {
            let now = crate::time::now();
            let mut cold = lock(&self.cold);
            let transition = cold.machine.advance(now, &self.config);
            cold.machine.probe_responded(generation, id);
            self.finish(cold, transition, false);
        }
    }

    /// A ticket is given back unused, or its call was dropped: records nothing, frees a probe
    /// permit and wakes waiters (drops are neutral).
    pub(crate) fn release(&self, ticket: PackedTicket) {
        if let Ticket::Probe { generation, id } = ticket.unpack() {
            let mut cold = lock(&self.cold);
            let freed = cold.machine.release_probe(generation, id);
            self.finish(cold, None, freed);
        }
    }

    /// Records a finished call that started at `started` (given when the slow-call rule needs
    /// it). Reads the clock at most once.
    #[inline]
    pub(crate) fn record(&self, ticket: PackedTicket, outcome: Outcome, started: Option<Stamp>) {
        // Fast path, the same effect as the general path for this case: a closed-state success
        // that needs no clock counts the success and, if `generation` is still the current
        // closed one, clears the failure streak (if any) and enters a count window (it cannot
        // trip a rate rule). Inlined into the response future; the rest stays out of line.
        if let (true, Ticket::Closed { generation }, Outcome::Success, None) =
            (self.clockless_success, ticket.unpack(), &outcome, started)
        {
            self.counters.incr(SUCCESS);
            let word = self.word();
            if word.failures() != 0 && self.update_streak(generation, false).is_none() {
                return; // a late result from an earlier generation
            }
            if let Some(window) = &self.window {
                if word.generation() == generation && word.state() == State::Closed {
                    window.record(false, false, None);
                }
            }
            return;
        }
        self.record_general(ticket, outcome, started);
    }

    #[inline(never)]
    fn record_general(&self, ticket: PackedTicket, outcome: Outcome, started: Option<Stamp>) {
        // Only here, off the fast path: a `Failover` re-sending failures needs every verdict
        // but a plain success, which it takes as the default for an `Ok` result.
        crate::failover::scope::note_outcome(outcome);
        let started = started.map(|stamp| stamp.instant(self.origin));
        let (generation, probe) = match ticket.unpack() {
            Ticket::Unrecorded => return, // disabled records nothing
            Ticket::Closed { generation } => (generation, None),
            Ticket::Probe { generation, id } => (generation, Some(id)),
        };
        let now = self.record_needs_clock(started).then(crate::time::now);
        if let (Some(adaptive), Some(now)) = (&self.adaptive, now) {
            if let Some((_, open_duration)) = adaptive.record(now) {
                lock(&self.cold).machine.set_base_open(open_duration);
            }
        }
        let rules = self.rules();
        let slow = rules.is_slow(started, now);
        if slow {
            self.counters.incr(SLOW);
        }
        let outcome = rules::counted(outcome);
        match outcome {
            Outcome::Success => self.counters.incr(SUCCESS),
            Outcome::Failure => {
                self.counters.incr(FAILED);
                let since = now
                    .unwrap_or_else(crate::time::now)
                    .saturating_duration_since(self.origin);
                let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
                self.last_failure.store(nanos + 1, Ordering::Relaxed);
            }
            Outcome::Ignored => self.counters.incr(IGNORED),
            Outcome::Throttled { .. } => self.counters.incr(THROTTLED),
        }
        match probe {
            None => self.record_closed(generation, outcome, slow, now),
            Some(id) => {
                let result = rules.probe(outcome, slow);
                let now = crate::time::now();
                let mut cold = lock(&self.cold);
                let (transition, freed) =
                    cold.machine
                        .probe_finished(generation, id, result, now, &self.config);
                self.finish(cold, transition, freed);
            }
        }
    }

    fn record_needs_clock(&self, started: Option<Instant>) -> bool {
        started.is_some()
            || self.adaptive.is_some()
            || self.window.as_ref().is_some_and(Window::needs_clock)
    }

    /// A closed-state result: counted in the streak (in the word) and the window, asking the
    /// [`rules`](super::rules) in their order; trips the circuit when one fires, if `generation`
    /// is still the current closed one.
    fn record_closed(&self, generation: u32, outcome: Outcome, slow: bool, now: Option<Instant>) {
        let rules = self.rules();
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
            Outcome::Throttled { retry_after } => {
                return self.trip(generation, rules.throttled(retry_after));
            }
        };
        let Some(streak) = self.update_streak(generation, failed) else {
            return; // a late result from an earlier generation
        };
        #[cfg(feature = "redis")]
        if failed {
            if let Some(hook) = self.failure_hook.get() {
                hook();
            }
        }
        if let Some(reason) = rules.streak_trip(failed, streak) {
            return self.trip(generation, reason);
        }
        let Some(window) = &self.window else { return };
        let Some(totals) = window.record(failed, slow, now) else {
            return; // neither failed nor slow: cannot trip a rate rule
        };
        if let Some(reason) = rules.rate_trip(&totals, failed, slow) {
            self.trip(generation, reason);
        }
    }

    /// Extends (failure) or clears (success) the consecutive-failure streak in the packed word,
    /// if `generation` is still the current closed one. Returns the new streak length.
    fn update_streak(&self, generation: u32, failed: bool) -> Option<u32> {
        let mut word = self.word();
        loop {
            if word.generation() != generation || word.state() != State::Closed {
                return None;
            }
            let streak = if failed {
                word.failures().saturating_add(1)
            } else {
                0
            };
            if streak == word.failures() {
                return Some(streak); // a success with no streak to clear: no write at all
            }
            let new = word.with_failures(streak);
            match self.word.compare_exchange_weak(
                word.0,
                new.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(new.failures()),
                Err(actual) => word = Word(actual),
            }
        }
    }

    fn trip(&self, generation: u32, reason: Reason) {
        let now = crate::time::now();
        let mut cold = lock(&self.cold);
        let transition = cold.machine.trip(generation, reason, now, &self.config);
        self.finish(cold, transition, false);
    }

    /// For `stats()`: the consecutive-failure threshold, the first-trip open duration and the
    /// request rate (adaptive only) as of now.
    pub(crate) fn thresholds_now(&self) -> (u32, Duration, Option<u64>) {
        match &self.adaptive {
            Some(adaptive) => {
                let (failures, open, rate) = adaptive.at(crate::time::now());
                (failures, open, Some(rate))
            }
            None => (
                self.config.consecutive_failures,
                self.config.open_duration,
                None,
            ),
        }
    }

    /// A manual operation (every admitting change wakes everyone).
    pub(crate) fn force(&self, to: State, reason: Reason) {
        let now = crate::time::now();
        let mut cold = lock(&self.cold);
        let transition = cold.machine.force(to, reason, now, &self.config);
        if reason == Reason::Reset {
            self.counters.clear();
            self.last_failure.store(0, Ordering::Relaxed);
        }
        self.finish(cold, Some(transition), true);
    }

    /// Publishes the machine's state for the hot path, wakes waiters after any transition or
    /// freed permit, then — outside the lock — logs and calls listeners.
    fn finish(&self, mut cold: MutexGuard<'_, Cold>, transition: Option<Transition>, freed: bool) {
        let published = Word::new(cold.machine.state(), cold.machine.generation());
        if self.word().generation() != published.generation() {
            if published.state() == State::Closed {
                if let Some(window) = &self.window {
                    window.clear();
                }
            }
            if let Some(until) = cold.machine.open_until() {
                let nanos = until.saturating_duration_since(self.origin).as_nanos();
                let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
                self.open_until.store(nanos, Ordering::Release);
            }
            self.word.store(published.0, Ordering::Release);
        }
        let wakers = if transition.is_some() || freed {
            cold.waiters.take_all()
        } else {
            Vec::new()
        };
        drop(cold);
        for waker in wakers {
            waker.wake();
        }
        let Some(transition) = transition.filter(|t| t.from != t.to) else {
            return;
        };
        trace_info!(
            name = %self.config.name,
            from = %transition.from,
            to = %transition.to,
            reason = %transition.reason,
            "circuit breaker transition"
        );
        let listeners: Vec<Listener> = lock(&self.listeners).clone();
        for listener in listeners {
            // A listener that panics must not poison the breaker or abort a drop.
            if catch_unwind(AssertUnwindSafe(|| listener(&transition))).is_err() {
                trace_warn!(name = %self.config.name, "circuit breaker transition listener panicked");
            }
        }
    }

    pub(crate) fn add_listener(&self, listener: Listener) {
        lock(&self.listeners).push(listener);
    }

    /// Stops `key` from being woken (its service is dropped).
    pub(crate) fn remove_waiter(&self, key: usize) {
        lock(&self.cold).waiters.remove(key);
    }

    /// The state, after applying any transition that time alone has caused.
    pub(crate) fn state(&self) -> State {
        match self.word().state() {
            state @ (State::Closed | State::Disabled | State::ForcedOpen) => state,
            State::Open | State::HalfOpen => self.observe(|machine, _| machine.state()),
        }
    }

    /// Whether a call would be admitted now (takes no permit).
    pub(crate) fn is_admitting(&self) -> bool {
        match self.word().state() {
            State::Closed | State::Disabled => true,
            State::ForcedOpen => false,
            State::Open | State::HalfOpen => {
                self.observe(|machine, _| machine.has_free_permit(&self.config))
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.observe(|machine, now| Snapshot {
            state: machine.state(),
            consecutive_failures: self.word().failures(),
            consecutive_successes: machine.probe_successes(),
            retry_after: machine.retry_after(now),
            transitions: machine.history().cloned().collect(),
            window: self.window.as_ref().map(|w| w.totals(now)),
        })
    }

    /// Reads the state machine after applying the transitions time alone has caused (an open
    /// circuit whose duration ended is half-open by now), publishing any such transition.
    fn observe<R>(&self, read: impl FnOnce(&Machine, Instant) -> R) -> R {
        let now = crate::time::now();
        let mut cold = lock(&self.cold);
        let transition = cold.machine.advance(now, &self.config);
        let result = read(&cold.machine, now);
        self.finish(cold, transition, false);
        result
    }

    pub(crate) fn count(&self, which: usize) -> u64 {
        self.counters.get(which)
    }

    pub(crate) fn last_failure(&self) -> Option<Instant> {
        match self.last_failure.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n - 1)),
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word();
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("state", &word.state())
            .field("generation", &word.generation())
            .finish_non_exhaustive()
    }
}

/// The cold-path part of a stats snapshot.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) state: State,
    pub(crate) consecutive_failures: u32,
    pub(crate) consecutive_successes: u32,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) transitions: Vec<Transition>,
    pub(crate) window: Option<Totals>,
}
