//! The series of one breaker and of one bulkhead: metric handles and label strings built once,
//! when the breaker or bulkhead is registered, and after that only set and incremented.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Label};

use crate::bulkhead;
use crate::circuit_breaker::{Handle, State, Stats, Transition};

pub(super) const CIRCUIT_STATE: &str = "tower_breaker_circuit_state";
pub(super) const CALLS_TOTAL: &str = "tower_breaker_calls_total";
pub(super) const TRANSITIONS_TOTAL: &str = "tower_breaker_transitions_total";
pub(super) const BULKHEAD_ACTIVE: &str = "tower_breaker_bulkhead_active";
pub(super) const BULKHEAD_QUEUED: &str = "tower_breaker_bulkhead_queued";
pub(super) const BULKHEAD_REJECTED_TOTAL: &str = "tower_breaker_bulkhead_rejected_total";
pub(super) const BULKHEAD_TIMED_OUT_TOTAL: &str = "tower_breaker_bulkhead_timed_out_total";

const STATES: [State; 5] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::ForcedOpen,
    State::Disabled,
];

/// The `outcome` label values, in the order of [`outcomes`].
const OUTCOMES: [&str; 6] = [
    "success",
    "failure",
    "ignored",
    "throttled",
    "slow",
    "rejected",
];

/// The transitions a breaker makes on its own. Their counters are registered at 0 with the
/// breaker, so that `rate()` and `increase()` see the first trip; the ones only a manual
/// operation makes get a series when they first happen, rather than a dozen series of zeros
/// per breaker.
const AUTOMATIC: [(State, State); 4] = [
    (State::Closed, State::Open),
    (State::Open, State::HalfOpen),
    (State::HalfOpen, State::Closed),
    (State::HalfOpen, State::Open),
];

fn index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
    }
}

fn outcomes(stats: &Stats) -> [u64; 6] {
    [
        stats.successful_calls,
        stats.failed_calls,
        stats.ignored_calls,
        stats.throttled_calls,
        stats.slow_calls,
        stats.rejected_calls,
    ]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only metric updates run under these locks: a panic there leaves the last totals usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives exporters the `# HELP` text of the breaker series.
pub(super) fn describe_breaker() {
    describe_gauge!(
        CIRCUIT_STATE,
        "1 for the circuit's current state, 0 for the others."
    );
    describe_counter!(
        CALLS_TOTAL,
        "Calls by outcome (slow calls are also counted as success or failure)."
    );
    describe_counter!(TRANSITIONS_TOTAL, "Circuit state changes.");
}

/// Gives exporters the `# HELP` text of the bulkhead series.
pub(super) fn describe_bulkhead() {
    describe_gauge!(BULKHEAD_ACTIVE, "Bulkhead slots held now.");
    describe_gauge!(BULKHEAD_QUEUED, "Callers waiting for a bulkhead slot.");
    describe_counter!(
        BULKHEAD_REJECTED_TOTAL,
        "Calls rejected because the bulkhead's queue was full."
    );
    describe_counter!(
        BULKHEAD_TIMED_OUT_TOTAL,
        "Calls rejected after waiting max_wait for a bulkhead slot."
    );
}

/// The labels every series of one breaker or bulkhead carries (`name`, and `key` for a keyed
/// one). The values are `Arc<str>`, so each series' labels share one copy of the strings.
#[derive(Clone)]
pub(super) struct Labels(Vec<Label>);

impl Labels {
    pub(super) fn new(name: Arc<str>, key: Option<Arc<str>>) -> Self {
        let mut labels = vec![Label::new("name", name)];
        if let Some(key) = key {
            labels.push(Label::new("key", key));
        }
        Labels(labels)
    }

    fn with(&self, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut labels = Vec::with_capacity(self.0.len() + extra.len());
        labels.extend(self.0.iter().cloned());
        labels.extend(extra.iter().map(|&(k, v)| Label::new(k, v)));
        labels
    }

    fn plain(&self) -> Vec<Label> {
        self.0.clone()
    }
}

/// Advances counters that mirror `now`, a set of lifetime totals, from the totals last pushed.
///
/// `increment` by the difference rather than `absolute`: exporters keep counters monotonic
/// (`absolute` is a `fetch_max`), so a breaker whose counts restart — after
/// [`Handle::reset`], or a keyed breaker's key built anew after an eviction — would leave its
/// series stuck until the new counts passed the old ones. A drop in any total means the counts
/// restarted (they are zeroed together), and the series goes on from where it was. Every
/// counter is incremented, by 0 if need be, so that an exporter's idle timeout only ever
/// removes the series of a breaker nobody reports any more.
fn advance<const N: usize>(counters: &[Counter; N], now: [u64; N], last: &Mutex<[u64; N]>) {
    let mut last = lock(last);
    let restarted = now.iter().zip(last.iter()).any(|(n, l)| n < l);
    for ((counter, n), l) in counters.iter().zip(now).zip(last.iter()) {
        counter.increment(if restarted { n } else { n - l });
    }
    *last = now;
}

/// What a transition listener updates. Shared by the listener and reports, and holding no
/// [`Handle`]: the breaker owns the listener, so a handle here would keep the breaker (and a
/// keyed breaker's evicted circuit) alive for good.
struct Live {
    labels: Labels,
    states: [Gauge; 5],
    /// By `[from][to]`; see [`AUTOMATIC`].
    transitions: [[OnceLock<Counter>; 5]; 5],
    /// Set when a keyed breaker's key leaves the report: an evicted circuit can still change
    /// state (calls in flight finish on it) and must not overwrite the series of the key's
    /// next circuit.
    retired: AtomicBool,
}

impl Live {
    fn show(&self, state: State) {
        let current = index(state);
        for (i, gauge) in self.states.iter().enumerate() {
            gauge.set(if i == current { 1.0 } else { 0.0 });
        }
    }

    fn transitions(&self, from: State, to: State) -> &Counter {
        self.transitions[index(from)][index(to)].get_or_init(|| {
            let labels = self
                .labels
                .with(&[("from", from.as_str()), ("to", to.as_str())]);
            counter!(TRANSITIONS_TOTAL, labels)
        })
    }

    fn on_transition(&self, transition: &Transition) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        self.transitions(transition.from, transition.to)
            .increment(1);
        self.show(transition.to);
    }

    /// Keeps the transition series from looking idle to an exporter (see [`advance`]).
    fn touch(&self) {
        for counter in self.transitions.iter().flatten().filter_map(OnceLock::get) {
            counter.increment(0);
        }
    }
}

/// The series of one breaker.
pub(super) struct BreakerSeries {
    live: Arc<Live>,
    calls: [Counter; 6],
    last: Mutex<[u64; 6]>,
}

impl BreakerSeries {
    /// Builds the series with the recorder current now, counts the transitions in `stats`'
    /// history (those before registration), listens to the breaker's transitions, and pushes
    /// `stats`.
    ///
    /// `stats` is read before the listener is added: a transition in between is missed rather
    /// than counted twice.
    pub(super) fn register(handle: &Handle, labels: Labels, stats: &Stats) -> Self {
        let states =
            STATES.map(|state| gauge!(CIRCUIT_STATE, labels.with(&[("state", state.as_str())])));
        let calls =
            OUTCOMES.map(|outcome| counter!(CALLS_TOTAL, labels.with(&[("outcome", outcome)])));
        let live = Arc::new(Live {
            labels,
            states,
            transitions: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            retired: AtomicBool::new(false),
        });
        for (from, to) in AUTOMATIC {
            live.transitions(from, to);
        }
        for transition in &stats.transitions {
            live.transitions(transition.from, transition.to)
                .increment(1);
        }
        let listener = live.clone();
        handle.on_transition(move |transition| listener.on_transition(transition));
        let series = BreakerSeries {
            live,
            calls,
            last: Mutex::new([0; 6]),
        };
        series.push(stats);
        series
    }

    pub(super) fn push(&self, stats: &Stats) {
        self.live.show(stats.state);
        advance(&self.calls, outcomes(stats), &self.last);
        self.live.touch();
    }

    /// Stops the listener from updating these series (see [`Live::retired`]).
    pub(super) fn retire(&self) {
        self.live.retired.store(true, Ordering::Relaxed);
    }
}

/// The series of one bulkhead.
pub(super) struct BulkheadSeries {
    active: Gauge,
    queued: Gauge,
    /// Rejected, timed out.
    totals: [Counter; 2],
    last: Mutex<[u64; 2]>,
}

impl BulkheadSeries {
    /// Builds the series with the recorder current now and pushes `stats`.
    pub(super) fn register(labels: &Labels, stats: &bulkhead::Stats) -> Self {
        let series = BulkheadSeries {
            active: gauge!(BULKHEAD_ACTIVE, labels.plain()),
            queued: gauge!(BULKHEAD_QUEUED, labels.plain()),
            totals: [
                counter!(BULKHEAD_REJECTED_TOTAL, labels.plain()),
                counter!(BULKHEAD_TIMED_OUT_TOTAL, labels.plain()),
            ],
            last: Mutex::new([0; 2]),
        };
        series.push(stats);
        series
    }

    pub(super) fn push(&self, stats: &bulkhead::Stats) {
        self.active.set(stats.active as f64);
        self.queued.set(stats.queued as f64);
        advance(&self.totals, [stats.rejected, stats.timed_out], &self.last);
    }
}
