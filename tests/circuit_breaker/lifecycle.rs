//! Decisions 6, 7 (panics), 8, 11, 13: generations, probes, manual states, listeners, stats.

use std::sync::Mutex;

use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::Service;
use tower_breaker::circuit_breaker::{
    error::CircuitOpen, CircuitBreakerLayer, Outcome, Reason, State, Transition,
};

use super::*;

async fn spawn_call(mut svc: Svc, req: Req) -> Result<&'static str, String> {
    tokio::spawn(async move { call(&mut svc, req).await.map_err(|e| e.to_string()) })
        .await
        .map_err(|join| {
            assert!(join.is_panic());
            "panicked".to_owned()
        })?
}

/// Generations: calls admitted while closed that finish after the trip — a success and a failure —
/// neither close nor reopen the half-open circuit, nor count as probes.
#[tokio::test(start_paused = true)]
async fn stale_results_from_before_the_trip_do_not_decide_half_open() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1),
    );
    let mut senders = Vec::new();
    let mut late = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = oneshot::channel();
        let mut early = svc.clone();
        late.push(tokio::spawn(async move {
            call(&mut early, Req::Held(rx)).await
        }));
        senders.push(tx);
    }
    tokio::task::yield_now().await;
    trip(&mut svc).await;
    advance(secs(60)).await;
    assert_eq!(svc.handle().state(), State::HalfOpen);

    let mut senders = senders.into_iter();
    senders.next().unwrap().send(Ok(())).unwrap();
    senders.next().unwrap().send(Err(())).unwrap();
    for handle in late {
        let _ = handle.await.unwrap();
    }
    let stats = svc.handle().stats();
    assert_eq!(
        stats.state,
        State::HalfOpen,
        "stale results must not decide"
    );
    assert_eq!(stats.consecutive_successes, 0);
    assert_eq!(
        (stats.successful_calls, stats.failed_calls),
        (1, 6),
        "still in lifetime stats"
    );

    // The real probe decides.
    assert_eq!(call(&mut svc, Req::Ok).await.unwrap(), "ok");
    assert_eq!(svc.handle().state(), State::Closed);
}

/// Drops are neutral, panics are failures: a panic in the inner future counts as a failure; five
/// trip the circuit.
#[tokio::test(start_paused = true)]
async fn inner_panics_count_as_failures() {
    let (svc, _inner) = breaker(CircuitBreakerLayer::builder());
    for _ in 0..5 {
        assert_eq!(
            spawn_call(svc.clone(), Req::Panic).await,
            Err("panicked".into())
        );
    }
    let stats = svc.handle().stats();
    assert_eq!(stats.failed_calls, 5);
    assert_eq!(stats.state, State::Open);
}

/// Drops are neutral, panics are failures: the panic is caught around the poll (as
/// `FutureExt::catch_unwind` or an executor would) and the response future is dropped afterwards,
/// outside any unwinding: the call still counts as a failure, not as a neutral drop.
#[tokio::test(start_paused = true)]
async fn inner_panic_caught_and_dropped_later_counts_as_failure() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    let mut future = Box::pin(svc.ready().await.unwrap().call(Req::Panic));
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future.as_mut().poll(&mut cx).is_ready()
    }));
    assert!(polled.is_err(), "the inner future panicked");
    assert!(!std::thread::panicking());
    drop(future);
    let stats = svc.handle().stats();
    assert_eq!((stats.failed_calls, stats.consecutive_failures), (1, 1));
}

/// Drops are neutral, panics are failures, and the half-open decision: a panicking probe reopens
/// the circuit and leaks no permit.
#[tokio::test(start_paused = true)]
async fn panicking_probe_reopens_and_frees_its_permit() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    assert_eq!(
        spawn_call(svc.clone(), Req::Panic).await,
        Err("panicked".into())
    );
    assert_eq!(svc.handle().state(), State::Open);
    advance(secs(60)).await;
    assert_eq!(
        call(&mut svc, Req::Ok).await.unwrap(),
        "ok",
        "a new probe is admitted"
    );
    assert_eq!(svc.handle().state(), State::Closed);
}

/// A panicking classifier is contained: the call counts as a failure.
#[tokio::test(start_paused = true)]
async fn panicking_classifier_counts_as_failure() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .classifier(|r: Result<&&'static str, &BoxError>| match r {
            Ok(&"slow") => panic!("classifier bug"),
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Inner::default());
    for _ in 0..2 {
        let mut svc = svc.clone();
        let joined =
            tokio::spawn(async move { svc.ready().await?.call(Req::Slow(ms(1))).await }).await;
        assert!(joined.unwrap_err().is_panic());
    }
    assert_eq!(handle.stats().failed_calls, 2);
    assert_eq!(handle.state(), State::Open);
}

/// With the slow-call rule on, a call whose classifier panics counts as failed but never as
/// slow (its guard does not carry the start time; documented on `Recorder`), while the same
/// slow call classified normally counts as slow.
#[tokio::test(start_paused = true)]
async fn a_panicking_classifier_fails_the_call_without_timing_it() {
    static PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let layer = CircuitBreakerLayer::builder()
        .slow_calls(ms(5), 1.0)
        .classifier(|r: Result<&&'static str, &BoxError>| match r {
            Ok(_) if PANIC.load(std::sync::atomic::Ordering::Relaxed) => panic!("classifier bug"),
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Inner::default());
    svc.ready()
        .await
        .unwrap()
        .call(Req::Slow(ms(10)))
        .await
        .unwrap();
    assert_eq!(
        (handle.stats().slow_calls, handle.stats().failed_calls),
        (1, 0)
    );

    PANIC.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut panicking = svc.clone();
    let joined =
        tokio::spawn(async move { panicking.ready().await?.call(Req::Slow(ms(10))).await }).await;
    assert!(joined.unwrap_err().is_panic());
    let stats = handle.stats();
    assert_eq!((stats.slow_calls, stats.failed_calls), (1, 1));
}

/// The half-open decision: `success_threshold` probe successes close; any probe failure reopens.
#[tokio::test(start_paused = true)]
async fn half_open_closes_after_threshold_and_reopens_on_any_failure() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    trip(&mut svc).await;
    advance(secs(60)).await;
    call(&mut svc, Req::Ok).await.unwrap();
    call(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.handle().stats().consecutive_successes, 2);
    assert!(call(&mut svc, Req::Fail).await.is_err());
    assert_eq!(
        svc.handle().state(),
        State::Open,
        "one probe failure reopens"
    );

    advance(secs(60)).await;
    for _ in 0..3 {
        call(&mut svc, Req::Ok).await.unwrap();
    }
    assert_eq!(svc.handle().state(), State::Closed);
    let reasons: Vec<Reason> = svc
        .handle()
        .stats()
        .transitions
        .iter()
        .map(|t| t.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            Reason::ConsecutiveFailures(5),
            Reason::OpenElapsed,
            Reason::ProbeFailed,
            Reason::OpenElapsed,
            Reason::ProbesSucceeded(3)
        ]
    );
}

/// The half-open decision and probe timeout: a probe outstanding past `probe_timeout` reopens the
/// circuit (waking waiters at that instant); its late result is ignored.
#[tokio::test(start_paused = true)]
async fn probe_timeout_reopens_and_late_result_is_ignored() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1)
            .probe_timeout(secs(5)),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    let (tx, rx) = oneshot::channel();
    let mut prober = svc.clone();
    let mut w = task::spawn(());
    assert_ready_ok!(w.enter(|cx, _| prober.poll_ready(cx)));
    let probe = tokio::spawn(prober.call(Req::Held(rx)));
    tokio::task::yield_now().await;

    let mut waiter = task::spawn(());
    assert_pending!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    advance(secs(5) - ms(1)).await;
    assert!(!waiter.is_woken());
    advance(ms(1)).await;
    assert!(waiter.is_woken(), "woken at the probe deadline");
    assert_pending!(waiter.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(svc.handle().state(), State::Open);
    assert_eq!(
        svc.handle().stats().transitions.last().unwrap().reason,
        Reason::ProbeTimedOut
    );

    tx.send(Ok(())).unwrap();
    probe.await.unwrap().unwrap();
    assert_eq!(
        svc.handle().state(),
        State::Open,
        "the late success is ignored"
    );
}

/// Forced open, disabled and reset: forced open never half-opens; fail-fast reports no retry_after.
#[tokio::test(start_paused = true)]
async fn forced_open_never_half_opens() {
    let (mut svc, inner) = breaker(CircuitBreakerLayer::builder().fail_fast());
    svc.handle().force_open();
    advance(secs(3600)).await;
    assert_eq!(svc.handle().state(), State::ForcedOpen);
    let err = call(&mut svc, Req::Ok).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        None
    );
    assert_eq!(inner.calls(), 0);
    svc.handle().force_closed();
    assert_eq!(call(&mut svc, Req::Ok).await.unwrap(), "ok");
}

/// Forced open, disabled and reset: disabled admits everything and records nothing; reset is a
/// fresh circuit.
#[tokio::test(start_paused = true)]
async fn disabled_records_nothing_and_reset_clears() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    fail(&mut svc, 4).await;
    svc.handle().disable();
    fail(&mut svc, 20).await;
    let stats = svc.handle().stats();
    assert_eq!(stats.state, State::Disabled);
    assert_eq!((stats.failed_calls, stats.total_calls), (4, 4));

    svc.handle().reset();
    let stats = svc.handle().stats();
    assert_eq!(stats.state, State::Closed);
    assert_eq!((stats.total_calls, stats.consecutive_failures), (0, 0));
    assert_eq!(stats.last_failure, None);
    fail(&mut svc, 4).await;
    assert_eq!(
        svc.handle().state(),
        State::Closed,
        "the streak restarted at reset"
    );
}

/// Manual operations start a new generation: a call admitted before `force_closed` does not
/// count after it.
#[tokio::test(start_paused = true)]
async fn results_from_before_a_manual_change_do_not_count() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().consecutive_failures(1));
    let (tx, rx) = oneshot::channel();
    let mut early = svc.clone();
    let pending = tokio::spawn(async move { call(&mut early, Req::Held(rx)).await });
    tokio::task::yield_now().await;
    svc.handle().force_closed();
    tx.send(Err(())).unwrap();
    assert!(pending.await.unwrap().is_err());
    assert_eq!(svc.handle().state(), State::Closed);
    assert!(call(&mut svc, Req::Fail).await.is_err());
    assert_eq!(svc.handle().state(), State::Open);
}

/// Observability: listeners run after the change and outside the lock (they may call back into the
/// handle), in order; a panicking listener is contained.
#[tokio::test(start_paused = true)]
async fn listeners_see_each_transition_after_it_happened() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder());
    let handle = svc.handle();
    let seen: Arc<Mutex<Vec<(State, State, State)>>> = Arc::default();
    {
        let seen = seen.clone();
        let h = handle.clone();
        handle.on_transition(move |t: &Transition| {
            seen.lock().unwrap().push((t.from, t.to, h.state()));
        });
    }
    handle.on_transition(|_| panic!("a buggy listener"));
    trip(&mut svc).await;
    advance(secs(60)).await;
    for _ in 0..3 {
        call(&mut svc, Req::Ok).await.unwrap();
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (State::Closed, State::Open, State::Open),
            (State::Open, State::HalfOpen, State::HalfOpen),
            (State::HalfOpen, State::Closed, State::Closed),
        ]
    );
}

/// Observability: the transition history is bounded, newest last.
#[tokio::test(start_paused = true)]
async fn transition_history_is_bounded() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().history_len(4));
    for _ in 0..5 {
        svc.handle().force_open();
        svc.handle().force_closed();
    }
    trip(&mut svc).await;
    let transitions = svc.handle().stats().transitions;
    assert_eq!(transitions.len(), 4);
    assert_eq!(
        transitions.last().unwrap().reason,
        Reason::ConsecutiveFailures(5)
    );
}

/// Every status field a dashboard needs is in `stats()`.
#[tokio::test(start_paused = true)]
async fn stats_cover_every_status_field() {
    let (mut svc, _inner) = breaker(CircuitBreakerLayer::builder().fail_fast());
    call(&mut svc, Req::Ok).await.unwrap();
    fail(&mut svc, 2).await;
    let failed_at = tokio::time::Instant::now();
    advance(secs(1)).await;
    let stats = svc.handle().stats();
    assert_eq!(stats.name, "default");
    assert_eq!(stats.state, State::Closed);
    assert_eq!(
        (
            stats.total_calls,
            stats.successful_calls,
            stats.failed_calls,
            stats.rejected_calls
        ),
        (3, 1, 2, 0)
    );
    assert_eq!(stats.consecutive_failures, 2);
    assert_eq!(stats.last_failure, Some(failed_at));
    assert_eq!(stats.failure_rate, Some(2.0 / 3.0));
    fail(&mut svc, 3).await;
    assert!(call(&mut svc, Req::Ok).await.is_err());
    let stats = svc.handle().stats();
    assert_eq!(stats.rejected_calls, 1);
    assert_eq!(stats.retry_after, Some(secs(60)));
}

/// Generations, for probes: a probe admitted in one half-open phase that finishes in the next
/// (after a probe timeout and a new open period) decides nothing.
#[tokio::test(start_paused = true)]
async fn stale_probe_from_an_earlier_half_open_phase_decides_nothing() {
    let (mut svc, _inner) = breaker(
        CircuitBreakerLayer::builder()
            .half_open_permits(1)
            .success_threshold(1)
            .probe_timeout(secs(5)),
    );
    trip(&mut svc).await;
    advance(secs(60)).await;
    let (tx, rx) = oneshot::channel();
    let mut prober = svc.clone();
    let stale = tokio::spawn(async move { call(&mut prober, Req::Held(rx)).await });
    tokio::task::yield_now().await;
    advance(secs(5)).await;
    assert_eq!(svc.handle().state(), State::Open, "probe timed out");
    advance(secs(60)).await;
    assert_eq!(svc.handle().state(), State::HalfOpen, "a new phase");

    tx.send(Ok(())).unwrap();
    stale.await.unwrap().unwrap();
    assert_eq!(
        svc.handle().state(),
        State::HalfOpen,
        "the stale probe must not close it"
    );
    assert_eq!(svc.handle().stats().consecutive_successes, 0);
}
