//! LLM-style streams judged the way SDKs read them: a hyper-util client against raw-socket
//! servers on loopback that control exactly how each stream is split and how it ends, and, on
//! tokio's paused clock, in-memory streams for the timing rules (long probes, idle timeouts).
#![cfg(feature = "http")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{script_server, End, Script};
use http::{Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, Outcome, State};
use tower_breaker::http::{error::IdleTimeout, EndOfStream};
use tower_breaker::BoxError;
use tower_layer::Layer;

type Body = Empty<Bytes>;

const OPENAI: &[&str] = &[
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{}, \"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];

const ANTHROPIC: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

const OVERLOADED: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
    "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
];

fn counts(h: &Handle) -> (u64, u64, u64) {
    let s = h.stats();
    (s.successful_calls, s.failed_calls, s.total_calls)
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http::<Body>()
}

fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Body::new()).unwrap()
}

/// Reads frames the way an SDK's loop does — until the event stream says it is done (or ends)
/// — and returns what it read and how many frames it took. The caller then drops the body.
async fn read_until_done<B>(body: &mut B, marker: &str) -> (String, usize)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut text = String::new();
    let mut frames = 0;
    while !text.contains(marker) {
        let Some(frame) = body.frame().await else {
            break;
        };
        frames += 1;
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    (text, frames)
}

#[tokio::test]
async fn streams_read_to_their_terminal_event_and_dropped_count_as_successes() {
    // The servers hold each stream open after its last event, as providers may: only the
    // event can have decided.
    let server = script_server(vec![
        Script::sse(OPENAI, End::Hang),
        Script::sse(ANTHROPIC, End::Hang),
    ])
    .await;
    let breaker = CircuitBreakerLayer::builder()
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    for i in 0..10 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/v1/chat")))
            .await
            .unwrap();
        let mut body = res.into_body();
        let marker = if i % 2 == 0 { "[DONE]" } else { "message_stop" };
        let (text, _) = read_until_done(&mut body, marker).await;
        assert!(text.contains(marker), "{text}");
        assert!(!body.is_end_stream(), "the server still holds the stream");
        drop(body);
        assert_eq!(counts(&handle), (i + 1, 0, i + 1));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn events_split_across_tcp_writes_are_still_read() {
    // Every cut lands mid-line, and the `[DONE]` line ends in CRLF cut between CR and LF.
    let pieces = [
        "da",
        "ta: {\"choices\":[]}\n",
        "\ndata: [DO",
        "NE]\r",
        "\n\r\n",
    ];
    let server = script_server(vec![Script::sse(&pieces, End::Hang)]).await;
    let breaker = CircuitBreakerLayer::builder()
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut frames = 0;
    // Read until the breaker has decided (the marker is complete only with the last piece).
    while counts(&handle).0 == 0 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame")
            .expect("not the end")
            .unwrap();
        assert!(frame.is_data());
        frames += 1;
        if frames < pieces.len() {
            assert_eq!(counts(&handle), (0, 0, 0), "decided at frame {frames}");
        }
    }
    assert!(frames >= 3, "the pieces arrived as {frames} frames");
    drop(body);
    assert_eq!(counts(&handle), (1, 0, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_event_in_a_200_stream_is_not_a_success() {
    let api_error = [
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}\n\n",
    ];
    let server = script_server(vec![
        Script::sse(OVERLOADED, End::Complete),
        Script::sse(&api_error, End::Complete),
    ])
    .await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    for expected_failures in [1, 2] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // The caller reads the whole stream, which then ends cleanly: still a failure.
        let text = res.into_body().collect().await.unwrap().to_bytes();
        assert!(text.ends_with(b"}}\n\n"));
        let s = handle.stats();
        assert_eq!((s.successful_calls, s.failed_calls), (0, expected_failures));
    }
    // overloaded_error (a throttle without a hint counts as a failure) + api_error: tripped.
    assert_eq!(handle.state(), State::Open);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_by_the_server_is_a_failure() {
    let server = script_server(vec![Script::sse(&OPENAI[..2], End::Cut)]).await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .expect("the cut stream ends")
        .unwrap_err();
    assert!(err.downcast_ref::<hyper::Error>().is_some(), "{err}");
    assert_eq!(counts(&handle), (0, 1, 1));
    assert_eq!(handle.state(), State::Open);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_dropped_before_any_terminal_event_is_neutral() {
    let server = script_server(vec![Script::sse(OPENAI, End::Complete)]).await;
    let breaker = CircuitBreakerLayer::builder()
        .half_open_permits(1)
        .success_threshold(1)
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: {"));
    drop(body); // the user pressed "stop"
    assert_eq!(counts(&handle), (0, 0, 0));
    assert_eq!(handle.state(), State::Closed);
    server.shutdown().await;
}

#[tokio::test]
async fn a_half_open_circuit_closes_on_stream_only_traffic() {
    // One cut stream trips the circuit; after the open duration, two probe streams read to
    // `[DONE]` and dropped close it.
    let server = script_server(vec![
        Script::sse(&OPENAI[..1], End::Cut),
        Script::sse(OPENAI, End::Hang),
        Script::sse(OPENAI, End::Hang),
    ])
    .await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_millis(200))
        .half_open_permits(2)
        .success_threshold(2)
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(handle.state(), State::Open);

    // Real sockets, so real time: `ready()` waits out the 200 ms open duration.
    let mut probes = Vec::new();
    for _ in 0..2 {
        let ready = tokio::time::timeout(Duration::from_secs(5), svc.ready())
            .await
            .expect("the circuit half-opens")
            .unwrap();
        probes.push(ready.call(get(&server.url("/"))).await.unwrap());
    }
    assert_eq!(handle.state(), State::HalfOpen);
    for res in probes {
        let mut body = res.into_body();
        let (text, _) = read_until_done(&mut body, "[DONE]").await;
        assert!(text.contains("[DONE]"));
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(counts(&handle), (2, 1, 3));
    server.shutdown().await;
}

/// An in-memory SSE stream: `events` of `(delay before it, text)`, then pending forever.
fn timed_sse(
    events: Vec<(Duration, &'static str)>,
) -> Response<StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Unpin>> {
    let stream = futures::stream::unfold(events.into_iter(), |mut events| async move {
        let (delay, text) = events.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok(Frame::data(Bytes::from_static(text.as_bytes()))), events))
    })
    .chain(futures::stream::pending());
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(Box::pin(stream)))
        .unwrap()
}

use futures::StreamExt as _;

#[tokio::test(start_paused = true)]
async fn a_sixty_second_stream_as_a_probe_closes_the_circuit() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .half_open_permits(1)
        .success_threshold(1)
        .probe_timeout(Duration::from_secs(30))
        .fail_fast()
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc =
        ServiceBuilder::new()
            .layer(breaker)
            .service(service_fn(|fail: bool| async move {
                if fail {
                    return Err::<_, BoxError>("connect failed".into());
                }
                // A token every 10 s for a minute, then [DONE].
                let mut events: Vec<_> = (0..6)
                    .map(|_| (Duration::from_secs(10), "data: {\"t\":1}\n\n"))
                    .collect();
                events.push((Duration::ZERO, "data: [DONE]\n\n"));
                Ok(timed_sse(events))
            }));

    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(handle.state(), State::HalfOpen);

    let res = svc.ready().await.unwrap().call(false).await.unwrap();
    let mut body = res.into_body();
    let started = tokio::time::Instant::now();
    // Past the probe timeout, the circuit (which applies timeouts when observed) is still
    // half-open, and other callers are still held back.
    for _ in 0..4 {
        body.frame().await.unwrap().unwrap();
    }
    assert_eq!(started.elapsed(), Duration::from_secs(40));
    assert_eq!(handle.state(), State::HalfOpen);
    let Err(err) = svc.ready().await.unwrap().call(false).await else {
        panic!("a second caller was let through while the probe streams");
    };
    assert!(err.is::<tower_breaker::circuit_breaker::error::CircuitOpen>());
    let (text, frames) = read_until_done(&mut body, "[DONE]").await;
    assert_eq!(frames, 3);
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    drop(body);
    assert_eq!(handle.state(), State::Closed);
    let reasons: Vec<_> = handle.stats().transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        reasons,
        [State::Open, State::HalfOpen, State::Closed],
        "never reopened by the probe timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_head_takes_longer_than_the_probe_timeout_still_reopens() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .half_open_permits(1)
        .success_threshold(1)
        .probe_timeout(Duration::from_secs(30))
        .response_classifier(EndOfStream::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc =
        ServiceBuilder::new()
            .layer(breaker)
            .service(service_fn(|fail: bool| async move {
                if fail {
                    return Err::<_, BoxError>("connect failed".into());
                }
                tokio::time::sleep(Duration::from_secs(40)).await; // the head itself is late
                Ok(timed_sse(vec![(Duration::ZERO, "data: [DONE]\n\n")]))
            }));
    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = svc.ready().await.unwrap().call(false);
    let res = probe.await.unwrap();
    assert_eq!(
        handle.state(),
        State::Open,
        "timed out before its head came"
    );
    res.into_body().frame().await.unwrap().unwrap();
    assert_eq!(handle.state(), State::Open, "its late result is ignored");
}

#[tokio::test(start_paused = true)]
async fn a_stream_idle_past_the_idle_timeout_fails_and_the_caller_sees_an_error() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .response_classifier(EndOfStream::new().idle_timeout(Duration::from_secs(5)))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .service(service_fn(|_: ()| async {
            // Two events a second apart, then the provider stalls.
            Ok::<_, BoxError>(timed_sse(vec![
                (Duration::from_secs(1), "data: {\"t\":1}\n\n"),
                (Duration::from_secs(1), "data: {\"t\":2}\n\n"),
            ]))
        }));

    let res = svc.ready().await.unwrap().call(()).await.unwrap();
    let mut body = res.into_body();
    for _ in 0..2 {
        body.frame().await.unwrap().unwrap();
    }
    let stalled_at = tokio::time::Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(stalled_at.elapsed(), Duration::from_secs(5));
    let idle = err.downcast_ref::<IdleTimeout>().expect("IdleTimeout");
    assert_eq!(idle.idle(), Duration::from_secs(5));
    assert!(
        body.frame().await.is_none(),
        "the body ends after the error"
    );
    assert_eq!(counts(&handle), (0, 1, 1));
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_an_idle_stream() {
    let breaker = CircuitBreakerLayer::builder()
        .response_classifier(EndOfStream::new().idle_timeout(Duration::from_secs(5)))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .service(service_fn(|_: ()| async {
            Ok::<_, BoxError>(timed_sse(vec![
                (Duration::ZERO, "data: {\"t\":1}\n\n"),
                (Duration::ZERO, "data: {\"t\":2}\n\n"),
                (Duration::ZERO, "data: [DONE]\n\n"),
            ]))
        }));
    let res = svc.ready().await.unwrap().call(()).await.unwrap();
    let mut body = res.into_body();
    for _ in 0..3 {
        // The caller takes 20 s per event; the stream never kept it waiting.
        tokio::time::sleep(Duration::from_secs(20)).await;
        body.frame().await.unwrap().unwrap();
    }
    assert_eq!(counts(&handle), (1, 0, 1));
}

#[tokio::test]
async fn a_custom_event_classifier_decides_first() {
    use tower_breaker::http::StreamEvents;
    let server = script_server(vec![Script::sse(
        &[
            "event: moderation\ndata: {\"blocked\":true}\n\n",
            "data: [DONE]\n\n",
        ],
        End::Complete,
    )])
    .await;
    let events = StreamEvents::new()
        .classify_event(|e| (e.name() == "moderation").then_some(Outcome::Ignored));
    let breaker = CircuitBreakerLayer::builder()
        .response_classifier(EndOfStream::new().events(events))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = breaker.layer(client());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let s = handle.stats();
    assert_eq!((s.ignored_calls, s.successful_calls), (1, 0));
    server.shutdown().await;
}
