//! A bulkhead that holds each call's slot until the HTTP response body ends (feature `http`).
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::time::Duration;

use futures::channel::mpsc;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio_test::task;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::bulkhead::{BulkheadLayer, HoldUntilBodyEnd, PermitBody};
use tower_layer::Layer;

type Chunk = Result<Frame<&'static [u8]>, std::io::Error>;
type Streamed = StreamBody<mpsc::UnboundedReceiver<Chunk>>;

/// A service answering each request (a channel receiver) with a body streamed from it.
fn streaming() -> impl Service<
    mpsc::UnboundedReceiver<Chunk>,
    Response = http::Response<Streamed>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<Streamed>, Infallible>>,
> + Clone {
    service_fn(|rx| std::future::ready(Ok(http::Response::new(StreamBody::new(rx)))))
}

fn layer() -> BulkheadLayer<HoldUntilBodyEnd> {
    BulkheadLayer::builder()
        .name("stream")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(5))
        .hold_permit_until_body_end()
        .build()
        .unwrap()
}

/// How the streamed body finishes.
#[derive(Debug, Clone, Copy)]
enum End {
    SenderClosed,
    Error,
    Dropped,
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_held_until_the_body_ends() {
    for end in [End::SenderClosed, End::Error, End::Dropped] {
        let layer = layer();
        let handle = layer.handle();
        let svc = layer.layer(streaming());
        let mut first = svc.clone();
        let mut waiter = task::spawn(svc.clone());

        let (tx, rx) = mpsc::unbounded();
        let response = first.ready().await.unwrap().call(rx).await.unwrap();
        let mut body: PermitBody<Streamed> = response.into_body();
        assert!(body.holds_permit());
        assert_eq!(
            handle.stats().active,
            1,
            "{end:?}: the response arrived, the body streams"
        );
        assert_pending!(waiter.enter(|cx, mut s| s.poll_ready(cx)));

        tx.unbounded_send(Ok(Frame::data(&b"token"[..]))).unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), &b"token"[..]);
        assert!(body.holds_permit(), "{end:?}");
        assert!(!waiter.is_woken(), "{end:?}: still streaming");

        match end {
            End::SenderClosed => {
                drop(tx);
                assert!(body.frame().await.is_none());
                assert!(!body.holds_permit());
            }
            End::Error => {
                tx.unbounded_send(Err(std::io::Error::other("reset")))
                    .unwrap();
                assert!(body.frame().await.unwrap().is_err());
                assert!(!body.holds_permit());
            }
            End::Dropped => drop(body),
        }
        assert!(waiter.is_woken(), "{end:?}: the slot went to the waiter");
        assert_ready_ok!(waiter.enter(|cx, mut s| s.poll_ready(cx)));
        assert_eq!(handle.stats().active, 1);
        drop(waiter);
        assert_eq!(handle.stats().active, 0, "{end:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_frees_the_slot_when_the_response_arrives() {
    let layer = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(streaming());
    let (_tx, rx) = mpsc::unbounded();
    let response = svc.ready().await.unwrap().call(rx).await.unwrap();
    assert_eq!(handle.stats().active, 0);
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_frees_the_slot_at_once() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(
            http_body_util::Empty::<&'static [u8]>::new(),
        )))
    }));
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert!(!response.body().holds_permit());
    assert_eq!(handle.stats().active, 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_reporting_end_of_stream_frees_the_slot_with_its_last_frame() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(
            http_body_util::Full::new(&b"whole answer"[..]),
        )))
    }));
    let mut body = svc
        .ready()
        .await
        .unwrap()
        .call(())
        .await
        .unwrap()
        .into_body();
    assert_eq!(handle.stats().active, 1);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), &b"whole answer"[..]);
    assert!(!body.holds_permit(), "no need to poll for the final None");
    assert_eq!(handle.stats().active, 0);
}
