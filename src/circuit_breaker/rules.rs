//! When to trip: the rules that turn a finished call's outcome into a verdict.
//!
//! A closed circuit trips on the first rule that fires (the rules are OR-ed), checked in this
//! order for each recorded outcome:
//!
//! 1. a [`Throttled`](Outcome::Throttled) outcome with a hint opens it at once, for the hint
//!    clamped to `retry_after_bounds`, without counting a failure ([`throttled`](Rules::throttled);
//!    `Throttled` without a hint is [`counted`] as a failure);
//! 2. `consecutive_failures` failures in a row ([`streak_trip`](Rules::streak_trip); with
//!    adaptive thresholds, the threshold the request rate puts in force; 0 turns the rule off);
//! 3. over the window, once it holds `minimum_calls` calls ([`rate_trip`](Rules::rate_trip)):
//!    the failure rate reaching `failure_rate`, or the slow-call rate reaching the slow-call
//!    rule's rate, a slow call being one that took strictly longer than its threshold
//!    ([`is_slow`](Rules::is_slow)).
//!
//! Only a failure can trip the streak and failure-rate rules, and only a slow call the
//! slow-call rule: a success never trips. An ignored outcome counts nowhere. While half-open, a
//! probe's outcome becomes a [`ProbeResult`] ([`probe`](Rules::probe)) for the
//! [`Machine`](super::machine::Machine), which closes or reopens the circuit.
//!
//! The rules keep no state. The counts they judge live with the breaker's
//! [`Shared`](super::shared::Shared) state — the streak in its packed word, the window beside it
//! — which records each outcome, asks these rules in the order above, and trips the circuit
//! when one fires.

use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::Adaptive;
use super::classify::Outcome;
use super::config::Config;
use super::machine::ProbeResult;
use super::state::Reason;
use super::window::Totals;

/// The trip rules of one breaker: its configuration, and the adaptive thresholds if on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    pub(crate) config: &'a Config,
    pub(crate) adaptive: &'a Option<Adaptive>,
}

/// The outcome as the rules count it: `Throttled` without a hint is a failure.
#[inline]
pub(crate) fn counted(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Throttled { retry_after: None } => Outcome::Failure,
        other => other,
    }
}

impl Rules<'_> {
    /// Whether a call that started at `started` and ended at `now` was slow: it took strictly
    /// longer than the slow-call threshold. Never without the slow-call rule, or without both
    /// times.
    #[inline]
    pub(crate) fn is_slow(&self, started: Option<Instant>, now: Option<Instant>) -> bool {
        match (self.config.slow_calls, started, now) {
            (Some((threshold, _)), Some(started), Some(now)) => {
                now.saturating_duration_since(started) > threshold
            }
            _ => false,
        }
    }

    /// Why a closed circuit trips at once on a throttling hint: it opens for the hint, clamped
    /// to `retry_after_bounds`.
    pub(crate) fn throttled(&self, retry_after: Option<Duration>) -> Reason {
        Reason::Throttled(self.clamp_retry_after(retry_after.unwrap_or_default()))
    }

    /// The consecutive-failure rule, given the streak after this outcome (`failed` or not):
    /// only a failure trips, once the streak reaches the threshold in force (0 = off).
    #[inline]
    pub(crate) fn streak_trip(&self, failed: bool, streak: u32) -> Option<Reason> {
        let threshold = self.failure_threshold();
        (failed && threshold > 0 && streak >= threshold)
            .then_some(Reason::ConsecutiveFailures(streak))
    }

    /// The rate rules, given the window's totals after this outcome. Only a failure can trip
    /// the failure-rate rule, and only a slow call the slow-call rule: a success never trips.
    pub(crate) fn rate_trip(&self, totals: &Totals, failed: bool, slow: bool) -> Option<Reason> {
        if totals.calls < self.config.minimum_calls {
            return None;
        }
        if let (true, Some(threshold), Some(rate)) =
            (failed, self.config.failure_rate, totals.failure_rate())
        {
            if rate >= threshold {
                return Some(Reason::FailureRate(rate));
            }
        }
        if let (true, Some((_, threshold)), Some(rate)) =
            (slow, self.config.slow_calls, totals.slow_rate())
        {
            if rate >= threshold {
                return Some(Reason::SlowCallRate(rate));
            }
        }
        None
    }

    /// What a probe's [`counted`] outcome means for the half-open phase: a slow success is a
    /// failure, a throttling hint reopens for the hint (clamped), an ignored probe gives its
    /// permit back.
    #[inline]
    pub(crate) fn probe(&self, outcome: Outcome, slow: bool) -> ProbeResult {
        match outcome {
            Outcome::Success if slow => ProbeResult::Failure,
            Outcome::Success => ProbeResult::Success,
            Outcome::Ignored => ProbeResult::Ignored,
            Outcome::Throttled {
                retry_after: Some(d),
            } => ProbeResult::Throttled(self.clamp_retry_after(d)),
            Outcome::Failure | Outcome::Throttled { retry_after: None } => ProbeResult::Failure,
        }
    }

    /// The consecutive-failure threshold in force (adaptive, or configured).
    fn failure_threshold(&self) -> u32 {
        match self.adaptive {
            Some(adaptive) => adaptive.current().0,
            None => self.config.consecutive_failures,
        }
    }

    fn clamp_retry_after(&self, d: Duration) -> Duration {
        let (min, max) = self.config.retry_after_bounds;
        d.clamp(min, max)
    }
}
