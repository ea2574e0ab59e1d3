//! No caller-visible failure while a healthy fallback exists: `Failover` moves past members that
//! would only reject locally (any request type), and, with `resend_failures`, re-sends failed
//! requests to the next member within attempts and budget. Paused clock, in-process members.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, Outcome, State};
use tower_breaker::failover::{Failover, Resend};
use tower_breaker::BoxError;
use tower_layer::Layer;

/// A request that cannot be cloned: local rejections must move on without re-sending.
#[derive(Debug)]
struct Prompt(&'static str);

type Member<Req> = BoxCloneSyncService<Req, String, BoxError>;

/// An in-process provider: answers `"{name}: {prompt}"`, counting its calls; `behaviour`
/// decides per call (by call number) whether it fails.
fn provider<Req: Send + 'static>(
    name: &'static str,
    calls: Arc<AtomicUsize>,
    fails: impl Fn(usize) -> bool + Clone + Send + Sync + 'static,
    text: fn(&Req) -> &'static str,
) -> impl Service<Req, Response = String, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(move |req: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let failed = fails(n);
        let answer = format!("{name}: {}", text(&req));
        async move {
            if failed {
                Err::<String, BoxError>(format!("{name} failed").into())
            } else {
                Ok(answer)
            }
        }
    })
}

fn prompt_text(p: &Prompt) -> &'static str {
    p.0
}

fn str_text(p: &&'static str) -> &'static str {
    p
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_with_no_queue_no_longer_attracts_traffic() {
    // The primary's only slot is taken by a call that hangs; its bulkhead has no queue, so
    // it is ready-with-rejection — which Failover must treat as "not ready".
    let primary_calls = counter();
    let bulkhead = BulkheadLayer::builder()
        .name("primary")
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let slots = bulkhead.handle();
    let hang = {
        let calls = primary_calls.clone();
        service_fn(move |p: Prompt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if p.0 == "hang" {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(format!("primary: {}", p.0))
            }
        })
    };
    let primary: Member<Prompt> = Member::new(bulkhead.layer(hang));
    let secondary: Member<Prompt> =
        Member::new(provider("secondary", counter(), |_| false, prompt_text));
    let mut occupy = primary.clone();
    let hanging = tokio::spawn(occupy.ready().await.unwrap().call(Prompt("hang")));
    tokio::task::yield_now().await;
    assert_eq!(slots.stats().active, 1);

    let mut failover = Failover::with_names([("primary", primary), ("secondary", secondary)]);
    let routes = failover.routes();
    for _ in 0..8 {
        let answer = failover
            .ready()
            .await
            .unwrap()
            .call(Prompt("hi"))
            .await
            .unwrap();
        assert_eq!(answer, "secondary: hi");
    }
    assert_eq!(routes.served(), [0, 8], "8 of 8 from the secondary");
    assert_eq!(
        slots.stats().rejected,
        0,
        "nothing was rejected: it was never chosen"
    );
    assert_eq!(
        primary_calls.load(Ordering::SeqCst),
        1,
        "only the hanging call"
    );

    // Once the slot is free again, the primary takes the traffic back.
    hanging.abort();
    let _ = hanging.await;
    let answer = failover.ready().await.unwrap().call(Prompt("back")).await;
    assert_eq!(answer.unwrap(), "primary: back");
}

#[tokio::test(start_paused = true)]
async fn a_fail_fast_open_circuit_moves_on_for_any_request_type() {
    let breaker = CircuitBreakerLayer::builder()
        .name("primary")
        .fail_fast()
        .build()
        .unwrap();
    let handle = breaker.handle();
    handle.force_open();
    let primary: Member<Prompt> =
        Member::new(breaker.layer(provider("primary", counter(), |_| false, prompt_text)));
    let secondary: Member<Prompt> =
        Member::new(provider("secondary", counter(), |_| false, prompt_text));
    let mut failover = Failover::new([primary, secondary]);
    let answer = failover.ready().await.unwrap().call(Prompt("x")).await;
    assert_eq!(answer.unwrap(), "secondary: x");
    assert_eq!(
        handle.stats().rejected_calls,
        0,
        "never chosen, so never rejected"
    );

    handle.force_closed();
    let answer = failover.ready().await.unwrap().call(Prompt("y")).await;
    assert_eq!(answer.unwrap(), "primary: y");
}

#[tokio::test(start_paused = true)]
async fn when_every_member_only_rejects_the_first_rejection_is_returned_at_once() {
    let open = |name: &'static str| {
        let breaker = CircuitBreakerLayer::builder()
            .name(name)
            .fail_fast()
            .build()
            .unwrap();
        breaker.handle().force_open();
        Member::<Prompt>::new(breaker.layer(provider(name, counter(), |_| false, prompt_text)))
    };
    let mut failover = Failover::new([open("a"), open("b"), open("c")]);
    let err = failover
        .ready()
        .await
        .unwrap()
        .call(Prompt("x"))
        .await
        .unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("the first member's rejection");
    assert_eq!(open.name(), "a");
}

#[tokio::test(start_paused = true)]
async fn a_nested_failover_of_rejecting_members_is_skipped_by_the_outer_one() {
    let open = |name: &'static str| {
        let breaker = CircuitBreakerLayer::builder()
            .name(name)
            .fail_fast()
            .build()
            .unwrap();
        breaker.handle().force_open();
        Member::<Prompt>::new(breaker.layer(provider(name, counter(), |_| false, prompt_text)))
    };
    let inner: Member<Prompt> = Member::new(Failover::new([open("a"), open("b")]));
    let healthy: Member<Prompt> = Member::new(provider("c", counter(), |_| false, prompt_text));
    let mut outer = Failover::new([inner, healthy]);
    let answer = outer.ready().await.unwrap().call(Prompt("x")).await;
    assert_eq!(answer.unwrap(), "c: x");
}

#[tokio::test(start_paused = true)]
async fn a_rejection_at_call_behind_a_buffer_is_resent_without_spending_budget() {
    // Behind a `Buffer` the member's readiness is the buffer's, so a fail-fast breaker and a
    // bulkhead can only reject at `call`. Re-sending moves those requests on.
    let breaker = CircuitBreakerLayer::builder()
        .name("open")
        .fail_fast()
        .build()
        .unwrap();
    breaker.handle().force_open();
    let open_calls = counter();
    let open = ServiceBuilder::new()
        .buffer(4)
        .layer(breaker)
        .service(provider("open", open_calls.clone(), |_| false, str_text));
    let bulkhead = BulkheadLayer::builder()
        .name("queued")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let queued_inner = bulkhead.layer(service_fn(|_: &'static str| async {
        std::future::pending::<()>().await;
        Ok::<String, BoxError>(String::new())
    }));
    let mut occupy = queued_inner.clone();
    let _held = tokio::spawn(occupy.ready().await.unwrap().call("hold"));
    tokio::task::yield_now().await;
    let queued = ServiceBuilder::new().buffer(4).service(queued_inner);
    let healthy_calls = counter();
    let healthy = provider("healthy", healthy_calls.clone(), |_| false, str_text);

    // No budget at all: only free re-sends can happen.
    let no_budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
    let mut failover = Failover::new([
        Member::<&'static str>::new(open),
        Member::new(queued),
        Member::new(healthy),
    ])
    .resend_failures(Resend::cloned().budget(no_budget));
    let routes = failover.routes();
    let started = tokio::time::Instant::now();
    let answer = failover.ready().await.unwrap().call("x").await.unwrap();
    assert_eq!(answer, "healthy: x");
    // CircuitOpen at once, then BulkheadTimeout after the 1 s wait, then served.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(routes.served(), [1, 1, 1]);
    assert_eq!(open_calls.load(Ordering::SeqCst), 0);
    assert_eq!(healthy_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn resend_respects_attempts() {
    let calls: Vec<_> = (0..3).map(|_| counter()).collect();
    let members: Vec<Member<&'static str>> = ["a", "b", "c"]
        .into_iter()
        .zip(&calls)
        .map(|(name, calls)| Member::new(provider(name, calls.clone(), |_| true, str_text)))
        .collect();
    let mut failover = Failover::new(members).resend_failures(Resend::cloned().attempts(2));
    let err = failover.ready().await.unwrap().call("x").await.unwrap_err();
    assert_eq!(err.to_string(), "b failed", "the last attempt's error");
    let counts: Vec<_> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn resend_spends_its_budget() {
    // A budget that allows one re-send for these deposits: 0 per second, 100 % of deposits.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 1.0));
    let a = counter();
    let b = counter();
    let mut failover = Failover::new([
        Member::<&'static str>::new(provider("a", a.clone(), |_| true, str_text)),
        Member::new(provider("b", b.clone(), |_| false, str_text)),
    ])
    .resend_failures(Resend::cloned().budget(budget));
    // The first request deposits once and may withdraw once.
    let first = failover.ready().await.unwrap().call("1").await;
    assert_eq!(first.unwrap(), "b: 1");
    // Spend without depositing, from outside: the budget is now empty.
    let err = {
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
        let mut broke = Failover::new([
            Member::<&'static str>::new(provider("a", a.clone(), |_| true, str_text)),
            Member::new(provider("b", b.clone(), |_| false, str_text)),
        ])
        .resend_failures(Resend::cloned().budget(budget));
        broke.ready().await.unwrap().call("2").await.unwrap_err()
    };
    assert_eq!(err.to_string(), "a failed", "no budget, no re-send");
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn ignored_and_successful_results_are_never_resent() {
    // The primary's breaker calls "not found" Ignored (a 4xx-style answer).
    let breaker = CircuitBreakerLayer::builder()
        .classifier(|r: Result<&String, &BoxError>| match r {
            Ok(s) if s.ends_with("not found") => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let handle = breaker.handle();
    let b = counter();
    let primary = breaker.layer(service_fn(|req: &'static str| async move {
        Ok::<_, BoxError>(format!("a: {req}"))
    }));
    let mut failover = Failover::new([
        Member::<&'static str>::new(primary),
        Member::new(provider("b", b.clone(), |_| false, str_text)),
    ])
    .resend_failures(Resend::cloned());
    let answer = failover.ready().await.unwrap().call("not found").await;
    assert_eq!(answer.unwrap(), "a: not found");
    let answer = failover.ready().await.unwrap().call("fine").await;
    assert_eq!(answer.unwrap(), "a: fine");
    assert_eq!(b.load(Ordering::SeqCst), 0);
    let s = handle.stats();
    assert_eq!((s.ignored_calls, s.successful_calls), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_response_the_breaker_calls_a_failure_is_resent() {
    // An `Ok` answer that the member's classifier calls a failure (like an HTTP 500).
    let breaker = CircuitBreakerLayer::builder()
        .classifier(|r: Result<&String, &BoxError>| match r {
            Ok(s) if s.contains("500") => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    let primary = breaker.layer(service_fn(|_: &'static str| async {
        Ok::<_, BoxError>("status 500".to_string())
    }));
    let mut failover = Failover::new([
        Member::<&'static str>::new(primary),
        Member::new(provider("b", counter(), |_| false, str_text)),
    ])
    .resend_failures(Resend::cloned());
    let answer = failover.ready().await.unwrap().call("q").await;
    assert_eq!(answer.unwrap(), "b: q");
}

#[tokio::test(start_paused = true)]
async fn a_failed_half_open_probes_request_is_served_by_the_next_member() {
    let breaker = CircuitBreakerLayer::builder()
        .name("primary")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .half_open_permits(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let primary_calls = counter();
    let primary = breaker.layer(provider(
        "primary",
        primary_calls.clone(),
        |_| true,
        str_text,
    ));
    let mut failover = Failover::new([
        Member::<&'static str>::new(primary),
        Member::new(provider("secondary", counter(), |_| false, str_text)),
    ])
    .resend_failures(Resend::cloned());

    // The trip itself is re-sent: the caller sees the secondary's answer.
    let answer = failover.ready().await.unwrap().call("1").await;
    assert_eq!(answer.unwrap(), "secondary: 1");
    assert_eq!(handle.state(), State::Open);

    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(handle.state(), State::HalfOpen);
    // The probe goes to the primary, fails, and its request is served by the secondary.
    let answer = failover.ready().await.unwrap().call("probe").await;
    assert_eq!(answer.unwrap(), "secondary: probe");
    assert_eq!(primary_calls.load(Ordering::SeqCst), 2);
    assert_eq!(handle.state(), State::Open);
    let failed: Vec<_> = handle.stats().transitions.iter().map(|t| t.to).collect();
    assert_eq!(failed, [State::Open, State::HalfOpen, State::Open]);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_rebuilt_is_not_resent() {
    let b = counter();
    let mut failover = Failover::new([
        Member::<&'static str>::new(provider("a", counter(), |_| true, str_text)),
        Member::new(provider("b", b.clone(), |_| false, str_text)),
    ])
    .resend_failures(Resend::with(|req: &&'static str| {
        (!req.starts_with("stream")).then_some(*req)
    }));
    let err = failover.ready().await.unwrap().call("stream").await;
    assert_eq!(err.unwrap_err().to_string(), "a failed");
    let answer = failover.ready().await.unwrap().call("plain").await;
    assert_eq!(answer.unwrap(), "b: plain");
    assert_eq!(b.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn no_member_ready_after_a_failure_returns_the_failure_without_waiting() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    breaker.handle().force_open();
    let closed_later: Member<&'static str> =
        Member::new(breaker.layer(provider("b", counter(), |_| false, str_text)));
    let mut failover = Failover::new([
        Member::<&'static str>::new(provider("a", counter(), |_| true, str_text)),
        closed_later,
    ])
    .resend_failures(Resend::cloned());
    let started = tokio::time::Instant::now();
    let err = failover.ready().await.unwrap().call("x").await.unwrap_err();
    assert_eq!(err.to_string(), "a failed");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn p2c_balance_over_breakers_needs_no_wrapper() {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PendingRequests};

    let endpoint = |name: &'static str, calls: Arc<AtomicUsize>| {
        let breaker = CircuitBreakerLayer::builder().name(name).build().unwrap();
        let handle = breaker.handle();
        let load = PendingRequests::new(
            provider(name, calls, |_| false, str_text),
            CompleteOnResponse::default(),
        );
        // The breaker is `Load` because its inner service is: Balance takes it as it is.
        (breaker.layer(load), handle)
    };
    let (a_calls, b_calls) = (counter(), counter());
    let (a, a_handle) = endpoint("a", a_calls.clone());
    let (b, _) = endpoint("b", b_calls.clone());
    let mut balance = Balance::new(ServiceList::new(vec![a, b]));

    a_handle.force_open();
    for _ in 0..20 {
        let answer = balance.ready().await.unwrap().call("x").await.unwrap();
        assert_eq!(
            answer, "b: x",
            "an open circuit is pending, so p2c skips it"
        );
    }
    assert_eq!(a_calls.load(Ordering::SeqCst), 0);

    a_handle.force_closed();
    for _ in 0..50 {
        balance.ready().await.unwrap().call("y").await.unwrap();
    }
    assert!(
        a_calls.load(Ordering::SeqCst) > 0,
        "a is back in the rotation"
    );
}

#[test]
fn breakers_bulkheads_and_failovers_report_their_inner_load() {
    use tower::load::{CompleteOnResponse, Load, PendingRequests};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let inner = || {
        PendingRequests::new(
            service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>()),
            CompleteOnResponse::default(),
        )
    };
    let mut breaker = CircuitBreakerLayer::new().layer(inner());
    let mut bulkhead = BulkheadLayer::builder().build().unwrap().layer(inner());
    assert_eq!(breaker.load(), bulkhead.load());
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(breaker.poll_ready(&mut cx).is_ready());
    let pending_call = breaker.call(());
    assert!(breaker.load() > bulkhead.load(), "one request in flight");
    assert!(bulkhead.poll_ready(&mut cx).is_ready());
    let _other = bulkhead.call(());
    assert_eq!(breaker.load(), bulkhead.load());
    drop(pending_call);

    let mut failover = Failover::new([inner(), inner()]);
    let idle = failover.load().expect("a member in service");
    assert!(failover.poll_ready(&mut cx).is_ready());
    let _call = failover.call(());
    let busy = failover.load().expect("a member in service");
    assert!(
        busy > idle,
        "the first member, which has the call in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_bulkhead_wait_moves_on_and_rejects_nothing_while_another_member_serves() {
    use tokio_test::{assert_pending, assert_ready_ok};

    // The primary's one slot is held; a caller may queue for 1 s. The secondary's circuit is
    // open (default mode: pending) until it is closed by hand, at the moment the wait expires.
    let bulkhead = BulkheadLayer::builder()
        .name("primary")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let slots = bulkhead.handle();
    let primary: Member<Prompt> =
        Member::new(bulkhead.layer(provider("primary", counter(), |_| false, prompt_text)));
    let mut holder = primary.clone();
    let hold = {
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(holder.poll_ready(&mut cx).is_ready());
        holder // keeps the slot while it lives (ready, never called)
    };
    let breaker = CircuitBreakerLayer::builder()
        .name("secondary")
        .build()
        .unwrap();
    let secondary_circuit = breaker.handle();
    secondary_circuit.force_open();
    let secondary: Member<Prompt> =
        Member::new(breaker.layer(provider("secondary", counter(), |_| false, prompt_text)));
    let mut failover = Failover::new([primary, secondary]);
    let mut task = tokio_test::task::spawn(());

    assert_pending!(task.enter(|cx, _| failover.poll_ready(cx)));
    assert_eq!(slots.stats().queued, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    secondary_circuit.force_closed();
    assert!(task.is_woken());
    // The wait expired: the primary counts as not ready, and the secondary, ready again, serves.
    assert_ready_ok!(task.enter(|cx, _| failover.poll_ready(cx)));
    let answer = failover.call(Prompt("a")).await.unwrap();
    assert_eq!(answer, "secondary: a");
    assert_eq!(slots.stats().timed_out, 0, "no caller was rejected");
    assert_eq!(slots.stats().queued, 0);

    // Still no slot: the secondary again. Then the slot frees and the primary is back.
    let answer = failover
        .ready()
        .await
        .unwrap()
        .call(Prompt("b"))
        .await
        .unwrap();
    assert_eq!(answer, "secondary: b");
    drop(hold);
    let answer = failover
        .ready()
        .await
        .unwrap()
        .call(Prompt("c"))
        .await
        .unwrap();
    assert_eq!(answer, "primary: c");
}
