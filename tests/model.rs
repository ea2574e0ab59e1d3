//! Model-based test of the circuit breaker: random sequences of calls (success, failure,
//! ignored, slow, throttled with and without a hint, panic, dropped, held across transitions),
//! time advances and manual operations run against the real breaker on tokio's paused clock and
//! against a small sequential model written from docs/semantics.md. State, admissions and
//! stats must agree after every step.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, Outcome, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

#[path = "support/quiet_panics.rs"]
mod quiet_panics;
use quiet_panics::quiet_expected_panics;

const THRESHOLD: u32 = 3;
const OPEN: Duration = Duration::from_secs(10);
const PERMITS: u32 = 2;
const SUCCESSES: u32 = 2;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const SLOW: Duration = Duration::from_secs(1);
const SLOW_CALL: Duration = Duration::from_secs(2);
const WINDOW: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Ok,
    Fail,
    Ignored,
    Slow,
    Throttled(u64),
    ThrottledNoHint,
    Panic,
    Dropped,
}

#[derive(Debug, Clone)]
enum Op {
    Call(Kind),
    StartHeld,
    FinishHeld(bool),
    DropHeld,
    Advance(u64),
    ForceOpen,
    ForceClosed,
    Disable,
    Reset,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Ok),
        6 => Just(Kind::Fail),
        1 => Just(Kind::Ignored),
        2 => Just(Kind::Slow),
        1 => (0u64..30).prop_map(Kind::Throttled),
        1 => Just(Kind::ThrottledNoHint),
        1 => Just(Kind::Panic),
        1 => Just(Kind::Dropped),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => kind().prop_map(Op::Call),
        3 => Just(Op::StartHeld),
        2 => any::<bool>().prop_map(Op::FinishHeld),
        1 => Just(Op::DropHeld),
        5 => (0u64..15_000).prop_map(Op::Advance),
        // Long enough for a probe timeout plus a whole open period in one step, so held
        // probes outlive their half-open phase.
        2 => Just(Op::Advance(16_000)),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClosed),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ticket {
    Closed(u64),
    Probe(u64, u64),
    Unrecorded,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    successful: u64,
    failed: u64,
    ignored: u64,
    rejected: u64,
    throttled: u64,
    slow: u64,
}

#[derive(Debug)]
struct Model {
    now: Instant,
    state: State,
    generation: u64,
    open_until: Instant,
    streak: u32,
    window: VecDeque<bool>, // slow flags of the closed phase's last calls
    probes_admitted: u32,
    probe_successes: u32,
    probes: Vec<(u64, Instant)>,
    next_probe: u64,
    counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Success { slow: bool },
    Failure { slow: bool },
    Ignored,
    Throttled(Duration),
}

impl Model {
    fn new(now: Instant) -> Self {
        Model {
            now,
            state: State::Closed,
            generation: 0,
            open_until: now,
            streak: 0,
            window: VecDeque::new(),
            probes_admitted: 0,
            probe_successes: 0,
            probes: Vec::new(),
            next_probe: 0,
            counts: Counts::default(),
        }
    }

    fn go(&mut self, to: State, open_for: Duration) {
        self.state = to;
        self.generation += 1;
        self.streak = 0;
        self.probes_admitted = 0;
        self.probe_successes = 0;
        self.probes.clear();
        if to == State::Open {
            self.open_until = self.now + open_for;
        }
        if to == State::Closed {
            self.window.clear();
        }
    }

    /// Time-driven transitions, to a fixpoint.
    fn settle(&mut self) {
        loop {
            match self.state {
                State::Open if self.now >= self.open_until => self.go(State::HalfOpen, OPEN),
                State::HalfOpen
                    if self
                        .probes
                        .iter()
                        .any(|&(_, since)| self.now >= since + PROBE_TIMEOUT) =>
                {
                    self.go(State::Open, OPEN)
                }
                _ => return,
            }
        }
    }

    fn admit(&mut self) -> Option<Ticket> {
        self.settle();
        match self.state {
            State::Closed => Some(Ticket::Closed(self.generation)),
            State::Disabled => Some(Ticket::Unrecorded),
            State::HalfOpen if self.probes_admitted < PERMITS => {
                self.probes_admitted += 1;
                let id = self.next_probe;
                self.next_probe += 1;
                self.probes.push((id, self.now));
                Some(Ticket::Probe(self.generation, id))
            }
            _ => {
                self.counts.rejected += 1;
                None
            }
        }
    }

    fn release(&mut self, ticket: Ticket) {
        if let Ticket::Probe(generation, id) = ticket {
            if generation == self.generation && self.state == State::HalfOpen {
                let before = self.probes.len();
                self.probes.retain(|&(p, _)| p != id);
                if self.probes.len() < before {
                    self.probes_admitted -= 1;
                }
            }
        }
    }

    fn record(&mut self, ticket: Ticket, verdict: Verdict) {
        let slow = matches!(
            verdict,
            Verdict::Success { slow: true } | Verdict::Failure { slow: true }
        );
        match ticket {
            Ticket::Unrecorded => return,
            _ if slow => self.counts.slow += 1,
            _ => {}
        }
        match verdict {
            Verdict::Success { .. } => self.counts.successful += 1,
            Verdict::Failure { .. } => self.counts.failed += 1,
            Verdict::Ignored => self.counts.ignored += 1,
            Verdict::Throttled(_) => self.counts.throttled += 1,
        }
        match ticket {
            Ticket::Closed(generation)
                if generation == self.generation && self.state == State::Closed =>
            {
                match verdict {
                    Verdict::Ignored => {}
                    Verdict::Throttled(d) => self.go(State::Open, d),
                    Verdict::Success { slow } | Verdict::Failure { slow } => {
                        let failed = matches!(verdict, Verdict::Failure { .. });
                        self.streak = if failed { self.streak + 1 } else { 0 };
                        if failed && self.streak >= THRESHOLD {
                            return self.go(State::Open, OPEN);
                        }
                        if self.window.len() == WINDOW {
                            self.window.pop_front();
                        }
                        self.window.push_back(slow);
                        let slow_count = self.window.iter().filter(|s| **s).count();
                        if slow && self.window.len() == WINDOW && slow_count * 2 >= WINDOW {
                            self.go(State::Open, OPEN);
                        }
                    }
                }
            }
            Ticket::Probe(generation, id)
                if generation == self.generation
                    && self.state == State::HalfOpen
                    && self.probes.iter().any(|&(p, _)| p == id) =>
            {
                match verdict {
                    Verdict::Ignored => self.release(ticket),
                    Verdict::Success { slow: false } => {
                        self.probes.retain(|&(p, _)| p != id);
                        self.probe_successes += 1;
                        if self.probe_successes >= SUCCESSES {
                            self.go(State::Closed, OPEN);
                        }
                    }
                    Verdict::Success { slow: true } | Verdict::Failure { .. } => {
                        self.go(State::Open, OPEN)
                    }
                    Verdict::Throttled(d) => self.go(State::Open, d),
                }
            }
            _ => {} // a result from an earlier generation: lifetime counts only
        }
    }

    fn manual(&mut self, op: &Op) {
        self.settle();
        match op {
            Op::ForceOpen => self.go(State::ForcedOpen, OPEN),
            Op::ForceClosed => self.go(State::Closed, OPEN),
            Op::Disable => self.go(State::Disabled, OPEN),
            Op::Reset => {
                self.go(State::Closed, OPEN);
                self.counts = Counts::default();
            }
            _ => unreachable!(),
        }
    }
}

fn verdict(kind: Kind) -> Verdict {
    match kind {
        Kind::Ok => Verdict::Success { slow: false },
        Kind::Slow => Verdict::Success { slow: true },
        Kind::Fail | Kind::Panic | Kind::ThrottledNoHint => Verdict::Failure { slow: false },
        Kind::Ignored => Verdict::Ignored,
        Kind::Throttled(s) => Verdict::Throttled(
            Duration::from_secs(s).clamp(Duration::from_secs(1), Duration::from_secs(600)),
        ),
        Kind::Dropped => unreachable!("a dropped call has no verdict"),
    }
}

// ---------------------------------------------------------------------------------------------
// The real breaker.

#[derive(Debug)]
enum Req {
    Do(Kind),
    Held(oneshot::Receiver<bool>),
}

#[derive(Debug)]
enum Resp {
    Ok,
    Ignored,
    Throttled(u64),
    ThrottledNoHint,
}

#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

impl Service<Req> for Inner {
    type Response = Resp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match req {
                Req::Do(Kind::Ok) => Ok(Resp::Ok),
                Req::Do(Kind::Fail) => Err("fail".into()),
                Req::Do(Kind::Ignored) => Ok(Resp::Ignored),
                Req::Do(Kind::Slow) => {
                    tokio::time::sleep(SLOW_CALL).await;
                    Ok(Resp::Ok)
                }
                Req::Do(Kind::Throttled(s)) => Ok(Resp::Throttled(s)),
                Req::Do(Kind::ThrottledNoHint) => Ok(Resp::ThrottledNoHint),
                Req::Do(Kind::Panic) => panic!("inner panic"),
                Req::Do(Kind::Dropped) => std::future::pending().await,
                Req::Held(rx) => match rx.await {
                    Ok(true) => Ok(Resp::Ok),
                    _ => Err("held failure".into()),
                },
            }
        })
    }
}

fn classify(result: Result<&Resp, &BoxError>) -> Outcome {
    match result {
        Ok(Resp::Ok) => Outcome::Success,
        Ok(Resp::Ignored) => Outcome::Ignored,
        Ok(Resp::Throttled(s)) => Outcome::Throttled {
            retry_after: Some(Duration::from_secs(*s)),
        },
        Ok(Resp::ThrottledNoHint) => Outcome::Throttled { retry_after: None },
        Err(_) => Outcome::Failure,
    }
}

fn counts(handle: &Handle) -> Counts {
    let s = handle.stats();
    Counts {
        successful: s.successful_calls,
        failed: s.failed_calls,
        ignored: s.ignored_calls,
        rejected: s.rejected_calls,
        throttled: s.throttled_calls,
        slow: s.slow_calls,
    }
}

async fn run(ops: Vec<Op>) {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(THRESHOLD)
        .slow_calls(SLOW, 0.5)
        .count_window(WINDOW as u32)
        .minimum_calls(WINDOW as u32)
        .open_duration(OPEN)
        .half_open_permits(PERMITS)
        .success_threshold(SUCCESSES)
        .probe_timeout(PROBE_TIMEOUT)
        .fail_fast()
        .classifier(classify as fn(Result<&Resp, &BoxError>) -> Outcome)
        .build()
        .unwrap();
    let handle = layer.handle();
    let inner = Inner::default();
    let svc = layer.layer(inner.clone());
    let mut model = Model::new(Instant::now());
    type Held = (
        oneshot::Sender<bool>,
        tokio::task::JoinHandle<Result<Resp, BoxError>>,
        Ticket,
        Instant,
    );
    let mut held: Option<Held> = None;

    for (step, op) in ops.iter().enumerate() {
        let calls_before = inner.calls.load(Ordering::SeqCst);
        let mut expect_call = false;
        match op {
            Op::Call(kind) => {
                let ticket = model.admit();
                expect_call = ticket.is_some();
                let mut s = svc.clone();
                let kind = *kind;
                match kind {
                    Kind::Dropped => {
                        let mut fut = Box::pin(async move {
                            let _ = s.ready().await.unwrap().call(Req::Do(Kind::Dropped)).await;
                        });
                        let waker = futures::task::noop_waker();
                        let _ = fut.as_mut().poll(&mut Context::from_waker(&waker));
                        drop(fut);
                        if let Some(t) = ticket {
                            model.release(t);
                        }
                    }
                    _ => {
                        let task =
                            tokio::spawn(async move { s.ready().await?.call(Req::Do(kind)).await });
                        let _ = task.await;
                        if kind == Kind::Slow && ticket.is_some() {
                            model.now += SLOW_CALL;
                        }
                        if let Some(t) = ticket {
                            model.record(t, verdict(kind));
                        }
                    }
                }
            }
            Op::StartHeld if held.is_none() => {
                let ticket = model.admit();
                expect_call = ticket.is_some();
                let (tx, rx) = oneshot::channel();
                let mut s = svc.clone();
                let task = tokio::spawn(async move { s.ready().await?.call(Req::Held(rx)).await });
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                match ticket {
                    Some(t) => held = Some((tx, task, t, model.now)),
                    None => assert!(task.await.unwrap().is_err(), "step {step}: rejected"),
                }
            }
            Op::FinishHeld(ok) => {
                if let Some((tx, task, ticket, started)) = held.take() {
                    tx.send(*ok).unwrap();
                    let _ = task.await.unwrap();
                    let slow = model.now - started > SLOW;
                    let v = if *ok {
                        Verdict::Success { slow }
                    } else {
                        Verdict::Failure { slow }
                    };
                    model.record(ticket, v);
                }
            }
            Op::DropHeld => {
                if let Some((_tx, task, ticket, _)) = held.take() {
                    task.abort();
                    let _ = task.await;
                    model.release(ticket);
                }
            }
            Op::Advance(ms) => {
                let d = Duration::from_millis(*ms);
                tokio::time::advance(d).await;
                model.now += d;
            }
            Op::ForceOpen => {
                model.manual(op);
                handle.force_open();
            }
            Op::ForceClosed => {
                model.manual(op);
                handle.force_closed();
            }
            Op::Disable => {
                model.manual(op);
                handle.disable();
            }
            Op::Reset => {
                model.manual(op);
                handle.reset();
            }
            Op::StartHeld => {}
        }
        assert_eq!(Instant::now(), model.now, "step {step}: clocks diverged");
        model.settle();
        let called = inner.calls.load(Ordering::SeqCst) - calls_before;
        assert_eq!(
            called,
            usize::from(expect_call),
            "step {step} {op:?}: admission"
        );
        assert_eq!(
            handle.state(),
            model.state,
            "step {step} {op:?}: state; model {model:?}"
        );
        assert_eq!(counts(&handle), model.counts, "step {step} {op:?}: counts");
        let streak = handle.stats().consecutive_failures;
        assert_eq!(
            streak, model.streak,
            "step {step} {op:?}: consecutive failures"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        quiet_expected_panics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
