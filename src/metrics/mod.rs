//! Breaker and bulkhead series for the [`metrics`](https://docs.rs/metrics) facade, so any
//! `metrics` exporter (Prometheus, OpenTelemetry, StatsD, ...) shows each circuit's state,
//! its calls by outcome, its transitions, and each bulkhead's occupancy and rejections.
//!
//! Register breakers, bulkheads and [`keyed`](crate::keyed) breaker sets with a [`Metrics`],
//! then call [`report`](Metrics::report) before each scrape (or run
//! [`spawn`](Metrics::spawn) for a periodic push). Nothing changes on the call path: the
//! totals already kept by each [`Handle`] are pushed at each report, and the state gauge and
//! transition counter are updated by a transition listener (transitions are rare).
//!
//! # Series
//!
//! | Metric | Kind | Labels | Value |
//! |---|---|---|---|
//! | `tower_breaker_circuit_state` | gauge | `name`, `state` | 1 for the circuit's current state, 0 for the four others; one series per state: `closed`, `open`, `half_open`, `forced_open`, `disabled` |
//! | `tower_breaker_calls_total` | counter | `name`, `outcome` | calls by outcome, from [`Stats`](crate::circuit_breaker::Stats): `success` (`successful_calls`), `failure` (`failed_calls`), `ignored` (`ignored_calls`), `throttled` (`throttled_calls`), `slow` (`slow_calls`), `rejected` (`rejected_calls`, refused with `CircuitOpen`) |
//! | `tower_breaker_transitions_total` | counter | `name`, `from`, `to` | state changes since the breaker was built (`from`/`to` are state names as above) |
//! | `tower_breaker_bulkhead_active` | gauge | `name` | slots held now ([`bulkhead::Stats::active`](crate::bulkhead::Stats::active)) |
//! | `tower_breaker_bulkhead_queued` | gauge | `name` | callers waiting for a slot (`queued`) |
//! | `tower_breaker_bulkhead_rejected_total` | counter | `name` | calls refused with `BulkheadFull` (`rejected`) |
//! | `tower_breaker_bulkhead_timed_out_total` | counter | `name` | calls refused with `BulkheadTimeout` after `max_wait` (`timed_out`) |
//!
//! - `name` is the breaker's or bulkhead's own name; for keyed breakers it is the name given to
//!   [`Metrics::keyed`], and every series also carries `key` (the key's `Display`), the
//!   bulkhead series too when the keys have bulkheads.
//! - `slow` calls are also counted as `success` or `failure`: leave `slow` out of a sum over
//!   outcomes. The others are disjoint.
//! - Counters and bulkhead gauges change at each report; the state gauge and the transition
//!   counter change at each transition (and the state gauge again at each report).
//! - The four transitions a breaker makes on its own (`closed`→`open`, `open`→`half_open`,
//!   `half_open`→`closed`, `half_open`→`open`) have series from registration, at 0; a
//!   transition only a manual operation makes (`force_open`, `force_closed`, `disable`,
//!   `reset`) gets its series when it first happens. Transitions before registration are
//!   taken from the breaker's history (its last `history_len`, 32 by default).
//! - [`Handle::reset`] zeroes a breaker's counts; the series go on rising from where they
//!   were (calls made between the last report and the reset may be missed).
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::metrics::Metrics;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! // The recorder first (an exporter's in a real service; this one is for tests).
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::set_global_recorder(recorder).expect("no recorder yet");
//!
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("payments")
//!     .consecutive_failures(1)
//!     .fail_fast()
//!     .build()?;
//! let metrics = Metrics::new().breaker(breaker.handle());
//! // A service reports before each scrape, or pushes periodically:
//! // `metrics.clone().spawn(Duration::from_secs(15));`
//!
//! let mut svc = breaker.layer(service_fn(|_: ()| async { Err::<(), _>("down") }));
//! let _ = svc.ready().await?.call(()).await; // a failure: the circuit opens
//! let _ = svc.ready().await?.call(()).await; // rejected
//! metrics.report();
//!
//! // `name{label=value,...}` -> value, to show what an exporter would.
//! let series: HashMap<String, DebugValue> = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .map(|(key, _, _, value)| {
//!         let key = key.key();
//!         let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
//!         (format!("{}{{{}}}", key.name(), labels.join(",")), value)
//!     })
//!     .collect();
//! let gauge = |v: f64| DebugValue::Gauge(v.into());
//! assert_eq!(series["tower_breaker_circuit_state{name=payments,state=open}"], gauge(1.0));
//! assert_eq!(series["tower_breaker_circuit_state{name=payments,state=closed}"], gauge(0.0));
//! assert_eq!(series["tower_breaker_calls_total{name=payments,outcome=failure}"], DebugValue::Counter(1));
//! assert_eq!(series["tower_breaker_calls_total{name=payments,outcome=rejected}"], DebugValue::Counter(1));
//! assert_eq!(
//!     series["tower_breaker_transitions_total{name=payments,from=closed,to=open}"],
//!     DebugValue::Counter(1)
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Recorder first
//!
//! Install the recorder (e.g. `metrics::set_global_recorder`) **before** registering:
//! metric handles are built once, at registration (for keyed breakers, at the first report
//! that sees each key), and stay bound to the recorder current then. Registering earlier
//! binds them to the no-op recorder, and nothing is ever exported.
//!
//! Register each breaker and bulkhead once: clones of a [`Metrics`] share its series and
//! the totals last pushed, so report from any clone; two `Metrics` holding one breaker would
//! count everything twice.
//!
//! # Keyed breakers
//!
//! [`Metrics::keyed`] reports every key the registry holds at each report — at most
//! [`max_keys`](crate::keyed::Builder::max_keys), plus the keys added with
//! [`Breakers::register`] — building a key's handles and `key` label once, when a report
//! first sees it. A key that has left the registry (evicted, idle, removed) is no longer
//! reported, and its handles are dropped at that report. The exporter still holds its series,
//! at their last values; to drop them, give the exporter an idle timeout longer than the
//! report interval, e.g. with `metrics-exporter-prometheus`:
//!
//! ```
//! use std::time::Duration;
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use metrics_util::MetricKindMask;
//!
//! let recorder = PrometheusBuilder::new()
//!     // Scraped (and reported) every 15 s: a series untouched for 5 min is gone.
//!     .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(300)))
//!     .build_recorder();
//! # drop(recorder);
//! ```
//!
//! Every report touches every series of each breaker it reports (counters are incremented by
//! 0 if need be), so only the series of keys nobody reports any more go idle. Keep the timeout
//! longer than the report interval: an exporter that drops a series still being reported
//! loses its updates (the handle stays bound to the dropped series).
//!
//! # Cost
//!
//! None per call. A report reads each breaker's [`stats`](Handle::stats) (one lock, and a
//! copy of its transition history) and each bulkhead's, and updates about fifteen metric
//! handles per breaker; a keyed set also lists its keys. A transition costs the listener one
//! counter increment and five gauge updates.
//!
//! The `prometheus` example serves these series on `/metrics` from axum.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::bulkhead;
use crate::circuit_breaker::Handle;
use crate::keyed::Breakers;

mod keyed;
mod series;

use keyed::KeyedSource;
use series::{describe_breaker, describe_bulkhead, BreakerSeries, BulkheadSeries, Labels};

/// The shortest interval [`Metrics::run`] waits between reports: a zero interval would report
/// in a loop that never yields to the runtime.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Something a report pushes the totals of.
trait Source: fmt::Debug + Send + Sync {
    fn report(&self);
}

/// The breakers, bulkheads and keyed breaker sets whose series a report pushes; see the
/// [module docs](self) for the series.
///
/// Registration builds the metric handles, with the recorder current then. Clones share the
/// series (and the totals last pushed), so any clone may report: one from a periodic task,
/// another from a scrape handler, without counting anything twice.
#[derive(Clone, Default)]
pub struct Metrics {
    sources: Vec<Arc<dyn Source>>,
}

impl Metrics {
    /// Nothing registered yet.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Registers a breaker, labelled with its name: builds its series, pushes its totals, and
    /// adds the listener that keeps its state gauge and transition counter current.
    pub fn breaker(mut self, handle: Handle) -> Self {
        describe_breaker();
        let labels = Labels::new(handle.name().into(), None);
        let series = BreakerSeries::register(&handle, labels, &handle.stats());
        self.sources
            .push(Arc::new(BreakerSource { handle, series }));
        self
    }

    /// Registers a bulkhead, labelled with its name: builds its series and pushes its figures.
    pub fn bulkhead(mut self, handle: bulkhead::Handle) -> Self {
        describe_bulkhead();
        let labels = Labels::new(handle.name().into(), None);
        let series = BulkheadSeries::register(&labels, &handle.stats());
        self.sources
            .push(Arc::new(BulkheadSource { handle, series }));
        self
    }

    /// Registers a set of keyed breakers under `name`: each key's breaker (and bulkhead, if the
    /// keys have bulkheads) is reported with labels `name` and `key` (the key's `Display`),
    /// for the keys the registry holds at each report (see
    /// [Keyed breakers](self#keyed-breakers)). The keys present now get their series at once.
    pub fn keyed<K>(mut self, name: impl Into<String>, breakers: &Breakers<K>) -> Self
    where
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
    {
        let name: String = name.into();
        let source = KeyedSource::new(name.into(), breakers.clone());
        self.sources.push(Arc::new(source));
        self
    }

    /// Pushes every total now: calls by outcome, state gauges and bulkhead figures (transition
    /// counters need no report). Call it before each scrape, or run [`run`](Self::run).
    pub fn report(&self) {
        for source in &self.sources {
            source.report();
        }
    }

    /// Reports now and then every `every` (at least 1 ms), forever, on tokio's clock.
    pub async fn run(self, every: Duration) {
        let every = every.max(MIN_INTERVAL);
        loop {
            self.report();
            tokio::time::sleep(every).await;
        }
    }

    /// [`run`](Self::run) as a task on the current tokio runtime; abort the handle to stop it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn`.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(every))
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("sources", &self.sources)
            .finish()
    }
}

struct BreakerSource {
    handle: Handle,
    series: BreakerSeries,
}

impl Source for BreakerSource {
    fn report(&self) {
        self.series.push(&self.handle.stats());
    }
}

impl fmt::Debug for BreakerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Breaker").field(&self.handle.name()).finish()
    }
}

struct BulkheadSource {
    handle: bulkhead::Handle,
    series: BulkheadSeries,
}

impl Source for BulkheadSource {
    fn report(&self) {
        self.series.push(&self.handle.stats());
    }
}

impl fmt::Debug for BulkheadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Bulkhead")
            .field(&self.handle.name())
            .finish()
    }
}
