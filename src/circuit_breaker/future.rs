//! The breaker's response future.
//!
//! [`ResponseFuture`] polls the inner future and, when it completes, hands the result to the
//! classifier with a [`Recorder`], through which the call's guard records its outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::classify::{Outcome, ResponseClassifier};
use super::error::CircuitOpen;
use super::guard::CallGuard;
pub use super::guard::Recorder;
use crate::time::Stamp;
use crate::BoxError;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// Resolves to the inner result (errors boxed), or to a
    /// [`CircuitOpen`](super::error::CircuitOpen) error when a fail-fast breaker rejected the
    /// call. Records the classified outcome when the inner future completes; if it is dropped
    /// first, records nothing and gives back any probe permit it held. A panic in the inner
    /// future or the classifier counts as a failure.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        guard: Option<CallGuard>,
        // When the call started, if the slow-call rule needs it.
        started: Option<Stamp>,
        // Set while the inner future is polled: dropped with it set, the inner future panicked.
        in_inner_poll: bool,
        classifier: C,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.in_inner_poll {
                // Whether the drop is part of the unwinding or comes later (an executor that
                // caught the panic), the call failed.
                if let Some(guard) = this.guard.take() {
                    guard.finish(Outcome::Failure, *this.started);
                }
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(
        future: F,
        guard: CallGuard,
        started: Option<Stamp>,
        classifier: C,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            guard: Some(guard),
            started,
            in_inner_poll: false,
            classifier,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
            guard: None,
            started: None,
            in_inner_poll: false,
            classifier,
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

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(error.into()))
            }
            KindProj::Called { future } => {
                if this.guard.is_none() {
                    panic!("polled after completion");
                }
                *this.in_inner_poll = true;
                let result = match future.poll(cx) {
                    Poll::Pending => {
                        *this.in_inner_poll = false;
                        return Poll::Pending;
                    }
                    Poll::Ready(result) => result,
                };
                *this.in_inner_poll = false;
                let guard = this.guard.take().expect("polled after completion");
                // The classifier owns the guard (in the `Recorder`) while it runs, so that a
                // panic in it drops the guard during unwinding, which records a failure.
                let recorder = Recorder::new(guard, *this.started);
                Poll::Ready(
                    this.classifier
                        .classify_response(result, recorder)
                        .map_err(Into::into),
                )
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}
