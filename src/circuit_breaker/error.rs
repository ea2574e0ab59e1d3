//! Errors returned by the circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The circuit is not admitting calls; the inner service was not called.
///
/// Returned by a `fail_fast` breaker (and by keyed breakers) instead of waiting. Downcast it from
/// the [`BoxError`](crate::BoxError):
///
/// ```
/// # use tower_breaker::circuit_breaker::error::CircuitOpen;
/// # fn f(err: tower_breaker::BoxError) {
/// if let Some(open) = err.downcast_ref::<CircuitOpen>() {
///     println!("{} is open, retry in {:?}", open.name(), open.retry_after());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    pub(crate) fn new(name: Arc<str>, retry_after: Option<Duration>) -> Self {
        Self { name, retry_after }
    }

    /// The name of the breaker that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the circuit will admit a probe: `Some` while `Open`, `None` when that is
    /// not known (forced open, or half-open with every probe permit taken).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` is open", self.name)?;
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {:.3}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl std::error::Error for CircuitOpen {}
