//! The bulkhead's validating builder.

use std::time::Duration;

use super::hold::ReleaseOnResponse;
use super::layer::BulkheadLayer;
use super::queue::Shared;
use crate::ConfigError;

/// Default `max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;
/// Default `max_queue`.
pub const DEFAULT_MAX_QUEUE: usize = 100;
/// Default `max_wait`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Builds a [`BulkheadLayer`]; start with [`BulkheadLayer::builder`].
///
/// Every knob is optional: name `"default"`, [`DEFAULT_MAX_CONCURRENT`] (10) concurrent calls,
/// [`DEFAULT_MAX_QUEUE`] (100) waiters, [`DEFAULT_MAX_WAIT`] (30 s). Values are checked by
/// [`build`](Builder::build), which names the first bad field in a [`ConfigError`]; no method
/// panics.
#[derive(Debug, Clone)]
pub struct Builder<H = ReleaseOnResponse> {
    name: Option<String>,
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
    hold: H,
}

impl Default for Builder<ReleaseOnResponse> {
    fn default() -> Self {
        Builder {
            name: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: DEFAULT_MAX_QUEUE,
            max_wait: DEFAULT_MAX_WAIT,
            hold: ReleaseOnResponse,
        }
    }
}

impl<H> Builder<H> {
    /// Names the bulkhead in errors, stats and `tracing` events. Default `"default"`; must not
    /// be empty.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many calls may run at once. Default 10; at least 1.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// How many callers may wait for a slot; one more is rejected at once with
    /// [`BulkheadFull`](super::error::BulkheadFull). Default 100; `0` means nobody waits: at
    /// capacity, calls are rejected at once.
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// How long a caller may wait for a slot before it is rejected with
    /// [`BulkheadTimeout`](super::error::BulkheadTimeout). Default 30 s; must be positive. It
    /// bounds the wait only: to bound the call itself, add `tower::timeout`.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Uses `hold` to decide how long a call keeps its slot once the response is there (see
    /// [`HoldPermit`](super::HoldPermit)).
    pub fn hold_permit<H2>(self, hold: H2) -> Builder<H2> {
        Builder {
            name: self.name,
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            hold,
        }
    }

    /// Keeps each call's slot until its HTTP response body ends, fails or is dropped, not just
    /// until the response head arrives (feature `http`; see
    /// [`HoldUntilBodyEnd`](super::HoldUntilBodyEnd)).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn hold_permit_until_body_end(self) -> Builder<super::HoldUntilBodyEnd> {
        self.hold_permit(super::HoldUntilBodyEnd)
    }

    /// Checks every value and builds the layer. The layer's state is shared by every service it
    /// makes.
    pub fn build(self) -> Result<BulkheadLayer<H>, ConfigError> {
        let name = self.name.unwrap_or_else(|| "default".to_owned());
        if name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.max_concurrent == 0 {
            return Err(ConfigError::new("max_concurrent", "must be at least 1"));
        }
        if self.max_wait.is_zero() {
            return Err(ConfigError::new("max_wait", "must be positive"));
        }
        let shared = Shared::new(
            name.into(),
            self.max_concurrent,
            self.max_queue,
            self.max_wait,
        );
        Ok(BulkheadLayer::from_parts(shared, self.hold))
    }
}
