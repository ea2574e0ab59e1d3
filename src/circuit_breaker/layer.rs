//! The [`CircuitBreakerLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::classify::DefaultClassifier;
use super::config::{Builder, Config};
use super::guard::Owner;
use super::handle::Handle;
use super::service::CircuitBreaker;
use super::shared::Shared;

/// Wraps services in a [`CircuitBreaker`]. Every service this layer makes shares one circuit
/// (like tower's `GlobalConcurrencyLimitLayer`); for a circuit per key, see the `keyed` module.
///
/// Build one with [`CircuitBreakerLayer::builder`]; see the [module docs](super) for an example.
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    owner: Arc<Owner>,
    classifier: C,
}

impl CircuitBreakerLayer<DefaultClassifier> {
    /// Starts a builder with every default (see [`Builder`]).
    pub fn builder() -> Builder<DefaultClassifier> {
        Builder::default()
    }

    /// A layer with every default (the [`Builder`]'s defaults, default mode, default
    /// classifier).
    pub fn new() -> Self {
        Builder::default()
            .build()
            .expect("the default configuration is valid")
    }
}

impl Default for CircuitBreakerLayer<DefaultClassifier> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(config: Config, classifier: C) -> Self {
        CircuitBreakerLayer {
            owner: Arc::new(Owner::new(Arc::new(Shared::new(config)))),
            classifier,
        }
    }

    /// A [`Handle`] on the circuit this layer's services share.
    pub fn handle(&self) -> Handle {
        Handle::new(self.owner.shared().clone())
    }

    /// The circuit's shared owner and the classifier, for `keyed` (which builds one layer per
    /// key).
    pub(crate) fn into_parts(self) -> (Arc<Owner>, C) {
        (self.owner, self.classifier)
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.owner.shared().config
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            owner: self.owner.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.owner.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("shared", self.owner.shared())
            .finish_non_exhaustive()
    }
}
