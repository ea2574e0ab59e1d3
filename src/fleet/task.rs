//! The background task: the only code of a fleet that talks to Redis.
//!
//! It keeps one RESP3 connection, subscribed to the fleet's channel (messages arrive as push
//! frames on it), and loops over three sources: messages from the fleet, events from the local
//! listeners and failure hooks, and a heartbeat. Every command has a timeout; any error or timeout ends the
//! connection, after which the task answers events as a local breaker would (a half-open
//! circuit is granted its probes at once), reconnects with exponential back-off, and logs one
//! warning per outage and one info on recovery.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Msg, Pipeline, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::circuits::Circuits;
use super::config::Settings;
use super::event::{Change, Event, FailureInbox, FailureWait, Tally};
use super::message::{ceil_ms, unix_ms, Kind, Message};
use crate::circuit_breaker::{Handle, State};

/// How often an idle connection is checked: a partition (no FIN, no RST) is noticed within
/// this plus the command timeout.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a close or a manual operation may travel before it is too late to apply.
const LATE_AFTER: Duration = Duration::from_secs(10);

/// How many messages may wait between the connection and the task; more are dropped (a flood
/// on the channel must not grow memory).
const PUSH_QUEUE: usize = 1024;

/// The most stored open phases read when (re)connecting.
const MAX_SYNC: usize = 10_000;

/// Adds `ARGV[2]` failures to the fleet's count of a circuit in its current phase (or, with
/// `ARGV[4]` = `1`, restarts the count from them), renews the count's time to live (`ARGV[3]`
/// ms), and returns the new count. The phase is the circuit's generation counter (`KEYS[1]`)
/// as it stands: every decision published for the circuit moves it, so a close (or an open)
/// starts a new count under a new key; `ARGV[1]` is the key's stem
/// ([`Settings::failure_key_stem`]). One round trip, and atomic: between two restarts, the
/// counts that processes get back are all different, so exactly one of them sees the
/// threshold reached.
const COUNT_FAILURES: &str = "\
local phase = redis.call('GET', KEYS[1]) or '0'
local key = ARGV[1] .. phase
local count
if ARGV[4] == '1' then
  redis.call('SET', key, ARGV[2])
  count = tonumber(ARGV[2])
else
  count = redis.call('INCRBY', key, ARGV[2])
end
redis.call('PEXPIRE', key, ARGV[3])
return count";

/// Why the task left a connection.
enum Exit {
    Shutdown,
    Lost(String),
}

/// What woke a connected task.
enum Wake {
    Shutdown,
    Push(Option<PushInfo>),
    Event(Option<Event>),
    Failed(Arc<Tally>),
    Heartbeat,
}

/// The fleet's end of the shutdown channel: a message, or the sender's drop (the last clone of
/// the fleet went), stops the task. (A channel rather than `select!`-ed futures: the crate
/// builds tokio without its macros.)
pub(super) type Shutdown = mpsc::Receiver<()>;

pub(super) struct Task {
    settings: Arc<Settings>,
    circuits: Arc<Circuits>,
    events: mpsc::Receiver<Event>,
    /// Failure reports from the failure hooks.
    failures: FailureInbox,
    connected: Arc<AtomicBool>,
    /// Per name, the newest generation applied or published here: older messages are replays.
    last: HashMap<Arc<str>, u64>,
    /// `last` is pruned of circuits that went away when it grows past this.
    prune_at: usize,
    /// The fleet's epoch in Redis when last connected (see `Settings::epoch_key`).
    epoch: Option<String>,
    /// Whether the outage under way has been logged.
    in_outage: bool,
}

impl Task {
    pub(super) fn new(
        settings: Arc<Settings>,
        circuits: Arc<Circuits>,
        events: mpsc::Receiver<Event>,
        failures: FailureInbox,
        connected: Arc<AtomicBool>,
    ) -> Self {
        Task {
            settings,
            circuits,
            events,
            failures,
            connected,
            last: HashMap::new(),
            prune_at: 4096,
            epoch: None,
            in_outage: false,
        }
    }

    pub(super) async fn run(mut self, mut shutdown: Shutdown) {
        let mut backoff = self.settings.reconnect_min;
        loop {
            let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
            let attempt = {
                let mut connect = pin!(self.connect(push_tx));
                poll_fn(|cx| match shutdown.poll_recv(cx) {
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => connect.as_mut().poll(cx).map(Some),
                })
                .await
            };
            let Some(attempt) = attempt else { break };
            let why = match attempt {
                Ok(conn) => {
                    backoff = self.settings.reconnect_min;
                    self.connected.store(true, Ordering::Relaxed);
                    if self.in_outage {
                        self.in_outage = false;
                        trace_info!(
                            channel = %self.settings.channel,
                            origin = %self.settings.origin,
                            "fleet reconnected to Redis: sharing circuits again"
                        );
                    }
                    let exit = self.serve(conn, push_rx, &mut shutdown).await;
                    self.connected.store(false, Ordering::Relaxed);
                    match exit {
                        Exit::Shutdown => break,
                        Exit::Lost(why) => why,
                    }
                }
                Err(why) => why,
            };
            self.outage(&why);
            // Nobody can answer a lease now: probes go at once, as in a local breaker.
            self.grant_all();
            if self.offline(backoff, &mut shutdown).await {
                break;
            }
            backoff = backoff.saturating_mul(2).min(self.settings.reconnect_max);
        }
        self.connected.store(false, Ordering::Relaxed);
        // From here on a listener's `try_send` fails, and it grants a half-open phase itself;
        // the phases already waiting are granted here.
        self.events.close();
        self.grant_all();
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn outage(&mut self, why: &str) {
        if !self.in_outage {
            self.in_outage = true;
            trace_warn!(
                channel = %self.settings.channel,
                origin = %self.settings.origin,
                error = %why,
                "fleet cannot reach Redis: circuits run on local state until it is back"
            );
        } else {
            trace_debug!(
                channel = %self.settings.channel,
                origin = %self.settings.origin,
                error = %why,
                "fleet still cannot reach Redis"
            );
        }
    }

    /// Connects, subscribes, and catches up with the open phases stored while away.
    async fn connect(
        &mut self,
        push_tx: mpsc::Sender<PushInfo>,
    ) -> Result<MultiplexedConnection, String> {
        let timeout = self.settings.command_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Never blocks the connection's driver: a full queue drops the message.
            .set_push_sender(move |info: PushInfo| push_tx.try_send(info));
        let client = &self.settings.client;
        let mut conn = timed(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let epoch_key = self.settings.epoch_key();
        let (epoch,): (String,) = timed(
            timeout,
            redis::pipe()
                .cmd("SET")
                .arg(&epoch_key)
                .arg(&self.settings.origin)
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&epoch_key)
                .query_async(&mut conn),
        )
        .await?;
        if self.epoch.as_ref().is_some_and(|known| *known != epoch) {
            // Redis lost its keys: generations start again from 1, so the ones seen before
            // would make every new message look like a replay.
            self.last.clear();
        }
        self.epoch = Some(epoch);
        timed(timeout, conn.subscribe(&self.settings.channel)).await?;
        self.sync_all(&mut conn).await?;
        Ok(conn)
    }

    async fn serve(
        &mut self,
        mut conn: MultiplexedConnection,
        mut pushes: mpsc::Receiver<PushInfo>,
        shutdown: &mut Shutdown,
    ) -> Exit {
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let doorbell = self.failures.doorbell();
        let mut failures = FailureWait::new(&doorbell);
        loop {
            // Shutdown first, then the fleet's messages, then local transitions, then failures.
            let wake = poll_fn(|cx| {
                if shutdown.poll_recv(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                if let Poll::Ready(push) = pushes.poll_recv(cx) {
                    return Poll::Ready(Wake::Push(push));
                }
                if let Poll::Ready(event) = self.events.poll_recv(cx) {
                    return Poll::Ready(Wake::Event(event));
                }
                if let Poll::Ready(tally) = self.failures.poll_next(&mut failures, cx) {
                    return Poll::Ready(Wake::Failed(tally));
                }
                heartbeat.poll_tick(cx).map(|_| Wake::Heartbeat)
            })
            .await;
            let result = match wake {
                Wake::Shutdown | Wake::Event(None) => return Exit::Shutdown,
                Wake::Push(None) => Err("connection closed".to_owned()),
                Wake::Push(Some(info)) if info.kind == PushKind::Disconnection => {
                    Err("connection closed".to_owned())
                }
                Wake::Push(Some(info)) => {
                    if let Some(msg) = Msg::from_push_info(info) {
                        self.receive(msg.get_payload_bytes());
                    }
                    Ok(())
                }
                Wake::Event(Some(event)) => self.on_event(&mut conn, event).await,
                Wake::Failed(tally) => self.count_failures(&mut conn, &tally).await,
                Wake::Heartbeat => self
                    .query::<Value>(&mut conn, &redis::cmd("PING"))
                    .await
                    .map(drop),
            };
            if let Err(why) = result {
                return Exit::Lost(why);
            }
        }
    }

    /// Waits out `backoff`, answering events as a local breaker would. Returns whether the
    /// fleet was shut down meanwhile.
    async fn offline(&mut self, backoff: Duration, shutdown: &mut Shutdown) -> bool {
        let mut sleep = pin!(tokio::time::sleep(backoff));
        let doorbell = self.failures.doorbell();
        let mut failures = FailureWait::new(&doorbell);
        loop {
            let wake = poll_fn(|cx| {
                if shutdown.poll_recv(cx).is_ready() {
                    return Poll::Ready(Some(Wake::Shutdown));
                }
                if let Poll::Ready(event) = self.events.poll_recv(cx) {
                    return Poll::Ready(Some(Wake::Event(event)));
                }
                if let Poll::Ready(tally) = self.failures.poll_next(&mut failures, cx) {
                    return Poll::Ready(Some(Wake::Failed(tally)));
                }
                sleep.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match wake {
                None => return false,
                Some(Wake::Event(Some(Event::Local {
                    name,
                    change: Change::HalfOpened,
                }))) => {
                    if let Some(handle) = self.circuits.find(&name, false) {
                        handle.grant_probes();
                    }
                }
                // Nobody counts them now: local rules only.
                Some(Wake::Failed(tally)) => {
                    tally.take();
                }
                // Unshared while away: a trip or close here stays local.
                Some(Wake::Event(Some(_))) => {}
                Some(_) => return true,
            }
        }
    }

    async fn on_event(
        &mut self,
        conn: &mut MultiplexedConnection,
        event: Event,
    ) -> Result<(), String> {
        match event {
            Event::Joined { name } => self.sync_one(conn, &name).await,
            Event::Local { name, change } => match change {
                Change::HalfOpened => self.lease(conn, &name).await,
                Change::Opened => self.publish_open(conn, &name).await,
                Change::Closed => self.publish(conn, &name, Kind::Close).await,
                Change::ForcedOpen => self.publish(conn, &name, Kind::ForceOpen).await,
                Change::ForcedClosed => self.publish(conn, &name, Kind::ForceClose).await,
            },
        }
    }

    /// Tries to take the probe lease of `name`'s half-open phase; the winner probes, the others
    /// keep holding until the winner's result arrives (or their wait ends). If Redis does not
    /// answer, probes go at once.
    async fn lease(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &Arc<str>,
    ) -> Result<(), String> {
        let Some(handle) = self.circuits.find(name, false) else {
            return Ok(());
        };
        // The phase may be over already (a remote open or close was applied since): a lease
        // taken now would be taken for the next phase, which nobody could then win.
        if handle.state() != State::HalfOpen {
            return Ok(());
        }
        let generation = self.last.get(name).copied().unwrap_or(0);
        let key = self.settings.lease_key(name, generation);
        let ttl = ceil_ms(self.settings.lease_ttl());
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(&self.settings.origin)
            .arg("NX")
            .arg("PX")
            .arg(ttl);
        match self.query::<Value>(conn, &set).await {
            Ok(Value::Nil) => {
                trace_debug!(circuit = %name, generation, "another process of the fleet probes");
                Ok(())
            }
            Ok(_) => {
                trace_debug!(circuit = %name, generation, "this process probes for the fleet");
                handle.grant_probes();
                Ok(())
            }
            Err(why) => {
                handle.grant_probes();
                Err(why)
            }
        }
    }

    /// Adds the failures a closed circuit recorded here to the fleet's count for its current
    /// phase; if they are the ones that make the count reach the circuit's consecutive-failure
    /// threshold, trips the circuit here and publishes the open for the fleet.
    async fn count_failures(
        &mut self,
        conn: &mut MultiplexedConnection,
        tally: &Tally,
    ) -> Result<(), String> {
        let name = &tally.name;
        let failures = tally.take();
        let failed = failures.count;
        let Some(handle) = tally.circuit.upgrade().map(Handle::new) else {
            return Ok(()); // the circuit went away
        };
        let threshold = handle.shared.thresholds_now().0;
        // Nothing to count: none left, the rule is off, or the closed phase they were recorded
        // in is over here (the circuit opened since, here or through the fleet).
        if failed == 0 || threshold == 0 || handle.state() != State::Closed {
            return Ok(());
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(COUNT_FAILURES)
            .arg(1)
            .arg(self.settings.generation_key(name))
            .arg(self.settings.failure_key_stem(name))
            .arg(failed)
            .arg(ceil_ms(self.settings.failure_window))
            .arg(u8::from(failures.restart));
        let count: u64 = self.query(conn, &eval).await?;
        let threshold = u64::from(threshold);
        let before = if failures.restart {
            0
        } else {
            count.saturating_sub(u64::from(failed))
        };
        // Between two restarts, exactly one process's failures take the count from below the
        // threshold to it or past it: that process trips the fleet. (A restart counts only this
        // process's failures since its last success, its own streak: if they reach the
        // threshold, the check below leaves the trip to the breaker.)
        if !(before < threshold && count >= threshold) {
            return Ok(());
        }
        // Not if the circuit is no longer closed here, nor if its own streak has reached the
        // threshold: it tripped (or is tripping) on its own, and that trip is published as any
        // local one.
        let word = handle.shared.word();
        if word.state() != State::Closed || u64::from(word.failures()) >= threshold {
            return Ok(());
        }
        trace_info!(
            circuit = %name,
            failures = count,
            threshold,
            "fleet-wide failure count reached the threshold: tripping the circuit for the fleet"
        );
        let open_for = handle.shared.thresholds_now().1;
        handle.apply_remote(State::Open, Some(open_for), false);
        // Applied as a fleet decision, so the listener does not publish it: publish it here.
        self.publish_open_of(conn, name, &handle).await
    }

    /// Publishes a local open phase with the time it has left, and stores it for processes
    /// that connect while it lasts.
    async fn publish_open(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &Arc<str>,
    ) -> Result<(), String> {
        let Some(handle) = self.circuits.find(name, false) else {
            return Ok(());
        };
        self.publish_open_of(conn, name, &handle).await
    }

    /// [`publish_open`](Self::publish_open) for `handle`, the circuit `name` stands for here.
    async fn publish_open_of(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &Arc<str>,
        handle: &Handle,
    ) -> Result<(), String> {
        // Measured now, not at the trip: the queue's delay is not added to the open time.
        let Some(remaining) = handle.stats().retry_after.filter(|d| !d.is_zero()) else {
            return Ok(()); // no longer open
        };
        let generation = self.next_generation(conn, name).await?;
        let remaining_ms = ceil_ms(remaining);
        let line = self.encode(
            Kind::Open,
            generation,
            unix_ms().saturating_add(remaining_ms),
            name,
        );
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(&self.settings.channel)
            .arg(&line)
            .ignore()
            .cmd("SET")
            .arg(self.settings.state_key(name))
            .arg(&line)
            .arg("PX")
            .arg(remaining_ms)
            .ignore();
        self.query_pipe(conn, &pipe).await
    }

    /// Publishes a close or a manual operation. A closed or forced-closed circuit also clears
    /// the stored open phase, so a process that connects later does not open it.
    async fn publish(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &Arc<str>,
        kind: Kind,
    ) -> Result<(), String> {
        let generation = self.next_generation(conn, name).await?;
        let expires = unix_ms().saturating_add(ceil_ms(LATE_AFTER));
        let line = self.encode(kind, generation, expires, name);
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(&self.settings.channel)
            .arg(&line)
            .ignore();
        if kind != Kind::ForceOpen {
            pipe.cmd("DEL").arg(self.settings.state_key(name)).ignore();
        }
        self.query_pipe(conn, &pipe).await
    }

    fn encode(&self, kind: Kind, generation: u64, expires_at_ms: u64, name: &str) -> String {
        Message {
            kind,
            fleet: &self.settings.fleet,
            origin: &self.settings.origin,
            generation,
            expires_at_ms,
            name,
        }
        .encode()
    }

    /// The next fleet-wide generation of `name`: `INCR`, raised past the newest this process
    /// has seen if Redis's counter went back (a failover to a replica that lagged).
    async fn next_generation(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &Arc<str>,
    ) -> Result<u64, String> {
        let key = self.settings.generation_key(name);
        let mut generation: u64 = self.query(conn, redis::cmd("INCR").arg(&key)).await?;
        let seen = self.last.get(name).copied().unwrap_or(0);
        if generation <= seen {
            let by = seen - generation + 1;
            generation = self
                .query(conn, redis::cmd("INCRBY").arg(&key).arg(by))
                .await?;
        }
        self.note(name.clone(), generation);
        Ok(generation)
    }

    /// Applies a message from the fleet, if it is one to apply (see the module docs for what a
    /// receiver ignores).
    fn receive(&mut self, payload: &[u8]) {
        let Some(msg) = Message::parse(payload) else {
            trace_debug!(channel = %self.settings.channel, "ignored a malformed fleet message");
            return;
        };
        let s = self.settings.clone();
        if msg.fleet != s.fleet || msg.origin == s.origin {
            return;
        }
        if msg.kind.is_manual() && !s.share_manual {
            return;
        }
        let now = unix_ms();
        if msg.expires_at_ms <= now {
            return; // late
        }
        if self
            .last
            .get(msg.name)
            .is_some_and(|&g| msg.generation <= g)
        {
            return; // a replay, or overtaken by a newer decision
        }
        // Only a trip makes a keyed circuit that does not exist yet: a close has nothing to do.
        let Some(handle) = self.circuits.find(msg.name, msg.kind == Kind::Open) else {
            return; // not shared here
        };
        self.note(msg.name.into(), msg.generation);
        match msg.kind {
            Kind::Open => {
                let left = Duration::from_millis(msg.expires_at_ms - now);
                handle.apply_remote(State::Open, Some(left.min(s.max_remote_open)), false);
            }
            Kind::Close => handle.apply_remote(State::Closed, None, false),
            Kind::ForceOpen => handle.apply_remote(State::ForcedOpen, None, true),
            Kind::ForceClose => handle.apply_remote(State::Closed, None, true),
        }
    }

    fn note(&mut self, name: Arc<str>, generation: u64) {
        self.last.insert(name, generation);
        if self.last.len() > self.prune_at {
            // Keys come and go: forget the circuits that are gone.
            let circuits = &self.circuits;
            self.last
                .retain(|name, _| circuits.find(name, false).is_some());
            self.prune_at = (self.last.len() * 2).max(4096);
        }
    }

    /// Applies the stored open phase of a circuit just shared.
    async fn sync_one(
        &mut self,
        conn: &mut MultiplexedConnection,
        name: &str,
    ) -> Result<(), String> {
        let get = redis::cmd("GET").arg(self.settings.state_key(name)).clone();
        if let Some(payload) = self.query::<Option<Vec<u8>>>(conn, &get).await? {
            self.receive(&payload);
        }
        Ok(())
    }

    /// Applies every stored open phase of the fleet (after a (re)connection).
    async fn sync_all(&mut self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let pattern = self.settings.state_pattern();
        let mut cursor = 0u64;
        let mut seen = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(100);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(conn, &scan).await?;
            if !keys.is_empty() {
                let mget = redis::cmd("MGET").arg(&keys).clone();
                let values: Vec<Option<Vec<u8>>> = self.query(conn, &mget).await?;
                for payload in values.into_iter().flatten() {
                    self.receive(&payload);
                }
            }
            seen += keys.len();
            cursor = next;
            if cursor == 0 || seen >= MAX_SYNC {
                return Ok(());
            }
        }
    }

    /// Runs one command, within the command timeout.
    async fn query<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        cmd: &Cmd,
    ) -> Result<T, String> {
        timed(self.settings.command_timeout, cmd.query_async(conn)).await
    }

    /// Runs a pipeline whose replies are all ignored, within the command timeout.
    async fn query_pipe(
        &self,
        conn: &mut MultiplexedConnection,
        pipe: &Pipeline,
    ) -> Result<(), String> {
        timed(self.settings.command_timeout, pipe.query_async(conn)).await
    }

    fn grant_all(&self) {
        for handle in self.circuits.all() {
            handle.grant_probes();
        }
    }
}

/// `future`, or an error when it takes longer than `timeout`.
async fn timed<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
