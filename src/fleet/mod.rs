//! Sharing what circuits learn across a fleet of processes, through Redis (feature `redis`).
//!
//! Each process keeps its own breakers, and calls never touch the network. A [`Fleet`] adds a
//! background task that tells the other processes of the fleet when a shared circuit trips or
//! closes here, and applies what they tell it:
//!
//! - **Failures are counted fleet-wide**: a dependency that fails for everyone trips the
//!   circuit after `consecutive_failures` failed calls *in the whole fleet*, however the calls
//!   spread over the processes (see [Counting failures across the
//!   fleet](self#counting-failures-across-the-fleet)). Four replicas with
//!   `consecutive_failures(5)` that share calls round-robin stop calling a dead dependency
//!   after about 5 failed calls instead of 20 (`examples/fleet.rs`, `tests/fleet.rs`).
//! - **A trip anywhere opens the circuit everywhere**, for the same remaining open time (within
//!   milliseconds on a LAN: one `INCR` and one `PUBLISH`). Processes that have not seen the
//!   dependency fail yet stop calling it without paying for their own failures.
//! - **A close propagates**: when the probes of one process succeed, every process closes.
//! - **One probe per half-open phase per fleet.** When a shared circuit half-opens, its process
//!   asks Redis for the phase's probe lease (`SET … NX`); the winner probes, the others hold
//!   their probes back until the winner's result reaches them (a close or a new open), so a
//!   dead dependency sees one probe per open period instead of one per process. A process
//!   that does not hear back within [`probe_lease`](Builder::probe_lease) probes on its own,
//!   so a fleet that never answers cannot keep a circuit from probing.
//! - **Manual operations** (`force_open`, `force_closed`, `reset`) are shared only with
//!   [`share_manual(true)`](Builder::share_manual).
//!
//! Remote decisions go through the breaker's own transitions, with
//! [`Reason::Fleet`](crate::circuit_breaker::Reason::Fleet): they show in
//! [`stats().transitions`](crate::circuit_breaker::Stats::transitions), in listeners and in
//! metrics, and are never published again (no echo). Each breaker's own rules still trip it
//! as before (its own streak, rate rules, throttling), and such a trip is shared like any.
//!
//! A shared circuit is one circuit for the whole fleet: share it between processes that reach
//! the dependency the same way, with the same breaker settings. (A process cut off from the
//! dependency on its own would trip the circuit for everyone, and a close elsewhere would
//! reopen its calls to it.)
//!
//! # Counting failures across the fleet
//!
//! With [`share_failures`](Builder::share_failures) on (the default), the processes of a fleet
//! add up a shared circuit's failures. The rule, for one circuit:
//!
//! - **What counts**: every failure a process records while its circuit is closed — the
//!   failures that extend its local consecutive-failure streak. Not successes, ignored calls,
//!   probes, nor a `Throttled` outcome with a hint (which trips directly).
//! - **The count restarts from zero** at every decision published for the circuit (an open, a
//!   close, and manual operations when shared): a close starts a fresh count. It also restarts
//!   when no process of the fleet records a failure for
//!   [`failure_window`](Builder::failure_window) (default 10 s): the count is of failures each
//!   within `failure_window` of the previous one.
//! - **A success restarts the count from the next failure of the process that saw it**: a
//!   process that recorded a success since its previous failure restarts the fleet's count at
//!   1 with its next failure, as its own streak restarts. Successes themselves are never
//!   reported (nothing is added to the success path), so a success does not stop the count by
//!   itself: failures in other processes go on adding to it until the process that saw the
//!   success fails.
//! - **The trip**: the process whose failures bring the count to its breaker's consecutive
//!   failure threshold ([`Stats::consecutive_failure_threshold`](crate::circuit_breaker::Stats),
//!   read when it counts) opens its circuit for its open duration and publishes the open, like
//!   any trip; every process opens. Counts are atomic in Redis, so exactly one process sees the
//!   threshold reached. Its transition shows with `Reason::Fleet` too: the decision is the
//!   fleet's. (If its own streak has reached the threshold, it trips on its own and publishes
//!   that trip instead.)
//!
//! How it differs from a local streak: within one process, the fleet's count follows the local
//! streak (both restart at a failure after a success); across processes, the count learns of
//! a success only through the next failure of the process that saw it, and it also ends after
//! `failure_window` without failures, where a local streak waits for ever. A dependency that
//! is down fails every call, and the fleet trips after `consecutive_failures` failed calls in
//! all, plus those sent while the trip travels (about a millisecond on a LAN). A dependency
//! that fails only some calls trips the fleet when `consecutive_failures` failures in a row
//! (fleet-wide) come, after the first, from processes that had no success since their own
//! previous failure: about as likely, per failure, as a local streak of that length — which,
//! trips being shared, would open the fleet anyway. Keep `failure_window` a few times the
//! fleet-wide gap between calls, so that a quiet fleet's failures still add up. Local rules
//! still apply as before: each process's own streak, rate rules and throttling trip it
//! without waiting for the fleet.
//!
//! Counting adds no waiting to any call: a failure adds one to the circuit's tally, and the
//! first failure of a tally hands it to the background task (see [The call
//! path](self#the-call-path)); the task adds the tally to Redis (`INCRBY` and `PEXPIRE` in one
//! small script: one round trip) within its command timeout. While Redis is down or slow,
//! failures are not counted fleet-wide (local counting goes on as before), and nothing waits
//! for it.
//!
//! # What to share
//!
//! [`Fleet::share`] shares one breaker, under its name: the circuits of the same name in the
//! fleet's processes are one circuit. [`Fleet::share_keyed`] shares every key of a
//! [keyed](crate::keyed) registry, under `<scope>/<key>`; a trip of a key this process has not
//! seen yet builds that key's circuit only if the registry has room for it without evicting
//! anything, so the registry never grows past `max_keys` and another process's keys never push
//! out this one's.
//!
//! # The call path
//!
//! A shared circuit's transition listener does a non-blocking `try_send` of a small event to
//! the background task, on a bounded queue ([`queue_capacity`](Builder::queue_capacity)): that
//! is the only cost, and only at transitions. When the queue is full, the event is dropped —
//! that transition stays local, and a half-open phase is granted its probes at once.
//!
//! A failure in a closed circuit adds one to the circuit's tally (and reads its success
//! counter); the first failure of a tally also hands it to the background task with a
//! non-blocking `try_send`, on a second bounded queue of the same capacity, so at most one
//! report per circuit waits however fast failures come. The task is woken for the first report
//! of a burst; while reports keep coming, it looks at the queue every millisecond on its own.
//! When that queue is full, the failures go uncounted by the fleet. Successes add nothing.
//! Admitted calls do not allocate, failed ones included (`tests/fleet_alloc.rs`).
//!
//! # Messages
//!
//! One line of text per decision, published on the channel `<prefix>:<fleet>`:
//!
//! ```text
//! tb1|<kind>|<fleet>|<origin>|<generation>|<expires-at>|<name>
//! tb1|open|llm-gateway|6f1c0e9d2ab34471|17|1717171717171|llm/openai
//! ```
//!
//! - `kind`: `open`, `close`, `force_open` or `force_close`.
//! - `origin`: the publishing [`Fleet`]'s random id.
//! - `generation`: from `INCR <prefix>:<fleet>:gen:<name>`, so fleet-wide and increasing.
//! - `expires-at`: Unix milliseconds. For `open`, the end of the open phase: a receiver opens
//!   for `expires-at − now`, so transit time is not added. For the others, a deadline after
//!   which the message is too late to apply (10 s after sending).
//! - `name` comes last, so it may contain `|`.
//!
//! A receiver ignores: its own messages; other versions and fleets; anything malformed (parsing
//! is strict, never panics, and refuses payloads over 4 KiB unread); a message past
//! `expires-at` (a late one); a generation no newer than the last one it applied or published
//! for that name (a replay, or a decision already overtaken); and names it does not share. A
//! remote open lasts at most [`max_remote_open`](Builder::max_remote_open).
//!
//! Keys, all under `<prefix>:<fleet>:`: `gen:<name>` (the generation counter), `state:<name>`
//! (the latest open message, expiring with its open phase: a process that connects or
//! reconnects while it lasts opens too; a close deletes it), `probe:<name>:<generation>` (a
//! phase's probe lease, expiring after twice the lease wait), `failures:<name>:<generation>`
//! (the failure count of the phase that followed decision `<generation>` — `0` before any —
//! expiring after `failure_window`; the script that counts reads `gen:<name>` to name it, so
//! the fleet needs a single Redis, not a Redis Cluster) and `epoch` (a value set once, that
//! tells a process when Redis lost its keys, generations included).
//!
//! # When Redis fails
//!
//! Failure of Redis is not failure of the service. With Redis down, slow, restarted or cut off,
//! every process goes on with its local breakers: nothing on the call path waits for Redis,
//! every command of the background task has a [`command_timeout`](Builder::command_timeout),
//! trips and closes stay local, failures are counted locally only, and half-open circuits are
//! granted their probes at once. (A
//! half-open phase that starts while Redis stalls holds its probes until the task gives up on
//! Redis — a command timeout or two — and never longer than the lease wait.) The task
//! reconnects with exponential back-off ([`reconnect_backoff`](Builder::reconnect_backoff),
//! 100 ms doubling to 5 s), checks the connection with a `PING` every second, and logs one
//! `tracing` warning per outage and one info on recovery (feature `tracing`).
//! [`Fleet::is_connected`] tells whether it is sharing right now.
//!
//! Expiries are on the wall clock, so the fleet's clocks should agree to well within the open
//! duration (NTP does). The fleet uses RESP3 (pub/sub messages arrive on its one connection):
//! Redis 6 or later, or Valkey.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_breaker::circuit_breaker::CircuitBreakerLayer;
//! use tower_breaker::fleet::Fleet;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_breaker::BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("openai")
//!     .consecutive_failures(5)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//!
//! // Spawns the background task on this runtime; connects in the background.
//! let fleet = Fleet::builder()
//!     .url("redis://127.0.0.1:6379/")
//!     .prefix("tower-breaker")
//!     .fleet("llm-gateway")
//!     .probe_lease(Duration::from_secs(20))
//!     .build()?;
//! fleet.share(&breaker.handle());
//!
//! // ... build services with `breaker` as usual: a trip in any replica of `llm-gateway` now
//! // opens "openai" in every replica.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::circuit_breaker::Handle;
use crate::keyed::Breakers;

mod circuits;
mod config;
mod event;
mod keyed;
mod message;
mod task;

pub use config::Builder;

use circuits::Circuits;
use config::Settings;
use event::Ctx;

/// Shares circuits with the other processes of a fleet, through Redis; see the
/// [module docs](self).
///
/// Cheap to clone; every clone drives the same background task, which stops at
/// [`shutdown`](Fleet::shutdown) or when the last clone is dropped. Circuits shared with a fleet
/// that has stopped behave as local ones.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    ctx: Arc<Ctx>,
    circuits: Arc<Circuits>,
    connected: Arc<AtomicBool>,
    /// Stops the task when sent to, or when dropped with the last clone.
    shutdown: mpsc::Sender<()>,
}

impl Fleet {
    /// Starts a [`Builder`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Spawns the background task.
    fn start(settings: Settings, runtime: &tokio::runtime::Handle) -> Fleet {
        let settings = Arc::new(settings);
        let (events, events_rx) = mpsc::channel(settings.queue_capacity);
        let (failures, failures_rx) = event::failure_queue(settings.queue_capacity);
        let (shutdown, shutdown_rx) = mpsc::channel(1);
        let circuits = Arc::new(Circuits::default());
        let connected = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            events,
            failures,
            share_manual: settings.share_manual,
            share_failures: settings.share_failures,
            probe_lease: settings.probe_lease,
        });
        let task = task::Task::new(
            settings.clone(),
            circuits.clone(),
            events_rx,
            failures_rx,
            connected.clone(),
        );
        runtime.spawn(task.run(shutdown_rx));
        Fleet {
            inner: Arc::new(Inner {
                settings,
                ctx,
                circuits,
                connected,
                shutdown,
            }),
        }
    }

    /// Shares `handle`'s circuit with the fleet, under its name: from now on its trips, closes
    /// (and, with `share_manual`, manual operations) reach the other processes, theirs apply
    /// here, its failures count toward the fleet's (with `share_failures`, the default), and
    /// its half-open phases wait for the fleet's probe lease. Sharing the same breaker again
    /// does nothing; sharing another breaker of the same name makes it the one that messages
    /// for that name apply to (both still publish, and count their failures). A breaker shared
    /// with two fleets has its failures counted by the first only.
    pub fn share(&self, handle: &Handle) {
        let name: Arc<str> = handle.name().into();
        if self.inner.circuits.add_plain(name.clone(), handle) {
            self.inner.ctx.watch(handle, name);
        }
    }

    /// Shares every key of a keyed registry, present and future, under `<scope>/<key>` (see
    /// [What to share](self#what-to-share)). `K` is read back from the names in messages with
    /// `FromStr`, and a name is taken only if the key prints back the same (`Display`).
    pub fn share_keyed<K>(&self, scope: &str, breakers: &Breakers<K>)
    where
        K: FromStr + fmt::Display + Clone + Hash + Eq + Send + Sync + 'static,
    {
        keyed::share(&self.inner.ctx, &self.inner.circuits, scope, breakers);
    }

    /// Whether the background task is connected and sharing now. While it is not, shared
    /// circuits behave as local ones.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// This fleet member's id: the `origin` of the messages it publishes.
    pub fn origin(&self) -> &str {
        &self.inner.settings.origin
    }

    /// Stops the background task (for every clone): shared circuits go on as local ones, and
    /// any half-open phase waiting for a lease probes at once.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.try_send(());
    }

    #[cfg(test)]
    fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("Fleet")
            .field("channel", &s.channel)
            .field("origin", &s.origin)
            .field("connected", &self.is_connected())
            .field("circuits", &self.inner.circuits)
            .finish_non_exhaustive()
    }
}
