//! Decisions 1–5 and 7: gate first, open is Pending, wake-ups, fail-fast, probe reservations.

use std::task::Poll;

use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::Service;
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};

use super::*;

/// Gate first: an open circuit is checked before the inner service, which is not polled.
#[tokio::test(start_paused = true)]
async fn open_circuit_never_polls_inner_readiness() {
    let (mut svc, inner) = breaker(CircuitBreakerLayer::builder());
    trip(&mut svc).await;
    let polls = inner.polls();
    let mut waiter = task::spawn(());
    assert_pending!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(
        inner.polls(),
        polls,
        "inner poll_ready must not be called while open"
    );
}

/// Decisions 2, 3, 10: Pending while open, woken exactly at `opened_at + open_duration`
/// (inclusive), then a probe is admitted.
#[tokio::test(start_paused = true)]
async fn open_is_pending_and_woken_exactly_at_the_deadline() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().open_duration(secs(60)));
    trip(&mut svc).await;
    let mut waiter = task::spawn(());
    assert_pending!(waiter.enter(|cx, _| svc.poll_ready(cx)));

    advance(secs(60) - ms(1)).await;
    assert!(!waiter.is_woken(), "woken before the open deadline");
    assert_eq!(svc.handle().state(), State::Open);

    advance(ms(1)).await;
    assert!(waiter.is_woken(), "not woken at the open deadline");
    assert_ready_ok!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(svc.handle().state(), State::HalfOpen);
}

/// Wake everyone on every admitting change: no polling loop — across a whole open period the
/// waiting task is woken once, and the inner service is not polled until then.
#[tokio::test(start_paused = true)]
async fn no_busy_polling_while_open() {
    let (mut svc, inner) = breaker(CircuitBreakerLayer::builder().open_duration(secs(60)));
    trip(&mut svc).await;
    let inner_polls = inner.polls();
    let mut waiter = task::spawn(());
    let mut polls = 1;
    let mut ready = waiter.enter(|cx, _| svc.poll_ready(cx)).is_ready();
    for _ in 0..120 {
        advance(ms(500)).await;
        if waiter.is_woken() {
            polls += 1;
            ready = waiter.enter(|cx, _| svc.poll_ready(cx)).is_ready();
            if ready {
                break;
            }
        }
    }
    assert!(ready);
    assert_eq!(
        polls, 2,
        "one poll to register, one after the single wake-up"
    );
    assert_eq!(
        inner.polls(),
        inner_polls + 1,
        "inner polled only once admitted"
    );
}

/// Wake everyone on every admitting change: `force_closed`, `reset` and `disable` wake every waiter
/// at once.
#[tokio::test(start_paused = true)]
async fn manual_changes_wake_every_waiter_at_once() {
    for op in ["force_closed", "reset", "disable"] {
        let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
        trip(&mut svc).await;
        let mut clones: Vec<_> = (0..3).map(|_| (svc.clone(), task::spawn(()))).collect();
        for (clone, waiter) in &mut clones {
            assert_pending!(waiter.enter(|cx, _| clone.poll_ready(cx)));
        }
        let handle = svc.handle();
        match op {
            "force_closed" => handle.force_closed(),
            "reset" => handle.reset(),
            _ => handle.disable(),
        }
        for (clone, waiter) in &mut clones {
            assert!(waiter.is_woken(), "{op} did not wake a waiter");
            assert_ready_ok!(waiter.enter(|cx, _| clone.poll_ready(cx)));
        }
    }
}

/// Fail-fast mode: fail-fast is ready while open, and `call` returns `CircuitOpen` (with
/// `retry_after`) without polling or calling the inner service.
#[tokio::test(start_paused = true)]
async fn fail_fast_rejects_at_call_without_touching_inner() {
    let (mut svc, inner) = breaker(
        CircuitBreakerLayer::builder()
            .name("ff")
            .open_duration(secs(60))
            .fail_fast(),
    );
    trip(&mut svc).await;
    advance(secs(15)).await;
    let (polls, calls) = (inner.polls(), inner.calls());
    let mut waiter = task::spawn(());
    assert_ready_ok!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    let err = svc.call(Req::Ok).await.unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("a CircuitOpen error");
    assert_eq!(open.name(), "ff");
    assert_eq!(open.retry_after(), Some(secs(45)));
    assert_eq!((inner.polls(), inner.calls()), (polls, calls));
    assert_eq!(svc.handle().stats().rejected_calls, 1);
}

/// Half-open reserves in poll_ready: `half_open_permits` probes across all clones, no more; the
/// rest wait (default mode) and a freed permit wakes them.
#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permits_across_clones() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().half_open_permits(3));
    trip(&mut svc).await;
    advance(secs(60)).await;
    let mut clones: Vec<_> = (0..5).map(|_| (svc.clone(), task::spawn(()))).collect();
    let ready: Vec<bool> = clones
        .iter_mut()
        .map(|(c, w)| w.enter(|cx, _| c.poll_ready(cx)).is_ready())
        .collect();
    assert_eq!(ready, [true, true, true, false, false]);

    // Drops are neutral: dropping a ready clone gives its probe back and wakes the waiters.
    drop(clones.remove(0));
    let (c, w) = &mut clones[2];
    assert!(w.is_woken());
    assert_ready_ok!(w.enter(|cx, _| c.poll_ready(cx)));
    let (c, w) = &mut clones[3];
    assert!(w.is_woken());
    assert_pending!(w.enter(|cx, _| c.poll_ready(cx)));
}

/// Half-open reserves in poll_ready, in fail-fast mode: clones without a permit get `CircuitOpen`
/// at `call`.
#[tokio::test(start_paused = true)]
async fn fail_fast_half_open_rejects_clones_without_a_permit() {
    let (mut svc, inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(3)
            .fail_fast(),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    let calls = inner.calls();
    let mut outcomes = Vec::new();
    let mut held = Vec::new();
    let mut futures = Vec::new();
    for _ in 0..5 {
        let mut clone = svc.clone();
        let mut w = task::spawn(());
        assert_ready_ok!(w.enter(|cx, _| clone.poll_ready(cx)));
        let (tx, rx) = oneshot::channel();
        held.push(tx);
        let mut fut = task::spawn(clone.call(Req::Held(rx)));
        outcomes.push(match fut.poll() {
            Poll::Ready(Err(e)) => e.downcast_ref::<CircuitOpen>().map(|o| o.retry_after()),
            Poll::Pending => None,
            Poll::Ready(Ok(_)) => panic!("held call finished early"),
        });
        futures.push(fut);
    }
    assert_eq!(
        inner.calls(),
        calls + 3,
        "exactly three probes reached the service"
    );
    assert_eq!(outcomes, [None, None, None, Some(None), Some(None)]);
}

/// Drops are neutral: a dropped response future releases its probe permit and wakes waiters.
#[tokio::test(start_paused = true)]
async fn dropped_response_future_releases_its_probe() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    let mut prober = svc.clone();
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| prober.poll_ready(cx)));
    let (_tx, rx) = oneshot::channel();
    let future = prober.call(Req::Held(rx));

    let mut waiter = task::spawn(());
    assert_pending!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    drop(future);
    assert!(waiter.is_woken(), "freeing the permit must wake waiters");
    assert_ready_ok!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(svc.handle().state(), State::HalfOpen, "a drop is neutral");
    assert_eq!(
        svc.handle().stats().total_calls,
        5,
        "a drop records nothing"
    );
}

/// `Err` from the inner `poll_ready` is passed through, and the probe taken is given back.
#[tokio::test(start_paused = true)]
async fn inner_readiness_error_returns_the_probe() {
    let (mut svc, inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    let mut broken = svc.clone();
    inner.fail_ready.store(true, Ordering::SeqCst);
    let mut w = task::spawn(());
    let err = match w.enter(|cx, _| broken.poll_ready(cx)) {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected the inner error, got {other:?}"),
    };
    assert_eq!(err.to_string(), "inner not ready");
    inner.fail_ready.store(false, Ordering::SeqCst);
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| svc.poll_ready(cx)), "the permit came back");
}

/// Sticky readiness: a clone that returned Ready in the closed state is admitted at `call`
/// even after the circuit tripped; its result belongs to the old generation.
#[tokio::test(start_paused = true)]
async fn readiness_is_sticky_until_call() {
    let (mut svc, inner) = breaker(CircuitBreakerLayer::builder());
    let mut early = svc.clone();
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| early.poll_ready(cx)));
    trip(&mut svc).await;
    let calls = inner.calls();
    assert_eq!(early.call(Req::Ok).await.unwrap(), "ok");
    assert_eq!(inner.calls(), calls + 1);
    assert_eq!(
        svc.handle().state(),
        State::Open,
        "a stale success closes nothing"
    );
}

/// Polling again before `call` re-checks a reservation from an older generation.
#[tokio::test(start_paused = true)]
async fn repolling_drops_a_stale_reservation() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    let mut early = svc.clone();
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| early.poll_ready(cx)));
    trip(&mut svc).await;
    assert_pending!(w.enter(|cx, _| early.poll_ready(cx)));
}

/// Fail-fast: the rejection's error is built at `call`, so a clone that became ready while the
/// circuit was open but is called later (as `Steer` does with services it did not pick) reports
/// a current `retry_after`; a clone that is never called counts no rejection.
#[tokio::test(start_paused = true)]
async fn fail_fast_rejection_reports_a_current_retry_after() {
    let (mut svc, inner) = breaker(
        CircuitBreakerLayer::builder()
            .open_duration(secs(30))
            .fail_fast(),
    );
    trip(&mut svc).await;
    let mut polled_only = svc.clone();
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| polled_only.poll_ready(cx)));
    drop(polled_only);
    assert_eq!(
        svc.handle().stats().rejected_calls,
        0,
        "only calls count as rejections"
    );

    let mut late = svc.clone();
    assert_ready_ok!(w.enter(|cx, _| late.poll_ready(cx)));
    advance(secs(10)).await;
    let err = late.call(Req::Ok).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Some(secs(20))
    );

    assert_ready_ok!(w.enter(|cx, _| late.poll_ready(cx)));
    advance(secs(20)).await;
    let calls = inner.calls();
    let err = late.call(Req::Ok).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(
        open.retry_after(),
        Some(secs(0)),
        "the circuit admits again: retry now"
    );
    assert_eq!(
        inner.calls(),
        calls,
        "still not called: it was not polled ready"
    );
    assert_eq!(svc.handle().stats().rejected_calls, 2);
    assert_eq!(
        call(&mut svc, Req::Ok).await.unwrap(),
        "ok",
        "the next poll admits a probe"
    );
}
