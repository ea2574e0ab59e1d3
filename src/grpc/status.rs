//! `CircuitOpen` as a `tonic::Status`, and back.

use std::time::Duration;

use crate::circuit_breaker::error::CircuitOpen;
use crate::http::retry_after;

/// `UNAVAILABLE`, with the breaker's name in the message and, when known, the time until the
/// circuit admits again as `grpc-retry-pushback-ms` metadata.
pub fn circuit_open_to_status(open: &CircuitOpen) -> tonic::Status {
    let mut status = tonic::Status::unavailable(open.to_string());
    if let Some(d) = open.retry_after() {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", ms.into());
    }
    status
}

impl From<CircuitOpen> for tonic::Status {
    fn from(open: CircuitOpen) -> Self {
        circuit_open_to_status(&open)
    }
}

/// Finds the [`CircuitOpen`] behind a client-side `tonic::Status` (tonic reports a breaker
/// rejection as `UNKNOWN` with the error as its source), searching the source chain.
pub fn circuit_open(status: &tonic::Status) -> Option<&CircuitOpen> {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(open) = err.downcast_ref::<CircuitOpen>() {
            return Some(open);
        }
        source = err.source();
    }
    None
}

/// Turns an error from a breaker-wrapped service into a `tonic::Status`: a [`CircuitOpen`]
/// becomes `UNAVAILABLE` (see [`circuit_open_to_status`]), anything else goes through
/// `tonic::Status::from_error`.
pub fn status_from_error(err: crate::BoxError) -> tonic::Status {
    match err.downcast::<CircuitOpen>() {
        Ok(open) => circuit_open_to_status(&open),
        Err(err) => tonic::Status::from_error(err),
    }
}

/// The back-off hint a `tonic::Status` carries in `grpc-retry-pushback-ms` (or `retry-after`)
/// metadata.
pub fn status_retry_after(status: &tonic::Status) -> Option<Duration> {
    retry_after::parse(status.metadata().as_ref())
}
