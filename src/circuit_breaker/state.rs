//! The circuit's public state types: [`State`], the [`Reason`] for a change, and the
//! [`Transition`] that listeners receive and the history keeps.
//!
//! The rules that move a circuit between states are in [`machine`](super::machine) (admission,
//! probes, transitions) and [`rules`](super::rules) (when a closed circuit trips).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The state of a circuit.
///
/// With feature `serde` it serializes as its name in snake case (`"half_open"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Normal operation: calls pass and outcomes are counted.
    Closed,
    /// Tripped: calls are held back (default mode) or rejected (fail-fast) until the open
    /// duration ends.
    Open,
    /// Testing recovery: a limited number of probe calls pass.
    HalfOpen,
    /// Opened by hand with [`Handle::force_open`](super::Handle::force_open); never half-opens.
    ForcedOpen,
    /// Switched off with [`Handle::disable`](super::Handle::disable): admits every call and
    /// records nothing.
    Disabled,
}

impl State {
    #[cfg(test)]
    pub(crate) const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ];

    /// The state's name in snake case (`"half_open"`), as `serde` serializes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// `true` for [`Open`](State::Open) and [`ForcedOpen`](State::ForcedOpen): the circuit is
    /// refusing calls until time passes or someone intervenes.
    pub fn is_open(&self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// This many failures in a row.
    ConsecutiveFailures(u32),
    /// The failure rate over the window reached the threshold.
    FailureRate(f64),
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate(f64),
    /// The dependency asked to back off for this long (already clamped).
    Throttled(Duration),
    /// The open duration ended; probes may go.
    OpenElapsed,
    /// This many probes succeeded.
    ProbesSucceeded(u32),
    /// A probe failed (or was slow, with the slow-call rule on).
    ProbeFailed,
    /// A probe was outstanding longer than `probe_timeout`.
    ProbeTimedOut,
    /// [`Handle::force_open`](super::Handle::force_open).
    ForcedOpen,
    /// [`Handle::force_closed`](super::Handle::force_closed).
    ForcedClosed,
    /// [`Handle::disable`](super::Handle::disable).
    Disabled,
    /// [`Handle::reset`](super::Handle::reset).
    Reset,
    /// Another process of the fleet tripped, closed or forced the circuit of the same name
    /// (feature `redis`, `fleet` module).
    Fleet,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Reason::FailureRate(r) => write!(f, "failure rate {:.0} %", r * 100.0),
            Reason::SlowCallRate(r) => write!(f, "slow-call rate {:.0} %", r * 100.0),
            Reason::Throttled(d) => write!(f, "throttled for {:.3}s", d.as_secs_f64()),
            Reason::OpenElapsed => f.write_str("open duration elapsed"),
            Reason::ProbesSucceeded(n) => write!(f, "{n} probes succeeded"),
            Reason::ProbeFailed => f.write_str("probe failed"),
            Reason::ProbeTimedOut => f.write_str("probe timed out"),
            Reason::ForcedOpen => f.write_str("forced open"),
            Reason::ForcedClosed => f.write_str("forced closed"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::Fleet => f.write_str("shared by the fleet"),
            Reason::Reset => f.write_str("reset"),
        }
    }
}

/// One state change, as passed to [`Handle::on_transition`](super::Handle::on_transition)
/// listeners and kept in [`Stats::transitions`](super::Stats::transitions).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on tokio's clock.
    pub at: Instant,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.reason)
    }
}
