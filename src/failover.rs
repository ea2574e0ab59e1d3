//! Readiness-aware failover: send each request to the highest-priority service that is ready.
//!
//! [`Failover`] holds an ordered list of services (primary first). Its `poll_ready` is ready as
//! soon as *any* member is ready and never waits on one that is not, and `call` goes to the
//! first ready member. Put a default-mode [`CircuitBreaker`](crate::circuit_breaker::CircuitBreaker)
//! around each member: an open circuit is `Pending`, so traffic moves to the next member, and
//! because every member polled `Pending` has registered the task's waker, the task is woken the
//! moment the primary's circuit admits again, and the next request goes back to the primary.
//!
//! This is what tower's `Steer` cannot do: `Steer` waits until *every* service is ready, so one
//! open circuit blocks every request. For users who keep `Steer` with fail-fast breakers,
//! [`skip_open`] is a `Steer` picker that skips services whose circuit is not admitting.
//!
//! Which member served a request is reported by a [`Routes`] handle
//! ([`Failover::routes`]), which keeps working when the `Failover` is moved into a `Buffer`
//! or a `Balance`; the response type stays the members' own, so `Failover` composes anywhere
//! a member would.
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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::circuit_breaker::Handle;
use crate::BoxError;

pub mod error {
    //! Errors of [`Failover`](super::Failover).

    use std::fmt;

    /// [`Failover`](super::Failover) has no member left to call: it was built empty, or every
    /// member's `poll_ready` has failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct NoServices(pub(super) ());

    impl fmt::Display for NoServices {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("failover has no service left to call")
        }
    }

    impl std::error::Error for NoServices {}
}

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
/// Use default-mode breakers (not `fail_fast`) on the members: a fail-fast breaker is always
/// ready, so `Failover` would keep choosing it and its calls would fail with `CircuitOpen`.
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
pub struct Failover<S> {
    members: Vec<Member<S>>,
    ready: Option<usize>,
    routes: Routes,
}

struct Member<S> {
    service: S,
    retired: bool,
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
        }
    }

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
    pub fn get_ref(&self) -> impl Iterator<Item = &S> {
        self.members.iter().map(|m| &m.service)
    }
}

impl<S, Req> Service<Req> for Failover<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready = None;
        let mut last_error = None;
        for (index, member) in self.members.iter_mut().enumerate() {
            if member.retired {
                continue;
            }
            match member.service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(index);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {}
                Poll::Ready(Err(error)) => {
                    let error: BoxError = error.into();
                    member.retired = true;
                    trace_warn!(
                        member = %self.routes.inner.names[index],
                        %error,
                        "failover member failed poll_ready and is retired"
                    );
                    last_error = Some(error);
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

    fn call(&mut self, request: Req) -> Self::Future {
        let index = self
            .ready
            .take()
            .expect("Failover::call without a ready poll_ready; call poll_ready first");
        self.routes.record(index);
        ResponseFuture {
            future: self.members[index].service.call(request),
        }
    }
}

impl<S: Clone> Clone for Failover<S> {
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
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Failover<S> {
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
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// Response future of [`Failover`]: the chosen member's future, with its error boxed.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
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

const NO_ROUTE: usize = usize::MAX;

/// Which member of a [`Failover`] served each request: the last route and a count per member.
///
/// Cheap to clone, `Send + Sync`; shared by every clone of the `Failover` it came from, so it
/// keeps reporting after the `Failover` moves into a `Buffer` or `Balance`. Under concurrent
/// callers, [`last`](Routes::last) is the most recent dispatch of any of them.
#[derive(Clone)]
pub struct Routes {
    inner: Arc<RoutesInner>,
}

struct RoutesInner {
    names: Vec<Arc<str>>,
    last: AtomicUsize,
    served: Vec<AtomicU64>,
}

impl Routes {
    fn record(&self, index: usize) {
        self.inner.last.store(index, Ordering::Relaxed);
        self.inner.served[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The index of the member that served the latest call, if any.
    pub fn last(&self) -> Option<usize> {
        match self.inner.last.load(Ordering::Relaxed) {
            NO_ROUTE => None,
            index => Some(index),
        }
    }

    /// The name of the member that served the latest call, if any.
    pub fn last_name(&self) -> Option<String> {
        self.last().map(|i| self.inner.names[i].to_string())
    }

    /// The name of member `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.inner.names.get(index).map(|n| &**n)
    }

    /// How many calls each member has served, in priority order.
    pub fn served(&self) -> Vec<u64> {
        self.inner
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("names", &self.inner.names)
            .field("last", &self.last())
            .field("served", &self.served())
            .finish()
    }
}

/// Puts a service in front of fallbacks: `layer(primary)` makes a [`Failover`] over the
/// primary followed by clones of the fallbacks, all of one service type (box them, or use
/// `tower::util::Either`, when they differ).
///
/// ```
/// use tower::{service_fn, ServiceBuilder, util::BoxCloneSyncService};
/// use tower_breaker::failover::FailoverLayer;
///
/// type Svc = BoxCloneSyncService<u32, u32, tower_breaker::BoxError>;
/// let backup: Svc = BoxCloneSyncService::new(service_fn(|x: u32| async move { Ok(x + 1) }));
/// let primary: Svc = BoxCloneSyncService::new(service_fn(|x: u32| async move { Ok(x) }));
/// let svc = ServiceBuilder::new()
///     .layer(FailoverLayer::with_names("primary", [("backup", backup)]))
///     .service(primary);
/// assert_eq!(svc.routes().name(1), Some("backup"));
/// ```
#[derive(Clone)]
pub struct FailoverLayer<S> {
    primary_name: Arc<str>,
    fallbacks: Vec<(Arc<str>, S)>,
}

impl<S> FailoverLayer<S> {
    /// Fallbacks in priority order, named by their index in the resulting `Failover`.
    pub fn new(fallbacks: impl IntoIterator<Item = S>) -> Self {
        FailoverLayer {
            primary_name: Arc::from("0"),
            fallbacks: fallbacks
                .into_iter()
                .enumerate()
                .map(|(i, s)| (Arc::from((i + 1).to_string()), s))
                .collect(),
        }
    }

    /// Named fallbacks in priority order, and the name of the primary.
    pub fn with_names<N: Into<String>>(
        primary: impl Into<String>,
        fallbacks: impl IntoIterator<Item = (N, S)>,
    ) -> Self {
        FailoverLayer {
            primary_name: Arc::from(primary.into()),
            fallbacks: fallbacks
                .into_iter()
                .map(|(n, s)| (Arc::from(n.into()), s))
                .collect(),
        }
    }
}

impl<S: Clone> Layer<S> for FailoverLayer<S> {
    type Service = Failover<S>;

    fn layer(&self, primary: S) -> Failover<S> {
        let (names, services) = std::iter::once((self.primary_name.clone(), primary))
            .chain(self.fallbacks.iter().cloned())
            .unzip();
        Failover::from_parts(services, names)
    }
}

impl<S> fmt::Debug for FailoverLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = std::iter::once(&self.primary_name)
            .chain(self.fallbacks.iter().map(|(n, _)| n))
            .collect();
        f.debug_struct("FailoverLayer")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

/// A [`tower::steer::Picker`] that sends each request to the first service whose circuit is
/// admitting; see [`skip_open`].
#[derive(Clone)]
pub struct SkipOpen {
    handles: Vec<Handle>,
}

/// A `Steer` picker over fail-fast breakers: `handles[i]` is the circuit of `Steer`'s service
/// `i` (the order given to [`Steer::new`](tower::steer::Steer::new)).
///
/// Each request goes to the first service whose circuit [is
/// admitting](Handle::is_admitting) (closed, disabled, or half-open with a free probe permit).
/// When none is, it goes to the one whose circuit will admit soonest (the smallest
/// `retry_after`; a forced-open circuit never), so its fail-fast breaker answers at once with a
/// [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error carrying the earliest
/// `retry_after`. A service without a handle (an index past `handles`) is treated as always
/// admitting.
///
/// Use it with **fail-fast** breakers: `Steer` polls every service until all are ready, and a
/// default-mode breaker with an open circuit is `Pending`, which would block `Steer` entirely.
///
/// ```
/// use tower::{service_fn, steer::Steer, Service, ServiceExt};
/// use tower_layer::Layer;
/// use tower_breaker::circuit_breaker::CircuitBreakerLayer;
/// use tower_breaker::failover::skip_open;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let primary = CircuitBreakerLayer::builder().name("primary").fail_fast().build().unwrap();
/// let backup = CircuitBreakerLayer::builder().name("backup").fail_fast().build().unwrap();
/// let picker = skip_open([primary.handle(), backup.handle()]);
/// primary.handle().force_open();
///
/// let svc = |n: u32| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(n) });
/// let mut steer = Steer::new(vec![primary.layer(svc(1)), backup.layer(svc(2))], picker);
/// assert_eq!(steer.ready().await.unwrap().call(()).await.unwrap(), 2);
/// # }
/// ```
pub fn skip_open(handles: impl IntoIterator<Item = Handle>) -> SkipOpen {
    SkipOpen {
        handles: handles.into_iter().collect(),
    }
}

impl SkipOpen {
    fn choose(&self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        let mut soonest: Option<(usize, Duration)> = None;
        for index in 0..len {
            let Some(handle) = self.handles.get(index) else {
                return index;
            };
            if handle.is_admitting() {
                return index;
            }
            if let Some(wait) = handle.stats().retry_after {
                if soonest.is_none_or(|(_, best)| wait < best) {
                    soonest = Some((index, wait));
                }
            }
        }
        soonest.map_or(0, |(index, _)| index)
    }
}

impl<S, Req> tower::steer::Picker<S, Req> for SkipOpen {
    fn pick(&mut self, _request: &Req, services: &[S]) -> usize {
        self.choose(services.len())
    }
}

impl fmt::Debug for SkipOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.handles.iter().map(|h| h.name()).collect();
        f.debug_struct("SkipOpen")
            .field("circuits", &names)
            .finish()
    }
}
