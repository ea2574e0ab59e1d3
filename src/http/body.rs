//! Recording a call's outcome when its response body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::classify::HttpClassifier;
use crate::circuit_breaker::{Classify, ClassifyResponse, Outcome, Recorder};

/// Decides what a response body that ended cleanly means, from its trailers (if it had any).
///
/// Any `Fn(Option<&HeaderMap>) -> Outcome` is one. A body that fails (yields an error) is always
/// a [`Failure`](Outcome::Failure); a body dropped before its end records nothing.
pub trait ClassifyEos {
    /// Classifies the end of a body: `trailers` is `Some` when it ended with trailers.
    fn classify_eos(&self, trailers: Option<&HeaderMap>) -> Outcome;
}

impl<F> ClassifyEos for F
where
    F: Fn(Option<&HeaderMap>) -> Outcome,
{
    fn classify_eos(&self, trailers: Option<&HeaderMap>) -> Outcome {
        self(trailers)
    }
}

/// The plain-HTTP end of stream: a body that ends cleanly, with or without trailers, is a
/// [`Success`](Outcome::Success).
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanEnd;

impl ClassifyEos for CleanEnd {
    fn classify_eos(&self, _trailers: Option<&HeaderMap>) -> Outcome {
        Outcome::Success
    }
}

pin_project! {
    /// A response body that records its call's outcome when it ends.
    ///
    /// Made by [`EndOfStream`] (and, with feature `grpc`, by
    /// [`GrpcClassifier`](crate::grpc::GrpcClassifier)). It yields the inner body's frames
    /// unchanged and records, once:
    ///
    /// - when the body ends — with trailers or not, or when
    ///   [`is_end_stream`](Body::is_end_stream) turns true after a frame — what `T` says
    ///   (see [`ClassifyEos`]);
    /// - when the body yields an error: [`Failure`](Outcome::Failure) (a stream broken half-way);
    /// - when it is dropped before its end: nothing (the call is neutral, like a dropped
    ///   response future, and a half-open probe permit is given back) — unless the thread is
    ///   panicking, which records a failure.
    ///
    /// A body whose verdict was already recorded (say, from the response's status) just passes
    /// its frames through.
    pub struct OutcomeBody<B, T = CleanEnd> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
        eos: T,
    }
}

impl<B, T> OutcomeBody<B, T> {
    /// Wraps `inner`; `recorder` (if any) records when the body ends, as `eos` decides.
    pub fn new(inner: B, recorder: Option<Recorder>, eos: T) -> Self {
        OutcomeBody {
            inner,
            recorder,
            eos,
        }
    }

    /// Whether the outcome is still to be recorded.
    pub fn is_pending(&self) -> bool {
        self.recorder.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body, T: ClassifyEos> OutcomeBody<B, T> {
    /// Wraps `inner`, recording at once if it is already at its end.
    pub(crate) fn deferred(inner: B, recorder: Recorder, eos: T) -> Self {
        if inner.is_end_stream() {
            recorder.record(eos.classify_eos(None));
            OutcomeBody::new(inner, None, eos)
        } else {
            OutcomeBody::new(inner, Some(recorder), eos)
        }
    }
}

impl<B, T> Body for OutcomeBody<B, T>
where
    B: Body,
    T: ClassifyEos,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(recorder) = this.recorder.take() else {
            return polled;
        };
        match &polled {
            Poll::Pending => *this.recorder = Some(recorder),
            Poll::Ready(None) => recorder.record(this.eos.classify_eos(None)),
            Poll::Ready(Some(Err(_))) => {
                trace_debug!("response body failed; recording a failure");
                recorder.record(Outcome::Failure);
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    recorder.record(this.eos.classify_eos(Some(trailers)));
                } else if this.inner.is_end_stream() {
                    recorder.record(this.eos.classify_eos(None));
                } else {
                    *this.recorder = Some(recorder);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default, T: Default> Default for OutcomeBody<B, T> {
    fn default() -> Self {
        OutcomeBody::new(B::default(), None, T::default())
    }
}

impl<B: fmt::Debug, T: fmt::Debug> fmt::Debug for OutcomeBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeBody")
            .field("inner", &self.inner)
            .field("pending", &self.recorder.is_some())
            .field("eos", &self.eos)
            .finish()
    }
}

/// A [`ClassifyResponse`] that decides from the response head when it can, and otherwise at
/// the end of the response body.
///
/// The head classifier `C` (default [`HttpClassifier`]) sees every result first. If it says
/// anything but [`Success`](Outcome::Success) — a 5xx, a throttle, a transport error — that is
/// recorded at once. A successful head defers the verdict to the body: the response comes back
/// as `http::Response<OutcomeBody<B, T>>`, which records when the body ends (see
/// [`OutcomeBody`]): an SSE or chunked stream that breaks half-way counts as a failure, one read
/// to its end as a success, one dropped early as nothing.
///
/// The call lasts until the body ends, so for long-lived streams mind the rules that time a
/// call: a half-open probe still streaming after
/// [`probe_timeout`](crate::circuit_breaker::Builder::probe_timeout) reopens the circuit, and
/// [`slow_calls`](crate::circuit_breaker::Builder::slow_calls) measures the whole stream. Raise
/// the probe timeout above your streams' length, or judge such streams from the head alone
/// ([`HttpClassifier`] through `Builder::classifier`).
///
/// Pass it to [`Builder::response_classifier`](crate::circuit_breaker::Builder::response_classifier):
///
/// ```
/// use http_body_util::{BodyExt, Full};
/// use tower::{service_fn, Service, ServiceExt};
/// use tower_layer::Layer;
/// use tower_breaker::circuit_breaker::CircuitBreakerLayer;
/// use tower_breaker::http::EndOfStream;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::builder()
///     .response_classifier(EndOfStream::new())
///     .build()
///     .unwrap();
/// let handle = layer.handle();
/// let mut svc = layer.layer(service_fn(|_: ()| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
/// }));
///
/// let res = svc.ready().await.unwrap().call(()).await.unwrap();
/// assert_eq!(handle.stats().total_calls, 0); // not decided until the body ends
/// let body = res.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, "hi");
/// assert_eq!(handle.stats().successful_calls, 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EndOfStream<C = HttpClassifier, T = CleanEnd> {
    head: C,
    eos: T,
}

impl EndOfStream {
    /// An [`HttpClassifier`] with its defaults for the head; a body that ends cleanly is a
    /// success.
    pub fn new() -> Self {
        EndOfStream {
            head: HttpClassifier::new(),
            eos: CleanEnd,
        }
    }
}

impl<C> EndOfStream<C> {
    /// Uses `head` to classify the response head (and errors).
    pub fn with_head(head: C) -> Self {
        EndOfStream {
            head,
            eos: CleanEnd,
        }
    }
}

impl<C, T> EndOfStream<C, T> {
    /// Uses `eos` to classify a body that ends cleanly (say, from its trailers).
    pub fn eos<T2>(self, eos: T2) -> EndOfStream<C, T2> {
        EndOfStream {
            head: self.head,
            eos,
        }
    }
}

impl<C, T, B, E> ClassifyResponse<Response<B>, E> for EndOfStream<C, T>
where
    C: Classify<Response<B>, E>,
    T: ClassifyEos + Clone,
    B: Body,
{
    type Response = Response<OutcomeBody<B, T>>;

    fn classify_response(
        &self,
        result: Result<Response<B>, E>,
        recorder: Recorder,
    ) -> Result<Self::Response, E> {
        let outcome = self.head.classify(result.as_ref());
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                recorder.record(outcome);
                return Err(e);
            }
        };
        let eos = self.eos.clone();
        Ok(if outcome == Outcome::Success {
            res.map(|body| OutcomeBody::deferred(body, recorder, eos))
        } else {
            recorder.record(outcome);
            res.map(|body| OutcomeBody::new(body, None, eos))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::{CircuitBreakerLayer, Handle, State};
    use crate::BoxError;
    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use tokio::sync::mpsc;
    use tower::{service_fn, Service, ServiceExt};
    use tower_layer::Layer;

    type Frames = Result<Frame<Bytes>, BoxError>;

    #[test]
    fn types_are_send_sync_and_clone() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn clone<T: Clone>() {}
        send_sync::<HttpClassifier>();
        send_sync::<EndOfStream>();
        send_sync::<OutcomeBody<Full<Bytes>>>();
        send_sync::<OutcomeBody<Empty<Bytes>, CleanEnd>>();
        clone::<HttpClassifier>();
        clone::<EndOfStream>();
    }

    /// A breaker around a service that hands out the bodies it is given, one per call.
    fn breaker<B>(
        bodies: Vec<Response<B>>,
    ) -> (
        impl Service<(), Response = Response<OutcomeBody<B>>, Error = BoxError>,
        Handle,
    )
    where
        B: Body + Send + 'static,
    {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .response_classifier(EndOfStream::new())
            .build()
            .unwrap();
        let handle = layer.handle();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(bodies.into_iter()));
        let svc = layer.layer(service_fn(move |_: ()| {
            let next = bodies.lock().unwrap().next().unwrap();
            async move { Ok::<_, BoxError>(next) }
        }));
        (svc, handle)
    }

    fn counts(h: &Handle) -> (u64, u64, u64) {
        let s = h.stats();
        (s.successful_calls, s.failed_calls, s.ignored_calls)
    }

    #[tokio::test]
    async fn full_body_read_to_end_is_a_success() {
        let (mut svc, h) = breaker(vec![Response::new(Full::new(Bytes::from("abc")))]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert!(res.body().is_pending());
        assert_eq!(counts(&h), (0, 0, 0));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abc");
        assert_eq!(counts(&h), (1, 0, 0));
    }

    #[tokio::test]
    async fn decided_when_is_end_stream_turns_true() {
        // A consumer like hyper's server stops polling once `is_end_stream` is true, so the
        // outcome must be recorded with the last data frame, not only at `None`.
        let (mut svc, h) = breaker(vec![Response::new(Full::new(Bytes::from("abc")))]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        let mut body = res.into_body();
        assert!(!body.is_end_stream());
        body.frame().await.unwrap().unwrap();
        assert!(body.is_end_stream());
        assert!(!body.is_pending());
        assert_eq!(counts(&h), (1, 0, 0));
        drop(body);
        assert_eq!(counts(&h), (1, 0, 0));
    }

    #[tokio::test]
    async fn empty_body_is_decided_at_once() {
        let (mut svc, h) = breaker(vec![Response::new(Empty::<Bytes>::new())]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert!(!res.body().is_pending());
        assert_eq!(counts(&h), (1, 0, 0));
        drop(res);
        assert_eq!(counts(&h), (1, 0, 0));
    }

    #[tokio::test]
    async fn failing_status_is_decided_from_the_head() {
        let res = Response::builder()
            .status(502)
            .body(Full::new(Bytes::from("bad gateway")))
            .unwrap();
        let (mut svc, h) = breaker(vec![res]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert!(!res.body().is_pending());
        assert_eq!(counts(&h), (0, 1, 0));
        assert_eq!(h.state(), State::Open);
        // The body still reads through.
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "bad gateway");
        assert_eq!(counts(&h), (0, 1, 0));
    }

    #[tokio::test]
    async fn sse_stream_breaking_half_way_is_a_failure() {
        let (tx, rx) = mpsc::channel::<Frames>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        let (mut svc, h) = breaker(vec![Response::new(body)]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        let mut body = res.into_body();

        tx.send(Ok(Frame::data(Bytes::from("data: 1\n\n"))))
            .await
            .unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: 1\n\n");
        assert_eq!(counts(&h), (0, 0, 0));

        tx.send(Err("connection reset".into())).await.unwrap();
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(counts(&h), (0, 1, 0));
        assert_eq!(h.state(), State::Open);

        // Nothing more is recorded, whatever the body does next.
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(counts(&h), (0, 1, 0));
    }

    #[tokio::test]
    async fn sse_stream_ending_cleanly_is_a_success() {
        let (tx, rx) = mpsc::channel::<Frames>(4);
        let (mut svc, h) = breaker(vec![Response::new(StreamBody::new(tokio_stream_from(rx)))]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from("a")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from("b")))).await.unwrap();
        drop(tx);
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "ab");
        assert_eq!(counts(&h), (1, 0, 0));
    }

    #[tokio::test]
    async fn dropped_body_is_neutral() {
        let (tx, rx) = mpsc::channel::<Frames>(4);
        let (mut svc, h) = breaker(vec![Response::new(StreamBody::new(tokio_stream_from(rx)))]);
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        let mut body = res.into_body();
        tx.send(Ok(Frame::data(Bytes::from("a")))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let s = h.stats();
        assert_eq!(
            (s.total_calls, s.failed_calls, s.successful_calls),
            (0, 0, 0)
        );
        assert_eq!(h.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_body_gives_its_permit_back() {
        let layer = CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1)
            .fail_fast()
            .response_classifier(EndOfStream::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut svc = layer.layer(service_fn(move |_: ()| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let status = if n == 0 { 503 } else { 200 };
                let res = Response::builder()
                    .status(status)
                    .header("retry-after", "1")
                    .body(Full::new(Bytes::from("x")))
                    .unwrap();
                Ok::<_, BoxError>(res)
            }
        }));
        // A 503 with a hint opens the circuit for 1 s without counting a failure.
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(h.state(), State::Open);
        assert_eq!(h.stats().failed_calls, 0);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(h.state(), State::HalfOpen);

        // The only probe's body is dropped unread: neutral, and the permit comes back.
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        drop(res);
        assert_eq!(h.stats().successful_calls, 0);
        assert_eq!(h.state(), State::HalfOpen);

        // So the next call is admitted as a probe, and reading its body closes the circuit.
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(h.stats().successful_calls, 1);
        assert_eq!(h.state(), State::Closed);
    }

    #[tokio::test]
    async fn trailers_reach_the_eos_classifier() {
        let eos = |trailers: Option<&HeaderMap>| match trailers {
            Some(t) if t.get("x-status").is_some_and(|v| v == "bad") => Outcome::Failure,
            _ => Outcome::Success,
        };
        let layer = CircuitBreakerLayer::builder()
            .response_classifier(EndOfStream::new().eos(eos))
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|bad: bool| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert(
                "x-status",
                if bad { "bad" } else { "good" }.parse().unwrap(),
            );
            let frames: Vec<Frames> = vec![
                Ok(Frame::data(Bytes::from("x"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures::stream::iter(frames));
            Ok::<_, BoxError>(Response::new(body))
        }));
        for bad in [false, true] {
            let res = svc.ready().await.unwrap().call(bad).await.unwrap();
            let collected = res.into_body().collect().await.unwrap();
            assert!(collected.trailers().is_some());
        }
        assert_eq!(counts(&h), (1, 1, 0));
    }

    #[tokio::test]
    async fn transport_errors_are_recorded_at_once() {
        let layer = CircuitBreakerLayer::builder()
            .response_classifier(EndOfStream::new())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(service_fn(|_: ()| async {
            Err::<Response<Empty<Bytes>>, BoxError>("refused".into())
        }));
        assert!(svc.ready().await.unwrap().call(()).await.is_err());
        assert_eq!(counts(&h), (0, 1, 0));
    }

    fn tokio_stream_from(
        rx: mpsc::Receiver<Frames>,
    ) -> impl futures::Stream<Item = Frames> + Send + Unpin {
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }
}
