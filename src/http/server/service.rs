//! The [`RejectionResponse`] service.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::{RejectionResponseLayer, Statuses};
use crate::bulkhead::error::{BulkheadFull, BulkheadTimeout};
use crate::circuit_breaker::error::CircuitOpen;
use crate::BoxError;

/// Answers the inner service's errors with HTTP responses; see the [module docs](super).
pub struct RejectionResponse<S> {
    inner: S,
    statuses: Statuses,
    /// An error `poll_ready` reported as ready, answered by the next `call`.
    ready_error: Option<BoxError>,
}

impl<S> RejectionResponse<S> {
    /// Wraps `inner` with the statuses of `layer`.
    pub fn new(inner: S, layer: RejectionResponseLayer) -> Self {
        RejectionResponse {
            inner,
            statuses: layer.statuses,
            ready_error: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

// A clone starts without the original's pending `poll_ready` error: that error belongs to the
// call the original was readied for.
impl<S: Clone> Clone for RejectionResponse<S> {
    fn clone(&self) -> Self {
        RejectionResponse {
            inner: self.inner.clone(),
            statuses: self.statuses,
            ready_error: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RejectionResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectionResponse")
            .field("inner", &self.inner)
            .field("statuses", &self.statuses)
            .field("ready_error", &self.ready_error)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RejectionResponse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, ResBody>;

    /// `Ready(Ok(()))` when the inner service is ready, and also when it failed: the error is
    /// kept and answered by the next `call`. `Pending` while the inner service is pending (its
    /// waker registration is the inner service's).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                self.ready_error = Some(error.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.ready_error.take() {
            Some(error) => ResponseFuture::answered(error_response(&error, self.statuses)),
            None => ResponseFuture::called(self.inner.call(request), self.statuses),
        }
    }
}

/// The response for `error`: the first of the crate's rejections found in its source chain
/// decides; any other error gets the generic error status.
pub(super) fn error_response<B: Default>(error: &BoxError, statuses: Statuses) -> Response<B> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(err) = source {
        if let Some(open) = err.downcast_ref::<CircuitOpen>() {
            let mut response = crate::http::circuit_open_response(open);
            *response.status_mut() = statuses.circuit_open;
            return response;
        }
        if err.is::<BulkheadFull>() || err.is::<BulkheadTimeout>() {
            return with_status(statuses.bulkhead);
        }
        source = err.source();
    }
    with_status(statuses.error)
}

fn with_status<B: Default>(status: http::StatusCode) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
}
