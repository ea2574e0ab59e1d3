//! Stress test: many tasks on a two-worker multi-thread runtime hammer one circuit breaker and
//! one bulkhead with random outcomes (success, failure, ignored, slow, panic, dropped
//! mid-flight, ready clone dropped without calling), while other tasks force, close, disable and reset the circuit and resize the
//! bulkhead. Bounded in time and count (well under 20 s in a debug build).
//!
//! Invariants, checked throughout:
//! - the bulkhead never has more calls inside the inner service than it allows (`in flight <=
//!   allowed`, where `allowed` is lowered after a shrink only once the bulkhead reports it has
//!   paid the shrink off);
//! - the circuit never has more probes inside the inner service than `half_open_permits`: a
//!   call is counted as a probe of a half-open phase when the circuit reports that phase
//!   (state and last transition from one consistent `stats()` snapshot) as the inner service is
//!   called;
//!
//! and at the end:
//! - every bulkhead slot is back (`active == 0`, `queued == 0`, `available == max`);
//! - no task is left waiting: every task finishes within a generous timeout, and after a last
//!   phase without manual operations the circuit closes again with successful calls (a leaked
//!   probe permit would leave it half-open with no permit, and the calls would wait forever).
//!
//! The random seed is printed; rerun one with `STRESS_SEED=<seed> cargo test --test stress`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tower::{Service, ServiceExt};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Classify, Handle, Outcome, State};
use tower_breaker::BoxError;
use tower_layer::Layer;

#[path = "support/quiet_panics.rs"]
mod quiet_panics;
use quiet_panics::quiet_expected_panics;

const TASKS: usize = 64;
const ITERATIONS: usize = 60;
const PERMITS: u32 = 2;
const OPEN: Duration = Duration::from_millis(40);
const MAX_CAP: usize = 8;
/// No single step of a task may take this long: it would be a task left waiting.
const STUCK: Duration = Duration::from_secs(10);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    Fail,
    Ignored,
    Slow,
    Panic,
    Dropped,
    /// A clone polled ready, then dropped without calling.
    ReadyDropped,
}

fn kind(rng: &mut Rng) -> Kind {
    match rng.below(20) {
        0..=8 => Kind::Ok,
        9..=12 => Kind::Fail,
        13 => Kind::Ignored,
        14..=15 => Kind::Slow,
        16 => Kind::Panic,
        17 => Kind::ReadyDropped,
        _ => Kind::Dropped,
    }
}

/// What the instrumented inner services observe.
#[derive(Default)]
struct Probes {
    /// In-flight probes per half-open phase (keyed by the phase's start).
    in_flight: Mutex<HashMap<Instant, u32>>,
    max_seen: AtomicUsize,
    counted: AtomicUsize,
}

#[derive(Default)]
struct Slots {
    in_flight: AtomicUsize,
    /// The most calls the bulkhead may have running now (see the module docs).
    allowed: AtomicUsize,
    violation: Mutex<Option<String>>,
}

/// Decrements a counter when the call ends (completes, panics or is dropped).
struct Exit(Box<dyn FnMut() + Send>);

impl Drop for Exit {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[derive(Clone)]
struct BreakerInner {
    handle: Handle,
    probes: Arc<Probes>,
}

#[derive(Clone)]
struct BulkheadInner {
    slots: Arc<Slots>,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<u8, BoxError>> + Send>>;

async fn outcome(kind: Kind, exit: Exit) -> Result<u8, BoxError> {
    let _exit = exit;
    match kind {
        Kind::Ok => {
            tokio::task::yield_now().await;
            Ok(0)
        }
        Kind::Fail => Err("fail".into()),
        Kind::Ignored => Ok(1),
        Kind::Slow => {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(0)
        }
        Kind::Panic => panic!("inner panic"),
        Kind::Dropped => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(0)
        }
        Kind::ReadyDropped => unreachable!("never called"),
    }
}

impl Service<Kind> for BreakerInner {
    type Response = u8;
    type Error = BoxError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, kind: Kind) -> BoxFut {
        let handle = &self.handle;
        let mut phase = None;
        if handle.state() == State::HalfOpen {
            let stats = handle.stats();
            if stats.state == State::HalfOpen {
                let start = stats.transitions.last().expect("a transition").at;
                let mut map = self.probes.in_flight.lock().unwrap();
                let n = map.entry(start).or_insert(0);
                *n += 1;
                self.probes
                    .max_seen
                    .fetch_max(*n as usize, Ordering::SeqCst);
                self.probes.counted.fetch_add(1, Ordering::Relaxed);
                phase = Some(start);
            }
        }
        let probes = self.probes.clone();
        let exit = Exit(Box::new(move || {
            if let Some(start) = phase.take() {
                *probes.in_flight.lock().unwrap().get_mut(&start).unwrap() -= 1;
            }
        }));
        Box::pin(outcome(kind, exit))
    }
}

impl Service<Kind> for BulkheadInner {
    type Response = u8;
    type Error = BoxError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, kind: Kind) -> BoxFut {
        let slots = self.slots.clone();
        let now = slots.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let allowed = slots.allowed.load(Ordering::SeqCst);
        if now > allowed {
            *slots.violation.lock().unwrap() =
                Some(format!("{now} calls in flight, {allowed} allowed"));
        }
        let exit = Exit(Box::new(move || {
            slots.in_flight.fetch_sub(1, Ordering::SeqCst);
        }));
        Box::pin(outcome(kind, exit))
    }
}

/// `Ok(0)` succeeds, `Ok(1)` says nothing (ignored), `Err` fails.
#[derive(Clone, Copy)]
struct Classifier;

impl Classify<u8, BoxError> for Classifier {
    fn classify(&self, result: Result<&u8, &BoxError>) -> Outcome {
        match result {
            Ok(0) => Outcome::Success,
            Ok(_) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

/// One call through `svc`: dropped mid-flight when `kind` says so.
async fn one_call<S>(svc: &mut S, kind: Kind) -> Result<(), String>
where
    S: Service<Kind, Response = u8, Error = BoxError> + Clone,
{
    if let Kind::ReadyDropped = kind {
        let mut clone = svc.clone();
        return match timeout(STUCK, clone.ready()).await {
            Ok(Ok(_)) => Ok(()), // the clone and its reservation are dropped here
            Ok(Err(e)) => Err(format!("poll_ready failed: {e}")),
            Err(_) => Err("left waiting in poll_ready".into()),
        };
    }
    let svc = match timeout(STUCK, svc.ready()).await {
        Ok(Ok(svc)) => svc,
        Ok(Err(e)) => return Err(format!("poll_ready failed: {e}")),
        Err(_) => return Err("left waiting in poll_ready".into()),
    };
    let fut = svc.call(kind);
    match kind {
        Kind::Dropped => {
            let _ = timeout(Duration::from_millis(1), fut).await;
        }
        // A panic unwinds through this task; the caller's join handle sees it.
        _ => {
            if timeout(STUCK, fut).await.is_err() {
                return Err("left waiting for a response".into());
            }
        }
    }
    Ok(())
}

#[test]
fn stress_breaker_and_bulkhead() {
    quiet_expected_panics();
    let seed = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("stress seed: STRESS_SEED={seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(seed));
}

async fn run(seed: u64) {
    let breaker_layer = CircuitBreakerLayer::builder()
        .name("stress")
        .consecutive_failures(3)
        .open_duration(OPEN)
        .half_open_permits(PERMITS)
        .success_threshold(PERMITS)
        .history_len(4)
        .classifier(Classifier)
        .build()
        .unwrap();
    let circuit = breaker_layer.handle();
    let probes = Arc::new(Probes::default());
    let breaker_inner = BreakerInner {
        handle: circuit.clone(),
        probes: probes.clone(),
    };
    let breaker = breaker_layer.layer(breaker_inner);

    let bulkhead_layer = BulkheadLayer::builder()
        .name("stress")
        .max_concurrent(4)
        .max_queue(16)
        .max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let bulkhead_handle = bulkhead_layer.handle();
    let slots = Arc::new(Slots::default());
    slots.allowed.store(4, Ordering::SeqCst);
    let bulkhead = bulkhead_layer.layer(BulkheadInner {
        slots: slots.clone(),
    });

    for (phase, manual) in [(0u64, true), (1, false)] {
        let stop = Arc::new(AtomicBool::new(false));
        let mut operators = Vec::new();
        if manual {
            let circuit = circuit.clone();
            let stop = stop.clone();
            let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
            operators.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match rng.below(5) {
                        0 => circuit.force_open(),
                        1 => circuit.force_closed(),
                        2 => circuit.disable(),
                        3 => circuit.reset(),
                        _ => {}
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
                    // Never leave it forced open or disabled for long.
                    if matches!(circuit.state(), State::ForcedOpen | State::Disabled) {
                        circuit.force_closed();
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
                }
            }));
        }
        {
            let handle = bulkhead_handle.clone();
            let slots = slots.clone();
            let stop = stop.clone();
            let mut rng = Rng(seed ^ 0x5851_f42d_4c95_7f2d ^ phase);
            operators.push(tokio::spawn(async move {
                let mut cap = 4usize;
                while !stop.load(Ordering::SeqCst) {
                    let new = 1 + rng.below(MAX_CAP as u64) as usize;
                    if new >= cap {
                        slots.allowed.store(new, Ordering::SeqCst);
                        handle.set_max_concurrent(new);
                    } else {
                        handle.set_max_concurrent(new);
                        // Lower the bound only once the shrink is paid off: from then on the
                        // bulkhead admits within the new capacity.
                        let deadline = Instant::now() + Duration::from_millis(50);
                        while Instant::now() < deadline {
                            if handle.stats().active <= new {
                                slots.allowed.store(new, Ordering::SeqCst);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    cap = new;
                    tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                }
            }));
        }

        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let mut rng = Rng(seed.wrapping_add((t as u64 + 1) * 0x9e37_79b9) ^ (phase << 40));
            let mut breaker = breaker.clone();
            let mut bulkhead = bulkhead.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..ITERATIONS {
                    let k = kind(&mut rng);
                    let to_breaker = rng.below(2) == 0;
                    match (k, to_breaker) {
                        // A panicking call unwinds through its task: run it on its own task
                        // (rejected calls do not reach the inner service and do not panic).
                        (Kind::Panic, _) => {
                            let mut b = breaker.clone();
                            let mut h = bulkhead.clone();
                            let joined = tokio::spawn(async move {
                                if to_breaker {
                                    one_call(&mut b, k).await
                                } else {
                                    one_call(&mut h, k).await
                                }
                            })
                            .await;
                            if let Ok(result) = joined {
                                result?;
                            }
                        }
                        (_, true) => one_call(&mut breaker, k).await?,
                        (_, false) => one_call(&mut bulkhead, k).await?,
                    }
                }
                Ok::<(), String>(())
            }));
        }
        for (t, task) in tasks.into_iter().enumerate() {
            let result = timeout(Duration::from_secs(60), task)
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: task {t} left waiting"))
                .unwrap();
            if let Err(e) = result {
                panic!("seed {seed} phase {phase}: task {t}: {e}");
            }
        }
        stop.store(true, Ordering::SeqCst);
        for op in operators {
            op.await.unwrap();
        }
        if let Some(v) = slots.violation.lock().unwrap().clone() {
            panic!("seed {seed} phase {phase}: bulkhead: {v}");
        }
        let max_probes = probes.max_seen.load(Ordering::SeqCst);
        assert!(
            max_probes <= PERMITS as usize,
            "seed {seed} phase {phase}: {max_probes} concurrent probes, {PERMITS} permitted"
        );
        // Every slot back, nobody queued.
        let s = bulkhead_handle.stats();
        assert_eq!(
            (s.active, s.queued, s.available),
            (0, 0, s.max_concurrent),
            "seed {seed} phase {phase}: bulkhead slots leaked: {s:?}"
        );
        assert_eq!(slots.in_flight.load(Ordering::SeqCst), 0);
    }

    // After the phase without manual operations, the circuit must close again: a leaked probe
    // permit would leave it half-open with nothing to admit, and these calls would wait.
    let mut breaker = breaker.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while circuit.state() != State::Closed {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the circuit does not close: {:?}",
            circuit.stats()
        );
        one_call(&mut breaker, Kind::Ok)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: after the stress: {e}"));
    }
    assert!(
        probes.in_flight.lock().unwrap().values().all(|n| *n == 0),
        "every probe finished"
    );
    println!(
        "stress: {} probes counted, at most {} at once; breaker {:?}; bulkhead {:?}",
        probes.counted.load(Ordering::SeqCst),
        probes.max_seen.load(Ordering::SeqCst),
        circuit.stats().transitions.len(),
        bulkhead_handle.stats()
    );
}
