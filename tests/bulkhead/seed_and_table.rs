//! The default queue and wait, the grant-versus-timeout race, and the launch table.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok};
use tower_breaker::bulkhead::error::{BulkheadFull, BulkheadTimeout};

use crate::{callers, layer, send, Inner, Out, WAIT};
use std::task::Poll;
use tower_breaker::bulkhead::BulkheadLayer;

#[tokio::test(start_paused = true)]
async fn defaults_queue_100_callers_and_time_them_out_after_30s() {
    // With the default queue (100) and wait (30 s), a caller at capacity waits rather than
    // being rejected, up to 100 of them.
    let inner = Inner::default();
    let layer = BulkheadLayer::builder()
        .name("chat")
        .max_concurrent(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let stats = handle.stats();
    assert_eq!(stats.max_queue, 100);
    assert_eq!(stats.max_wait, Duration::from_secs(30));
    let mut c = callers(&layer, &inner, 103);

    assert_ready_ok!(c[0].poll_ready());
    for w in &mut c[1..101] {
        assert_pending!(w.poll_ready());
    }
    assert_eq!(handle.stats().queued, 100);
    assert_ready_ok!(c[101].poll_ready());
    assert!(c[101].call_rejected().is::<BulkheadFull>());

    // A queued caller is admitted when a slot frees...
    drop(c.remove(0));
    assert_ready_ok!(c[0].poll_ready());
    // ...and the others give up after 30 s, not before.
    tokio::time::advance(Duration::from_secs(30) - Duration::from_millis(1)).await;
    assert_pending!(c[1].poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    for w in &mut c[1..100] {
        assert_ready_ok!(w.poll_ready());
        assert!(w.call_rejected().is::<BulkheadTimeout>());
    }
    let stats = handle.stats();
    assert_eq!(
        (stats.active, stats.queued, stats.rejected, stats.timed_out),
        (1, 0, 1, 99)
    );
    // The last caller, who never waited, now finds a queue slot again.
    assert_pending!(c[100].poll_ready());
}

#[tokio::test(start_paused = true)]
async fn the_grant_wins_over_a_timeout_at_the_same_instant() {
    let inner = Inner::default();
    let layer = layer(1, 1, Duration::from_millis(50));
    let handle = layer.handle();
    let mut c = callers(&layer, &inner, 2);
    assert_ready_ok!(c[0].poll_ready());
    assert_pending!(c[1].poll_ready());
    tokio::time::advance(Duration::from_millis(50)).await;
    drop(c.remove(0)); // handed over before the waiter sees its timer
    assert_ready_ok!(c[0].poll_ready());
    let (mut fut, tx) = c[0].call();
    send(tx, Out::Ok(1));
    assert_eq!(assert_ready_ok!(fut.poll()), 1);
    assert_eq!(handle.stats().timed_out, 0);
}

/// `(max_concurrent P, max_queue Q, n)`: n calls at once.
#[tokio::test(start_paused = true)]
async fn table_of_concurrent_launches() {
    for (p, q, n) in [(5, 0, 3), (3, 0, 4), (3, 1, 5), (5, 3, 8), (1, 6, 5)] {
        let case = format!("P={p} Q={q} n={n}");
        let inner = Inner::default();
        let layer = layer(p, q, WAIT);
        let handle = layer.handle();
        let mut c = callers(&layer, &inner, n);

        let mut running = Vec::new();
        let mut waiting = Vec::new();
        let mut rejected = 0;
        for (i, caller) in c.iter_mut().enumerate() {
            match caller.poll_ready() {
                Poll::Pending => waiting.push(i),
                Poll::Ready(Ok(())) => {
                    let (mut fut, tx) = caller.call();
                    match fut.poll() {
                        Poll::Pending => running.push((fut, tx)),
                        Poll::Ready(Err(e)) if e.is::<BulkheadFull>() => rejected += 1,
                        Poll::Ready(other) => panic!("{case}: {other:?}"),
                    }
                }
                Poll::Ready(Err(e)) => panic!("{case}: {e}"),
            }
        }
        let executing = inner.calls.load(Ordering::SeqCst);
        assert_eq!(executing, n.min(p), "{case}: executing");
        assert_eq!(running.len(), executing, "{case}");
        assert_eq!(waiting.len(), q.min(n.saturating_sub(p)), "{case}: queued");
        assert_eq!(rejected, n.saturating_sub(p + q), "{case}: rejected");
        let stats = handle.stats();
        assert_eq!(
            (stats.active, stats.queued, stats.rejected as usize),
            (executing, waiting.len(), rejected),
            "{case}: stats"
        );

        // Drain: finish running calls, admit woken waiters, until nothing is left.
        let mut completed = 0;
        while let Some((mut fut, tx)) = running.pop() {
            send(tx, Out::Ok(1));
            assert_ready_ok!(fut.poll());
            completed += 1;
            let mut still = Vec::new();
            for i in waiting.drain(..) {
                match c[i].poll_ready() {
                    Poll::Ready(Ok(())) => {
                        let (mut fut, tx) = c[i].call();
                        assert_pending!(fut.poll());
                        running.push((fut, tx));
                    }
                    Poll::Pending => still.push(i),
                    Poll::Ready(Err(e)) => panic!("{case}: {e}"),
                }
            }
            waiting = still;
        }
        assert!(waiting.is_empty(), "{case}: a waiter was never admitted");
        assert_eq!(completed, n - rejected, "{case}: completed");
        let stats = handle.stats();
        assert_eq!((stats.active, stats.queued, stats.available), (0, 0, p));
    }
}
