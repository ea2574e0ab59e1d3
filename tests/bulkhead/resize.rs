//! Resizing a live bulkhead.

use std::sync::atomic::Ordering;
use tokio_test::{assert_pending, assert_ready_ok};

use crate::{callers, layer, send, Inner, Out, WAIT};

#[tokio::test(start_paused = true)]
async fn growing_admits_waiters_at_once() {
    let inner = Inner::default();
    let layer = layer(1, 5, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 5);
    assert_ready_ok!(c[0].poll_ready());
    for w in &mut c[1..4] {
        assert_pending!(w.poll_ready());
    }

    handle.set_max_concurrent(3);
    assert!(c[1].is_woken() && c[2].is_woken());
    assert!(!c[3].is_woken());
    assert_ready_ok!(c[1].poll_ready());
    assert_ready_ok!(c[2].poll_ready());
    assert_pending!(c[3].poll_ready());
    let stats = handle.stats();
    assert_eq!(
        (
            stats.max_concurrent,
            stats.active,
            stats.queued,
            stats.available
        ),
        (3, 3, 1, 0)
    );

    // Growing past the queue frees the rest.
    handle.set_max_concurrent(6);
    assert!(c[3].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    assert_ready_ok!(c[4].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.queued, stats.available), (5, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn shrinking_never_blocks_and_lets_running_calls_finish() {
    let inner = Inner::default();
    let layer = layer(3, 5, WAIT);
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 4);
    let mut running = Vec::new();
    for caller in &mut c[..3] {
        assert_ready_ok!(caller.poll_ready());
        running.push(caller.call());
    }

    handle.set_max_concurrent(1); // returns at once with 3 calls running
    let stats = handle.stats();
    assert_eq!(
        (stats.max_concurrent, stats.active, stats.available),
        (1, 3, 0)
    );
    assert_pending!(c[3].poll_ready());

    // The running calls finish normally; the first two releases pay off the shrink.
    for (i, (mut fut, tx)) in running.into_iter().enumerate() {
        send(tx, Out::Ok(i as u32));
        assert_eq!(assert_ready_ok!(fut.poll()), i as u32);
        if i < 2 {
            assert!(!c[3].is_woken(), "release {i} only pays off the shrink");
            assert_pending!(c[3].poll_ready());
        }
    }
    assert!(c[3].is_woken());
    assert_ready_ok!(c[3].poll_ready());
    let stats = handle.stats();
    assert_eq!((stats.active, stats.available, stats.queued), (1, 0, 0));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
}
