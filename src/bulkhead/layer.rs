//! The [`BulkheadLayer`].

use std::fmt;

use tower_layer::Layer;

use super::config::Builder;
use super::handle::Handle;
use super::hold::ReleaseOnResponse;
use super::queue::Shared;
use super::service::Bulkhead;
use crate::sync::Arc;

/// Wraps services in a [`Bulkhead`]. Every service this layer makes shares one set of slots and
/// one wait queue (like tower's `GlobalConcurrencyLimitLayer`): one bulkhead per operation is
/// one layer per operation.
///
/// Build one with [`BulkheadLayer::builder`]; see the [module docs](super) for an example.
pub struct BulkheadLayer<H = ReleaseOnResponse> {
    shared: Arc<Shared>,
    hold: H,
}

impl BulkheadLayer<ReleaseOnResponse> {
    /// Starts a builder with the defaults: 10 concurrent calls, 100 waiters, 30 s wait.
    pub fn builder() -> Builder<ReleaseOnResponse> {
        Builder::default()
    }

    /// A layer with every default (see [`builder`](BulkheadLayer::builder)).
    pub fn new() -> Self {
        Builder::default()
            .build()
            .expect("the default configuration is valid")
    }
}

impl Default for BulkheadLayer<ReleaseOnResponse> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H> BulkheadLayer<H> {
    /// The bulkhead's shared state (for per-key bulkheads).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn from_parts(shared: Shared, hold: H) -> Self {
        BulkheadLayer {
            shared: Arc::new(shared),
            hold,
        }
    }

    /// A [`Handle`] on the bulkhead this layer's services share.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }
}

impl<H: Clone> Clone for BulkheadLayer<H> {
    fn clone(&self) -> Self {
        BulkheadLayer {
            shared: self.shared.clone(),
            hold: self.hold.clone(),
        }
    }
}

impl<S, H: Clone> Layer<S> for BulkheadLayer<H> {
    type Service = Bulkhead<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.shared.clone(), self.hold.clone())
    }
}

impl<H> fmt::Debug for BulkheadLayer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}
