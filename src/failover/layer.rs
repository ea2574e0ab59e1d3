//! The [`FailoverLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::Failover;

/// Puts a service in front of fallbacks: `layer(primary)` makes a [`Failover`] over the
/// primary followed by clones of the fallbacks, all of one service type (box them, or use
/// `tower::util::Either`, when they differ).
///
/// ```
/// use tower::{service_fn, ServiceBuilder, util::BoxCloneSyncService};
/// use tower_breaker::failover::FailoverLayer;
///
/// type Svc = BoxCloneSyncService<u32, u32, tower_breaker::BoxError>;
/// let backup: Svc = BoxCloneSyncService::new(service_fn(|x: u32| async move { Ok(x + 1) }));
/// let primary: Svc = BoxCloneSyncService::new(service_fn(|x: u32| async move { Ok(x) }));
/// let svc = ServiceBuilder::new()
///     .layer(FailoverLayer::with_names("primary", [("backup", backup)]))
///     .service(primary);
/// assert_eq!(svc.routes().name(1), Some("backup"));
/// ```
#[derive(Clone)]
pub struct FailoverLayer<S> {
    primary_name: Arc<str>,
    fallbacks: Vec<(Arc<str>, S)>,
}

impl<S> FailoverLayer<S> {
    /// Fallbacks in priority order, named by their index in the resulting `Failover`.
    pub fn new(fallbacks: impl IntoIterator<Item = S>) -> Self {
        FailoverLayer {
            primary_name: Arc::from("0"),
            fallbacks: fallbacks
                .into_iter()
                .enumerate()
                .map(|(i, s)| (Arc::from((i + 1).to_string()), s))
                .collect(),
        }
    }

    /// Named fallbacks in priority order, and the name of the primary.
    pub fn with_names<N: Into<String>>(
        primary: impl Into<String>,
        fallbacks: impl IntoIterator<Item = (N, S)>,
    ) -> Self {
        FailoverLayer {
            primary_name: Arc::from(primary.into()),
            fallbacks: fallbacks
                .into_iter()
                .map(|(n, s)| (Arc::from(n.into()), s))
                .collect(),
        }
    }
}

impl<S: Clone> Layer<S> for FailoverLayer<S> {
    type Service = Failover<S>;

    fn layer(&self, primary: S) -> Failover<S> {
        let (names, services) = std::iter::once((self.primary_name.clone(), primary))
            .chain(self.fallbacks.iter().cloned())
            .unzip();
        Failover::from_parts(services, names)
    }
}

impl<S> fmt::Debug for FailoverLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = std::iter::once(&self.primary_name)
            .chain(self.fallbacks.iter().map(|(n, _)| n))
            .collect();
        f.debug_struct("FailoverLayer")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}
