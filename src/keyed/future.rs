//! The response future of [`Keyed`](super::Keyed).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::bulkhead::Permit;
use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::future::ResponseFuture as BreakerFuture;
use crate::circuit_breaker::{keyed_admit, ResponseClassifier};
use crate::BoxError;

pin_project! {
    /// Response future of [`Keyed`](super::Keyed): the key's breaker future, which records the outcome on the
    /// key's circuit (or resolves at once to a [`CircuitOpen`] or a
    /// [`ConfigError`](crate::ConfigError)).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: BreakerFuture<F, C>,
            // The key's bulkhead slot, if it has one: released when the call ends or is dropped.
            permit: Option<Permit>,
        },
        Failed { error: Option<BoxError> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: BreakerFuture<F, C>, permit: Option<Permit>) -> Self {
        ResponseFuture {
            kind: Kind::Called { future, permit },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    pub(super) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future: keyed_admit::rejected(error, classifier),
                permit: None,
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ResponseClassifier<T, E>,
{
    type Output = Result<C::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, permit } => {
                let output = std::task::ready!(future.poll(cx));
                permit.take();
                Poll::Ready(output)
            }
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
