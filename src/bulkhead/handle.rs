//! Observing and resizing a bulkhead from outside the call path.

use std::fmt;
use std::time::Duration;

use super::queue::Shared;
use crate::sync::Arc;

/// A handle on one bulkhead: read its statistics and resize it live. Cheap to clone;
/// `Send + Sync`. Get one from [`BulkheadLayer::handle`](super::BulkheadLayer::handle) or
/// [`Bulkhead::handle`](super::Bulkhead::handle).
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A consistent snapshot of the bulkhead's occupancy and lifetime counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Sets how many calls may run at once, live, without blocking.
    ///
    /// Growing hands the new slots to waiters at once (oldest first, waking them) and frees the
    /// rest. Shrinking never waits and never cancels anything: calls already running finish,
    /// and the slots they release are retired until the bulkhead is back under its new cap
    /// (meanwhile [`Stats::active`] may exceed [`Stats::max_concurrent`]). `0` is treated as 1,
    /// the smallest capacity the builder accepts.
    pub fn set_max_concurrent(&self, max_concurrent: usize) {
        let n = max_concurrent.max(1);
        trace_info!(bulkhead = %self.shared.name, max_concurrent = n, "bulkhead resized");
        self.shared.resize(n);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.shared).finish()
    }
}

/// A bulkhead's occupancy and counters, from [`Handle::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The bulkhead's name.
    pub name: String,
    /// Slots held now: by running calls, by ready clones that have not called yet, and by
    /// responses that keep their slot (see [`HoldPermit`](super::HoldPermit)).
    pub active: usize,
    /// Callers waiting in the queue for a slot.
    pub queued: usize,
    /// Free slots (`max_concurrent - active`, or 0 while a shrink is being paid off).
    pub available: usize,
    /// The capacity now.
    pub max_concurrent: usize,
    /// Calls rejected with [`BulkheadFull`](super::error::BulkheadFull) since the bulkhead was
    /// built.
    pub rejected: u64,
    /// Calls rejected with [`BulkheadTimeout`](super::error::BulkheadTimeout) since the
    /// bulkhead was built (not included in `rejected`).
    pub timed_out: u64,
    /// How many callers may wait.
    pub max_queue: usize,
    /// How long a caller may wait.
    pub max_wait: Duration,
}
