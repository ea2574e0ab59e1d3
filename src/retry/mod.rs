//! A breaker-aware [`tower::retry::Policy`]: retries failed calls without retrying into an
//! open circuit, honouring the server's back-off hints, within a retry budget.
//!
//! [`RetryPolicy`] goes *outside* the breaker, in tower's
//! [`RetryLayer`](tower::retry::RetryLayer), so every attempt passes the breaker and is
//! classified by it:
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy))   // outside: each attempt is one call to the breaker
//!     .layer(breaker)
//!     .service(client)
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower::retry::{budget::TpsBudget, RetryLayer};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::retry::RetryPolicy;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("flaky")
//!     .consecutive_failures(2)
//!     .open_duration(Duration::from_secs(5))
//!     .fail_fast()
//!     .build()?;
//! let policy = RetryPolicy::builder(Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)))
//!     .max_attempts(4)
//!     .backoff(Duration::from_millis(100), Duration::from_secs(10))
//!     .circuit(breaker.handle())
//!     .build()?;
//!
//! // A dependency that fails twice, then recovers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy))
//!     .layer(breaker)
//!     .service(service_fn(move |prompt: &'static str| {
//!         let n = counter.fetch_add(1, Ordering::SeqCst);
//!         async move { if n < 2 { Err("overloaded") } else { Ok(prompt.len()) } }
//!     }));
//!
//! let start = Instant::now();
//! assert_eq!(svc.ready().await?.call("hello").await?, 5);
//! // The second failure opened the circuit for 5 s: the third attempt waited for it to
//! // half-open instead of being rejected, and was the probe that found the dependency back.
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert!(start.elapsed() >= Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried, and when
//!
//! Each result is looked at in this order:
//!
//! | result of the attempt | the policy |
//! | --- | --- |
//! | a [`CircuitOpen`] error with `retry_after() == Some(d)` | retries after `d` (never earlier: the circuit would reject it again) |
//! | a [`CircuitOpen`] error with `retry_after() == None` (forced open, or half-open with every probe permit taken) | does not retry, unless the [`circuit`](Builder::circuit) handle now reports the circuit `Open` with a `retry_after`, which it then waits for |
//! | classified [`Success`](Outcome::Success) | does not retry |
//! | classified [`Ignored`](Outcome::Ignored) (a 4xx with `HttpClassifier`; a bulkhead's `BulkheadFull` / `BulkheadTimeout` with [`DefaultClassifier`]) | does not retry |
//! | classified [`Throttled { retry_after: Some(d) }`](Outcome::Throttled) | retries after `d`, clamped to [`max_retry_after`](Builder::max_retry_after) |
//! | classified [`Failure`](Outcome::Failure) or `Throttled { retry_after: None }` | retries after an exponential back-off with jitter |
//!
//! The classifier is the policy's own ([`Builder::classifier`], default
//! [`DefaultClassifier`]; with feature `http`, pass `HttpClassifier::new()`), because the policy
//! sees results after the breaker has passed them on. `CircuitOpen` is recognised before the
//! classifier runs, by downcasting the error (a [`BoxError`] after the
//! breaker), so a classifier need not know about it.
//!
//! A retry is then still refused when the request has had
//! [`max_attempts`](Builder::max_attempts) attempts, when the circuit stays open longer than
//! `max_retry_after`, when the [`circuit`](Builder::circuit) handle reports it forced open, or
//! when the budget has no retry left; the result of the last attempt is returned as it is.
//!
//! **Bulkhead rejections are not retried.** `BulkheadFull` and `BulkheadTimeout` are local
//! backpressure: the caller's own service is at capacity, so sending the request again adds to
//! the queue that just turned it away. Shed the load instead (with a classifier that returns
//! `Failure` for them, the policy would retry them like any failure).
//!
//! # Waiting for the circuit
//!
//! A fail-fast breaker rejects a call to an open circuit with [`CircuitOpen`], whose
//! `retry_after()` says when the circuit admits a probe; the policy waits exactly that long, so
//! a retry is never spent on a circuit that will reject it. A default-mode breaker never
//! rejects: `RetryLayer` waits in the breaker's `poll_ready` until the circuit admits, whatever
//! the policy decided.
//!
//! With [`Builder::circuit`] the policy also asks the breaker's [`Handle`] before *every* retry,
//! so it knows when a failed attempt has just tripped the circuit: it then waits for the
//! circuit's `stats().retry_after` instead of its shorter back-off (with a fail-fast breaker,
//! that saves the attempt a back-off-timed retry would waste on a rejection). A circuit forced
//! open is not retried into, and a circuit tripped again while the policy waited is waited for
//! again (within `max_retry_after`).
//!
//! # Budget and attempts
//!
//! The policy spends a tower [`Budget`], such as
//! [`TpsBudget`]: it deposits once per request (when `RetryLayer` clones the
//! request for its first attempt) and withdraws once per retry, and does not retry when the
//! withdrawal is refused. The withdrawal comes last, so a retry refused for another reason
//! costs nothing. The budget is shared by every clone of the policy (it is in an [`Arc`]);
//! attempts are counted per request, because `RetryLayer` clones the policy for each one.
//! Every attempt counts, including one a fail-fast breaker rejected.
//!
//! # Requests that are not `Clone`
//!
//! By default a request is re-sent as `req.clone()` ([`ByClone`]). For other requests, give
//! [`Builder::clone_with`] a function that returns `None` when a request cannot be copied (then
//! it is sent once, without retries), e.g. a `reqwest::Request`:
//! `.clone_with(|req: &reqwest::Request| req.try_clone())`.
//!
//! # Hedging
//!
//! `tower::hedge::Hedge` over a breaker sends a second copy of a slow request and keeps the
//! first answer. The breaker sees the loser only as a dropped response future: that counts
//! neither as a failure nor as a success, and a half-open probe permit it held is given back,
//! so a hedge can neither trip a circuit nor use up its probes. Each hedged request does take
//! two admissions, though, so with a half-open circuit the second copy needs a second probe
//! permit (`half_open_permits` ≥ 2). Use the default mode under a hedge: tower's hedge returns
//! the first copy to *finish*, and a fail-fast rejection of the second copy finishes at once,
//! failing the request while the first copy is still running.
//!
//! Time is tokio's clock, so `#[tokio::test(start_paused = true)]` drives every wait.

pub mod future;

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;

use crate::circuit_breaker::error::CircuitOpen;
use crate::circuit_breaker::{Classify, DefaultClassifier, Handle, Outcome, State};
use crate::BoxError;
use crate::ConfigError;

use self::future::Wait;

/// Re-sends a request: returns the copy for the next attempt, or `None` when the request
/// cannot be copied (it is then sent once and not retried).
///
/// [`ByClone`] (the default) clones; any `Fn(&Req) -> Option<Req>` is one too (see
/// [`Builder::clone_with`]).
pub trait CloneRequest<Req> {
    /// A copy of `req` for another attempt, if one can be made.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

/// Re-sends a request as `req.clone()`. The default [`CloneRequest`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ByClone;

impl<Req: Clone> CloneRequest<Req> for ByClone {
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// The knobs, checked by [`Builder::build`].
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            jitter: 0.5,
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// A breaker-aware retry policy for tower's [`RetryLayer`](tower::retry::RetryLayer); see the
/// [module docs](self) for what it retries and when.
///
/// - `C`: the [`Classify`] that judges each attempt's result (default [`DefaultClassifier`]).
/// - `B`: the retry [`Budget`] (default tower's [`TpsBudget`]), shared through an [`Arc`].
/// - `R`: how a request is copied for another attempt ([`CloneRequest`], default [`ByClone`]).
///
/// Build one with [`RetryPolicy::builder`], or take every default with [`RetryPolicy::new`].
/// Clones share the budget; each clone counts its own attempts (`RetryLayer` clones the policy
/// for every request).
pub struct RetryPolicy<C = DefaultClassifier, B = TpsBudget, R = ByClone> {
    classifier: C,
    budget: Arc<B>,
    cloner: R,
    circuit: Option<Handle>,
    settings: Settings,
    // Attempts finished in this request session: always 0 in the policy `RetryLayer` holds,
    // which it only clones.
    attempts: u32,
}

impl RetryPolicy {
    /// Starts a builder that spends `budget` (any tower [`Budget`], e.g.
    /// `Arc::new(TpsBudget::default())`; keep a clone of the `Arc` to share it with other
    /// policies), with the defaults: 3 attempts, back-off 100 ms doubling to 10 s with 50 %
    /// jitter, hints up to 30 s, [`DefaultClassifier`], requests re-sent by `Clone`.
    pub fn builder<B: Budget>(budget: Arc<B>) -> Builder<DefaultClassifier, B, ByClone> {
        Builder {
            classifier: DefaultClassifier,
            budget,
            cloner: ByClone,
            circuit: None,
            settings: Settings::default(),
        }
    }

    /// A policy with every default (see [`builder`](RetryPolicy::builder)) spending `budget`.
    pub fn new<B: Budget>(budget: Arc<B>) -> RetryPolicy<DefaultClassifier, B, ByClone> {
        RetryPolicy::builder(budget).into_policy()
    }
}

impl<C, B, R> RetryPolicy<C, B, R> {
    /// The breaker handle given to [`Builder::circuit`], if any.
    pub fn circuit(&self) -> Option<&Handle> {
        self.circuit.as_ref()
    }

    /// The budget this policy spends.
    pub fn budget(&self) -> &Arc<B> {
        &self.budget
    }

    /// The exponential back-off before retry number `retry` (1 for the first retry):
    /// `base · 2^(retry-1)`, capped at `max`, less up to `jitter` of it at random.
    fn backoff(&self, retry: u32) -> Duration {
        let s = &self.settings;
        let exponent = retry.saturating_sub(1).min(31);
        let grown = s
            .backoff_base
            .checked_mul(1u32 << exponent)
            .unwrap_or(s.backoff_max)
            .min(s.backoff_max);
        if s.jitter == 0.0 {
            return grown;
        }
        // Per call, not per policy: every request clones the same policy, and a seed copied
        // with it would give every request the same "random" back-off.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(retry);
        let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        grown.saturating_sub(grown.mul_f64(s.jitter * fraction))
    }

    /// How long an open circuit keeps calls out according to the handle; `Err` when it is
    /// forced open (it will not admit on its own).
    fn circuit_wait(&self) -> Result<Option<Duration>, ()> {
        let Some(handle) = &self.circuit else {
            return Ok(None);
        };
        match handle.state() {
            State::ForcedOpen => Err(()),
            State::Open => Ok(handle.stats().retry_after),
            _ => Ok(None),
        }
    }
}

impl<C: Clone, B, R: Clone> Clone for RetryPolicy<C, B, R> {
    fn clone(&self) -> Self {
        RetryPolicy {
            classifier: self.classifier.clone(),
            budget: self.budget.clone(),
            cloner: self.cloner.clone(),
            circuit: self.circuit.clone(),
            settings: self.settings,
            attempts: self.attempts,
        }
    }
}

impl<C, B, R> fmt::Debug for RetryPolicy<C, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.settings.max_attempts)
            .field("backoff_base", &self.settings.backoff_base)
            .field("backoff_max", &self.settings.backoff_max)
            .field("jitter", &self.settings.jitter)
            .field("max_retry_after", &self.settings.max_retry_after)
            .field("circuit", &self.circuit.as_ref().map(Handle::name))
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The error as a [`CircuitOpen`], bare or boxed.
fn circuit_open<E: 'static>(err: &E) -> Option<&CircuitOpen> {
    let any: &dyn Any = err;
    any.downcast_ref::<CircuitOpen>().or_else(|| {
        any.downcast_ref::<BoxError>()
            .and_then(|boxed| boxed.downcast_ref::<CircuitOpen>())
    })
}

impl<C, B, R, Req, Res, E> Policy<Req, Res, E> for RetryPolicy<C, B, R>
where
    C: Classify<Res, E>,
    B: Budget,
    R: CloneRequest<Req>,
    E: 'static,
{
    type Future = Wait;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Wait> {
        self.attempts = self.attempts.saturating_add(1);
        let max_wait = self.settings.max_retry_after;

        // What this result asks for: a wait the circuit imposes (not to be shortened), and a
        // wait of the policy's own (back-off or the server's hint).
        let (mut circuit_wait, own_wait) = match result.as_ref().err().and_then(circuit_open) {
            Some(open) => match open.retry_after() {
                Some(d) => (d, Duration::ZERO),
                // Forced open, or half-open with its probes all out: nothing says when it will
                // admit, unless the handle has seen it reopen since.
                None => match self.circuit_wait() {
                    Ok(Some(d)) => (d, Duration::ZERO),
                    _ => return None,
                },
            },
            None => match self.classifier.classify(result.as_ref()) {
                Outcome::Success | Outcome::Ignored => return None,
                Outcome::Throttled {
                    retry_after: Some(hint),
                } => (Duration::ZERO, hint.min(max_wait)),
                Outcome::Failure | Outcome::Throttled { retry_after: None } => {
                    (Duration::ZERO, self.backoff(self.attempts))
                }
            },
        };
        if self.attempts >= self.settings.max_attempts {
            return None;
        }
        match self.circuit_wait() {
            Err(()) => return None,
            Ok(Some(d)) => circuit_wait = circuit_wait.max(d),
            Ok(None) => {}
        }
        // Waiting less would retry into the open circuit; waiting longer than allowed is not
        // ours to do.
        if circuit_wait > max_wait {
            return None;
        }
        if !self.budget.withdraw() {
            return None;
        }
        Some(Wait::new(
            circuit_wait.max(own_wait),
            self.circuit.clone(),
            max_wait,
        ))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // `RetryLayer` asks the policy it holds (never retried, so at zero attempts) once per
        // request, before the first attempt; later copies come from the request's own clone.
        if self.attempts == 0 {
            self.budget.deposit();
        }
        self.cloner.clone_request(req)
    }
}

/// Configures a [`RetryPolicy`]; start with [`RetryPolicy::builder`]. Values are checked by
/// [`build`](Builder::build), which names the first bad one in a [`ConfigError`]; no method
/// panics.
pub struct Builder<C, B, R> {
    classifier: C,
    budget: Arc<B>,
    cloner: R,
    circuit: Option<Handle>,
    settings: Settings,
}

impl<C, B, R> Builder<C, B, R> {
    /// How many attempts a request gets in all, the first included. Default 3; at least 1 (1
    /// never retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n;
        self
    }

    /// The back-off after a failure: `base` before the first retry, doubling for each retry
    /// after it, never above `max`. Default 100 ms and 10 s; `base` must not exceed `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.settings.backoff_base = base;
        self.settings.backoff_max = max;
        self
    }

    /// The share of each back-off taken off at random, in `[0, 1]` (default 0.5: a back-off
    /// `d` waits between `d / 2` and `d`), so clients that failed together do not retry
    /// together. `0.0` makes the back-off exact.
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.settings.jitter = ratio;
        self
    }

    /// The longest the policy waits on a `retry_after` (default 30 s). A server's hint
    /// (`Throttled { retry_after: Some(d) }`) longer than this is clamped to it. A circuit that
    /// keeps calls out longer than this is not waited for: the attempt's result is returned, as
    /// retrying any sooner would only be rejected again.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.settings.max_retry_after = max;
        self
    }

    /// The [`Handle`] of the breaker the policy retries through, asked before every retry:
    /// while the circuit is open the retry waits for its `stats().retry_after`, and a circuit
    /// forced open is not retried.
    pub fn circuit(mut self, handle: Handle) -> Self {
        self.circuit = Some(handle);
        self
    }

    /// Sets the [`Classify`] that judges each attempt's result, e.g. `HttpClassifier::new()`
    /// (feature `http`) or a closure `|result: Result<&Res, &E>| -> Outcome`.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2, B, R> {
        Builder {
            classifier,
            budget: self.budget,
            cloner: self.cloner,
            circuit: self.circuit,
            settings: self.settings,
        }
    }

    /// Copies requests with `clone` (any `Fn(&Req) -> Option<Req>`) instead of `Clone`, for
    /// requests that may not be copyable: `None` sends the request once, without retries.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tower::retry::budget::TpsBudget;
    /// # use tower_breaker::retry::RetryPolicy;
    /// // A request whose body may be a one-shot stream.
    /// struct Upload { body: Option<Vec<u8>> }
    ///
    /// let policy = RetryPolicy::builder(Arc::new(TpsBudget::default()))
    ///     .clone_with(|req: &Upload| req.body.clone().map(|body| Upload { body: Some(body) }))
    ///     .build()
    ///     .unwrap();
    /// # let _ = policy;
    /// ```
    pub fn clone_with<F>(self, clone: F) -> Builder<C, B, F> {
        Builder {
            classifier: self.classifier,
            budget: self.budget,
            cloner: clone,
            circuit: self.circuit,
            settings: self.settings,
        }
    }

    /// Checks every value and builds the policy.
    pub fn build(self) -> Result<RetryPolicy<C, B, R>, ConfigError> {
        let s = &self.settings;
        if s.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        if s.backoff_base > s.backoff_max {
            return Err(ConfigError::new("backoff", "base must not exceed max"));
        }
        if !(0.0..=1.0).contains(&s.jitter) {
            return Err(ConfigError::new("jitter", "must be in [0, 1]"));
        }
        Ok(self.into_policy())
    }

    fn into_policy(self) -> RetryPolicy<C, B, R> {
        RetryPolicy {
            classifier: self.classifier,
            budget: self.budget,
            cloner: self.cloner,
            circuit: self.circuit,
            settings: self.settings,
            attempts: 0,
        }
    }
}

impl<C, B, R> fmt::Debug for Builder<C, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("circuit", &self.circuit.as_ref().map(Handle::name))
            .finish_non_exhaustive()
    }
}
