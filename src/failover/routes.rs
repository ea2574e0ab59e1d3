//! Reporting which member served a request.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub(super) const NO_ROUTE: usize = usize::MAX;

/// Which member of a [`Failover`](super::Failover) served each request: the last route and a count per member.
///
/// Cheap to clone, `Send + Sync`; shared by every clone of the `Failover` it came from, so it
/// keeps reporting after the `Failover` moves into a `Buffer` or `Balance`. Under concurrent
/// callers, [`last`](Routes::last) is the most recent dispatch of any of them.
#[derive(Clone)]
pub struct Routes {
    pub(super) inner: Arc<RoutesInner>,
}

pub(super) struct RoutesInner {
    pub(super) names: Vec<Arc<str>>,
    pub(super) last: AtomicUsize,
    pub(super) served: Vec<AtomicU64>,
}

impl Routes {
    pub(super) fn record(&self, index: usize) {
        self.inner.last.store(index, Ordering::Relaxed);
        self.inner.served[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The index of the member that served the latest call, if any.
    pub fn last(&self) -> Option<usize> {
        match self.inner.last.load(Ordering::Relaxed) {
            NO_ROUTE => None,
            index => Some(index),
        }
    }

    /// The name of the member that served the latest call, if any.
    pub fn last_name(&self) -> Option<String> {
        self.last().map(|i| self.inner.names[i].to_string())
    }

    /// The name of member `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.inner.names.get(index).map(|n| &**n)
    }

    /// How many calls each member has been sent, in priority order. A request re-sent by
    /// [`resend_failures`](super::Failover::resend_failures) counts once for each member it
    /// went to, so the sum less the number of requests is the number of re-sends.
    pub fn served(&self) -> Vec<u64> {
        self.inner
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("names", &self.inner.names)
            .field("last", &self.last())
            .field("served", &self.served())
            .finish()
    }
}
