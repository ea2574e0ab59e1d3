//! Marking each response with the failover member that served it (feature `http`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

/// A response with `http::Extensions`: `http::Response<B>`, and `reqwest::Response` with feature
/// `reqwest`. Sealed.
pub trait Extensions: sealed::Sealed {
    /// The response's extensions.
    fn extensions_mut(&mut self) -> &mut http::Extensions;
}

mod sealed {
    pub trait Sealed {}
    impl<B> Sealed for http::Response<B> {}
    #[cfg(feature = "reqwest")]
    impl Sealed for reqwest::Response {}
}

impl<B> Extensions for http::Response<B> {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Response::extensions_mut(self)
    }
}

#[cfg(feature = "reqwest")]
impl Extensions for reqwest::Response {
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        reqwest::Response::extensions_mut(self)
    }
}

/// Which member of a [`Failover`](super::Failover) served a response: put in the response's
/// extensions by [`Failover::tag_served_by`](super::Failover::tag_served_by).
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

/// A failover member that marks its responses with a [`ServedBy`] extension; made by
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

impl<S, Req> Service<Req> for TagServedBy<S>
where
    S: Service<Req>,
    S::Response: Extensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        TaggedFuture::new(self.inner.call(request), self.served_by.clone())
    }
}

pin_project! {
    /// Response future of [`TagServedBy`]: the member's future, with a
    /// [`ServedBy`] extension added to its response.
    pub struct TaggedFuture<F> {
        #[pin]
        future: F,
        served_by: Option<ServedBy>,
    }
}

impl<F> TaggedFuture<F> {
    fn new(future: F, served_by: ServedBy) -> Self {
        TaggedFuture {
            future,
            served_by: Some(served_by),
        }
    }
}

impl<F, T, E> Future for TaggedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: Extensions,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.future.poll(cx));
        if let (Ok(response), Some(served_by)) = (&mut result, this.served_by.take()) {
            response.extensions_mut().insert(served_by);
        }
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for TaggedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaggedFuture")
            .field("served_by", &self.served_by)
            .finish_non_exhaustive()
    }
}
