//! The breaker's side of a fleet (feature `redis`): the only part of the breaker that the
//! `fleet` module uses.
//!
//! A fleet never decides on the call path. Its background task applies what other processes
//! decided through the breaker's own transitions, with [`Reason::Fleet`](super::Reason::Fleet),
//! and hands out the right to probe in a half-open phase.

use std::time::Duration;

use super::handle::Handle;
use super::State;

impl Handle {
    /// Applies another process's decision: `State::Open` opens for `open_for` (unless forced
    /// open or disabled here), `State::Closed` closes an open or half-open circuit; with
    /// `manual`, `State::ForcedOpen` and `State::Closed` override any local state.
    pub(crate) fn apply_remote(&self, to: State, open_for: Option<Duration>, manual: bool) {
        self.shared.apply_remote(to, open_for, manual);
    }

    /// From now on, each half-open phase holds its probes back for up to `wait`, until
    /// [`grant_probes`](Self::grant_probes) (after `wait`, it probes on its own).
    pub(crate) fn require_probe_lease(&self, wait: Duration) {
        self.shared.require_probe_lease(wait);
    }

    /// Calls `hook` for each failure counted while the circuit is closed (on the thread that
    /// records it; it must not block), so a fleet can count failures across processes. One hook
    /// per circuit: returns `false`, installing nothing, if one is installed already.
    pub(crate) fn on_closed_failure(&self, hook: impl Fn() + Send + Sync + 'static) -> bool {
        self.shared.set_failure_hook(Box::new(hook))
    }

    /// This process won the current half-open phase's probe lease (or the fleet cannot be
    /// reached): probes may go now.
    pub(crate) fn grant_probes(&self) {
        self.shared.grant_probes();
    }
}
