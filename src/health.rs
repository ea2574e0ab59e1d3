//! A health report over named circuit breakers, for a `/health` endpoint or a dashboard.
//!
//! [`HealthCheck`], built from named [`Handle`]s (and from [`keyed`](crate::keyed) breakers,
//! whose keys come and go), reports each circuit's
//! state, health and failure rate, an overall `healthy` flag — healthy while fewer than half of
//! the circuits are open, the share configurable — and a summary such as
//! `"2/3 circuits healthy"`. With the `serde` feature, [`HealthReport`] is `serde::Serialize`;
//! the `health_endpoint` example serves it from axum with 200 or 503.
//!
//! # Example
//!
//! ```
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::health::HealthCheck;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let openai = CircuitBreakerLayer::builder().name("openai").consecutive_failures(1).build()?;
//! let azure = CircuitBreakerLayer::builder().name("azure").build()?;
//! let anthropic = CircuitBreakerLayer::builder().name("anthropic").build()?;
//! let health = HealthCheck::new()
//!     .with("openai", openai.handle())
//!     .with("azure", azure.handle())
//!     .with("anthropic", anthropic.handle());
//!
//! let mut svc = openai.layer(service_fn(|_: ()| async { Err::<(), _>("down") }));
//! let _ = svc.ready().await?.call(()).await;
//!
//! let report = health.report();
//! assert!(report.healthy); // 1 of 3 open: fewer than half
//! assert_eq!(report.summary, "2/3 circuits healthy");
//! assert_eq!(report.circuits[0].failure_rate, 1.0);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use crate::circuit_breaker::{Handle, State};
use crate::keyed::Breakers;

/// The default [`unhealthy_open_ratio`](HealthCheck::unhealthy_open_ratio): unhealthy once half
/// of the circuits are open.
pub const DEFAULT_UNHEALTHY_OPEN_RATIO: f64 = 0.5;

type Dynamic = Arc<dyn Fn() -> Vec<Handle> + Send + Sync>;

#[derive(Clone)]
enum Source {
    Named(String, Handle),
    Dynamic(Dynamic),
}

/// Aggregates the health of named circuits; see the [module docs](self).
///
/// A circuit is **open** when its state is [`State::Open`] or [`State::ForcedOpen`]; closed,
/// half-open and disabled circuits are healthy. The whole is
/// healthy iff `open < n × ratio` for `n` circuits (so with the default ratio 0.5, exactly half
/// open is unhealthy), and always healthy with no circuits at all.
#[derive(Clone)]
pub struct HealthCheck {
    sources: Vec<Source>,
    ratio: f64,
}

impl HealthCheck {
    /// An empty health check (healthy, `"0/0 circuits healthy"`).
    pub fn new() -> Self {
        HealthCheck {
            sources: Vec::new(),
            ratio: DEFAULT_UNHEALTHY_OPEN_RATIO,
        }
    }

    /// Adds a circuit under `name`.
    pub fn with(mut self, name: impl Into<String>, handle: Handle) -> Self {
        self.sources.push(Source::Named(name.into(), handle));
        self
    }

    /// Adds a circuit under its breaker's own name.
    pub fn with_handle(self, handle: Handle) -> Self {
        let name = handle.name().to_owned();
        self.with(name, handle)
    }

    /// Adds every key of a [`keyed`](crate::keyed) breaker set, under each circuit's name (the
    /// key, unless configured otherwise), as they are at each report: keys added later are
    /// included, evicted ones drop out.
    pub fn with_keyed<K: 'static>(mut self, breakers: &Breakers<K>) -> Self {
        let breakers = breakers.clone();
        self.sources.push(Source::Dynamic(Arc::new(move || {
            breakers.handles().into_iter().map(|(_, h)| h).collect()
        })));
        self
    }

    /// The share of open circuits at which the whole becomes unhealthy (default 0.5): healthy
    /// iff `open < n × ratio`. Clamped to `0.0..=1.0` (`0.0`: unhealthy whenever there is a
    /// circuit; `1.0`: unhealthy only when all are open); NaN means the default.
    pub fn unhealthy_open_ratio(mut self, ratio: f64) -> Self {
        self.ratio = if ratio.is_nan() {
            DEFAULT_UNHEALTHY_OPEN_RATIO
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// Whether the whole is healthy now (cheaper than a full [`report`](Self::report): reads
    /// states only).
    pub fn is_healthy(&self) -> bool {
        let mut n = 0;
        let mut open = 0;
        self.each(|_, handle| {
            n += 1;
            if is_open(handle.state()) {
                open += 1;
            }
        });
        healthy(n, open, self.ratio)
    }

    /// The report now: every circuit's state, health and failure rate, the overall flag and
    /// the summary.
    pub fn report(&self) -> HealthReport {
        let mut circuits = Vec::new();
        self.each(|name, handle| {
            let stats = handle.stats();
            circuits.push(CircuitHealth {
                name: name.to_owned(),
                state: stats.state,
                healthy: !is_open(stats.state),
                failure_rate: stats.failure_rate.unwrap_or(0.0),
            });
        });
        let n = circuits.len();
        let healthy_count = circuits.iter().filter(|c| c.healthy).count();
        HealthReport {
            healthy: healthy(n, n - healthy_count, self.ratio),
            open_circuits: n - healthy_count,
            summary: format!("{healthy_count}/{n} circuits healthy"),
            circuits,
        }
    }

    fn each(&self, mut f: impl FnMut(&str, &Handle)) {
        for source in &self.sources {
            match source {
                Source::Named(name, handle) => f(name, handle),
                Source::Dynamic(list) => {
                    for handle in list() {
                        f(handle.name(), &handle);
                    }
                }
            }
        }
    }
}

fn is_open(state: State) -> bool {
    matches!(state, State::Open | State::ForcedOpen)
}

fn healthy(n: usize, open: usize, ratio: f64) -> bool {
    n == 0 || (open as f64) < n as f64 * ratio
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::Named(name, _) => name.clone(),
                Source::Dynamic(_) => "<keyed>".to_owned(),
            })
            .collect();
        f.debug_struct("HealthCheck")
            .field("sources", &sources)
            .field("unhealthy_open_ratio", &self.ratio)
            .finish()
    }
}

/// The health of every circuit at one instant; see [`HealthCheck::report`].
///
/// Serialized (feature `serde`) as
/// `{"healthy": true, "open_circuits": 1, "summary": "2/3 circuits healthy", "circuits": [{"name": "openai", "state": "open", "healthy": false, "failure_rate": 1.0}, ...]}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthReport {
    /// Whether fewer than the configured share of circuits are open.
    pub healthy: bool,
    /// How many circuits are open (or forced open).
    pub open_circuits: usize,
    /// `"{healthy}/{total} circuits healthy"`.
    pub summary: String,
    /// Every circuit, in the order they were added.
    pub circuits: Vec<CircuitHealth>,
}

/// One circuit in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CircuitHealth {
    /// The name it was added under.
    pub name: String,
    /// Its state (serialized in snake case: `"half_open"`).
    pub state: State,
    /// Whether it is not open (closed, half-open and disabled circuits are healthy).
    pub healthy: bool,
    /// Its failure rate from [`Stats::failure_rate`](crate::circuit_breaker::Stats::failure_rate),
    /// 0.0 before any judged call.
    pub failure_rate: f64,
}

// Written out rather than derived so that docs.rs can label the impls with the feature they need
// (a derived impl cannot carry `doc(cfg)`); the output is what the derive wrote. Destructured
// without `..`, so a new field does not compile until it is written here.
#[cfg(feature = "serde")]
mod serialize {
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{CircuitHealth, HealthReport};

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for HealthReport {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let HealthReport {
                healthy,
                open_circuits,
                summary,
                circuits,
            } = self;
            let mut s = serializer.serialize_struct("HealthReport", 4)?;
            s.serialize_field("healthy", healthy)?;
            s.serialize_field("open_circuits", open_circuits)?;
            s.serialize_field("summary", summary)?;
            s.serialize_field("circuits", circuits)?;
            s.end()
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for CircuitHealth {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let CircuitHealth {
                name,
                state,
                healthy,
                failure_rate,
            } = self;
            let mut s = serializer.serialize_struct("CircuitHealth", 4)?;
            s.serialize_field("name", name)?;
            s.serialize_field("state", state)?;
            s.serialize_field("healthy", healthy)?;
            s.serialize_field("failure_rate", failure_rate)?;
            s.end()
        }
    }
}
