//! gRPC awareness (feature `grpc`): `grpc-status` classification from response headers
//! (trailers-only responses) or trailers, and [`CircuitOpen`] as `UNAVAILABLE`.
//!
//! A gRPC call's status arrives at the *end* of the response: in the trailers after the last
//! message, or in the headers of a trailers-only response. [`GrpcClassifier`] is a
//! [`ClassifyResponse`] that records a trailers-only status at once and otherwise wraps the body
//! in an [`OutcomeBody`] that records when the trailers come — so a server-streaming RPC that
//! sends messages and then fails with `UNAVAILABLE` counts as a failure.
//!
//! Put a fail-fast breaker around a tonic `Channel` (see the mode table in
//! [`http`](crate::http#which-mode-where)):
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::grpc::{GrpcClassifier, UnavailableOnOpenLayer};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("health")
//!     .fail_fast()
//!     .response_classifier(GrpcClassifier::new())
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(UnavailableOnOpenLayer::new()) // CircuitOpen -> grpc-status UNAVAILABLE
//!     .layer(breaker)
//!     .service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(svc);
//! # let _ = &mut client;
//! # Ok(()) }
//! ```
//!
//! On its own, a rejected RPC fails with a `tonic::Status` of code `UNKNOWN` whose source is the
//! [`CircuitOpen`] (tonic boxes every transport error that way); [`circuit_open`] finds it. Put
//! [`UnavailableOnOpenLayer`] outside the breaker and the client sees a proper `UNAVAILABLE`
//! status instead, with the time until the circuit admits again as `grpc-retry-pushback-ms`.
//! [`circuit_open_to_status`] (or `tonic::Status::from(open)`) makes that status for a server
//! handler that calls an upstream through a breaker.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use http_body::Body;

use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::{Classify, ClassifyResponse, DefaultClassifier, Outcome, Recorder};
use crate::http::retry_after;
use crate::http::{ClassifyEos, OutcomeBody};

/// `grpc-status`: the status code of a gRPC call, in trailers (or trailers-only headers).
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The gRPC codes that count as failures by default: `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4),
/// `RESOURCE_EXHAUSTED` (8), `INTERNAL` (13), `UNAVAILABLE` (14) and `DATA_LOSS` (15).
pub const DEFAULT_FAILURE_CODES: [i32; 6] = [2, 4, 8, 13, 14, 15];

const UNKNOWN: i32 = 2;

/// Classifies gRPC responses by `grpc-status`, from headers or trailers.
///
/// | response | outcome |
/// | --- | --- |
/// | `grpc-status: 0` (OK) | [`Success`](Outcome::Success) |
/// | a [failure code](GrpcClassifier::failure_codes) (default [`DEFAULT_FAILURE_CODES`]) with a back-off hint (`grpc-retry-pushback-ms`, see [`retry_after::parse`]) | [`Throttled { retry_after: Some(hint) }`](Outcome::Throttled) |
/// | a failure code | [`Failure`](Outcome::Failure) |
/// | any other code (`NOT_FOUND`, `INVALID_ARGUMENT`, `CANCELLED`, ...) | [`Ignored`](Outcome::Ignored): the server answered |
/// | an unparseable `grpc-status` | as `UNKNOWN` |
/// | no status at the end of the stream (no trailers, or trailers without `grpc-status`) | [`missing_status`](GrpcClassifier::missing_status), default [`Failure`](Outcome::Failure) |
/// | an HTTP status other than 200 without `grpc-status` | the code the gRPC spec maps it to (429, 502, 503, 504 → `UNAVAILABLE`, 404 → `UNIMPLEMENTED`, ...) |
/// | a body error (a stream broken half-way) | [`Failure`](Outcome::Failure) |
/// | a body dropped before its end | nothing (neutral) |
/// | `Err(_)` from the inner service | [`DefaultClassifier`] |
///
/// As a [`ClassifyResponse`] (pass it to
/// [`Builder::response_classifier`](crate::circuit_breaker::Builder::response_classifier)) the
/// response becomes `http::Response<OutcomeBody<B, GrpcClassifier>>`. As a plain
/// [`Classify`] (through [`Builder::classifier`](crate::circuit_breaker::Builder::classifier))
/// it sees only the response head: trailers-only errors and HTTP errors count, but a status in
/// the trailers does not — prefer the `ClassifyResponse`. As with
/// [`EndOfStream`](crate::http::EndOfStream), a streaming call lasts until its trailers, which
/// matters for `probe_timeout` and `slow_calls`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    failures: u32,
    missing_status: Outcome,
}

impl GrpcClassifier {
    /// The defaults in the table above.
    pub fn new() -> Self {
        GrpcClassifier {
            failures: codes(DEFAULT_FAILURE_CODES),
            missing_status: Outcome::Failure,
        }
    }

    /// Replaces the codes that count as failures. Accepts `i32` codes or `tonic::Code`s; codes
    /// outside `0..=31` are skipped, and `OK` (0) is always a success.
    pub fn failure_codes<T: Into<i32>>(mut self, codes_: impl IntoIterator<Item = T>) -> Self {
        self.failures = codes(codes_.into_iter().map(Into::into));
        self
    }

    /// What a stream that ends without a `grpc-status` means (default
    /// [`Failure`](Outcome::Failure): the server or a proxy cut it short).
    pub fn missing_status(mut self, outcome: Outcome) -> Self {
        self.missing_status = outcome;
        self
    }

    /// Classifies a gRPC status `code`, reading a back-off hint from `metadata` (the trailers or
    /// trailers-only headers it came in).
    pub fn classify_code(&self, code: i32, metadata: &HeaderMap) -> Outcome {
        if code == 0 {
            return Outcome::Success;
        }
        if !(0..32).contains(&code) || self.failures & (1 << code) == 0 {
            return Outcome::Ignored;
        }
        match retry_after::parse(metadata) {
            Some(hint) => Outcome::Throttled {
                retry_after: Some(hint),
            },
            None => Outcome::Failure,
        }
    }

    /// Classifies a response head: `Some` when it decides the call (a trailers-only response,
    /// or an HTTP status other than 200), `None` when the verdict is in the trailers.
    pub fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Option<Outcome> {
        if let Some(value) = headers.get(GRPC_STATUS) {
            return Some(self.classify_code(parse_code(value), headers));
        }
        if status != StatusCode::OK {
            return Some(self.classify_code(http_status_to_code(status), headers));
        }
        None
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClassifier")
            .field(
                "failure_codes",
                &(0..32)
                    .filter(|c| self.failures & (1 << c) != 0)
                    .collect::<Vec<_>>(),
            )
            .field("missing_status", &self.missing_status)
            .finish()
    }
}

impl ClassifyEos for GrpcClassifier {
    fn classify_eos(&self, trailers: Option<&HeaderMap>) -> Outcome {
        match trailers.and_then(|t| t.get(GRPC_STATUS).map(|v| (t, v))) {
            Some((trailers, value)) => self.classify_code(parse_code(value), trailers),
            None => self.missing_status,
        }
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => self
                .classify_head(res.status(), res.headers())
                .unwrap_or(Outcome::Success),
            Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
        }
    }
}

impl<B: Body, E: 'static> ClassifyResponse<Response<B>, E> for GrpcClassifier {
    type Response = Response<OutcomeBody<B, GrpcClassifier>>;

    fn classify_response(
        &self,
        result: Result<Response<B>, E>,
        recorder: Recorder,
    ) -> Result<Self::Response, E> {
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                recorder.record(DefaultClassifier.classify(Err::<&(), _>(&e)));
                return Err(e);
            }
        };
        let this = *self;
        Ok(match self.classify_head(res.status(), res.headers()) {
            Some(outcome) => {
                recorder.record(outcome);
                res.map(|body| OutcomeBody::new(body, None, this))
            }
            None => res.map(|body| OutcomeBody::deferred(body, recorder, this)),
        })
    }
}

/// `UNAVAILABLE`, with the breaker's name in the message and, when known, the time until the
/// circuit admits again as `grpc-retry-pushback-ms` metadata.
pub fn circuit_open_to_status(open: &CircuitOpen) -> tonic::Status {
    let mut status = tonic::Status::unavailable(open.to_string());
    if let Some(d) = open.retry_after() {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", ms.into());
    }
    status
}

impl From<CircuitOpen> for tonic::Status {
    fn from(open: CircuitOpen) -> Self {
        circuit_open_to_status(&open)
    }
}

/// Finds the [`CircuitOpen`] behind a client-side `tonic::Status` (tonic reports a breaker
/// rejection as `UNKNOWN` with the error as its source), searching the source chain.
pub fn circuit_open(status: &tonic::Status) -> Option<&CircuitOpen> {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(open) = err.downcast_ref::<CircuitOpen>() {
            return Some(open);
        }
        source = err.source();
    }
    None
}

/// Turns an error from a breaker-wrapped service into a `tonic::Status`: a [`CircuitOpen`]
/// becomes `UNAVAILABLE` (see [`circuit_open_to_status`]), anything else goes through
/// `tonic::Status::from_error`.
pub fn status_from_error(err: crate::BoxError) -> tonic::Status {
    match err.downcast::<CircuitOpen>() {
        Ok(open) => circuit_open_to_status(&open),
        Err(err) => tonic::Status::from_error(err),
    }
}

/// The back-off hint a `tonic::Status` carries in `grpc-retry-pushback-ms` (or `retry-after`)
/// metadata.
pub fn status_retry_after(status: &tonic::Status) -> Option<Duration> {
    retry_after::parse(status.metadata().as_ref())
}

/// Wraps a fail-fast breaker (or any service with boxed errors) so that a [`CircuitOpen`]
/// rejection becomes a trailers-only gRPC response with `grpc-status: 14` (`UNAVAILABLE`),
/// instead of an error tonic would report as `UNKNOWN`. Other errors pass through.
///
/// The response carries the breaker's name in `grpc-message` and, when known, the time until
/// the circuit admits again in `grpc-retry-pushback-ms`, so a client retry policy (or
/// [`status_retry_after`]) can honour it. The response body is `B::default()` (empty).
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
fn percent_encode(text: &str) -> String {
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

fn codes(iter: impl IntoIterator<Item = i32>) -> u32 {
    iter.into_iter()
        .filter(|c| (1..32).contains(c))
        .fold(0, |acc, c| acc | (1 << c))
}

fn parse_code(value: &http::HeaderValue) -> i32 {
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(UNKNOWN)
}

/// The gRPC spec's mapping of HTTP statuses to codes, for responses without `grpc-status`.
fn http_status_to_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::{CircuitBreakerLayer, State};
    use crate::BoxError;
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use tower::{service_fn, Service, ServiceExt};
    use tower_layer::Layer;

    fn meta(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn types_are_send_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<GrpcClassifier>();
        send_sync::<OutcomeBody<Empty<Bytes>, GrpcClassifier>>();
    }

    #[test]
    fn codes_by_default() {
        let c = GrpcClassifier::new();
        let none = HeaderMap::new();
        assert_eq!(c.classify_code(0, &none), Outcome::Success);
        for code in [2, 4, 8, 13, 14, 15] {
            assert_eq!(c.classify_code(code, &none), Outcome::Failure, "{code}");
        }
        for code in [1, 3, 5, 6, 7, 9, 10, 11, 12, 16, 17, -1, 99] {
            assert_eq!(c.classify_code(code, &none), Outcome::Ignored, "{code}");
        }
        assert_eq!(
            c.classify_code(14, &meta(&[("grpc-retry-pushback-ms", "1500")])),
            Outcome::Throttled {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            c.classify_code(14, &meta(&[("grpc-retry-pushback-ms", "-1")])),
            Outcome::Failure
        );
    }

    #[test]
    fn configurable_codes() {
        let c = GrpcClassifier::new()
            .failure_codes([tonic::Code::Unavailable, tonic::Code::NotFound])
            .missing_status(Outcome::Ignored);
        let none = HeaderMap::new();
        assert_eq!(c.classify_code(5, &none), Outcome::Failure);
        assert_eq!(c.classify_code(14, &none), Outcome::Failure);
        assert_eq!(c.classify_code(13, &none), Outcome::Ignored);
        assert_eq!(c.classify_eos(None), Outcome::Ignored);
        assert!(format!("{c:?}").contains("[5, 14]"));
        let only_ok = GrpcClassifier::new().failure_codes([0i32, 40, -3]);
        assert_eq!(only_ok.classify_code(0, &none), Outcome::Success);
        assert_eq!(only_ok.classify_code(14, &none), Outcome::Ignored);
    }

    #[test]
    fn heads_and_trailers() {
        let c = GrpcClassifier::new();
        assert_eq!(c.classify_head(StatusCode::OK, &HeaderMap::new()), None);
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "0")])),
            Some(Outcome::Success)
        );
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "14")])),
            Some(Outcome::Failure)
        );
        assert_eq!(
            c.classify_head(StatusCode::OK, &meta(&[("grpc-status", "five")])),
            Some(Outcome::Failure)
        );
        assert_eq!(
            c.classify_head(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Some(Outcome::Ignored)
        );
        assert_eq!(
            c.classify_head(
                StatusCode::SERVICE_UNAVAILABLE,
                &meta(&[("retry-after", "3")])
            ),
            Some(Outcome::Throttled {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        assert_eq!(c.classify_eos(None), Outcome::Failure);
        assert_eq!(c.classify_eos(Some(&HeaderMap::new())), Outcome::Failure);
        assert_eq!(
            c.classify_eos(Some(&meta(&[("grpc-status", "0")]))),
            Outcome::Success
        );
        assert_eq!(
            c.classify_eos(Some(&meta(&[("grpc-status", "5")]))),
            Outcome::Ignored
        );
    }

    #[test]
    fn circuit_open_conversions() {
        let open = CircuitOpen::new("up".into(), Some(Duration::from_millis(2500)));
        let status = tonic::Status::from(open.clone());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("up"));
        assert_eq!(
            status_retry_after(&status),
            Some(Duration::from_millis(2500))
        );

        let boxed: BoxError = Box::new(open);
        let wrapped = tonic::Status::from_error(boxed);
        assert_eq!(wrapped.code(), tonic::Code::Unknown);
        assert_eq!(circuit_open(&wrapped).unwrap().name(), "up");

        let boxed: BoxError = Box::new(CircuitOpen::new("up".into(), None));
        let status = status_from_error(boxed);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status_retry_after(&status), None);
        assert!(circuit_open(&tonic::Status::internal("x")).is_none());
        assert_eq!(
            status_from_error("boom".into()).code(),
            tonic::Code::Unknown
        );
    }

    type Frames = Result<Frame<Bytes>, BoxError>;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("circuit `a b` 100%"), "circuit `a b` 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[tokio::test]
    async fn unavailable_on_open_turns_rejections_into_responses() {
        let layer = CircuitBreakerLayer::builder()
            .name("ünïcode")
            .consecutive_failures(1)
            .fail_fast()
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc =
            UnavailableOnOpenLayer::new().layer(layer.layer(service_fn(|fail: bool| async move {
                if fail {
                    Err::<Response<Empty<Bytes>>, BoxError>("connection refused".into())
                } else {
                    Ok(Response::new(Empty::new()))
                }
            })));
        // Other errors pass through.
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
        assert_eq!(h.state(), State::Open);
        // A rejection becomes a trailers-only UNAVAILABLE response.
        let res = svc.ready().await.unwrap().call(false).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert!(res.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("circuit `%C3%BCn%C3%AFcode` is open"));
        let pushback = retry_after::parse(res.headers()).unwrap();
        assert!(pushback > Duration::from_secs(59) && pushback <= Duration::from_secs(60));
        let status = tonic::Status::from_header_map(res.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().starts_with("circuit `ünïcode` is open"));
        assert_eq!(h.stats().rejected_calls, 1);
    }

    #[tokio::test]
    async fn streamed_messages_then_error_trailers() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|code: Option<&'static str>| async move {
            let mut frames: Vec<Frames> =
                vec![Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1])))];
            if let Some(code) = code {
                let mut trailers = HeaderMap::new();
                trailers.insert(GRPC_STATUS, code.parse().unwrap());
                frames.push(Ok(Frame::trailers(trailers)));
            }
            let body = StreamBody::new(futures::stream::iter(frames));
            Ok::<_, BoxError>(Response::new(body))
        }));
        let stats = |h: &crate::circuit_breaker::Handle| {
            let s = h.stats();
            (s.successful_calls, s.failed_calls, s.ignored_calls)
        };

        let res = svc.ready().await.unwrap().call(Some("0")).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 0, 0));

        let res = svc.ready().await.unwrap().call(Some("5")).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 0, 1));

        let res = svc.ready().await.unwrap().call(Some("14")).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        assert_eq!(stats(&h), (1, 0, 1)); // the message alone decides nothing
        assert!(body.frame().await.unwrap().unwrap().is_trailers());
        assert_eq!(stats(&h), (1, 1, 1));

        // A stream that ends without any status: cut short.
        let res = svc.ready().await.unwrap().call(None).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(stats(&h), (1, 2, 1));
        assert_eq!(h.state(), State::Open);
    }

    #[tokio::test]
    async fn trailers_only_is_decided_from_the_head() {
        let layer = CircuitBreakerLayer::builder()
            .response_classifier(GrpcClassifier::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|_: ()| async {
            let res = Response::builder()
                .header("grpc-status", "14")
                .body(Empty::<Bytes>::new())
                .unwrap();
            Ok::<_, BoxError>(res)
        }));
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert!(!res.body().is_pending());
        assert_eq!(h.stats().failed_calls, 1);
        drop(res);
        assert_eq!(h.stats().failed_calls, 1);
    }
}
