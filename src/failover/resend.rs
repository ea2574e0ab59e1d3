//! Re-sending a failed request to the next member: [`Resend`], opt-in with
//! [`Failover::resend_failures`](super::Failover::resend_failures).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::retry::budget::{Budget, TpsBudget};
use tower_service::Service;

use super::future::ResendFuture;
use super::scope::Readiness;
use super::{Failover, MemberSet};
use crate::BoxError;

/// A [`Failover`] that sends each request once, to one member: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResend;

/// Makes another copy of a request, to re-send it: `None` when this one cannot be re-sent
/// (a streaming body, say), and then the first member's answer stands.
///
/// [`Cloned`] uses `Clone`; any `Fn(&Req) -> Option<Req>` is one too (for a `reqwest::Request`,
/// `|req: &reqwest::Request| req.try_clone()`).
pub trait Rebuild<Req> {
    /// Another copy of `request`, if it can be made.
    fn rebuild(&self, request: &Req) -> Option<Req>;
}

/// Re-sends a `Clone` request by cloning it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cloned;

impl<Req: Clone> Rebuild<Req> for Cloned {
    fn rebuild(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

impl<Req, F> Rebuild<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn rebuild(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// When a [`Failover`] sends a failed request on to the next member.
///
/// With [`Failover::resend_failures`](super::Failover::resend_failures), a request is sent to
/// the next ready member (in priority order, after the one that failed) when the member it went
/// to:
///
/// - **rejected it locally** — a [`BulkheadFull`](crate::bulkhead::error::BulkheadFull),
///   [`BulkheadTimeout`](crate::bulkhead::error::BulkheadTimeout) or fail-fast
///   [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error (which `Failover`'s
///   readiness normally avoids, but a member behind a `Buffer` can still return): the
///   dependency was never reached, so this spends no budget; or
/// - **failed**: its breaker's classifier called the result a
///   [`Failure`](crate::circuit_breaker::Outcome::Failure) or
///   [`Throttled`](crate::circuit_breaker::Outcome::Throttled) — an error, a 5xx, a 429, a failed
///   half-open probe — or it returned an error that no breaker called
///   [`Ignored`](crate::circuit_breaker::Outcome::Ignored) (a member with no breaker; also an
///   error a classifier calls a success, which the breakers do not report, to keep that report
///   off their fastest path).
///
/// It is never re-sent when the result was a success or
/// [`Ignored`](crate::circuit_breaker::Outcome::Ignored) (a 4xx: the request itself is wrong),
/// when [`attempts`](Resend::attempts) are used up, when the [budget](Resend::budget) says no,
/// when the request cannot be rebuilt, or when no later member is ready at that moment (the
/// failure is returned rather than waited on). A response whose verdict the breaker left to
/// its body (an HTTP stream judged by [`EndOfStream`](crate::http::EndOfStream)) has been
/// handed to the caller, so it is never re-sent, whatever its body does later.
///
/// The member's verdict is read from the breakers in the member's stack as its response future
/// completes (the outermost breaker's, if several); a member behind a task boundary (a
/// `Buffer`) is judged by its result alone.
///
/// Each call keeps a copy of its request (and a reference to untouched clones of the members,
/// shared by every call), so that it can go on to the next member; a member is cloned only
/// when a request is re-sent to it.
///
/// ```
/// use tower::{service_fn, Service, ServiceExt};
/// use tower_layer::Layer;
/// use tower_breaker::circuit_breaker::CircuitBreakerLayer;
/// use tower_breaker::failover::{Failover, Resend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_breaker::BoxError> {
/// let provider = |name: &'static str, up: bool| {
///     let breaker = CircuitBreakerLayer::builder().name(name).build().unwrap();
///     breaker.layer(service_fn(move |prompt: String| async move {
///         if up { Ok(format!("{name}: {prompt}")) } else { Err(format!("{name} failed")) }
///     }))
/// };
/// let mut llm = Failover::with_names([("a", provider("a", false)), ("b", provider("b", true))])
///     .resend_failures(Resend::cloned().attempts(2));
///
/// // "a" fails this request; the caller never sees it: "b" answers.
/// assert_eq!(llm.ready().await?.call("hi".to_string()).await?, "b: hi");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Resend<F> {
    pub(super) rebuild: F,
    pub(super) attempts: u32,
    pub(super) budget: Arc<dyn Budget + Send + Sync>,
}

impl Resend<Cloned> {
    /// Re-sends `Clone` requests; every member may be tried once; tower's default
    /// [`TpsBudget`] (re-sends up to 20 % of requests, at least 10 a second).
    pub fn cloned() -> Self {
        Resend::with(Cloned)
    }
}

impl<F> Resend<F> {
    /// Re-sends requests copied by `rebuild` (see [`Rebuild`]); otherwise as
    /// [`cloned`](Resend::cloned).
    pub fn with(rebuild: F) -> Self {
        Resend {
            rebuild,
            attempts: u32::MAX,
            budget: Arc::new(TpsBudget::default()),
        }
    }

    /// At most `n` members try one request, the first included (`1` never re-sends; default:
    /// every member once).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// The budget re-sends after a failure spend: each request deposits, each such re-send
    /// withdraws (a local rejection's re-send is free). Share one budget between failovers to
    /// bound their re-sends together.
    pub fn budget(mut self, budget: Arc<dyn Budget + Send + Sync>) -> Self {
        self.budget = budget;
        self
    }
}

impl<F> fmt::Debug for Resend<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resend")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Like the plain failover's `Service`, but each call keeps what it needs to go on to the
/// members after the one it went to (see [`Resend`]).
impl<S, Req, F> Service<Req> for Failover<S, Resend<F>>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    F: Rebuild<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResendFuture<S, S::Future, Req, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_members(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let index = self.take_ready();
        self.routes.record(index);
        self.resend.budget.deposit();
        let spare = (self.resend.attempts > 1)
            .then(|| self.resend.rebuild.rebuild(&request))
            .flatten();
        let spares = self
            .spares
            .get_or_insert_with(|| self.members.iter().map(|m| m.service.clone()).collect())
            .clone();
        let mut retired = MemberSet::default();
        for (i, member) in self.members.iter().enumerate() {
            if member.retired {
                retired.insert(i);
            }
        }
        let future = self.members[index].service.call(request);
        ResendFuture::new(
            future,
            Later {
                spares,
                next: index + 1,
                retired,
            },
            spare,
            self.resend.clone(),
            self.routes.clone(),
        )
    }
}

/// The members a call may still go on to: those after `next` (in priority order) that were in
/// service when it was made, each cloned from an untouched spare when its turn comes — so a
/// call that needs no re-send clones nothing.
pub(crate) struct Later<S> {
    spares: Arc<[S]>,
    next: usize,
    retired: MemberSet,
}

impl<S> Later<S> {
    /// The first of the later members that is ready now, with its index; the ones before it
    /// are passed over for good. A member that is ready only to reject locally is not ready.
    pub(crate) fn next_ready<Req>(&mut self, cx: &mut Context<'_>) -> Option<(usize, S)>
    where
        S: Service<Req> + Clone,
    {
        while self.next < self.spares.len() {
            let index = self.next;
            self.next += 1;
            if self.retired.contains(index) {
                continue;
            }
            let mut member = self.spares[index].clone();
            let ready = {
                let _scope = Readiness::enter();
                matches!(member.poll_ready(cx), Poll::Ready(Ok(())))
            };
            if ready {
                return Some((index, member));
            }
        }
        None
    }

    pub(crate) fn remaining(&self) -> usize {
        self.spares.len().saturating_sub(self.next)
    }
}
