//! Behaviours a mutation-testing sample showed the rest of the suite did not pin: each test
//! here fails with the named mutant of the core applied.

use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok};
use tower::Service;
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

/// Answers `Ok` for `true` and `Err` for `false`, at once.
#[derive(Clone)]
struct Answer;

impl Service<bool> for Answer {
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ok: bool) -> Self::Future {
        ready(if ok { Ok(()) } else { Err("down".into()) })
    }
}

/// `<` → `>` in the fail-fast path's lock-free refusal: a fail-fast circuit whose open
/// duration has ended must admit the next call as a probe, even when nothing has looked at the
/// circuit since (so no one has moved it to half-open yet).
#[tokio::test(start_paused = true)]
async fn a_fail_fast_circuit_past_its_open_deadline_admits_a_probe_without_being_observed() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .half_open_permits(1)
        .success_threshold(1)
        .fail_fast()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());

    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    assert!(svc.call(false).await.is_err());
    // Before the deadline: rejected.
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    let err = svc.call(true).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    // Past the deadline, with no `state()` or other observation in between: a probe goes
    // through and closes the circuit.
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    svc.call(true)
        .await
        .expect("admitted as a probe, not refused");
    assert_eq!(handle.state(), State::Closed);
}

/// `==` → `!=` in the reservation's generation check: a clone that became ready before a
/// transition and is polled again after it must trade its stale reservation for a current one,
/// so that its call counts.
#[tokio::test(start_paused = true)]
async fn a_reservation_from_before_a_transition_is_renewed_on_the_next_poll() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());

    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    // Two transitions while the clone holds its admission: a new generation.
    handle.force_open();
    handle.force_closed();
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    assert!(svc.call(false).await.is_err());
    // The failure counted in the current generation, and one failure trips.
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.stats().consecutive_failures, 0, "reset by the trip");
}

/// `delete !` in the bulkhead's waiter re-registration: a queued caller polled again from
/// another task must be woken on that task when a slot frees.
#[tokio::test(start_paused = true)]
async fn a_queued_caller_polled_from_a_new_task_is_woken_there() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut holder = layer.layer(Answer);
    let mut waiter = layer.layer(Answer);
    let mut first = tokio_test::task::spawn(());
    let mut second = tokio_test::task::spawn(());

    assert_ready_ok!(first.enter(|cx, _| holder.poll_ready(cx)));
    assert_pending!(first.enter(|cx, _| waiter.poll_ready(cx)));
    // The waiting caller moves to another task (a `Buffer` worker restarted, a future moved).
    assert_pending!(second.enter(|cx, _| waiter.poll_ready(cx)));
    drop(holder);
    assert!(second.is_woken(), "the task now waiting is woken");
    assert_ready_ok!(second.enter(|cx, _| waiter.poll_ready(cx)));
}

/// `Shared::probe_started` replaced with `()`: a probe admitted by `poll_ready` but called
/// later has its `probe_timeout` counted from the call, not from the admission — a caller that
/// readies a service and calls it a while later does not have its probe timed out early.
#[tokio::test(start_paused = true)]
async fn a_probe_timeout_counts_from_the_call_not_from_poll_ready() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .half_open_permits(1)
        .success_threshold(1)
        .probe_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let (mock, mut upstream) = tower_test::mock::pair::<bool, ()>();
    let mut svc = layer.layer(mock);
    let mut task = tokio_test::task::spawn(());
    upstream.allow(2);

    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    let failed = svc.call(false);
    upstream.next_request().await.unwrap().1.send_error("down");
    assert!(failed.await.is_err());
    assert_eq!(handle.state(), State::Open);

    tokio::time::advance(Duration::from_secs(5)).await;
    // Admitted as the probe now, called 6 s later; its call then runs for 6 s more.
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    tokio::time::advance(Duration::from_secs(6)).await;
    let mut probe = tokio_test::task::spawn(svc.call(true));
    let (_, respond) = upstream.next_request().await.unwrap();
    assert_pending!(probe.poll());
    tokio::time::advance(Duration::from_secs(6)).await;
    // 12 s after admission but 6 s after the call: not timed out.
    assert_eq!(handle.state(), State::HalfOpen);
    respond.send_response(());
    assert_ready_ok!(probe.poll());
    assert_eq!(handle.state(), State::Closed);
}

/// `<` → `<=` in the half-open free-permit check: a half-open circuit whose probe permits are
/// all taken is not admitting (what `Failover` and health reports read).
#[tokio::test(start_paused = true)]
async fn a_half_open_circuit_with_every_permit_taken_is_not_admitting() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .half_open_permits(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    assert!(svc.call(false).await.is_err());
    assert!(!handle.is_admitting(), "open");

    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(handle.is_admitting(), "half-open with a free permit");
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx))); // takes the only permit
    assert_eq!(handle.state(), State::HalfOpen);
    assert!(!handle.is_admitting(), "half-open, every permit taken");
}

/// `+` → `-` in `last_failure`: the instant reported is when the failure was recorded.
#[tokio::test(start_paused = true)]
async fn stats_report_when_the_last_failure_happened() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());
    assert_eq!(handle.stats().last_failure, None);
    tokio::time::advance(Duration::from_secs(3)).await;
    let failed_at = tokio::time::Instant::now();
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    assert!(svc.call(false).await.is_err());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(handle.stats().last_failure, Some(failed_at));
}

/// `>` → `>=` in the window's rates: an empty window has no failure or slow-call rate (not
/// NaN), before any call and after a close empties it.
#[tokio::test(start_paused = true)]
async fn an_empty_window_has_no_rates() {
    let layer = CircuitBreakerLayer::builder()
        .failure_rate(0.5)
        .slow_calls(Duration::from_secs(1), 0.5)
        .count_window(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let stats = handle.stats();
    assert_eq!((stats.failure_rate, stats.slow_call_rate), (None, None));
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    svc.call(true).await.unwrap();
    let stats = handle.stats();
    assert_eq!(
        (stats.failure_rate, stats.slow_call_rate),
        (Some(0.0), Some(0.0))
    );
}

/// The state's and the transition's text (`Display`, used in logs and reports), `is_open`, and
/// a handle's `Debug` (which shows the circuit's name and state).
#[tokio::test(start_paused = true)]
async fn states_and_transitions_describe_themselves() {
    let names = [
        (State::Closed, "closed", false),
        (State::Open, "open", true),
        (State::HalfOpen, "half_open", false),
        (State::ForcedOpen, "forced_open", true),
        (State::Disabled, "disabled", false),
    ];
    for (state, name, open) in names {
        assert_eq!(state.to_string(), state.as_str());
        assert_eq!(state.to_string(), name);
        assert_eq!(state.is_open(), open, "{state}");
    }

    let layer = CircuitBreakerLayer::builder()
        .name("upstream")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    handle.force_open();
    let transition = handle.stats().transitions.pop().unwrap();
    assert_eq!(
        transition.to_string(),
        "closed -> forced_open (forced open)"
    );
    let debug = format!("{handle:?}");
    assert!(
        debug.contains("upstream") && debug.contains("ForcedOpen"),
        "{debug}"
    );
}

/// `%` → `/` in the time window's bucket index: outcomes recorded in different buckets of the
/// window all count (not only the latest bucket's).
#[tokio::test(start_paused = true)]
async fn a_time_window_counts_every_bucket_it_spans() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.9)
        .minimum_calls(100)
        .time_window(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());
    for ok in [true, false, false, true] {
        assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
        let _ = svc.call(ok).await;
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    assert_eq!(handle.stats().failure_rate, Some(0.5));
}

/// `TimeWindow::clear` replaced with `()`: a circuit that closes starts with an empty time
/// window, so the failures that tripped it do not count again.
#[tokio::test(start_paused = true)]
async fn a_closing_circuit_empties_its_time_window() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .minimum_calls(2)
        .time_window(Duration::from_secs(60))
        .open_duration(Duration::from_secs(5))
        .half_open_permits(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Answer);
    let mut task = tokio_test::task::spawn(());
    for _ in 0..2 {
        assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
        let _ = svc.call(false).await;
    }
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    svc.call(true).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.stats().failure_rate, None, "the window starts empty");
    // A success after the close: the window holds it alone (with the old failures still
    // counted the rate would be 2/3 and trip the circuit again).
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    svc.call(true).await.unwrap();
    assert_eq!(handle.stats().failure_rate, Some(0.0));
}
