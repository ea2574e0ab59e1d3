//! The breaker's configuration and its validating builder.

use std::sync::Arc;
use std::time::Duration;

use super::adaptive::AdaptiveThresholds;
use super::classify::{DefaultClassifier, Immediate};
use super::layer::CircuitBreakerLayer;
use crate::ConfigError;

/// Which calls the failure-rate and slow-call rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `d`, in [`TIME_WINDOW_BUCKETS`] fixed buckets.
    Time(Duration),
}

/// Number of buckets a time window is cut into: memory and per-call cost stay fixed, and the
/// window slides in steps of `window / TIME_WINDOW_BUCKETS`.
pub(crate) const TIME_WINDOW_BUCKETS: u32 = 20;

/// The validated configuration of one breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) minimum_calls: u32,
    pub(crate) window: WindowKind,
    pub(crate) slow_calls: Option<(Duration, f64)>,
    pub(crate) open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) half_open_permits: u32,
    pub(crate) success_threshold: u32,
    pub(crate) probe_timeout: Option<Duration>,
    pub(crate) fail_fast: bool,
    pub(crate) retry_after_bounds: (Duration, Duration),
    pub(crate) history_len: usize,
    pub(crate) adaptive: Option<AdaptiveThresholds>,
}

impl Config {
    /// Whether a rate rule needs outcomes recorded in a window.
    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_calls.is_some()
    }
}

/// Builds a [`CircuitBreakerLayer`]; start with [`CircuitBreakerLayer::builder`].
///
/// Every knob is optional; by default the circuit trips after 5 consecutive failures, stays
/// open 60 s, admits 3 probes and closes after 3 probe successes. Values are checked by
/// [`build`](Builder::build), which names the first bad field in a [`ConfigError`]; no method
/// panics.
#[derive(Debug, Clone)]
pub struct Builder<C = DefaultClassifier> {
    settings: Settings,
    classifier: C,
}

/// The knobs as given, checked only by [`Builder::build`].
#[derive(Debug, Clone)]
struct Settings {
    name: Option<String>,
    consecutive_failures: u32,
    failure_rate: Option<f64>,
    minimum_calls: u32,
    window: WindowKind,
    slow_calls: Option<(Duration, f64)>,
    open_duration: Duration,
    max_open_duration: Option<Duration>,
    half_open_permits: u32,
    success_threshold: u32,
    probe_timeout: Option<Duration>,
    fail_fast: bool,
    retry_after_bounds: (Duration, Duration),
    history_len: usize,
    adaptive: Option<AdaptiveThresholds>,
}

impl Default for Builder<DefaultClassifier> {
    fn default() -> Self {
        Builder {
            settings: Settings {
                name: None,
                consecutive_failures: 5,
                failure_rate: None,
                minimum_calls: 10,
                window: WindowKind::Count(100),
                slow_calls: None,
                open_duration: Duration::from_secs(60),
                max_open_duration: None,
                half_open_permits: 3,
                success_threshold: 3,
                probe_timeout: Some(Duration::from_secs(30)),
                fail_fast: false,
                retry_after_bounds: (Duration::from_secs(1), Duration::from_secs(600)),
                history_len: 32,
                adaptive: None,
            },
            classifier: DefaultClassifier,
        }
    }
}

impl<C> Builder<C> {
    /// Names the breaker in errors, stats, health reports and `tracing` events. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Trips after `n` consecutive failures. Default 5; `0` turns the rule off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.settings.consecutive_failures = n;
        self
    }

    /// Also trips when the failure rate over the window reaches `rate` (in `(0, 1]`), once the
    /// window holds at least [`minimum_calls`](Builder::minimum_calls). Off by default.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.settings.failure_rate = Some(rate);
        self
    }

    /// The rate rules need at least `n` calls in the window (default 10, at least 1).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.settings.minimum_calls = n;
        self
    }

    /// The rate rules look at the last `n` calls (the default, with `n` = 100).
    pub fn count_window(mut self, n: u32) -> Self {
        self.settings.window = WindowKind::Count(n);
        self
    }

    /// The rate rules look at the calls of the last `window`, kept in 20 fixed buckets
    /// (O(1) per call, fixed memory; the window slides in steps of `window / 20`).
    pub fn time_window(mut self, window: Duration) -> Self {
        self.settings.window = WindowKind::Time(window);
        self
    }

    /// A call that takes strictly longer than `threshold` is slow (as in resilience4j: a call
    /// of exactly `threshold` is not); trips when the slow share of the window
    /// reaches `rate` (in `(0, 1]`). A slow half-open probe counts as a failed probe. Off by
    /// default (and then no clock is read per call for it).
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.settings.slow_calls = Some((threshold, rate));
        self
    }

    /// How long the circuit stays open before admitting probes. Default 60 s.
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.settings.open_duration = d;
        self
    }

    /// Enables exponential back-off: each consecutive re-trip (a failed half-open phase) doubles
    /// the open duration, minus up to 20 % jitter, never below `open_duration` and never above
    /// `max`. Resets when the circuit closes. Default: equal to `open_duration` (no back-off).
    pub fn max_open_duration(mut self, max: Duration) -> Self {
        self.settings.max_open_duration = Some(max);
        self
    }

    /// How many probes one half-open phase admits, across all clones. Default 3, at least 1.
    pub fn half_open_permits(mut self, n: u32) -> Self {
        self.settings.half_open_permits = n;
        self
    }

    /// How many probe successes close the circuit. Default 3; between 1 and
    /// `half_open_permits`.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.settings.success_threshold = n;
        self
    }

    /// A probe whose inner service has not answered within this long reopens the circuit; its
    /// late result is ignored. Default 30 s.
    ///
    /// It covers the wait for the inner future's result — for HTTP, the response head. A
    /// classifier that defers its verdict to the body
    /// ([`EndOfStream`](crate::http::EndOfStream), feature `http`; see
    /// [`Recorder::head_arrived`](super::Recorder::head_arrived)) is not cut short by it: a
    /// healthy stream longer than the probe timeout still closes the circuit. Bound stalled
    /// bodies with `EndOfStream::idle_timeout` instead.
    pub fn probe_timeout(mut self, d: Duration) -> Self {
        self.settings.probe_timeout = Some(d);
        self
    }

    /// Fail-fast mode: `poll_ready` stays ready while the circuit rejects, and `call` returns a
    /// [`CircuitOpen`](super::error::CircuitOpen) error without touching the inner service.
    /// For axum, tonic clients, direct callers and `Steer`. The default mode instead returns
    /// `Pending` from `poll_ready` while the circuit is open.
    pub fn fail_fast(mut self) -> Self {
        self.settings.fail_fast = true;
        self
    }

    /// The range a server's back-off hint (`Outcome::Throttled { retry_after: Some(_) }`) is
    /// clamped to. Default 1 s ..= 10 min.
    pub fn retry_after_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.settings.retry_after_bounds = (min, max);
        self
    }

    /// How many transitions `stats().transitions` keeps (newest last). Default 32, at least 1.
    pub fn history_len(mut self, n: usize) -> Self {
        self.settings.history_len = n;
        self
    }

    /// Lets the consecutive-failure threshold and the open duration follow the request rate
    /// (see [`AdaptiveThresholds`]; [`AdaptiveThresholds::seed`] is a ready-made table). Replaces
    /// `consecutive_failures` and `open_duration`.
    pub fn adaptive(mut self, table: AdaptiveThresholds) -> Self {
        self.settings.adaptive = Some(table);
        self
    }

    /// Sets the [`Classify`](super::Classify) that turns results into outcomes (recorded as
    /// soon as the inner future completes).
    pub fn classifier<C2>(self, classifier: C2) -> Builder<Immediate<C2>> {
        self.response_classifier(Immediate(classifier))
    }

    /// Sets a [`ResponseClassifier`](super::ResponseClassifier), which may defer the verdict to the
    /// end of the response body (see the `http` and `grpc` features).
    pub fn response_classifier<C2>(self, classifier: C2) -> Builder<C2> {
        Builder {
            settings: self.settings,
            classifier,
        }
    }

    /// Checks every value and builds the layer. The layer's state is shared by every service it
    /// makes.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let config = self.validate()?;
        Ok(CircuitBreakerLayer::from_parts(config, self.classifier))
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let err = ConfigError::new;
        let name = self
            .settings
            .name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        if name.is_empty() {
            return Err(err("name", "must not be empty"));
        }
        let unit_rate = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(rate) = self.settings.failure_rate {
            if !unit_rate(rate) {
                return Err(err("failure_rate", "must be in (0, 1]"));
            }
        }
        if self.settings.minimum_calls == 0 {
            return Err(err("minimum_calls", "must be at least 1"));
        }
        match self.settings.window {
            WindowKind::Count(0) => return Err(err("count_window", "must be at least 1")),
            WindowKind::Count(n) if self.settings.minimum_calls > n && self.uses_window() => {
                return Err(err(
                    "minimum_calls",
                    "must not exceed count_window, or the rate rules could never trip",
                ))
            }
            WindowKind::Time(d) if d < Duration::from_millis(u64::from(TIME_WINDOW_BUCKETS)) => {
                return Err(err(
                    "time_window",
                    "must be at least 20 ms (20 buckets of 1 ms)",
                ))
            }
            _ => {}
        }
        if let Some((threshold, rate)) = self.settings.slow_calls {
            if threshold.is_zero() {
                return Err(err("slow_calls", "the slow-call duration must be positive"));
            }
            if !unit_rate(rate) {
                return Err(err("slow_calls", "the slow-call rate must be in (0, 1]"));
            }
        }
        if self.settings.open_duration.is_zero() {
            return Err(err("open_duration", "must be positive"));
        }
        let max_open_duration = self
            .settings
            .max_open_duration
            .unwrap_or(self.settings.open_duration);
        if max_open_duration < self.settings.open_duration {
            return Err(err(
                "max_open_duration",
                "must not be less than open_duration",
            ));
        }
        if self.settings.half_open_permits == 0 {
            return Err(err("half_open_permits", "must be at least 1"));
        }
        if self.settings.success_threshold == 0 {
            return Err(err("success_threshold", "must be at least 1"));
        }
        if self.settings.success_threshold > self.settings.half_open_permits {
            return Err(err(
                "success_threshold",
                "must not exceed half_open_permits, or the circuit could never close",
            ));
        }
        if self.settings.probe_timeout.is_some_and(|d| d.is_zero()) {
            return Err(err("probe_timeout", "must be positive"));
        }
        let (min, max) = self.settings.retry_after_bounds;
        if min > max {
            return Err(err("retry_after_bounds", "min must not exceed max"));
        }
        if self.settings.history_len == 0 {
            return Err(err("history_len", "must be at least 1"));
        }
        if let Some(table) = &self.settings.adaptive {
            table.validate()?;
        }
        Ok(Config {
            name: name.into(),
            consecutive_failures: self.settings.consecutive_failures,
            failure_rate: self.settings.failure_rate,
            minimum_calls: self.settings.minimum_calls,
            window: self.settings.window,
            slow_calls: self.settings.slow_calls,
            open_duration: self.settings.open_duration,
            max_open_duration,
            half_open_permits: self.settings.half_open_permits,
            success_threshold: self.settings.success_threshold,
            probe_timeout: self.settings.probe_timeout,
            fail_fast: self.settings.fail_fast,
            retry_after_bounds: self.settings.retry_after_bounds,
            history_len: self.settings.history_len,
            adaptive: self.settings.adaptive.clone(),
        })
    }

    fn uses_window(&self) -> bool {
        self.settings.failure_rate.is_some() || self.settings.slow_calls.is_some()
    }
}
