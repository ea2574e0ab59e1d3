//! The bulkhead's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::error::{BulkheadFull, BulkheadTimeout};
use super::hold::{HoldPermit, Permit};
use crate::BoxError;

/// Why a call was rejected without reaching the inner service.
#[derive(Debug)]
pub(crate) enum Rejection {
    Full(BulkheadFull),
    Timeout(BulkheadTimeout),
}

impl From<Rejection> for BoxError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Full(e) => Box::new(e),
            Rejection::Timeout(e) => Box::new(e),
        }
    }
}

pin_project! {
    /// Response future of [`Bulkhead`](super::Bulkhead).
    ///
    /// Holds the call's [`Permit`] while the inner future runs. Resolves to the inner response
    /// passed through the [`HoldPermit`] `H` (which keeps or drops the permit), or to the inner
    /// error (boxed, permit released), or — for a call the bulkhead rejected — to a
    /// [`BulkheadFull`] or [`BulkheadTimeout`] error. The permit is released if this future is
    /// dropped first, including while a panic in the inner future unwinds.
    pub struct ResponseFuture<F, H> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        hold: H,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { rejection: Option<Rejection> },
    }
}

impl<F, H> ResponseFuture<F, H> {
    pub(crate) fn called(future: F, permit: Permit, hold: H) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            permit: Some(permit),
            hold,
        }
    }

    pub(crate) fn rejected(rejection: Rejection, hold: H) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
            permit: None,
            hold,
        }
    }
}

impl<F, H, T, E> Future for ResponseFuture<F, H>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    H: HoldPermit<T>,
{
    type Output = Result<H::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { rejection } => {
                let rejection = rejection.take().expect("polled after completion");
                Poll::Ready(Err(rejection.into()))
            }
            KindProj::Called { future } => match future.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(response)) => {
                    let permit = this.permit.take().expect("polled after completion");
                    Poll::Ready(Ok(this.hold.hold(response, permit)))
                }
                Poll::Ready(Err(error)) => {
                    *this.permit = None;
                    Poll::Ready(Err(error.into()))
                }
            },
        }
    }
}

impl<F, H> fmt::Debug for ResponseFuture<F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}
