//! Zero heap allocations per admitted bulkhead call (DESIGN section 7), counted by a global
//! allocator on this thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_layer::Layer;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn start_counting() {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
}

/// Allocations on this thread since [`start_counting`].
fn stop_counting() -> usize {
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
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

    futures::executor::block_on(async {
        // Warm up (thread-locals, the striped counters' stripe index, the executor).
        for i in 0..100 {
            assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i + 1);
        }
        let mut sum = 0;
        start_counting();
        for i in 0..N {
            sum += svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let n = stop_counting();
        assert_eq!(sum, N * (N + 1) / 2);
        assert_eq!(n, 0, "{n} allocations over {N} admitted calls");
    });
    let stats = handle.stats();
    assert_eq!((stats.active, stats.available, stats.rejected), (0, 4, 0));
}

#[test]
fn the_counter_sees_allocations() {
    // The test above can fail: a boxed value is counted.
    start_counting();
    let b = Box::new(7_u64);
    let n = stop_counting();
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
        start_counting();
        for _ in 0..N {
            drive(&mut svc).await;
        }
        let n = stop_counting();
        assert_eq!(n, 0, "{n} allocations over {N} admitted streamed calls");
    });
    assert_eq!(handle.stats().available, 2);
}
