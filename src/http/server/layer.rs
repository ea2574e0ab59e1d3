//! The [`RejectionResponseLayer`].

use http::StatusCode;
use tower_layer::Layer;

use super::service::RejectionResponse;

/// Wraps a service so that the crate's rejections (and any other error) become HTTP responses and
/// the service's error type is `Infallible`; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct RejectionResponseLayer {
    pub(super) statuses: Statuses,
}

/// The status each kind of error is answered with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Statuses {
    pub(super) circuit_open: StatusCode,
    pub(super) bulkhead: StatusCode,
    pub(super) error: StatusCode,
}

impl RejectionResponseLayer {
    /// `503` for an open circuit and a full or timed-out bulkhead, `500` for other errors.
    pub fn new() -> Self {
        RejectionResponseLayer {
            statuses: Statuses {
                circuit_open: StatusCode::SERVICE_UNAVAILABLE,
                bulkhead: StatusCode::SERVICE_UNAVAILABLE,
                error: StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The status for a `CircuitOpen` rejection (default `503 Service Unavailable`). The
    /// `Retry-After` header is added whatever the status.
    pub fn circuit_open_status(mut self, status: StatusCode) -> Self {
        self.statuses.circuit_open = status;
        self
    }

    /// The status for `BulkheadFull` and `BulkheadTimeout` (default `503 Service Unavailable`;
    /// `429 Too Many Requests` is the other common choice).
    pub fn bulkhead_status(mut self, status: StatusCode) -> Self {
        self.statuses.bulkhead = status;
        self
    }

    /// The status for any other error of the inner service (default `500 Internal Server
    /// Error`).
    pub fn error_status(mut self, status: StatusCode) -> Self {
        self.statuses.error = status;
        self
    }
}

impl Default for RejectionResponseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RejectionResponseLayer {
    type Service = RejectionResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RejectionResponse::new(inner, *self)
    }
}
