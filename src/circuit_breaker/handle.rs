//! Observing and steering a breaker from outside the call path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::shared::{Shared, FAILED, IGNORED, REJECTED, SLOW, SUCCESS, THROTTLED};
use super::state::{Reason, State, Transition};

/// A handle on one breaker: read its state and statistics, switch it by hand, and listen to its
/// transitions. Cheap to clone; `Send + Sync`. Get one from
/// [`CircuitBreakerLayer::handle`](super::CircuitBreakerLayer::handle) or
/// [`CircuitBreaker::handle`](super::CircuitBreaker::handle).
///
/// Every manual operation starts a new generation, so calls admitted before it do not count
/// after it, and wakes every waiting service at once.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::builder().name("payments").build().unwrap();
/// let handle = layer.handle();
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// handle.on_transition(move |t| log.lock().unwrap().push((t.from, t.to)));
///
/// handle.force_open(); // maintenance: stop calling the dependency
/// assert_eq!(handle.state(), State::ForcedOpen);
/// assert!(!handle.is_admitting());
/// handle.reset(); // back to a fresh closed circuit
///
/// let stats = handle.stats();
/// assert_eq!((stats.name.as_str(), stats.state, stats.total_calls), ("payments", State::Closed, 0));
/// assert_eq!(
///     *seen.lock().unwrap(),
///     [(State::Closed, State::ForcedOpen), (State::ForcedOpen, State::Closed)]
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The current state. An open circuit whose open duration has ended reports
    /// [`State::HalfOpen`] (the transition is applied now, not at the next call).
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Whether the circuit would admit a call now (closed, disabled, or half-open with a free
    /// probe permit). Takes nothing.
    pub fn is_admitting(&self) -> bool {
        self.shared.is_admitting()
    }

    /// Statistics since the breaker was built (or last [`reset`](Handle::reset)).
    pub fn stats(&self) -> Stats {
        let snapshot = self.shared.snapshot();
        let successful_calls = self.shared.count(SUCCESS);
        let failed_calls = self.shared.count(FAILED);
        let ignored_calls = self.shared.count(IGNORED);
        let throttled_calls = self.shared.count(THROTTLED);
        let (consecutive_failure_threshold, open_duration, request_rate) =
            self.shared.thresholds_now();
        let failure_rate = match snapshot.window {
            Some(window) => window.failure_rate(),
            None => {
                let judged = successful_calls + failed_calls;
                (judged > 0).then(|| failed_calls as f64 / judged as f64)
            }
        };
        Stats {
            name: self.name().to_owned(),
            state: snapshot.state,
            total_calls: successful_calls + failed_calls + ignored_calls + throttled_calls,
            successful_calls,
            failed_calls,
            ignored_calls,
            throttled_calls,
            rejected_calls: self.shared.count(REJECTED),
            slow_calls: self.shared.count(SLOW),
            consecutive_failures: snapshot.consecutive_failures,
            consecutive_successes: snapshot.consecutive_successes,
            failure_rate,
            slow_call_rate: snapshot.window.and_then(|w| w.slow_rate()),
            last_failure: self.shared.last_failure(),
            retry_after: snapshot.retry_after,
            transitions: snapshot.transitions,
            consecutive_failure_threshold,
            open_duration,
            request_rate,
        }
    }

    /// Opens the circuit until [`force_closed`](Handle::force_closed),
    /// [`reset`](Handle::reset) or [`disable`](Handle::disable); it never half-opens on its own.
    pub fn force_open(&self) {
        self.shared.force(State::ForcedOpen, Reason::ForcedOpen);
    }

    /// Closes the circuit now: the window is emptied (as at every close) and back-off reset;
    /// lifetime counters are kept.
    pub fn force_closed(&self) {
        self.shared.force(State::Closed, Reason::ForcedClosed);
    }

    /// Admits every call and records nothing, until [`force_closed`](Handle::force_closed) or
    /// [`reset`](Handle::reset).
    pub fn disable(&self) {
        self.shared.force(State::Disabled, Reason::Disabled);
    }

    /// Back to a fresh closed circuit: empty window, no back-off, and lifetime counters
    /// zeroed. The transition history is kept.
    pub fn reset(&self) {
        self.shared.force(State::Closed, Reason::Reset);
    }

    /// Calls `listener` after every state change, outside the breaker's locks, on the thread
    /// that caused the change. A panicking listener is contained (and logged).
    pub fn on_transition<F>(&self, listener: F)
    where
        F: Fn(&Transition) + Send + Sync + 'static,
    {
        self.shared.add_listener(Arc::new(listener));
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.shared).finish()
    }
}

/// A breaker's statistics: its state, call counts and rates, recent transitions and the
/// thresholds in force.
///
/// Counts cover finished calls; a call whose future was dropped records nothing.
///
/// With feature `serde` it is `serde::Serialize`: instants are written as seconds before the
/// moment of serialization (`secs_since_last_failure`, each transition's `secs_ago`), durations
/// as seconds (`retry_after_secs`, `open_duration_secs`), reasons as text.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The breaker's name.
    pub name: String,
    /// The state now.
    pub state: State,
    /// Finished calls with a recorded outcome: successful + failed + ignored + throttled.
    pub total_calls: u64,
    /// Calls classified [`Outcome::Success`](super::Outcome::Success).
    pub successful_calls: u64,
    /// Calls classified [`Outcome::Failure`](super::Outcome::Failure) (a panic counts here, as
    /// does `Throttled { retry_after: None }`).
    pub failed_calls: u64,
    /// Calls classified [`Outcome::Ignored`](super::Outcome::Ignored).
    pub ignored_calls: u64,
    /// Calls classified `Throttled` with a back-off hint.
    pub throttled_calls: u64,
    /// Calls rejected with [`CircuitOpen`](super::error::CircuitOpen) (fail-fast mode; the
    /// default mode waits instead of rejecting).
    pub rejected_calls: u64,
    /// Calls that took longer than the slow-call threshold (0 unless `slow_calls` is set).
    pub slow_calls: u64,
    /// Failures in a row in the current closed phase.
    pub consecutive_failures: u32,
    /// Probe successes in the current half-open phase.
    pub consecutive_successes: u32,
    /// The failure share of the window when a rate rule is configured; otherwise
    /// failed / (successful + failed) over the breaker's life. `None` before any such call.
    pub failure_rate: Option<f64>,
    /// The slow share of the window, when a rate rule is configured.
    pub slow_call_rate: Option<f64>,
    /// When the last failure was recorded, on tokio's clock.
    pub last_failure: Option<Instant>,
    /// Time left until an open circuit admits probes.
    pub retry_after: Option<Duration>,
    /// The latest transitions, oldest first (bounded by `history_len`).
    pub transitions: Vec<Transition>,
    /// The consecutive-failure threshold in force (it follows the request rate with
    /// [`adaptive`](super::Builder::adaptive) thresholds).
    pub consecutive_failure_threshold: u32,
    /// The open duration of a first trip in force (likewise).
    pub open_duration: Duration,
    /// Calls recorded over the last minute, with adaptive thresholds on; `None` otherwise.
    pub request_rate: Option<u64>,
}
