//! Response futures of [`Failover`](super::Failover).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use tower_service::Service;

use super::resend::{Later, Rebuild, Resend};
use super::routes::Routes;
use super::scope::Capture;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use super::served_by::TaggedFuture;
use crate::bulkhead::error::{BulkheadFull, BulkheadTimeout};
use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::Outcome;
use crate::BoxError;

pin_project! {
    /// Response future of [`Failover`]: the chosen member's future, with its error boxed.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F) -> Self {
        ResponseFuture { future }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .future
            .poll(cx)
            .map(|r| r.map_err(Into::into))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// Response future of a [`Failover`](super::Failover) with
    /// [`resend_failures`](super::Failover::resend_failures): the member's future, and, if that
    /// member failed, the next ready member's (see [`Resend`]).
    pub struct ResendFuture<S, Fut, Req, F> {
        #[pin]
        call: Fut,
        later: Later<S>,
        spare: Option<Req>,
        resend: Resend<F>,
        routes: Routes,
        attempts: u32,
    }
}

impl<S, Fut, Req, F> ResendFuture<S, Fut, Req, F> {
    pub(super) fn new(
        call: Fut,
        later: Later<S>,
        spare: Option<Req>,
        resend: Resend<F>,
        routes: Routes,
    ) -> Self {
        ResendFuture {
            call,
            later,
            spare,
            resend,
            routes,
            attempts: 1,
        }
    }
}

/// What to do with a member's result.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// The member rejected the call without reaching its dependency.
    ResendRejected,
    ResendFailed,
}

fn verdict<T>(result: &Result<T, BoxError>, outcome: Option<Outcome>) -> Verdict {
    if let Err(error) = result {
        if is_local_rejection(error) {
            return Verdict::ResendRejected;
        }
    }
    match outcome {
        Some(Outcome::Failure | Outcome::Throttled { .. }) => Verdict::ResendFailed,
        Some(Outcome::Success | Outcome::Ignored) => Verdict::Keep,
        None if result.is_err() => Verdict::ResendFailed,
        None => Verdict::Keep,
    }
}

fn is_local_rejection(error: &BoxError) -> bool {
    error.is::<CircuitOpen>() || error.is::<BulkheadFull>() || error.is::<BulkheadTimeout>()
}

impl<S, Fut, Req, F, T, E> Future for ResendFuture<S, Fut, Req, F>
where
    S: Service<Req, Future = Fut> + Clone,
    S::Error: Into<BoxError>,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: Rebuild<Req>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (result, outcome) = {
                let capture = Capture::enter();
                let result = std::task::ready!(this.call.as_mut().poll(cx));
                (result.map_err(Into::into), capture.outcome())
            };
            let verdict = verdict(&result, outcome);
            if verdict == Verdict::Keep || *this.attempts >= this.resend.attempts {
                return Poll::Ready(result);
            }
            let Some(spare) = this.spare.as_ref() else {
                return Poll::Ready(result);
            };
            let Some((index, mut member)) = this.later.next_ready(cx) else {
                return Poll::Ready(result);
            };
            if verdict == Verdict::ResendFailed && !this.resend.budget.withdraw() {
                return Poll::Ready(result);
            }
            // The last attempt may use the spare itself.
            let last = *this.attempts + 1 >= this.resend.attempts || this.later.remaining() == 0;
            let request = if last {
                this.spare.take()
            } else {
                this.resend.rebuild.rebuild(spare)
            };
            let Some(request) = request else {
                return Poll::Ready(result);
            };
            trace_debug!(
                to = %this.routes.inner.names[index],
                rejected = verdict == Verdict::ResendRejected,
                "failover re-sends a failed request"
            );
            drop(result);
            *this.attempts += 1;
            this.routes.record(index);
            this.call.set(member.call(request));
        }
    }
}

impl<S, Fut, Req, F> fmt::Debug for ResendFuture<S, Fut, Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendFuture")
            .field("attempts", &self.attempts)
            .field("later", &self.later.remaining())
            .finish_non_exhaustive()
    }
}
