//! loom models of the breaker's concurrent core: admission, probe permits, generation tags,
//! transitions and waiter wake-ups, explored over every interleaving (bounded preemptions).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom`. Under `--cfg loom` the crate's
//! atomics and mutexes are loom's (see `src/sync.rs`) and its clock only moves when a model
//! advances it (`tower_breaker::loom_clock`).
#![cfg(loom)]

use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use tower::Service;
use tower_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use tower_breaker::loom_clock;
use tower_layer::Layer;

#[derive(Clone)]
struct Echo;

impl Service<bool> for Echo {
    type Response = ();
    type Error = &'static str;
    type Future = Ready<Result<(), &'static str>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, ok: bool) -> Self::Future {
        ready(if ok { Ok(()) } else { Err("failed") })
    }
}

/// A waker that remembers it was woken (a loom atomic, so the model sees the race).
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    (flag.clone(), Waker::from(flag))
}

fn poll_ready(svc: &mut CircuitBreaker<Echo>, waker: &Waker) -> bool {
    let mut cx = Context::from_waker(waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => true,
        Poll::Pending => false,
        Poll::Ready(Err(e)) => panic!("{e}"),
    }
}

/// Completes one call through `svc` (its future is ready at once).
fn complete(svc: &mut CircuitBreaker<Echo>, ok: bool) {
    let (_, waker) = flag();
    assert!(poll_ready(svc, &waker));
    let mut future = std::pin::pin!(svc.call(ok));
    match future.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(_) => {}
        Poll::Pending => panic!("ready inner future"),
    }
}

use std::future::Future;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        loom_clock::reset();
        f()
    });
}

/// A half-open breaker with one probe permit (reached by tripping and advancing the clock).
fn half_open_one_permit() -> CircuitBreaker<Echo> {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(1))
        .half_open_permits(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let mut svc = layer.layer(Echo);
    complete(&mut svc, false);
    loom_clock::advance(Duration::from_secs(1));
    assert_eq!(svc.handle().state(), State::HalfOpen);
    svc
}

/// Two clones race for the single probe permit: exactly one wins; when both are dropped the
/// permit is back.
#[test]
fn two_probes_race_for_one_permit() {
    model(|| {
        let svc = half_open_one_permit();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let mut clone = svc.clone();
                thread::spawn(move || {
                    let (_, waker) = flag();
                    let won = poll_ready(&mut clone, &waker);
                    (won, clone) // keep the clone (and any permit) alive past the race
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners = results.iter().filter(|(won, _)| *won).count();
        assert_eq!(winners, 1, "exactly one probe admitted");
        drop(results);
        let mut again = svc.clone();
        let (_, waker) = flag();
        assert!(
            poll_ready(&mut again, &waker),
            "the dropped probe's permit came back"
        );
    });
}

/// A failure admitted in one generation races `force_closed`: whatever the order, the circuit
/// ends closed with no failure counted in the new generation.
#[test]
fn stale_result_races_a_transition() {
    model(|| {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Echo);
        complete(&mut svc, false); // streak 1 of 2
        let (_, waker) = flag();
        assert!(poll_ready(&mut svc, &waker));
        let future = svc.call(false); // admitted in the current generation
        let finisher = thread::spawn(move || {
            let (_, waker) = flag();
            let mut future = std::pin::pin!(future);
            assert!(future
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready());
        });
        let h = handle.clone();
        let closer = thread::spawn(move || h.force_closed());
        finisher.join().unwrap();
        closer.join().unwrap();
        let stats = handle.stats();
        assert_eq!(stats.state, State::Closed);
        assert_eq!(
            stats.consecutive_failures, 0,
            "a stale failure counted after force_closed"
        );
    });
}

/// A waiting clone re-polls while the probe holder drops its permit: the waiter is either
/// admitted or woken — never left pending without a wake-up.
#[test]
fn drop_races_a_wake_up() {
    model(|| {
        let svc = half_open_one_permit();
        let mut holder = svc.clone();
        let (_, waker) = flag();
        assert!(poll_ready(&mut holder, &waker), "holder takes the permit");
        let mut waiter = svc.clone();
        let (woken, waiter_waker) = flag();
        assert!(!poll_ready(&mut waiter, &waiter_waker), "waiter is pending");

        let dropper = thread::spawn(move || drop(holder));
        let poller = thread::spawn(move || {
            let (again, waker) = flag();
            let ready = poll_ready(&mut waiter, &waker);
            (ready, again, waiter) // a dropped waiter is rightly never woken: keep it alive
        });
        dropper.join().unwrap();
        let (ready, woken_again, _waiter) = poller.join().unwrap();
        let (w1, w2) = (
            woken.0.load(Ordering::SeqCst),
            woken_again.0.load(Ordering::SeqCst),
        );
        assert!(
            ready || w1 || w2,
            "lost wake-up: pending and never woken ({ready} {w1} {w2})"
        );
    });
}

/// `force_closed` races a waiter re-registering on a forced-open circuit: the waiter is either
/// admitted or woken.
#[test]
fn force_closed_races_a_waiter() {
    model(|| {
        let layer = CircuitBreakerLayer::builder().build().unwrap();
        let handle = layer.handle();
        handle.force_open();
        let mut waiter = layer.layer(Echo);
        let (first, waker) = flag();
        assert!(!poll_ready(&mut waiter, &waker));
        let closer = thread::spawn(move || handle.force_closed());
        let poller = thread::spawn(move || {
            let (again, waker) = flag();
            (poll_ready(&mut waiter, &waker), again, waiter)
        });
        closer.join().unwrap();
        let (ready, again, _waiter) = poller.join().unwrap();
        let woke = first.0.load(Ordering::SeqCst) || again.0.load(Ordering::SeqCst);
        assert!(ready || woke, "lost wake-up on force_closed");
    });
}

/// A probe result from an earlier half-open phase races the circuit entering a new half-open
/// phase (and a new probe succeeding in it): whatever the order, the stale success decides
/// nothing — the new phase has one success of the two it needs, so it stays half-open.
#[test]
fn stale_probe_result_races_a_new_half_open_phase() {
    model(|| {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(1))
            .half_open_permits(2)
            .success_threshold(2)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Echo);
        complete(&mut svc, false);
        loom_clock::advance(Duration::from_secs(1));
        assert_eq!(handle.state(), State::HalfOpen);
        // Probe A is admitted and left running; probe B fails and reopens the circuit.
        let mut a = svc.clone();
        let (_, waker) = flag();
        assert!(poll_ready(&mut a, &waker));
        let stale = a.call(true);
        complete(&mut svc.clone(), false);
        assert_eq!(handle.state(), State::Open);
        // The open period is over: the next look at the circuit starts a new half-open phase.
        loom_clock::advance(Duration::from_secs(1));

        let finisher = thread::spawn(move || {
            let (_, waker) = flag();
            let mut stale = std::pin::pin!(stale);
            assert!(stale
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready());
        });
        let h = handle.clone();
        let mut c = svc.clone();
        let prober = thread::spawn(move || {
            assert_eq!(h.state(), State::HalfOpen);
            complete(&mut c, true); // probe C of the new phase succeeds
        });
        finisher.join().unwrap();
        prober.join().unwrap();
        let stats = handle.stats();
        assert_eq!(
            (stats.state, stats.consecutive_successes),
            (State::HalfOpen, 1),
            "a stale probe success counted in a later half-open phase"
        );
    });
}
