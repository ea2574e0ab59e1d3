//! Readiness-aware failover: send each request to the highest-priority service that is ready.
//!
//! [`Failover`] holds an ordered list of services (primary first). Its `poll_ready` is ready as
//! soon as *any* member is ready and never waits on one that is not, and `call` goes to the
//! first ready member. Put a default-mode [`CircuitBreaker`](crate::circuit_breaker::CircuitBreaker)
//! around each member: an open circuit is `Pending`, so traffic moves to the next member, and
//! because every member polled `Pending` has registered the task's waker, the task is woken the
//! moment the primary's circuit admits again, and the next request goes back to the primary.
//!
//! # Members that would only reject
//!
//! A member that is ready only to reject the call locally — its bulkhead full with no queue
//! room, its bulkhead wait expired, its fail-fast breaker open — is treated as not ready, so the
//! request goes to the next member and the caller never sees that rejection. This works for
//! every request type (nothing is re-sent: the member is skipped before the call) and however
//! deep the bulkhead or breaker sits in the member's stack, as long as it is polled on the
//! `Failover`'s own task (not behind a `Buffer`). Only when no member is ready does `Failover`
//! take such a member after all, in priority order, so the caller gets its rejection at once
//! instead of waiting.
//!
//! # Re-sending failed requests
//!
//! With [`resend_failures`](Failover::resend_failures), a request that *failed* on a member — an
//! error, or a response the member's breaker classified as a failure or throttle (a 5xx, a 429,
//! a failed half-open probe) — is sent again to the next ready member, within an attempt count
//! and a retry budget; 4xx-style ([`Ignored`](crate::circuit_breaker::Outcome::Ignored)) results
//! and streams whose head was already returned are never re-sent. See [`Resend`].
//!
//! This is what tower's `Steer` cannot do: `Steer` waits until *every* service is ready, so one
//! open circuit blocks every request. For users who keep `Steer` with fail-fast breakers,
//! [`skip_open`] is a `Steer` picker that skips services whose circuit is not admitting.
//!
//! Which member served a request is reported by a [`Routes`] handle
//! ([`Failover::routes`]), which keeps working when the `Failover` is moved into a `Buffer`
//! or a `Balance`, and, for HTTP members, by a [`ServedBy`] response extension
//! ([`Failover::tag_served_by`]). The response type stays the members' own, so `Failover`
//! composes anywhere a member would.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_layer::Layer;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::failover::Failover;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let provider = |name: &'static str, up: bool| {
//!     let breaker = CircuitBreakerLayer::builder()
//!         .name(name)
//!         .consecutive_failures(2)
//!         .open_duration(Duration::from_secs(60))
//!         .build()
//!         .unwrap();
//!     breaker.layer(service_fn(move |prompt: String| async move {
//!         if up { Ok(format!("{name}: {prompt}")) } else { Err(format!("{name} is down")) }
//!     }))
//! };
//! let mut llm = Failover::with_names([
//!     ("openai", provider("openai", false)),
//!     ("anthropic", provider("anthropic", true)),
//! ]);
//! let routes = llm.routes();
//!
//! // The primary fails twice and its circuit opens...
//! for _ in 0..2 {
//!     assert!(llm.ready().await?.call("hi".into()).await.is_err());
//! }
//! // ...then requests go to the next provider without waiting.
//! assert_eq!(llm.ready().await?.call("hi".into()).await?, "anthropic: hi");
//! assert_eq!(routes.last_name().as_deref(), Some("anthropic"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::BoxError;

pub mod error;
pub mod future;
mod layer;
mod load;
mod resend;
mod routes;
pub(crate) mod scope;
#[cfg(feature = "http")]
mod served_by;
mod steer;

pub use future::{ResendFuture, ResponseFuture};
pub use layer::FailoverLayer;
pub use resend::{Cloned, NoResend, Rebuild, Resend};
pub use routes::Routes;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use served_by::{Extensions, ServedBy, TagServedBy};
pub use steer::{skip_open, SkipOpen};

use routes::{RoutesInner, NO_ROUTE};

/// A priority router over services of one type: each request goes to the first member (in the
/// order given) that is ready.
///
/// # `poll_ready`
///
/// Members are polled in priority order, and polling stops at the first one that is ready (a
/// lower-priority member is not asked to reserve anything while a higher one is ready). Every
/// member polled `Pending` has registered the task's waker, so the task is woken as soon as any
/// of them may be ready — for a default-mode breaker, when its circuit admits again — and the
/// next `poll_ready` starts from the primary again.
///
/// - Ready when any member is ready; `call` then goes to that member.
/// - `Pending` while no member is ready. With default-mode breakers on every member and every
///   circuit open, this **waits**: the task is woken at the earliest open deadline (or manual
///   close) among the members, and the request goes to that member.
/// - A member whose `poll_ready` returns `Err` is **retired**: tower treats that error as
///   terminal for the member (a `Buffer` whose worker died never recovers), so `Failover`
///   never polls or calls it again and goes on with the others (a `tracing` warning names
///   it). `poll_ready` fails only when no member is left: with the last member's error, or
///   with [`NoServices`](error::NoServices) when the list was empty.
///
/// - A member that is ready only to reject locally (see the [module docs](self)) is passed
///   over; if no member is ready, such members are polled once more, in order, and the first
///   one ready is chosen, so the call fails at once with its rejection.
///
/// Default-mode breakers suit members best: an open circuit is `Pending`, and the task is woken
/// when it admits again. A fail-fast breaker's open circuit is passed over the same way, but
/// registers no wake-up.
///
/// Readiness is reserved on at most the chosen member per `poll_ready`; if a later `poll_ready`
/// chooses a higher-priority member, whatever the earlier choice reserved (a half-open probe
/// permit, a concurrency permit) stays with this `Failover`'s member until it is called or
/// dropped, as with any tower service that is polled ready and not called.
///
/// # `call`
///
/// Goes to the member chosen by the last `poll_ready` and records the route in [`Routes`].
/// Panics if `poll_ready` has not returned `Ready(Ok(()))` since the last `call`, like tower's
/// own middleware.
///
/// Clones share one [`Routes`] and clone every member.
pub struct Failover<S, R = NoResend> {
    members: Vec<Member<S>>,
    ready: Option<usize>,
    routes: Routes,
    resend: R,
    /// Untouched clones of the members, shared by clones of this failover, for re-sends to
    /// start from (made at the first call that may re-send).
    spares: Option<Arc<[S]>>,
}

pub(crate) struct Member<S> {
    pub(crate) service: S,
    pub(crate) retired: bool,
}

impl<S> Failover<S> {
    /// A failover over `services`, highest priority first, named by their index
    /// (`"0"`, `"1"`, ...).
    pub fn new(services: impl IntoIterator<Item = S>) -> Self {
        let services: Vec<S> = services.into_iter().collect();
        let names = (0..services.len())
            .map(|i| Arc::from(i.to_string()))
            .collect();
        Self::from_parts(services, names)
    }

    /// A failover over named services, highest priority first. The names appear in
    /// [`Routes::last_name`] and `tracing` events.
    pub fn with_names<N: Into<String>>(services: impl IntoIterator<Item = (N, S)>) -> Self {
        let (names, services): (Vec<Arc<str>>, Vec<S>) = services
            .into_iter()
            .map(|(name, service)| (Arc::from(name.into()), service))
            .unzip();
        Self::from_parts(services, names)
    }

    fn from_parts(services: Vec<S>, names: Vec<Arc<str>>) -> Self {
        let served = (0..services.len()).map(|_| AtomicU64::new(0)).collect();
        Failover {
            members: services
                .into_iter()
                .map(|service| Member {
                    service,
                    retired: false,
                })
                .collect(),
            ready: None,
            routes: Routes {
                inner: Arc::new(RoutesInner {
                    names,
                    last: AtomicUsize::new(NO_ROUTE),
                    served,
                }),
            },
            resend: NoResend,
            spares: None,
        }
    }

    /// Re-sends a request that failed on a member to the next ready member, as `resend`
    /// allows (see [`Resend`]).
    pub fn resend_failures<F>(self, resend: Resend<F>) -> Failover<S, Resend<F>> {
        Failover {
            members: self.members,
            ready: self.ready,
            routes: self.routes,
            resend,
            spares: None,
        }
    }
}

impl<S, R> Failover<S, R> {
    /// The handle reporting which member served each request. Shared by every clone; keep one
    /// before moving the `Failover` into a `Buffer` or `Balance`.
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// The index of the member that served the last call made through any clone, if any.
    pub fn last_route(&self) -> Option<usize> {
        self.routes.last()
    }

    /// The number of members (retired ones included).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the failover has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether member `index` has been retired after its `poll_ready` failed.
    pub fn is_retired(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(|m| m.retired)
    }

    /// The member services, highest priority first.
    pub fn services(&self) -> impl Iterator<Item = &S> {
        self.members.iter().map(|m| &m.service)
    }

    /// The member services, mutably, highest priority first.
    pub fn services_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.members.iter_mut().map(|m| &mut m.service)
    }

    /// Wraps every member so that its responses (`http::Response`, or `reqwest::Response` with
    /// feature `reqwest`) carry a [`ServedBy`] extension (the member's index and name). The
    /// response type stays the members' own; the [`Routes`] handle is kept.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn tag_served_by(self) -> Failover<TagServedBy<S>, R> {
        let names = &self.routes.inner.names;
        Failover {
            members: self
                .members
                .into_iter()
                .enumerate()
                .map(|(index, m)| Member {
                    service: TagServedBy::new(m.service, index, names[index].clone()),
                    retired: m.retired,
                })
                .collect(),
            ready: None,
            routes: self.routes,
            resend: self.resend,
            spares: None,
        }
    }

    /// Chooses the member the next `call` goes to: the first that is ready (see the type's
    /// docs). Members are polled in a [`scope`] that turns a member that is only ready to
    /// reject the call locally into `Pending`; if no member is ready, those are polled again
    /// outside it, in order, and the first that is ready (to serve or to reject) is chosen.
    fn poll_members<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        self.ready = None;
        let mut last_error = None;
        let mut deferred = MemberSet::default();
        for index in 0..self.members.len() {
            if self.members[index].retired {
                continue;
            }
            let scope = scope::Readiness::enter();
            let polled = self.members[index].service.poll_ready(cx);
            let deferred_here = scope.deferred();
            drop(scope);
            match polled {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(index);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending if deferred_here => deferred.insert(index),
                Poll::Pending => {}
                Poll::Ready(Err(error)) => last_error = Some(self.retire(index, error.into())),
            }
        }
        if !deferred.is_empty() {
            if scope::deferring() {
                // This failover is itself a member of an outer one's: it only rejects too,
                // and the outer failover decides when to take that.
                scope::defer_rejection();
                return Poll::Pending;
            }
            for index in 0..self.members.len() {
                if !deferred.contains(index) || self.members[index].retired {
                    continue;
                }
                match self.members[index].service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        self.ready = Some(index);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Pending => {}
                    Poll::Ready(Err(error)) => {
                        last_error = Some(self.retire(index, error.into()));
                    }
                }
            }
        }
        if self.members.iter().all(|m| m.retired) {
            return Poll::Ready(Err(
                last_error.unwrap_or_else(|| Box::new(error::NoServices(())))
            ));
        }
        Poll::Pending
    }

    fn retire(&mut self, index: usize, error: BoxError) -> BoxError {
        self.members[index].retired = true;
        trace_warn!(
            member = %self.routes.inner.names[index],
            %error,
            "failover member failed poll_ready and is retired"
        );
        error
    }

    /// The member chosen by the last `poll_ready`, taken for a `call`.
    fn take_ready(&mut self) -> usize {
        self.ready
            .take()
            .expect("Failover::call without a ready poll_ready; call poll_ready first")
    }
}

/// A set of member indexes (those that deferred a rejection in one `poll_ready`, those retired
/// when a call was made): a bit each for the first 128, and one for all the rest, so no
/// allocation whatever the number of members.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MemberSet {
    first: u128,
    any_beyond: bool,
}

impl MemberSet {
    pub(crate) fn insert(&mut self, index: usize) {
        match u32::try_from(index).ok().and_then(|i| 1u128.checked_shl(i)) {
            Some(bit) => self.first |= bit,
            None => self.any_beyond = true,
        }
    }

    pub(crate) fn contains(&self, index: usize) -> bool {
        match u32::try_from(index).ok().and_then(|i| 1u128.checked_shl(i)) {
            Some(bit) => self.first & bit != 0,
            None => self.any_beyond,
        }
    }

    fn is_empty(&self) -> bool {
        self.first == 0 && !self.any_beyond
    }
}

impl<S, Req> Service<Req> for Failover<S, NoResend>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_members(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let index = self.take_ready();
        self.routes.record(index);
        ResponseFuture::new(self.members[index].service.call(request))
    }
}

impl<S: Clone, R: Clone> Clone for Failover<S, R> {
    fn clone(&self) -> Self {
        Failover {
            members: self
                .members
                .iter()
                .map(|m| Member {
                    service: m.service.clone(),
                    retired: m.retired,
                })
                .collect(),
            ready: None,
            routes: self.routes.clone(),
            resend: self.resend.clone(),
            spares: self.spares.clone(),
        }
    }
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for Failover<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<_> = self
            .members
            .iter()
            .zip(self.routes.inner.names.iter())
            .map(|(m, name)| (name, &m.service, m.retired))
            .collect();
        f.debug_struct("Failover")
            .field("members", &members)
            .field("ready", &self.ready)
            .field("resend", &self.resend)
            .finish_non_exhaustive()
    }
}
