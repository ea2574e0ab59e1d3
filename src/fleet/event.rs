//! The call path's side of a fleet: a transition listener and a failure hook that hand a small
//! [`Event`] to the background task with a non-blocking `try_send`, and nothing else.
//!
//! Listeners and the failure hook run synchronously on the thread that caused the transition or
//! recorded the failure (often a caller's), so this is all a shared circuit adds to its calls:
//! no network, no lock shared with the task, no waiting, and nothing at all on a success. When
//! the queue is full (or the task has stopped), the event is dropped: the transition stays
//! local (and a half-open phase that would have waited for the fleet's lease is granted at
//! once, so that a dropped event never holds probes back), or the failures go uncounted by the
//! fleet (the breaker still counts them).
//!
//! Failures are coalesced per circuit: the hook adds one to the circuit's [`Tally`], and hands
//! the tally to the task only when it was empty, so at most one report per circuit waits
//! however fast failures come; the task takes the whole tally when it gets to it. The hook also
//! notes whether the circuit recorded a success since its previous failure (its success counter
//! moved): such a failure restarts the fleet's count (see the module docs), and drops the
//! failures still in the tally, which came before that success. Successes themselves are not
//! looked at: the success path is untouched.
//!
//! Failure reports travel on a queue of their own ([`failure_queue`]): std's bounded channel,
//! whose slots are allocated once (tokio's channel, which carries the rarer transition events,
//! allocates a block now and then as it turns over, and failures come often enough for that to
//! show on the call path), and a [`Doorbell`] that wakes the task only when it is asleep:
//! while reports keep coming, the task looks at the queue every millisecond on its own, so a
//! burst of failures costs one wake, and its trip through the scheduler's locks, not one per
//! failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Sleep};

use crate::circuit_breaker::shared::{Shared, SUCCESS};
use crate::circuit_breaker::{Handle, Reason, State, Transition};
use crate::sync::{lock, Mutex};

/// A local transition worth telling the fleet about, or a newly shared circuit.
#[derive(Debug)]
pub(super) enum Event {
    /// The circuit of this (fleet-wide) name changed here, for a local reason.
    Local { name: Arc<str>, change: Change },
    /// The circuit was just shared: learn the fleet's current open phase for it, if any.
    Joined { name: Arc<str> },
}

/// The failures a shared closed circuit recorded that the background task has not counted yet.
#[derive(Debug)]
pub(super) struct Tally {
    /// The circuit's fleet-wide name.
    pub(super) name: Arc<str>,
    /// Weak: the tally lives inside the circuit's failure hook.
    pub(super) circuit: Weak<Shared>,
    /// The failures not counted yet (low 32 bits), and [`RESTART`] when the first of them
    /// followed a success of this circuit: the fleet's count restarts from them. Zero when no
    /// failure event is on its way.
    pending: AtomicU64,
    /// The circuit's success counter at its last failure (or when it was shared).
    successes: AtomicU64,
}

/// In [`Tally::pending`]: the failures pending start a new streak.
const RESTART: u64 = 1 << 32;

/// What [`Tally::take`] hands to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failures {
    /// How many.
    pub(super) count: u32,
    /// The first of them followed a success of this circuit: the fleet's count restarts from
    /// them.
    pub(super) restart: bool,
}

impl Tally {
    fn new(handle: &Handle, name: Arc<str>) -> Self {
        Tally {
            name,
            circuit: Arc::downgrade(&handle.shared),
            pending: AtomicU64::new(0),
            successes: AtomicU64::new(handle.shared.count(SUCCESS)),
        }
    }

    /// Takes the failures recorded so far; the next failure sends a new event.
    pub(super) fn take(&self) -> Failures {
        let pending = self.pending.swap(0, Ordering::Relaxed);
        Failures {
            count: (pending & u64::from(u32::MAX)) as u32,
            restart: pending & RESTART != 0,
        }
    }

    /// Adds a failure of the circuit, whose success counter now reads `successes`; returns
    /// whether the task must be told (no event is on its way).
    fn add(&self, successes: u64) -> bool {
        let before = if self.successes.swap(successes, Ordering::Relaxed) != successes {
            self.pending.swap(RESTART | 1, Ordering::Relaxed)
        } else {
            self.pending.fetch_add(1, Ordering::Relaxed)
        };
        before == 0
    }
}

/// The call path's end of the failure queue (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct FailureQueue {
    tx: SyncSender<Arc<Tally>>,
    doorbell: Arc<Doorbell>,
}

/// The background task's end of the failure queue.
#[derive(Debug)]
pub(super) struct FailureInbox {
    /// In a mutex only so that the task's future is `Send` (std's receiver is not `Sync`); the
    /// task is its only user.
    rx: Mutex<Receiver<Arc<Tally>>>,
    doorbell: Arc<Doorbell>,
}

/// How the failure hooks wake the task: only when it is asleep. While reports keep coming, the
/// task looks at the queue every [`POLL`] on its own, and the hooks ring nothing; after
/// [`QUIET`] without a report, it goes back to sleep. A wake goes through tokio's scheduler,
/// and its locks: once per burst of failures, not once per failure.
#[derive(Debug, Default)]
pub(super) struct Doorbell {
    notify: Notify,
    /// The task is looking at the queue on its own: no need to ring.
    awake: AtomicBool,
}

/// How often an awake task looks at the failure queue: the most a report waits.
const POLL: Duration = Duration::from_millis(1);

/// How long an awake task goes without a report before it goes to sleep.
const QUIET: Duration = Duration::from_millis(200);

/// A queue for up to `capacity` circuits' failure reports.
pub(super) fn failure_queue(capacity: usize) -> (FailureQueue, FailureInbox) {
    let (tx, rx) = sync_channel(capacity);
    let doorbell = Arc::new(Doorbell::default());
    let queue = FailureQueue {
        tx,
        doorbell: doorbell.clone(),
    };
    let inbox = FailureInbox {
        rx: Mutex::new(rx),
        doorbell,
    };
    (queue, inbox)
}

impl FailureQueue {
    /// Hands `tally` to the task without waiting: `false` if the queue is full or the task has
    /// stopped.
    fn try_send(&self, tally: Arc<Tally>) -> bool {
        if self.tx.try_send(tally).is_err() {
            return false;
        }
        // SeqCst, with the task's: either the task is still awake and finds the report, or
        // this sees it asleep and rings.
        if !self.doorbell.awake.load(Ordering::SeqCst) {
            self.doorbell.notify.notify_one();
        }
        true
    }
}

/// The task's side of a wait for failure reports, over one stretch of its loop (a connection,
/// or a wait between two): make one with [`FailureWait::new`] from
/// [`FailureInbox::doorbell`], and poll [`FailureInbox::poll_next`] with it.
pub(super) struct FailureWait<'a> {
    doorbell: &'a Doorbell,
    notified: Pin<Box<Notified<'a>>>,
    tick: Pin<Box<Sleep>>,
    /// `tick` is set for the next look at the queue.
    armed: bool,
    /// Awake until then, unless a report comes.
    awake_until: Option<Instant>,
}

impl<'a> FailureWait<'a> {
    pub(super) fn new(doorbell: &'a Doorbell) -> Self {
        FailureWait {
            doorbell,
            notified: Box::pin(doorbell.notify.notified()),
            tick: Box::pin(tokio::time::sleep(POLL)),
            armed: false,
            awake_until: None,
        }
    }
}

impl FailureInbox {
    /// What a [`FailureWait`] borrows.
    pub(super) fn doorbell(&self) -> Arc<Doorbell> {
        self.doorbell.clone()
    }

    /// The next failure report.
    pub(super) fn poll_next(
        &self,
        wait: &mut FailureWait<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Arc<Tally>> {
        let awake = &wait.doorbell.awake;
        loop {
            if let Ok(tally) = lock(&self.rx).try_recv() {
                awake.store(true, Ordering::SeqCst);
                wait.awake_until = Some(Instant::now() + QUIET);
                return Poll::Ready(tally);
            }
            if awake.load(Ordering::Relaxed) {
                if wait.awake_until.is_some_and(|until| Instant::now() < until) {
                    // Awake: look again shortly.
                    if !wait.armed {
                        wait.tick.as_mut().reset(Instant::now() + POLL);
                        wait.armed = true;
                    }
                    ready!(wait.tick.as_mut().poll(cx));
                    wait.armed = false;
                    continue;
                }
                // Quiet for long enough: asleep from now on, once the queue is seen empty
                // again (a report sent before the hooks saw this is found then).
                awake.store(false, Ordering::SeqCst);
                wait.awake_until = None;
                continue;
            }
            ready!(wait.notified.as_mut().poll(cx));
            wait.notified.set(wait.doorbell.notify.notified());
        }
    }
}

/// What a local transition means for the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Tripped, or re-opened by a failed or timed-out probe: publish the open phase.
    Opened,
    /// The open phase ended: take the probe lease before probing.
    HalfOpened,
    /// Probes succeeded: publish the close.
    Closed,
    /// `force_open` (shared with `share_manual` only).
    ForcedOpen,
    /// `force_closed` or `reset` (likewise).
    ForcedClosed,
}

impl Change {
    /// What `t` means for the fleet, if anything. Transitions the fleet itself caused are never
    /// sent back (no echo loops), and manual ones only with `share_manual`.
    fn of(t: &Transition, share_manual: bool) -> Option<Change> {
        if matches!(t.reason, Reason::Fleet) {
            return None;
        }
        match (t.to, t.reason) {
            (State::Open, _) => Some(Change::Opened),
            (State::HalfOpen, _) => Some(Change::HalfOpened),
            (State::Closed, Reason::ProbesSucceeded(_)) => Some(Change::Closed),
            (State::Closed, Reason::ForcedClosed | Reason::Reset) if share_manual => {
                Some(Change::ForcedClosed)
            }
            (State::ForcedOpen, _) if share_manual => Some(Change::ForcedOpen),
            _ => None,
        }
    }
}

/// What the listeners and the keyed new-key hook hold: the way to the task and the settings
/// they need. It holds no reference to the [`Fleet`](super::Fleet), so circuits that outlive
/// the fleet keep nothing of it alive but this.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) events: mpsc::Sender<Event>,
    /// Where the failure hooks report.
    pub(super) failures: FailureQueue,
    pub(super) share_manual: bool,
    /// Whether to install the failure hook.
    pub(super) share_failures: bool,
    pub(super) probe_lease: Duration,
}

impl Ctx {
    /// Shares `handle`'s circuit under `name`: installs the listener (and, with
    /// `share_failures`, the failure hook), makes half-open phases wait for the lease, and asks
    /// the task for the fleet's current state of `name`.
    pub(super) fn watch(self: &Arc<Self>, handle: &Handle, name: Arc<str>) {
        // Weak: the listener lives inside the circuit, and must not keep it alive.
        let circuit = Arc::downgrade(&handle.shared);
        let ctx = self.clone();
        let listener_name = name.clone();
        handle.on_transition(move |t| ctx.on_transition(&listener_name, &circuit, t));
        if self.share_failures {
            let tally = Arc::new(Tally::new(handle, name.clone()));
            let ctx = self.clone();
            // One hook per circuit: a circuit shared with another fleet already has the first
            // fleet's, and its failures are counted there only.
            handle.on_closed_failure(move || ctx.on_failure(&tally));
        }
        handle.require_probe_lease(self.probe_lease);
        let _ = self.events.try_send(Event::Joined { name });
    }

    /// A failure recorded in the closed circuit: one more in its tally, which goes to the task
    /// if it was empty (otherwise it is on its way already).
    fn on_failure(&self, tally: &Arc<Tally>) {
        let Some(shared) = tally.circuit.upgrade() else {
            return;
        };
        if !tally.add(shared.count(SUCCESS)) {
            return;
        }
        if !self.failures.try_send(tally.clone()) {
            // Dropped: these failures stay local, and the next one tries again.
            tally.pending.store(0, Ordering::Relaxed);
        }
    }

    fn on_transition(&self, name: &Arc<str>, circuit: &Weak<Shared>, t: &Transition) {
        let Some(change) = Change::of(t, self.share_manual) else {
            return;
        };
        let event = Event::Local {
            name: name.clone(),
            change,
        };
        if self.events.try_send(event).is_err() && change == Change::HalfOpened {
            // Nobody will take the lease for this phase: probe as a local breaker would.
            if let Some(shared) = circuit.upgrade() {
                Handle::new(shared).grant_probes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::CircuitBreakerLayer;

    fn transition(from: State, to: State, reason: Reason) -> Transition {
        Transition {
            from,
            to,
            reason,
            at: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn only_local_decisions_are_shared() {
        use State::*;
        let of = |from, to, reason, manual| Change::of(&transition(from, to, reason), manual);
        let trip = Reason::ConsecutiveFailures(5);
        assert_eq!(of(Closed, Open, trip, false), Some(Change::Opened));
        assert_eq!(
            of(HalfOpen, Open, Reason::ProbeFailed, false),
            Some(Change::Opened)
        );
        assert_eq!(
            of(HalfOpen, Open, Reason::ProbeTimedOut, false),
            Some(Change::Opened)
        );
        assert_eq!(
            of(Open, HalfOpen, Reason::OpenElapsed, false),
            Some(Change::HalfOpened)
        );
        assert_eq!(
            of(HalfOpen, Closed, Reason::ProbesSucceeded(1), false),
            Some(Change::Closed)
        );
        // What the fleet applied is never sent back.
        for to in [Open, Closed, ForcedOpen] {
            assert_eq!(of(Closed, to, Reason::Fleet, true), None);
        }
        // Manual operations only when asked.
        assert_eq!(of(Closed, ForcedOpen, Reason::ForcedOpen, false), None);
        assert_eq!(
            of(Closed, ForcedOpen, Reason::ForcedOpen, true),
            Some(Change::ForcedOpen)
        );
        assert_eq!(of(Open, Closed, Reason::ForcedClosed, false), None);
        assert_eq!(
            of(Open, Closed, Reason::Reset, true),
            Some(Change::ForcedClosed)
        );
        assert_eq!(of(Closed, Disabled, Reason::Disabled, true), None);
    }

    fn new_ctx(
        events: usize,
        failures: usize,
        share_failures: bool,
    ) -> (Arc<Ctx>, mpsc::Receiver<Event>, FailureInbox) {
        let (events, rx) = mpsc::channel(events);
        let (failures, inbox) = failure_queue(failures);
        let ctx = Arc::new(Ctx {
            events,
            failures,
            share_manual: false,
            share_failures,
            probe_lease: Duration::from_secs(60),
        });
        (ctx, rx, inbox)
    }

    #[tokio::test]
    async fn a_full_queue_drops_events_and_grants_held_probes() {
        let (ctx, mut rx, _inbox) = new_ctx(1, 1, true);
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .open_duration(Duration::from_millis(1))
            .build()
            .unwrap();
        let handle = layer.handle();
        ctx.watch(&handle, "c".into());
        // The queue now holds the `Joined` event: the next ones do not fit.
        handle.force_open();
        handle.reset();
        handle.apply_remote(State::Open, Some(Duration::from_millis(1)), false);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Half-open, with the event dropped: probes go without waiting 60 s for a lease.
        assert_eq!(handle.state(), State::HalfOpen);
        assert!(handle.is_admitting());
        assert!(matches!(rx.recv().await, Some(Event::Joined { .. })));
        assert!(rx.try_recv().is_err(), "the rest was dropped");
    }

    #[tokio::test]
    async fn failures_are_coalesced_per_circuit_and_dropped_when_the_queue_is_full() {
        use tower::ServiceExt;
        use tower_layer::Layer;
        let (ctx, _events, inbox) = new_ctx(8, 1, true);
        let next = || lock(&inbox.rx).try_recv().ok();
        let layer = |name: &str| {
            CircuitBreakerLayer::builder()
                .name(name)
                .consecutive_failures(100)
                .build()
                .unwrap()
        };
        let call = |layer: &CircuitBreakerLayer, fail: bool| {
            let svc = layer.layer(tower::service_fn(move |()| async move {
                if fail {
                    Err("down")
                } else {
                    Ok(())
                }
            }));
            async move {
                let _ = svc.oneshot(()).await;
            }
        };
        let (la, lb) = (layer("a"), layer("b"));
        let a = la.handle();
        ctx.watch(&a, "a".into());
        ctx.watch(&lb.handle(), "b".into());
        let failures = |count, restart| Failures { count, restart };

        // Three failures, one report.
        for _ in 0..3 {
            call(&la, true).await;
        }
        let tally = next().expect("one report");
        assert_eq!(&*tally.name, "a");
        assert!(next().is_none(), "coalesced");
        assert_eq!(tally.take(), failures(3, false));
        assert!(std::ptr::eq(tally.circuit.as_ptr(), Arc::as_ptr(&a.shared)));
        assert_eq!(tally.take(), failures(0, false));

        // Taken: the next failure reports again. A success reports nothing, and the failure
        // after it restarts the count, dropping the ones before it.
        call(&la, true).await;
        call(&la, false).await;
        assert!(next().is_some());
        assert!(next().is_none());
        call(&la, true).await;
        call(&la, true).await;
        assert!(next().is_none(), "one on its way already");
        assert_eq!(tally.take(), failures(2, true));
        call(&la, false).await;
        call(&la, false).await;
        call(&la, true).await;
        // And the task is woken for it.
        let doorbell = inbox.doorbell();
        let mut wait = FailureWait::new(&doorbell);
        let tally = std::future::poll_fn(|cx| inbox.poll_next(&mut wait, cx)).await;
        assert_eq!(tally.take(), failures(1, true));

        // A full queue (one slot here) drops the report and empties the tally, so the next
        // failure tries again.
        call(&la, true).await;
        call(&lb, true).await;
        call(&lb, true).await;
        assert_eq!(next().expect("a's report").take(), failures(1, false));
        call(&lb, true).await;
        let tally = next().expect("sent again once there was room");
        assert_eq!(&*tally.name, "b");
        assert_eq!(
            tally.take(),
            failures(1, false),
            "the dropped failures are not counted later"
        );

        // Not shared: no hook.
        let (ctx, _events, inbox) = new_ctx(8, 8, false);
        let lc = layer("c");
        ctx.watch(&lc.handle(), "c".into());
        call(&lc, true).await;
        assert!(lock(&inbox.rx).try_recv().is_err());
    }
}
