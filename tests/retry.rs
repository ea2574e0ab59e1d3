//! `tower_breaker::retry::RetryPolicy` under tower's `RetryLayer`, outside a breaker, on tokio's
//! paused clock; and `tower::hedge` over a breaker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::RetryLayer;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_breaker::bulkhead::{error::BulkheadFull, BulkheadLayer};
use tower_breaker::circuit_breaker::{
    error::CircuitOpen, CircuitBreakerLayer, Classify, Immediate, Outcome, State,
};
use tower_breaker::retry::RetryPolicy;
use tower_breaker::BoxError;
use tower_layer::Layer;

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

/// What the scripted backend does with one call.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    Fail,
    /// Answers, asking the client to come back after this long.
    Throttled(Duration),
    /// Answers "no such thing": the request was wrong, the backend is fine.
    NotFound,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Ok,
    Throttled(Duration),
    NotFound,
}

/// The classifier the breakers and policies in these tests share.
#[derive(Debug, Clone, Copy)]
struct ByResp;

impl Classify<Resp, BoxError> for ByResp {
    fn classify(&self, result: Result<&Resp, &BoxError>) -> Outcome {
        match result {
            Ok(Resp::Ok) => Outcome::Success,
            Ok(Resp::Throttled(d)) => Outcome::Throttled {
                retry_after: Some(*d),
            },
            Ok(Resp::NotFound) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

/// When each call reached the backend.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Instant>>>);

impl Calls {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn at(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }

    /// The time between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        self.at().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// A backend that answers from `script`, then with `then`; failures say which call they were.
fn backend<Req: Send + 'static>(
    script: impl IntoIterator<Item = Reply>,
    then: Reply,
) -> (
    impl Service<Req, Response = Resp, Error = BoxError, Future: Send> + Clone + Send,
    Calls,
) {
    let script = Arc::new(Mutex::new(script.into_iter().collect::<VecDeque<_>>()));
    let calls = Calls::default();
    let log = calls.clone();
    let svc = service_fn(move |_: Req| {
        let n = {
            let mut at = log.0.lock().unwrap();
            at.push(Instant::now());
            at.len()
        };
        let reply = script.lock().unwrap().pop_front().unwrap_or(then);
        async move {
            match reply {
                Reply::Ok => Ok(Resp::Ok),
                Reply::Fail => Err(BoxError::from(format!("failure {n}"))),
                Reply::Throttled(d) => Ok(Resp::Throttled(d)),
                Reply::NotFound => Ok(Resp::NotFound),
                Reply::Hang => std::future::pending().await,
            }
        }
    });
    (svc, calls)
}

/// A budget that never runs out.
fn plenty() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(S(10), 1_000, 1_000.0))
}

/// A budget that counts what the policy does with it.
#[derive(Debug)]
struct Counting {
    deposits: AtomicU32,
    withdrawals: AtomicU32,
    allow: AtomicBool,
}

impl Counting {
    fn new() -> Arc<Self> {
        Arc::new(Counting {
            deposits: AtomicU32::new(0),
            withdrawals: AtomicU32::new(0),
            allow: AtomicBool::new(true),
        })
    }

    fn counts(&self) -> (u32, u32) {
        (
            self.deposits.load(Ordering::SeqCst),
            self.withdrawals.load(Ordering::SeqCst),
        )
    }
}

impl Budget for Counting {
    fn deposit(&self) {
        self.deposits.fetch_add(1, Ordering::SeqCst);
    }

    fn withdraw(&self) -> bool {
        self.withdrawals.fetch_add(1, Ordering::SeqCst);
        self.allow.load(Ordering::SeqCst)
    }
}

/// A fail-fast breaker that opens on the first failure, judging with [`ByResp`].
fn fail_fast(open: Duration) -> CircuitBreakerLayer<Immediate<ByResp>> {
    CircuitBreakerLayer::builder()
        .name("upstream")
        .consecutive_failures(1)
        .open_duration(open)
        .fail_fast()
        .classifier(ByResp)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn waits_out_the_retry_after_of_a_fail_fast_circuit_open() {
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    let (inner, calls) = backend::<u32>([Reply::Fail], Reply::Ok);
    let opened = Instant::now();
    let mut direct = layer.layer(inner.clone());
    assert!(direct.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(handle.state(), State::Open);

    // One second later, the circuit has 4 s to go: that, not the open duration or a back-off,
    // is what the policy waits.
    tokio::time::sleep(S(1)).await;
    let policy = RetryPolicy::builder(plenty())
        .backoff(MS(10), MS(10))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let task = tokio::spawn(async move { svc.ready().await?.call(1).await });

    tokio::time::sleep(MS(3_999)).await;
    assert_eq!(
        calls.count(),
        1,
        "the backend was called before the circuit's retry_after"
    );
    assert_eq!(handle.stats().rejected_calls, 1);

    assert_eq!(task.await.unwrap().unwrap(), Resp::Ok);
    assert_eq!(
        calls.at(),
        [opened, opened + S(5)],
        "called right at retry_after"
    );
    // The first attempt was the only one the circuit rejected.
    assert_eq!(handle.stats().rejected_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_without_retry_after_is_not_retried() {
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    handle.force_open();
    let budget = Counting::new();
    let (inner, calls) = backend::<u32>([], Reply::Ok);
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::builder(budget.clone())
                .max_attempts(10)
                .build()
                .unwrap(),
        ))
        .layer(layer)
        .service(inner);

    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.retry_after(), None);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.count(), 0);
    assert_eq!(handle.stats().rejected_calls, 1);
    assert_eq!(budget.counts(), (1, 0), "deposited, never withdrew");
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_longer_than_max_retry_after_is_returned_at_once() {
    let layer = fail_fast(S(60));
    let handle = layer.handle();
    let (inner, calls) = backend::<u32>([Reply::Fail], Reply::Ok);
    let mut direct = layer.layer(inner.clone());
    assert!(direct.ready().await.unwrap().call(0).await.is_err());

    let policy = RetryPolicy::builder(plenty())
        .max_retry_after(S(30))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Some(S(60))
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.count(), 1);
    assert_eq!(handle.stats().rejected_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn with_the_handle_a_failure_that_opens_the_circuit_is_retried_when_it_admits() {
    // Without the handle: the failure opens the circuit, the back-off retry 100 ms later is
    // rejected, and the last attempt is spent on that rejection.
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    let (inner, calls) = backend::<u32>([Reply::Fail], Reply::Ok);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(2)
        .backoff(MS(100), MS(100))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(start.elapsed(), MS(100));
    assert_eq!(calls.count(), 1);
    assert_eq!(handle.stats().rejected_calls, 1);

    // With it: the policy sees the circuit open and waits the 5 s instead.
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    let (inner, calls) = backend::<u32>([Reply::Fail], Reply::Ok);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(2)
        .backoff(MS(100), MS(100))
        .jitter(0.0)
        .circuit(handle.clone())
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), Resp::Ok);
    assert_eq!(calls.at(), [start, start + S(5)]);
    assert_eq!(handle.stats().rejected_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn with_the_handle_a_circuit_reopened_during_the_wait_is_waited_for_again() {
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    // The request's attempt fails (opening the circuit until 5 s); other traffic then finds
    // the circuit closed by hand at 2 s and opens it again with a failure (until 7 s).
    let (inner, calls) = backend::<u32>([Reply::Fail, Reply::Fail], Reply::Ok);
    let mut other = layer.layer(inner.clone());
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(2)
        .circuit(handle.clone())
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    let task = tokio::spawn(async move { svc.ready().await?.call(1).await });

    tokio::time::sleep(S(2)).await;
    assert_eq!(calls.count(), 1);
    handle.force_closed();
    assert!(other.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(handle.state(), State::Open);

    assert_eq!(task.await.unwrap().unwrap(), Resp::Ok);
    assert_eq!(calls.at(), [start, start + S(2), start + S(7)]);
    assert_eq!(handle.stats().rejected_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_forced_open_is_not_retried_into_with_the_handle() {
    let layer = fail_fast(S(5));
    let handle = layer.handle();
    let budget = Counting::new();
    // The attempt fails while an operator forces the circuit open.
    let calls = Arc::new(AtomicU32::new(0));
    let (count, operator) = (calls.clone(), handle.clone());
    let inner = service_fn(move |_: u32| {
        count.fetch_add(1, Ordering::SeqCst);
        operator.force_open();
        std::future::ready(Err::<Resp, BoxError>("failure".into()))
    });
    let policy = RetryPolicy::builder(budget.clone())
        .circuit(handle.clone())
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "failure");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not even a rejected attempt, and no budget spent on one.
    assert_eq!(handle.stats().rejected_calls, 0);
    assert_eq!(budget.counts(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn spends_its_budget_then_returns_failures_without_retry() {
    // Two retries a second, none earned by requests.
    let budget = Arc::new(TpsBudget::new(S(1), 2, 0.0));
    let (inner, calls) = backend::<u32>([], Reply::Fail);
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(100)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder(budget)
        .max_attempts(3)
        .backoff(MS(1), MS(1))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(breaker)
        .service(inner);

    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 3");
    assert_eq!(calls.count(), 3, "two retries from the budget");

    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "failure 4",
        "the budget is spent: no retry"
    );
    assert_eq!(calls.count(), 4);

    // The withdrawals age out of the budget's window.
    tokio::time::sleep(S(2)).await;
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 7");
    assert_eq!(calls.count(), 7);
}

#[tokio::test(start_paused = true)]
async fn deposits_once_per_request_and_withdraws_once_per_retry() {
    let budget = Counting::new();
    let (inner, calls) = backend::<u32>(
        [
            Reply::Fail,
            Reply::Fail,
            Reply::Ok,
            Reply::Ok,
            Reply::NotFound,
        ],
        Reply::Fail,
    );
    let policy = RetryPolicy::builder(budget.clone())
        .classifier(ByResp)
        .max_attempts(5)
        .backoff(MS(1), MS(1))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(
            CircuitBreakerLayer::builder()
                .consecutive_failures(100)
                .build()
                .unwrap(),
        )
        .service(inner);

    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), Resp::Ok);
    assert_eq!((calls.count(), budget.counts()), (3, (1, 2)));
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), Resp::Ok);
    assert_eq!((calls.count(), budget.counts()), (4, (2, 2)));
    assert_eq!(
        svc.ready().await.unwrap().call(3).await.unwrap(),
        Resp::NotFound
    );
    assert_eq!((calls.count(), budget.counts()), (5, (3, 2)));

    // A refused withdrawal ends the request with its failure.
    budget.allow.store(false, Ordering::SeqCst);
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 6");
    assert_eq!((calls.count(), budget.counts()), (6, (4, 3)));
}

#[tokio::test(start_paused = true)]
async fn honours_a_throttled_hint_so_the_breaker_admits_the_retry() {
    // The breaker opens for the hint too, so a retry any sooner would be rejected.
    let layer = fail_fast(S(60));
    let handle = layer.handle();
    let (inner, calls) = backend::<u32>([Reply::Throttled(S(2))], Reply::Ok);
    let policy = RetryPolicy::builder(plenty())
        .classifier(ByResp)
        .backoff(MS(10), MS(10))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(layer)
        .service(inner);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), Resp::Ok);
    assert_eq!(calls.at(), [start, start + S(2)]);
    let stats = handle.stats();
    assert_eq!((stats.throttled_calls, stats.rejected_calls), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_throttled_hint_is_clamped_to_max_retry_after() {
    let (inner, calls) = backend::<u32>([Reply::Throttled(S(600))], Reply::Ok);
    let policy = RetryPolicy::builder(plenty())
        .classifier(ByResp)
        .max_retry_after(S(5))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(inner);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), Resp::Ok);
    assert_eq!(calls.at(), [start, start + S(5)]);
}

#[tokio::test(start_paused = true)]
async fn backs_off_exponentially_with_jitter() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(100)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let (inner, calls) = backend::<u32>([], Reply::Fail);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(6)
        .backoff(MS(100), S(1))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(breaker.clone())
        .service(inner);
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    assert_eq!(calls.gaps(), [MS(100), MS(200), MS(400), MS(800), S(1)]);
    assert_eq!(
        handle.stats().failed_calls,
        6,
        "each attempt went through the breaker"
    );

    // With jitter, each wait is between half the back-off and all of it, and not always all.
    let (inner, calls) = backend::<u32>([], Reply::Fail);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(6)
        .backoff(MS(100), S(1))
        .jitter(0.5)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(breaker)
        .service(inner);
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    let full = [MS(100), MS(200), MS(400), MS(800), S(1)];
    let gaps = calls.gaps();
    for (gap, full) in gaps.iter().zip(full) {
        assert!(*gap <= full && *gap >= full / 2, "{gaps:?}");
    }
    assert_ne!(gaps, full);
}

#[tokio::test(start_paused = true)]
async fn never_retries_success_or_ignored_outcomes() {
    let (inner, calls) = backend::<u32>([Reply::NotFound, Reply::Ok], Reply::Fail);
    let policy = RetryPolicy::builder(plenty())
        .classifier(ByResp)
        .max_attempts(5)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(fail_fast(S(5)))
        .service(inner);
    assert_eq!(
        svc.ready().await.unwrap().call(1).await.unwrap(),
        Resp::NotFound
    );
    assert_eq!(calls.count(), 1);
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), Resp::Ok);
    assert_eq!(calls.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_rejection_is_not_retried() {
    let bulkhead = BulkheadLayer::builder()
        .name("chat")
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let bulkhead_handle = bulkhead.handle();
    let (inner, calls) = backend::<u32>([Reply::Hang], Reply::Ok);
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::builder(plenty())
                .max_attempts(5)
                .build()
                .unwrap(),
        ))
        .layer(CircuitBreakerLayer::new())
        .layer(bulkhead)
        .service(inner);

    let mut holder = svc.clone();
    let held = tokio::spawn(async move { holder.ready().await?.call(1).await });
    tokio::task::yield_now().await;
    assert_eq!(calls.count(), 1);

    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(err.is::<BulkheadFull>(), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.count(), 1);
    assert_eq!(
        bulkhead_handle.stats().rejected,
        1,
        "one rejection, no retry"
    );
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn stops_at_max_attempts() {
    let (inner, calls) = backend::<u32>([], Reply::Fail);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(4)
        .backoff(MS(1), MS(1))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(
            CircuitBreakerLayer::builder()
                .consecutive_failures(100)
                .build()
                .unwrap(),
        )
        .service(inner);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 4");
    assert_eq!(calls.count(), 4);

    // Attempts are counted per request.
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 8");

    let (inner, calls) = backend::<u32>([], Reply::Fail);
    let policy = RetryPolicy::builder(plenty())
        .max_attempts(1)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(inner);
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    assert_eq!(calls.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_that_are_not_clone_are_copied_by_the_users_function() {
    /// A request with a body that can be read once, unless it was buffered.
    struct Upload {
        buffered: bool,
    }

    let (inner, calls) = backend::<Upload>([Reply::Fail, Reply::Fail], Reply::Ok);
    let policy = RetryPolicy::builder(plenty())
        .clone_with(|req: &Upload| req.buffered.then_some(Upload { buffered: true }))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(inner);

    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Upload { buffered: false })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "failure 1");
    assert_eq!(
        calls.count(),
        1,
        "a request that cannot be copied is sent once"
    );

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Upload { buffered: true })
        .await;
    assert_eq!(res.unwrap(), Resp::Ok);
    assert_eq!(calls.count(), 3);
}

#[test]
fn bad_settings_are_config_errors() {
    let b = || RetryPolicy::builder(plenty());
    assert_eq!(
        b().max_attempts(0).build().unwrap_err().field(),
        "max_attempts"
    );
    assert_eq!(
        b().backoff(S(2), S(1)).build().unwrap_err().field(),
        "backoff"
    );
    for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert_eq!(b().jitter(bad).build().unwrap_err().field(), "jitter");
    }
    assert!(b()
        .max_attempts(1)
        .backoff(S(1), S(1))
        .jitter(1.0)
        .build()
        .is_ok());
    assert!(b()
        .backoff(Duration::ZERO, Duration::ZERO)
        .jitter(0.0)
        .build()
        .is_ok());
    assert!(format!("{:?}", RetryPolicy::new(plenty())).contains("max_attempts: 3"));
}

#[cfg(feature = "http")]
mod http_classifier {
    use super::*;
    use tower_breaker::http::HttpClassifier;

    type Res = http::Response<()>;

    fn http_backend(
        statuses: &'static [(u16, Option<&'static str>)],
    ) -> (
        impl Service<u32, Response = Res, Error = BoxError, Future: Send> + Clone + Send,
        Calls,
    ) {
        let calls = Calls::default();
        let log = calls.clone();
        let svc = service_fn(move |_: u32| {
            let n = {
                let mut at = log.0.lock().unwrap();
                at.push(Instant::now());
                at.len()
            };
            let (status, retry_after) = statuses[(n - 1).min(statuses.len() - 1)];
            let mut res = http::Response::builder().status(status);
            if let Some(v) = retry_after {
                res = res.header("retry-after", v);
            }
            std::future::ready(Ok::<_, BoxError>(res.body(()).unwrap()))
        });
        (svc, calls)
    }

    fn stack(
        inner: impl Service<u32, Response = Res, Error = BoxError, Future: Send> + Clone + Send,
    ) -> (
        impl Service<u32, Response = Res, Error = BoxError>,
        tower_breaker::circuit_breaker::Handle,
    ) {
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(5)
            .fail_fast()
            .classifier(HttpClassifier::new())
            .build()
            .unwrap();
        let handle = breaker.handle();
        let policy = RetryPolicy::builder(plenty())
            .classifier(HttpClassifier::new())
            .max_attempts(5)
            .backoff(MS(10), MS(10))
            .jitter(0.0)
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .layer(breaker)
            .service(inner);
        (svc, handle)
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_is_not_retried() {
        let (inner, calls) = http_backend(&[(404, None), (200, None)]);
        let (mut svc, handle) = stack(inner);
        let res = svc.ready().await.unwrap().call(1).await.unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(calls.count(), 1);
        assert_eq!(handle.stats().ignored_calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_with_retry_after_is_retried_after_it() {
        let (inner, calls) = http_backend(&[(503, Some("2")), (200, None)]);
        let (mut svc, handle) = stack(inner);
        let start = Instant::now();
        let res = svc.ready().await.unwrap().call(1).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(calls.at(), [start, start + S(2)]);
        assert_eq!(handle.stats().rejected_calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_500_backs_off() {
        let (inner, calls) = http_backend(&[(500, None), (502, None), (200, None)]);
        let (mut svc, _) = stack(inner);
        let res = svc.ready().await.unwrap().call(1).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(calls.gaps(), [MS(10), MS(10)]);
    }
}

/// Sends every request twice when it is slow.
#[derive(Clone)]
struct HedgeAll;

impl tower::hedge::Policy<u32> for HedgeAll {
    fn clone_request(&self, req: &u32) -> Option<u32> {
        Some(*req)
    }

    fn can_retry(&self, _: &u32) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_loser_is_dropped_and_neutral_and_gives_its_probe_permit_back() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(S(1))
        .half_open_permits(2)
        .success_threshold(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    // Each hedged request: the first copy hangs, the second (sent after 10 ms) answers.
    let (inner, calls) = backend::<u32>(
        [Reply::Hang, Reply::Ok, Reply::Fail, Reply::Hang, Reply::Ok],
        Reply::Ok,
    );
    let mut direct = breaker.layer(inner.clone());
    let mut hedge = tower::hedge::Hedge::new_with_mock_latencies(
        breaker.layer(inner),
        HedgeAll,
        1,
        0.5,
        S(60),
        &[10],
    );

    // Closed: the winner is one success; the loser counts for nothing.
    let start = Instant::now();
    assert_eq!(
        hedge.ready().await.unwrap().call(1).await.unwrap(),
        Resp::Ok
    );
    assert_eq!(calls.at(), [start, start + MS(10)]);
    let stats = handle.stats();
    assert_eq!(
        (
            stats.total_calls,
            stats.successful_calls,
            stats.failed_calls,
            stats.ignored_calls
        ),
        (1, 1, 0, 0)
    );

    // Half-open, two probe permits: each copy takes one.
    assert!(direct.ready().await.unwrap().call(0).await.is_err());
    tokio::time::sleep(S(1)).await;
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(
        hedge.ready().await.unwrap().call(2).await.unwrap(),
        Resp::Ok
    );
    assert_eq!(calls.count(), 5);
    let stats = handle.stats();
    assert_eq!(
        (
            stats.total_calls,
            stats.successful_calls,
            stats.failed_calls,
            stats.ignored_calls
        ),
        (3, 2, 1, 0),
        "the loser was neither a failure nor a success"
    );
    assert_eq!(
        (stats.state, stats.consecutive_successes),
        (State::HalfOpen, 1)
    );
    // The loser's permit is back, so a second probe can close the circuit.
    assert!(
        handle.is_admitting(),
        "the dropped loser kept its probe permit"
    );
    let probe = tokio::time::timeout(S(1), async { direct.ready().await.unwrap().call(3).await });
    assert_eq!(
        probe.await.expect("no probe permit left").unwrap(),
        Resp::Ok
    );
    assert_eq!(handle.state(), State::Closed);
}
