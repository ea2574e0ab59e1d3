//! Zero heap allocations per admitted bulkhead call, counted by a global
//! allocator (`allocation-counter`) on this thread only.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_layer::Layer;

/// Allocations made while `future` runs to completion on this thread (`allocation-counter`).
fn allocations<F: Future>(future: F) -> (F::Output, u64) {
    let mut output = None;
    let info = allocation_counter::measure(|| output = Some(futures::executor::block_on(future)));
    (output.expect("ran"), info.count_total)
}

#[test]
fn admitted_calls_do_not_allocate() {
    const N: u64 = 10_000;
    let layer = BulkheadLayer::builder()
        .name("alloc")
        .max_concurrent(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    // A non-allocating inner service.
    let mut svc = layer.layer(service_fn(|x: u64| {
        std::future::ready(Ok::<_, Infallible>(x + 1))
    }));

    // Warm up (thread-locals, the striped counters' stripe index, the executor).
    futures::executor::block_on(async {
        for i in 0..100 {
            assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i + 1);
        }
    });
    let (sum, n) = allocations(async {
        let mut sum = 0;
        for i in 0..N {
            sum += svc.ready().await.unwrap().call(i).await.unwrap();
        }
        sum
    });
    assert_eq!(sum, N * (N + 1) / 2);
    assert_eq!(n, 0, "{n} allocations over {N} admitted calls");
    let stats = handle.stats();
    assert_eq!((stats.active, stats.available, stats.rejected), (0, 4, 0));
}

#[test]
fn the_counter_sees_allocations() {
    // The test above can fail: a boxed value is counted.
    let (b, n) = allocations(async { Box::new(7_u64) });
    assert_eq!(*b, 7);
    assert!(n >= 1);
}

/// One call whose slot is held until its body is read to the end.
#[cfg(feature = "http")]
async fn drive<S, B>(svc: &mut S)
where
    S: Service<(), Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;

    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(body.frame().await.is_none());
}

#[cfg(feature = "http")]
#[test]
fn admitted_calls_holding_the_slot_until_body_end_do_not_allocate() {
    use http_body_util::Full;

    const N: usize = 2_000;
    let layer = BulkheadLayer::builder()
        .max_concurrent(2)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Full::new(
            &b"answer"[..],
        ))))
    }));
    futures::executor::block_on(async {
        for _ in 0..100 {
            drive(&mut svc).await;
        }
    });
    let ((), n) = allocations(async {
        for _ in 0..N {
            drive(&mut svc).await;
        }
    });
    assert_eq!(n, 0, "{n} allocations over {N} admitted streamed calls");
    assert_eq!(handle.stats().available, 2);
}
