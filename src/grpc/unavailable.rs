//! [`UnavailableOnOpenLayer`]: a rejected call as a trailers-only `UNAVAILABLE` response.

use http::Response;

use super::GRPC_STATUS;
use crate::circuit_breaker::error::CircuitOpen;
use crate::http::retry_after;

/// Wraps a fail-fast breaker (or any service with boxed errors) so that a [`CircuitOpen`]
/// rejection becomes a trailers-only gRPC *response* with `grpc-status: 14` (`UNAVAILABLE`)
/// instead of an *error*. Other errors pass through.
///
/// A tonic client does not need it for the right code: tonic finds the `UNAVAILABLE` status a
/// `CircuitOpen` carries as its source and reports the same code, message and
/// `grpc-retry-pushback-ms` either way (see [`grpc`](super#errors-as-grpc-statuses)). What it
/// still changes:
///
/// - Layers outside it (retry policies, metrics, logging) see an `Ok` gRPC response rather
///   than an `Err`; and a server that is not tonic's — a gRPC proxy served by hyper directly,
///   which resets the HTTP/2 stream when its service fails — answers with the status.
/// - The client's status is parsed from the response, so it has no source and
///   [`circuit_open`](super::circuit_open) cannot tell the rejection from an `UNAVAILABLE`
///   sent by the server; without the layer it can.
///
/// Bulkhead rejections pass through as errors (tonic maps them to `RESOURCE_EXHAUSTED`).
///
/// The response carries the breaker's name in `grpc-message` and, when known, the time until
/// the circuit admits again in `grpc-retry-pushback-ms`, so a client retry policy (or
/// [`status_retry_after`](super::status_retry_after)) can honour it. The response body is
/// `B::default()` (empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnavailableOnOpenLayer {
    _priv: (),
}

impl UnavailableOnOpenLayer {
    /// The layer.
    pub fn new() -> Self {
        UnavailableOnOpenLayer { _priv: () }
    }
}

impl<S> tower_layer::Layer<S> for UnavailableOnOpenLayer {
    type Service = UnavailableOnOpen<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnavailableOnOpen { inner }
    }
}

/// The service made by [`UnavailableOnOpenLayer`].
#[derive(Debug, Clone)]
pub struct UnavailableOnOpen<S> {
    inner: S,
}

impl<S> UnavailableOnOpen<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        UnavailableOnOpen { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> tower_service::Service<Req> for UnavailableOnOpen<S>
where
    S: tower_service::Service<Req, Response = Response<B>>,
    S::Error: Into<crate::BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = crate::BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        future::ResponseFuture::new(self.inner.call(req))
    }
}

/// The future of [`UnavailableOnOpen`].
pub mod future {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http::Response;
    use pin_project_lite::pin_project;

    use crate::circuit_breaker::error::CircuitOpen;
    use crate::BoxError;

    pin_project! {
        /// Resolves to the inner response, or to a trailers-only `UNAVAILABLE` response when the
        /// inner service failed with [`CircuitOpen`].
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            inner: F,
        }
    }

    impl<F> ResponseFuture<F> {
        pub(super) fn new(inner: F) -> Self {
            ResponseFuture { inner }
        }
    }

    impl<F, B, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        E: Into<BoxError>,
        B: Default,
    {
        type Output = Result<Response<B>, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let result = std::task::ready!(self.project().inner.poll(cx));
            Poll::Ready(match result {
                Ok(res) => Ok(res),
                Err(e) => {
                    let e: BoxError = e.into();
                    match e.downcast_ref::<CircuitOpen>() {
                        Some(open) => Ok(super::unavailable_response(open)),
                        None => Err(e),
                    }
                }
            })
        }
    }
}

/// A trailers-only `UNAVAILABLE` response for `open`.
fn unavailable_response<B: Default>(open: &CircuitOpen) -> Response<B> {
    let mut res = Response::new(B::default());
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, http::HeaderValue::from_static("14"));
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(&open.to_string())) {
        headers.insert("grpc-message", message);
    }
    if let Some(d) = open.retry_after() {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        headers.insert(retry_after::GRPC_RETRY_PUSHBACK_MS, ms.into());
    }
    res
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub(super) fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
