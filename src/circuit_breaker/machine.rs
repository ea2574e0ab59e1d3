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
            State::HalfOpen => self.probes_admitted < cfg.half_open_permits,
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
mod tests {
    use super::*;
    use crate::circuit_breaker::CircuitBreakerLayer;

    fn cfg() -> Config {
        CircuitBreakerLayer::builder()
            .half_open_permits(2)
            .success_threshold(2)
            .probe_timeout(Duration::from_secs(5))
            .history_len(3)
            .build()
            .unwrap()
            .config()
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn full_cycle_with_generations() {
        let cfg = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new();
        assert!(
            m.trip(1, Reason::ConsecutiveFailures(5), t0, &cfg)
                .is_none(),
            "stale generation"
        );
        let t = m.trip(0, Reason::ConsecutiveFailures(5), t0, &cfg).unwrap();
        assert_eq!((t.from, t.to), (State::Closed, State::Open));
        assert_eq!(m.generation(), 1);
        // Inclusive deadline.
        assert!(m
            .advance(t0 + Duration::from_millis(59_999), &cfg)
            .is_none());
        let t = m.advance(t0 + Duration::from_secs(60), &cfg).unwrap();
        assert_eq!(t.to, State::HalfOpen);
        let now = t0 + Duration::from_secs(60);
        let a = m.admit(now, &cfg).unwrap();
        let b = m.admit(now, &cfg).unwrap();
        let refused = m.admit(now, &cfg).unwrap_err();
        assert_eq!(refused.wake_at, Some(now + Duration::from_secs(5)));
        let Ticket::Probe { generation, id } = a else {
            panic!()
        };
        assert!(
            m.release_probe(generation, id),
            "dropped probe frees its permit"
        );
        assert!(!m.release_probe(generation, id), "only once");
        let a = m.admit(now, &cfg).unwrap();
        for ticket in [a, b] {
            let Ticket::Probe { generation, id } = ticket else {
                panic!()
            };
            let (t, _) = m.probe_finished(generation, id, ProbeResult::Success, now, &cfg);
            if let Some(t) = t {
                assert_eq!(t.reason, Reason::ProbesSucceeded(2));
            }
        }
        assert_eq!(m.state(), State::Closed);
        assert_eq!(m.history().count(), 3, "bounded history keeps the newest");
        assert_eq!(m.history().last().unwrap().to, State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_timeout_reopens_and_late_result_is_ignored() {
        let cfg = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.trip(0, Reason::ProbeFailed, t0, &cfg);
        let now = t0 + Duration::from_secs(60);
        m.advance(now, &cfg);
        let Ticket::Probe { generation, id } = m.admit(now, &cfg).unwrap() else {
            panic!()
        };
        assert!(m
            .advance(now + Duration::from_millis(4_999), &cfg)
            .is_none());
        let t = m.advance(now + Duration::from_secs(5), &cfg).unwrap();
        assert_eq!((t.to, t.reason), (State::Open, Reason::ProbeTimedOut));
        let (t, freed) = m.probe_finished(generation, id, ProbeResult::Success, now, &cfg);
        assert!(t.is_none() && !freed);
        assert_eq!(m.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_responded_is_no_longer_timed() {
        let cfg = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.trip(0, Reason::ProbeFailed, t0, &cfg);
        let now = t0 + Duration::from_secs(60);
        m.advance(now, &cfg);
        let Ticket::Probe { generation, id } = m.admit(now, &cfg).unwrap() else {
            panic!()
        };
        let second = now + Duration::from_secs(1);
        m.admit(second, &cfg).unwrap();
        m.probe_responded(generation + 1, id); // another generation's: no effect
        assert_eq!(
            m.admit(now, &cfg).unwrap_err().wake_at,
            Some(now + Duration::from_secs(5))
        );
        m.probe_responded(generation, id);
        // Only the other probe's deadline is left to wake for.
        assert_eq!(
            m.admit(now, &cfg).unwrap_err().wake_at,
            Some(second + Duration::from_secs(5))
        );
        // The first probe's deadline has passed, and it does not reopen the circuit.
        assert!(m.advance(now + Duration::from_secs(5), &cfg).is_none());
        assert_eq!(m.state(), State::HalfOpen);
        // The other probe never responded: its timeout still reopens.
        let t = m.advance(second + Duration::from_secs(5), &cfg).unwrap();
        assert_eq!(t.reason, Reason::ProbeTimedOut);
    }

    fn probe(ticket: Ticket) -> (u32, u32) {
        match ticket {
            Ticket::Probe { generation, id } => (generation, id),
            other => panic!("not a probe: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outstanding_probes_have_distinct_ids() {
        let cfg = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.trip(0, Reason::ProbeFailed, t0, &cfg);
        let now = t0 + Duration::from_secs(60);
        m.advance(now, &cfg);
        let (generation, a) = probe(m.admit(now, &cfg).unwrap());
        let (_, b) = probe(m.admit(now, &cfg).unwrap());
        assert_ne!(a, b);
        assert!(m.release_probe(generation, a));
        let (_, c) = probe(m.admit(now, &cfg).unwrap());
        assert_ne!(c, b, "a re-issued id is not one still outstanding");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_times_out_from_when_its_call_started() {
        let cfg = cfg(); // probe_timeout 5 s
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.trip(0, Reason::ProbeFailed, t0, &cfg);
        let admitted = t0 + Duration::from_secs(60);
        m.advance(admitted, &cfg);
        let (generation, id) = probe(m.admit(admitted, &cfg).unwrap());
        // Admitted in poll_ready, called 3 s later: the timeout counts from the call.
        let called = admitted + Duration::from_secs(3);
        m.probe_started(generation, id, called);
        assert!(m.advance(admitted + Duration::from_secs(5), &cfg).is_none());
        assert!(m
            .advance(called + Duration::from_millis(4_999), &cfg)
            .is_none());
        let t = m.advance(called + Duration::from_secs(5), &cfg).unwrap();
        assert_eq!(t.reason, Reason::ProbeTimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_probe_frees_nothing_in_a_later_half_open_phase() {
        let cfg = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.trip(0, Reason::ProbeFailed, t0, &cfg);
        let first = t0 + Duration::from_secs(60);
        m.advance(first, &cfg);
        let (stale, _) = probe(m.admit(first, &cfg).unwrap());
        // That probe times out; the next half-open phase admits a probe of its own.
        m.advance(first + Duration::from_secs(5), &cfg).unwrap();
        let second = m.open_until().unwrap();
        m.advance(second, &cfg).unwrap();
        let (current, id) = probe(m.admit(second, &cfg).unwrap());
        assert_ne!(stale, current);
        assert!(
            !m.release_probe(stale, id),
            "an old generation frees nothing"
        );
        assert!(m.release_probe(current, id));
    }

    #[tokio::test(start_paused = true)]
    async fn an_adaptive_base_does_not_switch_on_back_off_the_configuration_left_off() {
        // `max_open_duration` equal to `open_duration`: back-off is off, whatever base the
        // adaptive table sets, so a re-trip opens for the base again.
        let cfg = CircuitBreakerLayer::builder()
            .open_duration(Duration::from_secs(60))
            .max_open_duration(Duration::from_secs(60))
            .build()
            .unwrap()
            .config()
            .clone();
        let t0 = Instant::now();
        let mut m = Machine::new();
        m.set_base_open(Duration::from_secs(10));
        m.trip(0, Reason::ConsecutiveFailures(5), t0, &cfg).unwrap();
        let mut now = t0;
        for _ in 0..3 {
            assert_eq!(m.retry_after(now), Some(Duration::from_secs(10)));
            now = m.open_until().unwrap();
            m.advance(now, &cfg).unwrap();
            let (generation, id) = probe(m.admit(now, &cfg).unwrap());
            m.probe_finished(generation, id, ProbeResult::Failure, now, &cfg);
        }
        assert_eq!(m.retry_after(now), Some(Duration::from_secs(10)));
    }
}
