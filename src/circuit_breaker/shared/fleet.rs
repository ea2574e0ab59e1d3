//! What a fleet (feature `redis`) asks of the shared state: applying another process's
//! decision, holding half-open probes for the fleet's probe lease, and telling it of failures.
//! Kept apart from the call path's code: nothing here runs unless a circuit is shared.

use std::time::Duration;

use super::{FailureHook, Shared};
use crate::circuit_breaker::State;
use crate::sync::lock;

impl Shared {
    /// Applies a fleet's decision (see [`Machine::apply_remote`](super::Machine::apply_remote)).
    pub(crate) fn apply_remote(&self, to: State, open_for: Option<Duration>, manual: bool) {
        let now = crate::time::now();
        let mut cold = lock(&self.cold);
        let transition = cold
            .machine
            .apply_remote(to, open_for, manual, now, &self.config);
        self.finish(cold, transition, false);
    }

    /// Installs `hook`, called (on the recording thread, outside every lock) for each failure
    /// counted in a closed circuit. Returns `false` if a hook was already installed.
    pub(crate) fn set_failure_hook(&self, hook: FailureHook) -> bool {
        self.failure_hook.set(hook).is_ok()
    }

    /// See [`Machine::require_probe_lease`](super::Machine::require_probe_lease).
    pub(crate) fn require_probe_lease(&self, wait: Duration) {
        lock(&self.cold).machine.require_probe_lease(wait);
    }

    /// See [`Machine::grant_probes`](super::Machine::grant_probes); wakes the callers waiting for a probe permit.
    pub(crate) fn grant_probes(&self) {
        let mut cold = lock(&self.cold);
        let granted = cold.machine.grant_probes();
        self.finish(cold, None, granted);
    }
}
