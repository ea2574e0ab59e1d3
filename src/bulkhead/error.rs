//! Errors returned by the bulkhead.

use std::fmt;
use std::sync::Arc;

/// The bulkhead was at capacity and its wait queue was full; the inner service was not called.
#[derive(Debug, Clone)]
pub struct BulkheadFull {
    name: Arc<str>,
}

impl BulkheadFull {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self { name }
    }

    /// The name of the bulkhead that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead `{}` is full", self.name)
    }
}

impl std::error::Error for BulkheadFull {}

/// The call waited longer than the bulkhead's `max_wait` for a slot; the inner service was not
/// called.
#[derive(Debug, Clone)]
pub struct BulkheadTimeout {
    name: Arc<str>,
}

impl BulkheadTimeout {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self { name }
    }

    /// The name of the bulkhead the call waited in.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for BulkheadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out waiting for a slot in bulkhead `{}`",
            self.name
        )
    }
}

impl std::error::Error for BulkheadTimeout {}
