//! Capacity, queueing, waiting, FIFO order and every way a slot comes back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower_breaker::bulkhead::error::{BulkheadFull, BulkheadTimeout};

use crate::{callers, layer, send, Inner, Out, WAIT};

#[tokio::test(start_paused = true)]
async fn caps_concurrency_and_rejects_at_once_when_the_queue_is_full() {
    let inner = Inner::default();
    let layer = layer(2, 1, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);

    assert_ready_ok!(c[0].poll_ready());
    assert_ready_ok!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());
    // Full queue: ready-with-rejection, and the inner service is never called.
    assert_ready_ok!(c[3].poll_ready());
    let err = c[3].call_rejected();
    let full = err.downcast_ref::<BulkheadFull>().expect("BulkheadFull");
    assert_eq!(full.name(), "test");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    let stats = handle.stats();
    assert_eq!(
        (stats.active, stats.queued, stats.available, stats.rejected),
        (2, 1, 0, 1)
    );
    assert_eq!(stats.max_concurrent, 2);
    assert_eq!(stats.timed_out, 0);
    assert_eq!(stats.name, "test");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_times_out_exactly_at_max_wait() {
    let inner = Inner::default();
    let layer = layer(1, 1, Duration::from_millis(100));
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 2);

    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());

    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(!c[1].is_woken());
    assert_pending!(c[1].poll_ready());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(c[1].is_woken(), "the wait timer wakes the waiter");
    assert_ready_ok!(c[1].poll_ready());
    let err = c[1].call_rejected();
    assert!(err.is::<BulkheadTimeout>(), "{err}");
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    let stats = handle.stats();
    assert_eq!((stats.queued, stats.timed_out, stats.rejected), (0, 1, 0));
    assert_eq!((stats.active, stats.available), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_in_fifo_order_without_barging() {
    let inner = Inner::default();
    let layer = layer(1, 10, WAIT);
    let mut c = callers(&layer, &inner, 5);

    assert_ready_ok!(c[0].poll_ready());
    let (mut running, tx) = c[0].call();
    for w in &mut c[1..4] {
        assert_pending!(w.poll_ready());
    }

    // Finish the running call: only the oldest waiter is woken.
    send(tx, Out::Ok(0));
    assert_eq!(assert_ready_ok!(running.poll()), 0);
    assert!(c[1].is_woken());
    assert!(!c[2].is_woken() && !c[3].is_woken());
    // A newcomer cannot take the slot handed to the oldest waiter.
    assert_pending!(c[4].poll_ready());
    assert_ready_ok!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());

    let (mut f1, tx1) = c[1].call();
    send(tx1, Out::Ok(1));
    assert_eq!(assert_ready_ok!(f1.poll()), 1);
    assert!(c[2].is_woken() && !c[3].is_woken() && !c[4].is_woken());
    assert_ready_ok!(c[2].poll_ready());
    assert_pending!(c[3].poll_ready());

    let (f2, _tx2) = c[2].call();
    drop(f2);
    assert!(c[3].is_woken() && !c[4].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    assert_pending!(c[4].poll_ready());
    drop(c.remove(3));
    assert!(c[3].is_woken(), "the newcomer, queued last, comes last");
    assert_ready_ok!(c[3].poll_ready());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_frees_its_queue_slot() {
    let inner = Inner::default();
    let layer = layer(1, 1, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);

    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    assert_ready_ok!(c[2].poll_ready()); // queue full: rejected
    assert!(c[2].call_rejected().is::<BulkheadFull>());
    assert_eq!(handle.stats().queued, 1);

    drop(c.remove(1));
    assert_eq!(handle.stats().queued, 0);
    // The freed queue slot takes a new waiter instead of a rejection...
    assert_pending!(c[2].poll_ready());
    assert_eq!(handle.stats().queued, 1);
    // ...which, not the dropped one, gets the next slot.
    drop(c.remove(0));
    assert!(c[1].is_woken());
    assert_ready_ok!(c[1].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.rejected), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_after_being_handed_a_slot_passes_it_on() {
    let inner = Inner::default();
    let layer = layer(1, 2, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 3);
    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    assert_pending!(c[2].poll_ready());
    drop(c.remove(0)); // hands the slot to c[1], which never polls again
    drop(c.remove(0)); // so the slot goes on to the next waiter
    assert!(c[0].is_woken());
    assert_ready_ok!(c[0].poll_ready());
    assert_eq!(handle.stats().active, 1);
}

/// Ways an admitted call gives its slot back.
#[derive(Debug, Clone, Copy)]
enum Release {
    DropReadyClone,
    DropResponseFuture,
    Complete,
    InnerError,
    InnerPanic,
}

#[tokio::test(start_paused = true)]
async fn every_way_out_frees_the_permit_and_wakes_only_the_oldest_waiter() {
    for how in [
        Release::DropReadyClone,
        Release::DropResponseFuture,
        Release::Complete,
        Release::InnerError,
        Release::InnerPanic,
    ] {
        let inner = Inner::default();
        let layer = layer(1, 2, WAIT);
        let handle = layer.handle();
        let mut c = callers(&layer, &inner, 3);
        assert_ready_ok!(c[0].poll_ready());
        assert_pending!(c[1].poll_ready());
        assert_pending!(c[2].poll_ready());
        assert_eq!(handle.stats().active, 1, "{how:?}");

        match how {
            Release::DropReadyClone => drop(c.remove(0)),
            Release::DropResponseFuture => {
                let (fut, _tx) = c[0].call();
                assert!(!c[1].is_woken(), "{how:?}: the call still holds its slot");
                drop(fut);
            }
            Release::Complete => {
                let (mut fut, tx) = c[0].call();
                send(tx, Out::Ok(7));
                assert_eq!(assert_ready_ok!(fut.poll()), 7);
            }
            Release::InnerError => {
                let (mut fut, tx) = c[0].call();
                send(tx, Out::Err);
                let err = assert_ready!(fut.poll()).unwrap_err();
                assert_eq!(err.to_string(), "inner failed");
            }
            Release::InnerPanic => {
                let (fut, tx) = c[0].call();
                send(tx, Out::Panic);
                let joined = tokio::spawn(fut.into_inner()).await;
                assert!(joined.unwrap_err().is_panic(), "{how:?}");
            }
        }
        let (w1, w2) = match how {
            Release::DropReadyClone => (0, 1),
            _ => (1, 2),
        };
        assert!(c[w1].is_woken(), "{how:?}: the oldest waiter is woken");
        assert!(
            !c[w2].is_woken(),
            "{how:?}: only the oldest waiter is woken"
        );
        assert_ready_ok!(c[w1].poll_ready());
        assert_pending!(c[w2].poll_ready());
        let stats = handle.stats();
        assert_eq!((stats.active, stats.queued), (1, 1), "{how:?}");
    }
}
