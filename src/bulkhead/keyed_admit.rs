//! A bulkhead taken at `call`, without a queue, for [`keyed`](crate::keyed) breakers: the
//! bulkhead's side of the keyed registry, and the only part of the bulkhead that it uses.
//!
//! A keyed service learns which key's bulkhead to take only from the request, after
//! `poll_ready`, so it cannot wait for a slot: a call over the key's limit fails at once with
//! [`BulkheadFull`] (counted as a rejection), and the builder's `max_queue` and `max_wait` are
//! unused.

use super::config::Builder;
use super::error::BulkheadFull;
use super::handle::Handle;
use super::hold::Permit;
use super::queue::{Shared, REJECTED};
use crate::sync::Arc;
use crate::ConfigError;

/// One key's bulkhead.
pub(crate) struct KeyBulkhead {
    shared: Arc<Shared>,
}

impl KeyBulkhead {
    /// Builds the bulkhead from `builder`, named `name`.
    pub(crate) fn build(builder: Builder, name: String) -> Result<KeyBulkhead, ConfigError> {
        let layer = builder.name(name).build()?;
        Ok(KeyBulkhead {
            shared: layer.shared().clone(),
        })
    }

    /// A [`Handle`] on the bulkhead.
    pub(crate) fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Takes a slot now (released when the [`Permit`] is dropped), or counts a rejection.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Result<Permit, BulkheadFull> {
        if self.shared.try_acquire() {
            return Ok(Permit::new(self.shared.clone()));
        }
        self.shared.count(REJECTED);
        trace_debug!(bulkhead = %self.shared.name, "keyed bulkhead full, call rejected");
        Err(BulkheadFull::new(self.shared.name.clone()))
    }
}
