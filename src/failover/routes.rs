//! Reporting which member served a request.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::TaggedFuture;

pub(super) const NO_ROUTE: usize = usize::MAX;

/// Which member of a [`Failover`](super::Failover) served each request: the last route and a count per member.
///
/// Cheap to clone, `Send + Sync`; shared by every clone of the `Failover` it came from, so it
/// keeps reporting after the `Failover` moves into a `Buffer` or `Balance`. Under concurrent
/// callers, [`last`](Routes::last) is the most recent dispatch of any of them.
#[derive(Clone)]
pub struct Routes {
    pub(super) inner: Arc<RoutesInner>,
}

pub(super) struct RoutesInner {
    pub(super) names: Vec<Arc<str>>,
    pub(super) last: AtomicUsize,
    pub(super) served: Vec<AtomicU64>,
}

impl Routes {
    pub(super) fn record(&self, index: usize) {
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

    /// How many calls each member has been sent, in priority order. A request re-sent by
    /// [`resend_failures`](super::Failover::resend_failures) counts once for each member it
    /// went to, so the sum less the number of requests is the number of re-sends.
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

/// Which member of a [`Failover`](super::Failover) served an HTTP response: put in the
/// response's extensions by [`Failover::tag_served_by`](super::Failover::tag_served_by).
///
/// ```
/// # use tower_breaker::failover::ServedBy;
/// # fn check(response: http::Response<()>) {
/// if let Some(served_by) = response.extensions().get::<ServedBy>() {
///     println!("served by {} (priority {})", served_by.name(), served_by.index());
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServedBy {
    index: usize,
    name: Arc<str>,
}

impl ServedBy {
    /// The member's index in the failover (0 = primary).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A failover member that marks its `http::Response`s with a [`ServedBy`] extension; made by
/// [`Failover::tag_served_by`](super::Failover::tag_served_by).
#[derive(Debug, Clone)]
pub struct TagServedBy<S> {
    inner: S,
    served_by: ServedBy,
}

impl<S> TagServedBy<S> {
    pub(super) fn new(inner: S, index: usize, name: Arc<str>) -> Self {
        TagServedBy {
            inner,
            served_by: ServedBy { index, name },
        }
    }

    /// The wrapped member.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, B> Service<Req> for TagServedBy<S>
where
    S: Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = TaggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        TaggedFuture::new(self.inner.call(request), self.served_by.clone())
    }
}
