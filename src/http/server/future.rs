//! The [`ResponseFuture`] of [`RejectionResponse`](super::RejectionResponse).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::layer::Statuses;
use super::service::error_response;
use crate::BoxError;

pin_project! {
    /// The inner service's response, or the response its error is answered with.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Called { #[pin] future: F, statuses: Statuses },
        // An `Option` so that a pinned poll can move the response out.
        Answered { response: Option<Response<B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn called(future: F, statuses: Statuses) -> Self {
        ResponseFuture {
            kind: Kind::Called { future, statuses },
        }
    }

    pub(super) fn answered(response: Response<B>) -> Self {
        ResponseFuture {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, statuses } => match ready!(future.poll(cx)) {
                Ok(response) => Poll::Ready(Ok(response)),
                Err(error) => Poll::Ready(Ok(error_response(&error.into(), *statuses))),
            },
            KindProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Answered { .. } => "Answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
