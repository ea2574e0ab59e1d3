//! The crate's errors as `tonic::Status`es, and the hints and errors found in a status.

use std::fmt;
use std::time::Duration;

use super::retry_info;
use crate::circuit_breaker::error::CircuitOpen;
use crate::http::retry_after;

/// `UNAVAILABLE`, with the breaker's name in the message and, when known, the time until the
/// circuit admits again as `grpc-retry-pushback-ms` metadata.
///
/// This is the status a [`CircuitOpen`] carries as its
/// [`source()`](std::error::Error::source), which is what tonic reports for it.
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

/// `RESOURCE_EXHAUSTED` with `rejection`'s text: the status of a bulkhead's
/// [`BulkheadFull`](crate::bulkhead::error::BulkheadFull) and
/// [`BulkheadTimeout`](crate::bulkhead::error::BulkheadTimeout). No back-off hint: a slot can
/// free up at any moment.
pub(crate) fn resource_exhausted(rejection: &dyn fmt::Display) -> tonic::Status {
    tonic::Status::resource_exhausted(rejection.to_string())
}

impl From<CircuitOpen> for tonic::Status {
    fn from(open: CircuitOpen) -> Self {
        circuit_open_to_status(&open)
    }
}

/// Finds the [`CircuitOpen`] behind a client-side `tonic::Status`, searching the source chain.
///
/// tonic reports a rejection by a breaker around its `Channel` as the rejection's own
/// `UNAVAILABLE` status (found through [`CircuitOpen`]'s `source()`) and keeps the
/// `CircuitOpen` as that status's source, so this tells a local rejection from an
/// `UNAVAILABLE` sent by the server. A status parsed from a response (for instance one made by
/// [`UnavailableOnOpenLayer`](super::UnavailableOnOpenLayer)) has no source: `None`.
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

/// Turns an error from a breaker- or bulkhead-wrapped service into a `tonic::Status`, for a
/// server handler that calls an upstream through them: a [`CircuitOpen`] becomes
/// `UNAVAILABLE` (see [`circuit_open_to_status`]), a bulkhead rejection `RESOURCE_EXHAUSTED`,
/// anything else what `tonic::Status::from_error` makes of it (`UNKNOWN` unless it finds a
/// status in the source chain).
///
/// Now that the crate's errors carry their status as their source, this is
/// `tonic::Status::from_error(err)`, which also keeps `err` as the status's source (so
/// [`circuit_open`] finds it); it stays for the callers that use it.
pub fn status_from_error(err: crate::BoxError) -> tonic::Status {
    tonic::Status::from_error(err)
}

/// The back-off hint a `tonic::Status` carries: `grpc-retry-pushback-ms` (or `retry-after`)
/// metadata, else the `retry_delay` of a `google.rpc.RetryInfo` in its details — the same
/// order as [`metadata_retry_after`](super::metadata_retry_after).
pub fn status_retry_after(status: &tonic::Status) -> Option<Duration> {
    retry_after::parse(status.metadata().as_ref()).or_else(|| retry_info::status_retry_info(status))
}
