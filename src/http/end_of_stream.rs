//! Deciding an HTTP call from its response head, or from its body as it streams.

use std::time::Duration;

use http::Response;
use http_body::Body;

use super::body::{CleanEnd, EndClassifier, OutcomeBody};
use super::classify::HttpClassifier;
use super::events::StreamEvents;
use super::scan::Scanner;
use crate::circuit_breaker::{Classify, Outcome, Recorder, ResponseClassifier};

/// A [`ResponseClassifier`] that decides from the response head when it can, and otherwise from
/// the response body: its events, or how it ends.
///
/// The head classifier `C` (default [`HttpClassifier`]) sees every result first. If it says
/// anything but [`Success`](Outcome::Success) — a 5xx, a throttle, a transport error — that is
/// recorded at once. A successful head defers the verdict to the body: the response comes back
/// as `http::Response<OutcomeBody<B, T>>` (or, with feature `reqwest`, as the same
/// `reqwest::Response`), which records the first of (see [`OutcomeBody`]):
///
/// - an event that decides, for a streamed body ([`StreamEvents`]; by default an SSE stream's
///   `data: [DONE]`, `event: message_stop` or `event: response.completed` is a success as soon
///   as it has been read, and an `event: error` a throttle or failure) — so a client that stops
///   reading at `[DONE]` and drops the body, as LLM SDKs do, still counts a success;
/// - the body's end: a success (or what `T` says of its trailers);
/// - a body error: a failure (a stream cut half-way);
/// - no frame for longer than the [idle timeout](Self::idle_timeout), if set: a failure, and
///   the body ends with an [`IdleTimeout`](super::error::IdleTimeout) error.
///
/// A body dropped before any of these records nothing: the caller cancelled.
///
/// # Long streams
///
/// A half-open probe's [`probe_timeout`](crate::circuit_breaker::Builder::probe_timeout) covers
/// the time to the response head only; after the head, the body decides, however long it
/// streams. A stream that stalls is bounded only by the idle timeout, so set one when a stalled
/// stream must count against the dependency (and must not hold a probe permit). The
/// [`slow_calls`](crate::circuit_breaker::Builder::slow_calls) rule measures the call until its
/// outcome is recorded, so it sees a whole stream: leave it off for streamed calls, or judge them
/// from the head alone ([`HttpClassifier`] through `Builder::classifier`).
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
///     let body = Full::new(bytes::Bytes::from("data: {\"text\":\"hi\"}\n\ndata: [DONE]\n\n"));
///     let res = http::Response::builder()
///         .header("content-type", "text/event-stream")
///         .body(body)
///         .unwrap();
///     Ok::<_, std::convert::Infallible>(res)
/// }));
///
/// let res = svc.ready().await.unwrap().call(()).await.unwrap();
/// assert_eq!(handle.stats().total_calls, 0); // not decided until the body says
/// let mut body = res.into_body();
/// let frame = body.frame().await.unwrap().unwrap();
/// assert!(frame.data_ref().unwrap().ends_with(b"data: [DONE]\n\n"));
/// drop(body); // stop reading at [DONE], as SDKs do
/// assert_eq!(handle.stats().successful_calls, 1);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EndOfStream<C = HttpClassifier, T = CleanEnd> {
    pub(super) head: C,
    pub(super) eos: T,
    events: StreamEvents,
    pub(super) idle: Option<Duration>,
}

impl EndOfStream {
    /// An [`HttpClassifier`] with its defaults for the head, [`StreamEvents::new`] for streamed
    /// bodies, and a body that ends cleanly is a success.
    pub fn new() -> Self {
        EndOfStream::with_head(HttpClassifier::new())
    }
}

impl<C> EndOfStream<C> {
    /// Uses `head` to classify the response head (and errors).
    pub fn with_head(head: C) -> Self {
        EndOfStream {
            head,
            eos: CleanEnd,
            events: StreamEvents::new(),
            idle: None,
        }
    }
}

impl<C, T> EndOfStream<C, T> {
    /// Uses `eos` to classify a body that ends cleanly (say, from its trailers).
    pub fn eos<T2>(self, eos: T2) -> EndOfStream<C, T2> {
        EndOfStream {
            head: self.head,
            eos,
            events: self.events,
            idle: self.idle,
        }
    }

    /// Replaces how streamed bodies' events are read (default [`StreamEvents::new`];
    /// [`StreamEvents::none`] scans nothing).
    pub fn events(mut self, events: StreamEvents) -> Self {
        self.events = events;
        self
    }

    /// Ends a body that waits longer than `idle` for its next frame: it yields an
    /// [`IdleTimeout`](super::error::IdleTimeout) error, and the call counts as a failure (if
    /// nothing decided it before). Off by default.
    ///
    /// Only time spent waiting counts — from the first poll that finds no frame after the last
    /// one — so a caller that reads slowly never trips it. Runs on tokio's clock.
    /// `Duration::ZERO` turns it off.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = (!idle.is_zero()).then_some(idle);
        self
    }

    /// Classifies the head: an error, or a head that is not a success, is recorded at once; a
    /// successful head leaves the verdict (the recorder) to the body.
    pub(super) fn judge_head<Res, E>(
        &self,
        result: Result<Res, E>,
        recorder: Recorder,
    ) -> Result<(Res, Option<Recorder>), E>
    where
        C: Classify<Res, E>,
    {
        let outcome = self.head.classify(result.as_ref());
        match result {
            Ok(res) if outcome == Outcome::Success => Ok((res, Some(recorder))),
            other => {
                recorder.record(outcome);
                other.map(|res| (res, None))
            }
        }
    }

    /// Wraps a body: it records with `recorder` (if the head left the verdict to it), scanning
    /// its events when its content type is one [`StreamEvents`] reads, and honours the idle
    /// timeout either way.
    pub(super) fn wrap_body<B: Body>(
        &self,
        body: B,
        headers: &http::HeaderMap,
        recorder: Option<Recorder>,
    ) -> OutcomeBody<B, T>
    where
        T: EndClassifier + Clone,
    {
        let scan = recorder
            .as_ref()
            .and_then(|_| Scanner::for_response(&self.events, headers));
        let eos = self.eos.clone();
        let body = match recorder {
            Some(recorder) => OutcomeBody::deferred(body, recorder, eos),
            None => OutcomeBody::new(body, None, eos),
        };
        body.watch(scan, self.idle)
    }
}

impl<C, T, B, E> ResponseClassifier<Response<B>, E> for EndOfStream<C, T>
where
    C: Classify<Response<B>, E>,
    T: EndClassifier + Clone,
    B: Body,
{
    type Response = Response<OutcomeBody<B, T>>;

    fn classify_response(
        &self,
        result: Result<Response<B>, E>,
        recorder: Recorder,
    ) -> Result<Self::Response, E> {
        let (res, recorder) = self.judge_head(result, recorder)?;
        let (parts, body) = res.into_parts();
        let body = self.wrap_body(body, &parts.headers, recorder);
        Ok(Response::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::{CircuitBreakerLayer, Handle, State};
    use crate::BoxError;
    use bytes::Bytes;
    use futures::StreamExt;
    use http::HeaderMap;
    use http_body::Frame;
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
