//! How long a call keeps its bulkhead slot: until the response arrives (default), or until a
//! streamed response body ends.

use std::fmt;

use super::queue::Shared;
use crate::sync::Arc;

/// One slot of a bulkhead, held by a call. Dropping it frees the slot (and hands it to the
/// oldest waiter, if any).
///
/// Opaque: only the bulkhead makes one. A [`HoldPermit`] receives it with each response and
/// decides how long to keep it.
pub struct Permit {
    shared: Arc<Shared>,
}

impl Permit {
    /// Wraps a permit already taken from `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Permit { shared }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &self.shared.name)
            .finish()
    }
}

/// Decides how long an admitted call keeps its [`Permit`] once the inner service has
/// responded.
///
/// The bulkhead calls [`hold`](HoldPermit::hold) with the inner response and the call's permit.
/// An implementation either drops the permit (the slot is free as soon as the response is
/// there, as with [`ReleaseOnResponse`]) or moves it into the returned response, to be dropped
/// when the work the response stands for is done (as [`HoldUntilBodyEnd`] does with an HTTP
/// body). If the inner service fails, panics, or the response future is dropped, the permit is
/// released without calling `hold`.
pub trait HoldPermit<Res> {
    /// What the bulkhead's service returns in place of `Res`.
    type Response;

    /// Turns the inner response into the bulkhead's response, keeping or dropping `permit`.
    fn hold(&self, response: Res, permit: Permit) -> Self::Response;
}

/// The default [`HoldPermit`]: frees the slot when the response arrives and returns the
/// response unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseOnResponse;

impl<Res> HoldPermit<Res> for ReleaseOnResponse {
    type Response = Res;

    #[inline]
    fn hold(&self, response: Res, permit: Permit) -> Res {
        drop(permit);
        response
    }
}

#[cfg(feature = "http")]
pub use self::http_body_end::{HoldUntilBodyEnd, PermitBody};

#[cfg(feature = "http")]
mod http_body_end {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body, Frame, SizeHint};
    use pin_project_lite::pin_project;

    use super::{HoldPermit, Permit};

    /// A [`HoldPermit`] for HTTP responses (feature `http`): the call keeps its slot until the
    /// response body is done — it reports end of stream, yields its last frame, fails, or is
    /// dropped. Select it with
    /// [`Builder::hold_permit_until_body_end`](crate::bulkhead::Builder::hold_permit_until_body_end);
    /// use it when the expensive part of a call is streaming the body (an LLM's token stream).
    #[derive(Debug, Clone, Copy, Default)]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub struct HoldUntilBodyEnd;

    impl<B> HoldPermit<http::Response<B>> for HoldUntilBodyEnd
    where
        B: Body,
    {
        type Response = http::Response<PermitBody<B>>;

        fn hold(&self, response: http::Response<B>, permit: Permit) -> Self::Response {
            response.map(|inner| {
                let permit = (!inner.is_end_stream()).then_some(permit);
                PermitBody { inner, permit }
            })
        }
    }

    pin_project! {
        /// A response body that holds its call's bulkhead slot until the body is done (feature
        /// `http`): the slot is freed when the body reports end of stream, yields `None`, yields
        /// an error, or is dropped. Frames, size hints and end-of-stream pass through unchanged.
        #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
        pub struct PermitBody<B> {
            #[pin]
            inner: B,
            permit: Option<Permit>,
        }
    }

    impl<B> PermitBody<B> {
        /// Whether this body still holds its bulkhead slot.
        pub fn holds_permit(&self) -> bool {
            self.permit.is_some()
        }

        /// The wrapped body.
        pub fn get_ref(&self) -> &B {
            &self.inner
        }
    }

    impl<B: Body> Body for PermitBody<B> {
        type Data = B::Data;
        type Error = B::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            let mut this = self.project();
            let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
            let done = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(_)) => this.inner.is_end_stream(),
            };
            if done {
                *this.permit = None;
            }
            Poll::Ready(frame)
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    impl<B> std::fmt::Debug for PermitBody<B> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PermitBody")
                .field("permit", &self.permit)
                .finish_non_exhaustive()
        }
    }
}
