//! The circuit's state machine: admission, half-open probes, transitions and their history.
//!
//! [`Machine`] is plain data driven by explicit `now` values, with no atomics, locks or wakers,
//! so each rule can be read (and unit-tested) on its own. It decides *what* a change does; when
//! a closed circuit trips is decided by [`rules`](super::rules). [`Shared`](super::shared::Shared)
//! owns one machine behind a mutex, publishes its state and generation in an atomic word for the
//! hot path, and does the waking and listener calls after each change.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::{open_duration, Jitter};
use super::config::Config;
use super::state::{Reason, State, Transition};
use super::ticket::{next_free_probe_id, Ticket};

/// Why the machine did not hand out a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// When waiting could end without anyone intervening: the open deadline, or the earliest
    /// probe deadline while half-open. `None` when forced open.
    pub(crate) wake_at: Option<Instant>,
}

/// What a probe's result means for the half-open phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeResult {
    Success,
    Failure,
    Ignored,
    Throttled(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    id: u32,
    /// When its `probe_timeout` started counting; `None` once its response head arrived (the
    /// body, however long, decides after that).
    timed_since: Option<Instant>,
}

impl Probe {
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.timed_since.map(|since| since + timeout)
    }
}

/// The cold-path state of one circuit.
#[derive(Debug)]
pub(crate) struct Machine {
    state: State,
    generation: u32,
    open_until: Option<Instant>,
    /// Consecutive failed half-open phases, for back-off; reset on close.
    retrips: u32,
    probes_admitted: u32,
    probe_successes: u32,
    /// Outstanding probes (at most `half_open_permits`).
    probes: Vec<Probe>,
    next_probe_id: u32,
    history: VecDeque<Transition>,
    jitter: Jitter,
    /// The open duration of a first trip: `open_duration`, or the adaptive row's.
    base_open: Option<Duration>,
    /// For a circuit shared by a fleet: how long a half-open phase holds its probes back while
    /// the fleet decides which process probes (`None`: probes go at once).
    lease_wait: Option<Duration>,
    /// While half-open and waiting for that decision: when the wait ends anyway, so a fleet
    /// that never answers cannot keep the circuit from probing.
    lease_pending_until: Option<Instant>,
}

impl Machine {
    pub(crate) fn new() -> Self {
        Machine {
            state: State::Closed,
            generation: 0,
            open_until: None,
            retrips: 0,
            probes_admitted: 0,
            probe_successes: 0,
            probes: Vec::new(),
            next_probe_id: 0,
            history: VecDeque::new(),
            jitter: Jitter::new(),
            base_open: None,
            lease_wait: None,
            lease_pending_until: None,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Replaces the configured open duration (adaptive thresholds); applies from the next trip.
    pub(crate) fn set_base_open(&mut self, d: Duration) {
        self.base_open = Some(d);
    }

    /// The current generation: every transition starts a new one.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    pub(crate) fn probe_successes(&self) -> u32 {
        self.probe_successes
    }

    pub(crate) fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }

    /// When the open circuit admits probes (`None` unless `Open`).
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open => self.open_until,
            _ => None,
        }
    }

    /// Whether [`admit`](Self::admit) would hand out a ticket now.
    pub(crate) fn has_free_permit(&self, cfg: &Config) -> bool {
        match self.state {
            State::Closed | State::Disabled => true,
            State::HalfOpen => {
                self.lease_pending_until.is_none() && self.probes_admitted < cfg.half_open_permits
            }
            State::Open | State::ForcedOpen => false,
        }
    }

    /// Time left until the open circuit admits probes.
    pub(crate) fn retry_after(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open => self.open_until.map(|t| t.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// Applies the transitions that time alone causes: the end of the open duration, and a
    /// probe outstanding past `probe_timeout`.
    pub(crate) fn advance(&mut self, now: Instant, cfg: &Config) -> Option<Transition> {
        match self.state {
            State::Open if self.open_until.is_some_and(|t| now >= t) => {
                Some(self.go(State::HalfOpen, Reason::OpenElapsed, now, cfg, None))
            }
            State::HalfOpen if self.lease_pending_until.is_some_and(|t| now >= t) => {
                // The fleet did not decide in time: probe locally, as an unshared circuit would.
                self.lease_pending_until = None;
                None
            }
            State::HalfOpen => {
                let timeout = cfg.probe_timeout?;
                let timed_out = self
                    .probes
                    .iter()
                    .any(|p| p.deadline(timeout).is_some_and(|d| now >= d));
                timed_out.then(|| self.go(State::Open, Reason::ProbeTimedOut, now, cfg, None))
            }
            _ => None,
        }
    }

    /// Admission for every state but the closed fast path. Call [`advance`](Self::advance)
    /// first.
    pub(crate) fn admit(&mut self, now: Instant, cfg: &Config) -> Result<Ticket, Refusal> {
        let generation = self.generation;
        match self.state {
            State::Closed => Ok(Ticket::Closed { generation }),
            State::Disabled => Ok(Ticket::Unrecorded),
            State::HalfOpen if self.lease_pending_until.is_some() => Err(Refusal {
                wake_at: self.lease_pending_until,
            }),
            State::HalfOpen if self.probes_admitted < cfg.half_open_permits => {
                self.probes_admitted += 1;
                let id = self.take_probe_id();
                self.probes.push(Probe {
                    id,
                    timed_since: Some(now),
                });
                Ok(Ticket::Probe { generation, id })
            }
            State::HalfOpen => Err(Refusal {
                wake_at: cfg.probe_timeout.and_then(|timeout| {
                    self.probes.iter().filter_map(|p| p.deadline(timeout)).min()
                }),
            }),
            State::Open => Err(Refusal {
                wake_at: self.open_until,
            }),
            State::ForcedOpen => Err(Refusal { wake_at: None }),
        }
    }

    fn take_probe_id(&mut self) -> u32 {
        let probes = &self.probes;
        next_free_probe_id(&mut self.next_probe_id, |id| {
            probes.iter().any(|p| p.id == id)
        })
    }

    /// The probe's call has started: its `probe_timeout` counts from now.
    pub(crate) fn probe_started(&mut self, generation: u32, id: u32, now: Instant) {
        if generation == self.generation {
            if let Some(p) = self.probes.iter_mut().find(|p| p.id == id) {
                p.timed_since = Some(now);
            }
        }
    }

    /// The probe's response head arrived: `probe_timeout` no longer applies to it.
    pub(crate) fn probe_responded(&mut self, generation: u32, id: u32) {
        if generation == self.generation {
            if let Some(p) = self.probes.iter_mut().find(|p| p.id == id) {
                p.timed_since = None;
            }
        }
    }

    /// A probe ended without a verdict (dropped, or ignored): its permit returns to the phase.
    /// Returns whether a permit was freed.
    pub(crate) fn release_probe(&mut self, generation: u32, id: u32) -> bool {
        if generation != self.generation || self.state != State::HalfOpen {
            return false;
        }
        let before = self.probes.len();
        self.probes.retain(|p| p.id != id);
        if self.probes.len() == before {
            return false;
        }
        self.probes_admitted -= 1;
        true
    }

    /// A probe finished with a verdict. A stale probe (from an earlier generation) changes
    /// nothing. Returns the transition, if any, and whether a permit was freed.
    pub(crate) fn probe_finished(
        &mut self,
        generation: u32,
        id: u32,
        result: ProbeResult,
        now: Instant,
        cfg: &Config,
    ) -> (Option<Transition>, bool) {
        if generation != self.generation || self.state != State::HalfOpen {
            return (None, false);
        }
        if !self.probes.iter().any(|p| p.id == id) {
            return (None, false);
        }
        match result {
            ProbeResult::Ignored => (None, self.release_probe(generation, id)),
            ProbeResult::Success => {
                self.probes.retain(|p| p.id != id);
                self.probe_successes += 1;
                if self.probe_successes >= cfg.success_threshold {
                    let reason = Reason::ProbesSucceeded(self.probe_successes);
                    (Some(self.go(State::Closed, reason, now, cfg, None)), false)
                } else {
                    (None, false)
                }
            }
            ProbeResult::Failure => (
                Some(self.go(State::Open, Reason::ProbeFailed, now, cfg, None)),
                false,
            ),
            ProbeResult::Throttled(d) => (
                Some(self.go(State::Open, Reason::Throttled(d), now, cfg, Some(d))),
                false,
            ),
        }
    }

    /// A closed-state rule fired for a call of `generation`. Only trips if that generation is
    /// still the current closed one (a late result from before a trip changes nothing).
    pub(crate) fn trip(
        &mut self,
        generation: u32,
        reason: Reason,
        now: Instant,
        cfg: &Config,
    ) -> Option<Transition> {
        if generation != self.generation || self.state != State::Closed {
            return None;
        }
        let explicit = match reason {
            Reason::Throttled(d) => Some(d),
            _ => None,
        };
        Some(self.go(State::Open, reason, now, cfg, explicit))
    }

    /// A manual operation: always starts a new generation (so calls admitted before it do not
    /// count after it), and records a transition if the state changes.
    pub(crate) fn force(
        &mut self,
        to: State,
        reason: Reason,
        now: Instant,
        cfg: &Config,
    ) -> Transition {
        if to == State::Closed {
            self.retrips = 0;
        }
        self.go(to, reason, now, cfg, None)
    }

    /// Makes half-open phases wait up to `wait` for [`grant_probes`](Self::grant_probes) before
    /// admitting probes (a fleet lets one process probe per phase).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    pub(crate) fn require_probe_lease(&mut self, wait: Duration) {
        self.lease_wait = Some(wait);
    }

    /// This process may probe in the current half-open phase. Returns whether that changed
    /// anything (so waiters are woken).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    pub(crate) fn grant_probes(&mut self) -> bool {
        self.state == State::HalfOpen && self.lease_pending_until.take().is_some()
    }

    /// Applies what another process of the fleet decided. `Open` opens for `open_for` (the
    /// remaining time of the other process's open phase) unless the circuit is forced open or
    /// disabled here; `Closed` closes an open or half-open circuit. `manual` also lets the
    /// fleet force the circuit open or closed over any local state.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the fleet
    pub(crate) fn apply_remote(
        &mut self,
        to: State,
        open_for: Option<Duration>,
        manual: bool,
        now: Instant,
        cfg: &Config,
    ) -> Option<Transition> {
        let local = self.state;
        let applies = match (to, manual) {
            (State::ForcedOpen, true) => local != State::ForcedOpen,
            (State::Closed, true) => local != State::Closed,
            (State::Open, false) => matches!(local, State::Closed | State::HalfOpen | State::Open),
            (State::Closed, false) => matches!(local, State::Open | State::HalfOpen),
            _ => false,
        };
        if !applies {
            return None;
        }
        if to == State::Closed {
            self.retrips = 0;
        }
        Some(self.go(to, Reason::Fleet, now, cfg, open_for))
    }

    fn go(
        &mut self,
        to: State,
        reason: Reason,
        now: Instant,
        cfg: &Config,
        open_for: Option<Duration>,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.probes.clear();
        self.probes_admitted = 0;
        self.probe_successes = 0;
        self.open_until = None;
        self.lease_pending_until = match to {
            State::HalfOpen => self.lease_wait.map(|wait| now + wait),
            _ => None,
        };
        match to {
            State::Open => {
                let reopened = from == State::HalfOpen;
                if reopened && open_for.is_none() {
                    self.retrips = self.retrips.saturating_add(1);
                }
                let d = open_for.unwrap_or_else(|| {
                    let base = self.base_open.unwrap_or(cfg.open_duration);
                    // Back-off is on when configured; an adaptive base never disables it nor
                    // lets the cap fall below the base.
                    let cap = if cfg.max_open_duration > cfg.open_duration {
                        cfg.max_open_duration.max(base)
                    } else {
                        base
                    };
                    open_duration(base, cap, self.retrips, self.jitter.next())
                });
                self.open_until = Some(now + d);
            }
            State::Closed => self.retrips = 0,
            _ => {}
        }
        let transition = Transition {
            from,
            to,
            reason,
            at: now,
        };
        if from != to {
            if self.history.len() == cfg.history_len {
                self.history.pop_front();
            }
            self.history.push_back(transition.clone());
        }
        transition
    }
}

#[cfg(test)]
mod tests;
