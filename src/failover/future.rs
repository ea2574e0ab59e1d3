//! Response futures of [`Failover`](super::Failover).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::routes::ServedBy;
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
    /// Response future of [`TagServedBy`](super::TagServedBy): the member's future, with a
    /// [`ServedBy`] extension added to its response.
    pub struct TaggedFuture<F> {
        #[pin]
        future: F,
        served_by: Option<ServedBy>,
    }
}

impl<F> TaggedFuture<F> {
    pub(super) fn new(future: F, served_by: ServedBy) -> Self {
        TaggedFuture {
            future,
            served_by: Some(served_by),
        }
    }
}

impl<F, B, E> Future for TaggedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

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
