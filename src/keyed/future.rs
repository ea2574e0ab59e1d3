//! The response future of [`Keyed`](super::Keyed).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::bulkhead::Permit;
use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::future::ResponseFuture as BreakerFuture;
use crate::circuit_breaker::ResponseClassifier;
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
            // Marks the key busy (not evicted first) while the call is in flight.
            in_flight: Option<Arc<()>>,
            // The key's bulkhead slot, if it has one: released when the call ends or is dropped.
            permit: Option<Permit>,
        },
        Failed { error: Option<BoxError> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(
        future: BreakerFuture<F, C>,
        in_flight: Arc<()>,
        permit: Option<Permit>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                in_flight: Some(in_flight),
                permit,
            },
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
                future: BreakerFuture::rejected(error, classifier),
                in_flight: None,
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                in_flight,
                permit,
            } => {
                let output = std::task::ready!(future.poll(cx));
                in_flight.take();
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
