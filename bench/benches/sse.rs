//! SSE event scanning: what `EndOfStream`'s scan of a `text/event-stream` body costs per byte,
//! next to the same body in a plain `OutcomeBody` (no scan) and read bare.
//!
//! One body is ~64 KiB of OpenAI-style chat-completion chunks (`data: {...}\n\n`) ending with
//! `data: [DONE]\n\n`, in one buffer, split into frames the way a network delivers them: 1 KiB
//! and 1400-byte chunks (lines cut at arbitrary points), 16 KiB chunks (a large read), or one
//! event per frame.
//!
//! Every iteration is one call: `poll_ready`, `call`, poll the response future (ready at once),
//! then `poll_frame` until `None`, with a no-op waker and a current-thread Tokio runtime entered.
//! The inner service is the same `tower::service_fn` in every variant; its body hands out the
//! frames of one leaked buffer as `Bytes::from_static` (no allocation, no reference count) and,
//! like a chunked HTTP/1.1 body, only knows it has ended when it returns `None`.
//!
//! Variants, each over every split:
//! - `a_bare`: the service without a breaker (the baseline: service call, response, frames);
//! - `b_plain`: breaker + `EndOfStream::new()`, `content-type: application/octet-stream`: the
//!   body is an `OutcomeBody` that scans nothing;
//! - `c_scan`: the same breaker, `content-type: text/event-stream`: the `OutcomeBody` scans the
//!   events and records a success at `[DONE]`;
//! - `d_events_none`: breaker + `EndOfStream::new().events(StreamEvents::none())`,
//!   `text/event-stream`: nothing scanned (should match `b_plain`).
//!
//! Before measuring, each variant's body is read once and checked: every byte comes through,
//! and the outcome is recorded at the last frame (`[DONE]`) when scanning, at `None` otherwise.
//!
//! Run: `cargo bench -p tower-breaker-benches --bench sse`.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::Bencher;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body::{Body, Frame};
use tower::Service;
use tower_breaker::circuit_breaker::CircuitBreakerLayer;
use tower_breaker::http::{EndOfStream, OutcomeBody, StreamEvents};
use tower_layer::Layer;

/// Bodies per sample, the same for every variant (see `benches/overhead.rs` for why it is
/// fixed).
const SAMPLE_SIZE: u32 = 20;

/// Samples per variant.
const SAMPLE_COUNT: u32 = 100;

fn main() {
    divan::Divan::from_args()
        .sample_size(SAMPLE_SIZE)
        .sample_count(SAMPLE_COUNT)
        .main();
}

/// The body's target length.
const BODY_LEN: usize = 64 * 1024;

/// One streamed token, as OpenAI's chat completions send it.
const EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\"}}]}\n\n";

/// The end of an OpenAI stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// How the body is cut into frames.
#[derive(Debug, Clone, Copy)]
enum Split {
    /// One event per frame.
    Event,
    /// Frames of this many bytes (the last one shorter), cutting lines anywhere.
    Chunk(usize),
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Split::Event => f.write_str("event_per_frame"),
            Split::Chunk(n) => write!(f, "chunks_of_{n}"),
        }
    }
}

const SPLITS: &[Split] = &[
    Split::Event,
    Split::Chunk(1024),
    Split::Chunk(1400),
    Split::Chunk(16 * 1024),
];

/// One body: as many `EVENT`s as fit in `BODY_LEN` with `DONE` after them, in one buffer,
/// leaked so that every call can hand out its frames without copying or counting.
fn body() -> &'static [u8] {
    let n = (BODY_LEN - DONE.len()) / EVENT.len();
    let mut body = EVENT.repeat(n);
    body.extend_from_slice(DONE);
    Vec::leak(body)
}

/// The body's frames, slices of one buffer (as a network read would give).
fn frames(split: Split) -> &'static [&'static [u8]] {
    let body = body();
    let frames: Vec<&'static [u8]> = match split {
        // Every event has `EVENT`'s length, and `DONE` is shorter: the last chunk.
        Split::Event => body.chunks(EVENT.len()).collect(),
        Split::Chunk(size) => body.chunks(size).collect(),
    };
    if let Split::Event = split {
        assert_eq!(frames.last(), Some(&DONE));
    }
    Vec::leak(frames)
}

/// A streamed body over fixed frames. Like a chunked HTTP/1.1 body, it does not say it has
/// ended until it returns `None`.
struct Frames {
    frames: &'static [&'static [u8]],
    next: usize,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let frame = this.frames.get(this.next).map(|data| {
            this.next += 1;
            Ok(Frame::data(Bytes::from_static(data)))
        });
        Poll::Ready(frame)
    }
}

/// The inner service: a response with `content_type` and the body split into `frames`.
fn service(
    frames: &'static [&'static [u8]],
    content_type: &'static str,
) -> impl Service<(), Response = Response<Frames>, Error = Infallible> + Clone {
    tower::service_fn(move |()| {
        let mut res = Response::new(Frames { frames, next: 0 });
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        ready(Ok::<_, Infallible>(res))
    })
}

const SSE: &str = "text/event-stream";
const OCTETS: &str = "application/octet-stream";

fn layer(events: StreamEvents) -> CircuitBreakerLayer<EndOfStream> {
    CircuitBreakerLayer::builder()
        .response_classifier(EndOfStream::new().events(events))
        .build()
        .unwrap()
}

/// One call: `poll_ready`, `call`, the response future (ready at once).
#[inline(always)]
fn respond<S: Service<()>>(svc: &mut S, cx: &mut Context<'_>) -> S::Response {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut future = std::pin::pin!(svc.call(()));
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(res)) => res,
        _ => panic!("the response must be ready"),
    }
}

/// Reads `body` to its end; returns the bytes read.
#[inline(always)]
fn read_to_end<B: Body<Data = Bytes>>(body: B, cx: &mut Context<'_>) -> usize {
    let mut body = std::pin::pin!(body);
    let mut read = 0;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += black_box(data).len();
                }
            }
            Poll::Ready(None) => return read,
            Poll::Ready(Some(Err(_))) => panic!("the body failed"),
            Poll::Pending => panic!("the body must be ready"),
        }
    }
}

fn body_len(frames: &[&[u8]]) -> usize {
    frames.iter().map(|f| f.len()).sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_bare(bencher: Bencher<'_, '_>, split: Split) {
    let rt = runtime();
    let _guard = rt.enter();
    let frames = frames(split);
    let len = body_len(frames);
    let mut svc = service(frames, SSE);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(
        read_to_end(respond(&mut svc, &mut cx).into_body(), &mut cx),
        len
    );
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        let res = respond(&mut svc, &mut cx);
        black_box(read_to_end(res.into_body(), &mut cx));
    });
}

/// Through a breaker with `EndOfStream::new().events(events)`, the response typed
/// `content_type`; `scanned` says whether the body's events are expected to be scanned.
fn bench_breaker(
    bencher: Bencher<'_, '_>,
    split: Split,
    events: StreamEvents,
    content_type: &'static str,
    scanned: bool,
) {
    let rt = runtime();
    let _guard = rt.enter();
    let frames = frames(split);
    let len = body_len(frames);
    let layer = layer(events);
    let handle = layer.handle();
    let mut svc = layer.layer(service(frames, content_type));
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    check(&mut svc, &mut cx, frames, scanned);
    assert_eq!(
        read_to_end(respond(&mut svc, &mut cx).into_body(), &mut cx),
        len
    );
    assert_eq!(handle.stats().successful_calls, 2);
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        let res = respond(&mut svc, &mut cx);
        black_box(read_to_end(res.into_body(), &mut cx));
    });
}

/// Reads one body frame by frame: a scanned body records its outcome with its last frame (the
/// one that completes `[DONE]`), an unscanned one only when it returns `None`.
fn check<S>(svc: &mut S, cx: &mut Context<'_>, frames: &[&[u8]], scanned: bool)
where
    S: Service<(), Response = Response<OutcomeBody<Frames>>>,
{
    let mut body = std::pin::pin!(respond(svc, cx).into_body());
    for (i, expected) in frames.iter().enumerate() {
        assert!(body.is_pending());
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => assert_eq!(frame.data_ref().unwrap(), expected),
            _ => panic!("a data frame expected"),
        }
        let last = i + 1 == frames.len();
        assert_eq!(body.is_pending(), !(scanned && last), "frame {i}");
    }
    assert!(matches!(body.as_mut().poll_frame(cx), Poll::Ready(None)));
    assert!(!body.is_pending());
}

mod sse_64k {
    use super::*;

    #[divan::bench(args = SPLITS)]
    fn a_bare(b: Bencher<'_, '_>, split: Split) {
        bench_bare(b, split);
    }

    #[divan::bench(args = SPLITS)]
    fn b_plain(b: Bencher<'_, '_>, split: Split) {
        bench_breaker(b, split, StreamEvents::new(), OCTETS, false);
    }

    #[divan::bench(args = SPLITS)]
    fn c_scan(b: Bencher<'_, '_>, split: Split) {
        bench_breaker(b, split, StreamEvents::new(), SSE, true);
    }

    #[divan::bench(args = SPLITS)]
    fn d_events_none(b: Bencher<'_, '_>, split: Split) {
        bench_breaker(b, split, StreamEvents::none(), SSE, false);
    }
}
