#![cfg(feature = "redis")]
//! A fleet of breakers sharing trips, closes, probe leases and failure counts through a real
//! `redis-server`.
//!
//! Each test starts its own `redis-server` on a free loopback port, persistence off, and kills
//! it at the end. A "replica" is a `CircuitBreaker` with its own `Fleet` (so its own
//! connection), as separate processes would have. The tests run on real time (the network is
//! real): they sequence by polling state with a bounded timeout, and bound latencies
//! generously (the figures are printed; run with `--nocapture` to see them).

use std::future::{ready, Ready};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Service, ServiceExt};
use tower_breaker::circuit_breaker::{
    error::CircuitOpen, CircuitBreaker, CircuitBreakerLayer, Handle, Reason, State,
};
use tower_breaker::fleet::Fleet;
use tower_breaker::keyed::KeyedLayer;
use tower_layer::Layer;

const MS: Duration = Duration::from_millis(1);

/// Every test's `tracing` events, from every thread (the fleet's tasks run on the runtime's).
#[cfg(feature = "tracing")]
fn logs() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Writer(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        tracing::callsite::rebuild_interest_cache();
        logs
    })
}

#[cfg(feature = "tracing")]
struct Writer(&'static std::sync::Mutex<Vec<u8>>);

#[cfg(feature = "tracing")]
impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines that contain every one of `parts`.
#[cfg(feature = "tracing")]
fn log_lines(parts: &[&str]) -> usize {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .count()
}

// ---------------------------------------------------------------------------------------------
// redis-server

/// A `redis-server` of this test's own, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    /// Starts on `port` (again, after [`kill`](Self::kill)), and waits until it answers PING.
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let redis = Redis {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.ping().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(10 * MS);
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    fn ping(&self) -> redis::RedisResult<String> {
        redis::cmd("PING").query(&mut self.connection()?)
    }

    /// Runs one command on a connection of its own (RESP2, as any client would publish).
    fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.connection().unwrap()).unwrap()
    }

    fn publish(&self, channel: &str, payload: impl redis::ToRedisArgs) {
        let _: i64 = self.cmd(redis::cmd("PUBLISH").arg(channel).arg(payload));
    }

    /// The fleet's failure count of circuit `name` (fleet `test` under `prefix`) in its current
    /// phase: `failures:<name>:<generation>`, 0 when there is none.
    fn fleet_count(&self, prefix: &str, name: &str) -> u64 {
        let generation: Option<u64> =
            self.cmd(redis::cmd("GET").arg(format!("{prefix}:test:gen:{name}")));
        let key = format!("{prefix}:test:failures:{name}:{}", generation.unwrap_or(0));
        let count: Option<u64> = self.cmd(redis::cmd("GET").arg(key));
        count.unwrap_or(0)
    }

    /// Waits until the fleet's failure count of `name` is `n`.
    async fn wait_count(&self, prefix: &str, name: &str, n: u64) {
        let counted = wait_until(Duration::from_secs(2), || {
            self.fleet_count(prefix, name) == n
        })
        .await;
        let now = self.fleet_count(prefix, name);
        assert!(counted, "fleet count of {name}: {now}, expected {n}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain subscriber to a fleet's channel (RESP2, on a thread of its own): what the fleet
/// published, in order.
struct Subscriber {
    channel: String,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Subscriber {
    /// The payload that ends the subscription (published after everything else).
    const STOP: &'static str = "stop";

    /// Subscribes, and returns once the subscription is in place.
    fn start(redis: &Redis, channel: &str) -> Subscriber {
        let mut conn = redis.connection().unwrap();
        let (ready, subscribed) = std::sync::mpsc::channel();
        let sub_channel = channel.to_owned();
        let thread = std::thread::spawn(move || {
            let mut pubsub = conn.as_pubsub();
            pubsub.subscribe(&sub_channel).unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            ready.send(()).unwrap();
            let mut payloads = Vec::new();
            loop {
                let msg = pubsub.get_message().unwrap();
                let payload: String = msg.get_payload().unwrap_or_default();
                if payload == Subscriber::STOP {
                    return payloads;
                }
                payloads.push(payload);
            }
        });
        subscribed.recv().unwrap();
        Subscriber {
            channel: channel.to_owned(),
            thread,
        }
    }

    /// Everything published on the channel since `start`.
    fn stop(self, redis: &Redis) -> Vec<String> {
        redis.publish(&self.channel, Subscriber::STOP);
        self.thread.join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// replicas

#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream down")
    }
}

impl std::error::Error for Down {}

/// The dependency every replica calls: fails while `dead`, counts the calls that reach it.
#[derive(Clone, Default)]
struct Upstream {
    dead: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn dead() -> Upstream {
        let upstream = Upstream::default();
        upstream.dead.store(true, Ordering::SeqCst);
        upstream
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<()> for Upstream {
    type Response = ();
    type Error = Down;
    type Future = Ready<Result<(), Down>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Down>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(if self.dead.load(Ordering::SeqCst) {
            Err(Down)
        } else {
            Ok(())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Rejected,
}

/// One process's breaker over the upstream (fail-fast, so a refusal costs nothing).
struct Replica {
    svc: CircuitBreaker<Upstream>,
    handle: Handle,
    fleet: Option<Fleet>,
}

impl Replica {
    fn new(upstream: &Upstream, open: Duration, fleet: Option<Fleet>) -> Replica {
        Replica::named("upstream", upstream, open, fleet)
    }

    fn named(name: &str, upstream: &Upstream, open: Duration, fleet: Option<Fleet>) -> Replica {
        let layer = CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(5)
            .open_duration(open)
            .half_open_permits(1)
            .success_threshold(1)
            .fail_fast()
            .build()
            .unwrap();
        let handle = layer.handle();
        if let Some(fleet) = &fleet {
            fleet.share(&handle);
        }
        Replica {
            svc: layer.layer(upstream.clone()),
            handle,
            fleet,
        }
    }

    async fn call(&mut self) -> Outcome {
        let svc = match self.svc.ready().await {
            Ok(svc) => svc,
            Err(_) => return Outcome::Rejected,
        };
        match svc.call(()).await {
            Ok(()) => Outcome::Ok,
            Err(e) if e.is::<CircuitOpen>() => Outcome::Rejected,
            Err(_) => Outcome::Failed,
        }
    }

    fn state(&self) -> State {
        self.handle.state()
    }

    fn fleet(&self) -> &Fleet {
        self.fleet.as_ref().unwrap()
    }

    fn fleet_transitions(&self) -> usize {
        let stats = self.handle.stats();
        stats
            .transitions
            .iter()
            .filter(|t| t.reason == Reason::Fleet)
            .count()
    }

    /// One call, with the upstream dead or alive as `fail` says.
    async fn call_with(&mut self, upstream: &Upstream, fail: bool) -> Outcome {
        upstream.dead.store(fail, Ordering::SeqCst);
        self.call().await
    }
}

fn fleet_on(redis: &Redis, prefix: &str) -> Fleet {
    fleet_builder(redis, prefix).build().unwrap()
}

fn fleet_builder(redis: &Redis, prefix: &str) -> tower_breaker::fleet::Builder {
    Fleet::builder()
        .url(redis.url())
        .prefix(prefix)
        .fleet("test")
        // Longer than any test waits for a lease: a replica that probes did win one.
        .probe_lease(Duration::from_secs(5))
        .command_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// `n` replicas of one upstream, each with its own fleet member when `redis` is given.
async fn replicas(
    n: usize,
    upstream: &Upstream,
    open: Duration,
    redis: Option<(&Redis, &str)>,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::new(upstream, open, redis.map(|(r, p)| fleet_on(r, p))))
        .collect();
    if redis.is_some() {
        all_connected(&replicas).await;
    }
    replicas
}

/// `n` replicas of one upstream, with fleet members built by `fleet`.
async fn replicas_with(
    n: usize,
    upstream: &Upstream,
    open: Duration,
    fleet: impl Fn() -> Fleet,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::new(upstream, open, Some(fleet())))
        .collect();
    all_connected(&replicas).await;
    replicas
}

fn all_closed(replicas: &[Replica]) -> bool {
    replicas.iter().all(|r| r.state() == State::Closed)
}

async fn all_connected(replicas: &[Replica]) {
    let connected = wait_until(Duration::from_secs(10), || {
        replicas.iter().all(|r| r.fleet().is_connected())
    })
    .await;
    assert!(connected, "the fleet did not connect to redis");
}

/// Polls `done` every millisecond until it holds (`true`) or `timeout` passes (`false`).
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(MS).await;
    }
}

fn all_open(replicas: &[Replica]) -> bool {
    replicas.iter().all(|r| r.state() == State::Open)
}

/// The pace of the traffic: one request every `PACE` across the fleet (100 requests a second),
/// as a steady load would send them. A trip reaches the other replicas in a few milliseconds on
/// loopback; at this pace a loaded CI machine has room for a slower propagation before an
/// extra request fails.
const PACE: Duration = Duration::from_millis(10);

/// Failed calls until every replica is open, with requests sent round-robin.
async fn failures_round_robin(replicas: &mut [Replica]) -> usize {
    let mut failed = 0;
    for i in 0..400 {
        if all_open(replicas) {
            return failed;
        }
        let n = replicas.len();
        if replicas[i % n].call().await == Outcome::Failed {
            failed += 1;
        }
        tokio::time::sleep(PACE).await;
    }
    panic!("not all open after 400 requests");
}

/// Failed calls until every replica is open, with each request sent to the first replica that
/// accepts it (as a failover load balancer does: replica 0 takes all the load while it can).
async fn failures_in_failover_order(replicas: &mut [Replica]) -> usize {
    let mut failed = 0;
    for _ in 0..400 {
        if all_open(replicas) {
            return failed;
        }
        for replica in replicas.iter_mut() {
            match replica.call().await {
                Outcome::Rejected => continue,
                Outcome::Failed => failed += 1,
                Outcome::Ok => {}
            }
            break;
        }
        tokio::time::sleep(PACE).await;
    }
    panic!("not all open after 400 requests");
}

/// Upstream calls in the half-open phase after every replica's open duration, the upstream
/// still dead: requests round-robin for `window` (shorter than the open duration, so one
/// phase).
async fn probes_in_one_period(
    replicas: &mut [Replica],
    upstream: &Upstream,
    open: Duration,
) -> usize {
    tokio::time::sleep(open + 50 * MS).await;
    let before = upstream.calls();
    let until = Instant::now() + open / 2;
    let mut i = 0;
    while Instant::now() < until {
        let n = replicas.len();
        replicas[i % n].call().await;
        i += 1;
        tokio::time::sleep(PACE).await;
    }
    upstream.calls() - before
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: fewer failed calls before the fleet stops calling, one probe per open period

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_fleet_stops_calling_sooner_and_probes_once_per_period() {
    let redis = Redis::start();
    let open = Duration::from_millis(600);

    let mut figures = Vec::new();
    for shared in [false, true] {
        let prefix = format!("counts-{shared}");
        let fleet = shared.then_some((&redis, prefix.as_str()));

        let upstream = Upstream::dead();
        let mut set = replicas(4, &upstream, open, fleet).await;
        let failover_order = failures_in_failover_order(&mut set).await;
        // A new set (and fleet), so that this trip does not start from the first one.
        let prefix = format!("{prefix}-rr");
        let fleet = shared.then_some((&redis, prefix.as_str()));
        let upstream = Upstream::dead();
        let mut set = replicas(4, &upstream, open, fleet).await;
        let round_robin = failures_round_robin(&mut set).await;
        let probes = probes_in_one_period(&mut set, &upstream, open).await;
        figures.push((failover_order, round_robin, probes));
        println!(
            "{}: failed calls before all 4 open: {failover_order} (failover order), \
             {round_robin} (round-robin); probes in one open period: {probes}",
            if shared { "shared" } else { "local-only" }
        );
    }
    let [(local_fo, local_rr, local_probes), (shared_fo, shared_rr, shared_probes)] = figures[..]
    else {
        unreachable!()
    };
    // Local-only: each replica pays its own 5 failures and sends its own probe.
    assert_eq!((local_fo, local_rr, local_probes), (20, 20, 4));
    // Shared: failures are counted fleet-wide, so the fleet trips on its 5th failure however
    // the calls spread (plus any request sent while the trip travels): under failover order
    // the first replica's own streak trips it; round-robin, no replica has more than 2 failures
    // of its own, and the replica whose failure is the fleet's 5th trips the fleet.
    assert!(shared_fo <= 7, "failover order, shared: {shared_fo}");
    assert!(shared_rr <= 7, "round-robin, shared: {shared_rr}");
    assert_eq!(
        shared_probes, 1,
        "one probe per open period for the whole fleet"
    );
}

// ---------------------------------------------------------------------------------------------
// 2b: failures counted fleet-wide

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_replica_publishes_the_trip_of_the_fleet_count() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let mut set = replicas(4, &upstream, open, Some((&redis, "one-trip"))).await;
    let subscriber = Subscriber::start(&redis, "one-trip:test");

    let failed = failures_round_robin(&mut set).await;
    println!("round-robin, shared: {failed} failed calls before all 4 open");
    assert!(failed <= 7, "{failed}");
    // Let anything else that was going to be published arrive.
    tokio::time::sleep(200 * MS).await;
    let published = subscriber.stop(&redis);
    let opens: Vec<&String> = published
        .iter()
        .filter(|p| p.starts_with("tb1|open|"))
        .collect();
    assert_eq!(opens.len(), 1, "one open published: {published:?}");
    assert_eq!(published.len(), 1, "and nothing else: {published:?}");

    // The replica whose failure was the fleet's 5th published it, under its origin: no replica
    // tripped on its own streak, and each applied the trip as a fleet decision.
    let origin = opens[0].split('|').nth(3).unwrap();
    let publisher: Vec<usize> = (0..4)
        .filter(|&i| set[i].fleet().origin() == origin)
        .collect();
    assert_eq!(publisher.len(), 1, "published by one of the replicas");
    for r in &set {
        let stats = r.handle.stats();
        assert!(stats.failed_calls <= 2, "{}", stats.failed_calls);
        assert_eq!(r.fleet_transitions(), 1);
        assert!(stats.retry_after.unwrap() > Duration::from_secs(55));
    }
    // Stored like any trip, for replicas that join while it lasts.
    let stored: String = redis.cmd(redis::cmd("GET").arg("one-trip:test:state:upstream"));
    assert_eq!(&stored, opens[0]);
    let late = Replica::new(&upstream, open, Some(fleet_on(&redis, "one-trip")));
    assert!(wait_until(Duration::from_secs(2), || late.state() == State::Open).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_elsewhere_does_not_stop_the_fleet_count_and_one_here_restarts_it() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let prefix = "success";
    let mut set = replicas(4, &upstream, open, Some((&redis, prefix))).await;
    let name = "upstream";

    // Replica 2 succeeds between failures of the others: the count goes on.
    let mut count = 0;
    for i in [0, 1] {
        assert_eq!(set[i].call_with(&upstream, true).await, Outcome::Failed);
        count += 1;
        redis.wait_count(prefix, name, count).await;
    }
    assert_eq!(set[2].call_with(&upstream, false).await, Outcome::Ok);
    for i in [3, 1] {
        assert_eq!(set[i].call_with(&upstream, true).await, Outcome::Failed);
        count += 1;
        redis.wait_count(prefix, name, count).await;
    }
    assert!(all_closed(&set), "4 failures: nobody tripped");
    // The 5th, with no local streak longer than 2: the whole fleet opens.
    assert_eq!(set[0].call_with(&upstream, true).await, Outcome::Failed);
    assert!(wait_until(Duration::from_secs(1), || all_open(&set)).await);
    assert!(set.iter().all(|r| r.handle.stats().failed_calls <= 2));

    // A replica's own success restarts the count at its next failure, as its local streak
    // restarts: from a single process, the fleet count is the local streak.
    let prefix = "success-restart";
    let mut set = replicas(4, &upstream, open, Some((&redis, prefix))).await;
    for (n, i) in [0, 1, 2].into_iter().enumerate() {
        set[i].call_with(&upstream, true).await;
        redis.wait_count(prefix, name, n as u64 + 1).await;
    }
    assert_eq!(set[0].call_with(&upstream, false).await, Outcome::Ok);
    assert_eq!(set[0].call_with(&upstream, true).await, Outcome::Failed);
    redis.wait_count(prefix, name, 1).await;
    for (n, i) in [1, 2, 3].into_iter().enumerate() {
        set[i].call_with(&upstream, true).await;
        redis.wait_count(prefix, name, n as u64 + 2).await;
    }
    assert!(all_closed(&set), "7 failures, but only 4 since the restart");
    set[3].call_with(&upstream, true).await;
    assert!(wait_until(Duration::from_secs(1), || all_open(&set)).await);

    // One process alone, failing one call in three: never two failures in a row, never a trip.
    let prefix = "success-flaky";
    let mut set = replicas(1, &upstream, open, Some((&redis, prefix))).await;
    for i in 0..30 {
        set[0].call_with(&upstream, i % 3 == 0).await;
        tokio::time::sleep(MS).await;
    }
    tokio::time::sleep(50 * MS).await;
    assert!(all_closed(&set));
    assert_eq!(redis.fleet_count(prefix, name), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_count_restarts_after_its_window_and_after_a_close() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_millis(300);
    let prefix = "restart";
    let name = "upstream";
    let window = Duration::from_millis(300);
    let mut set = replicas_with(4, &upstream, open, || {
        fleet_builder(&redis, prefix)
            .failure_window(window)
            .build()
            .unwrap()
    })
    .await;

    // Three failures, then none for longer than the window: the count starts again.
    for (n, i) in [0, 1, 2].into_iter().enumerate() {
        set[i].call_with(&upstream, true).await;
        redis.wait_count(prefix, name, n as u64 + 1).await;
    }
    tokio::time::sleep(window + 200 * MS).await;
    assert_eq!(redis.fleet_count(prefix, name), 0, "expired");
    for (n, i) in [3, 0, 1, 2].into_iter().enumerate() {
        set[i].call_with(&upstream, true).await;
        redis.wait_count(prefix, name, n as u64 + 1).await;
    }
    assert!(all_closed(&set), "7 failures, but 4 in the window");
    set[3].call_with(&upstream, true).await;
    assert!(wait_until(Duration::from_secs(1), || all_open(&set)).await);

    // Recovery: replica 0 probes, and its close closes every replica.
    upstream.dead.store(false, Ordering::SeqCst);
    tokio::time::sleep(open + 20 * MS).await;
    let mut outcome = Outcome::Rejected;
    for _ in 0..1000 {
        outcome = set[0].call().await;
        if outcome != Outcome::Rejected {
            break;
        }
        tokio::time::sleep(MS).await;
    }
    assert_eq!(outcome, Outcome::Ok, "replica 0 probed");
    assert!(wait_until(Duration::from_secs(1), || all_closed(&set)).await);

    // The close started a new count: 4 failures do not trip, the 5th does.
    for (n, i) in [1, 2, 3, 1].into_iter().enumerate() {
        set[i].call_with(&upstream, true).await;
        redis.wait_count(prefix, name, n as u64 + 1).await;
    }
    assert!(all_closed(&set));
    set[2].call_with(&upstream, true).await;
    assert!(wait_until(Duration::from_secs(1), || all_open(&set)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_share_failures_each_replica_counts_its_own() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let prefix = "own-counts";
    let mut set = replicas_with(4, &upstream, open, || {
        fleet_builder(&redis, prefix)
            .share_failures(false)
            .build()
            .unwrap()
    })
    .await;
    let failed = failures_round_robin(&mut set).await;
    println!("round-robin, trips shared but not failure counts: {failed} failed calls");
    // The first replica trips on its own 5th failure, the fleet's 17th; the trip is shared.
    assert!((17..=20).contains(&failed), "{failed}");
    assert_eq!(set[0].handle.stats().failed_calls, 5);
    // A replica with fewer than 5 failures of its own is open only because the trip was
    // shared. (Under load, the next replica may reach its own 5th failure before replica 0's
    // open arrives, and trip on its own.)
    for r in &set[1..] {
        let own = r.handle.stats().failed_calls;
        assert!(own == 5 || r.fleet_transitions() == 1, "{own} failures");
    }
    assert!(set[1..].iter().any(|r| r.fleet_transitions() == 1));
    let keys: Vec<String> = redis.cmd(redis::cmd("KEYS").arg(format!("{prefix}:*failures*")));
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_failures_are_counted_per_key_across_the_fleet() {
    let redis = Redis::start();
    let prefix = "keyed-count";
    let process = || {
        let layer = KeyedLayer::builder(|p: &Prompt| p.0.clone())
            .breaker(
                CircuitBreakerLayer::builder()
                    .consecutive_failures(3)
                    .open_duration(Duration::from_secs(60)),
            )
            .build()
            .unwrap();
        let fleet = fleet_on(&redis, prefix);
        fleet.share_keyed("llm", &layer.breakers());
        let svc = layer.layer(tower::service_fn(|(_, fail): Prompt| async move {
            if fail {
                Err(Down)
            } else {
                Ok(())
            }
        }));
        (layer.breakers(), svc, fleet)
    };
    let (breakers1, mut svc1, fleet1) = process();
    let (breakers2, mut svc2, fleet2) = process();
    assert!(
        wait_until(Duration::from_secs(5), || fleet1.is_connected()
            && fleet2.is_connected())
        .await
    );
    // x fails once in each process, y once in process 1.
    fail_key(&mut svc1, "x").await;
    redis.wait_count(prefix, "llm/x", 1).await;
    fail_key(&mut svc2, "x").await;
    redis.wait_count(prefix, "llm/x", 2).await;
    fail_key(&mut svc1, "y").await;
    redis.wait_count(prefix, "llm/y", 1).await;
    let state = |b: &tower_breaker::keyed::Breakers<String>, k: &str| {
        b.handle(&k.to_owned()).map(|h| h.state())
    };
    assert_eq!(state(&breakers1, "x"), Some(State::Closed));
    // The third failure of x, in process 2: x opens in both, y stays closed.
    fail_key(&mut svc2, "x").await;
    assert!(
        wait_until(Duration::from_secs(1), || {
            state(&breakers1, "x") == Some(State::Open)
                && state(&breakers2, "x") == Some(State::Open)
        })
        .await
    );
    assert_eq!(state(&breakers1, "y"), Some(State::Closed));
    assert_eq!(redis.fleet_count(prefix, "llm/y"), 1);
}

// ---------------------------------------------------------------------------------------------
// 3: propagation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_and_a_close_reach_every_replica_fast() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_millis(500);
    let mut set = replicas(4, &upstream, open, Some((&redis, "propagation"))).await;

    for _ in 0..5 {
        assert_eq!(set[0].call().await, Outcome::Failed);
    }
    let tripped = Instant::now();
    assert_eq!(set[0].state(), State::Open);
    let opened = wait_until(Duration::from_secs(1), || all_open(&set)).await;
    let trip_latency = tripped.elapsed();
    println!("trip reached every replica in {trip_latency:?}");
    assert!(opened, "the trip did not propagate within 1 s");
    // Each opened for the time the first had left, give or take the transit.
    let first = set[0].handle.stats().retry_after.unwrap();
    for r in &set[1..] {
        let left = r.handle.stats().retry_after.unwrap();
        assert!(
            left <= first + 20 * MS && left + 100 * MS >= first,
            "{left:?} vs {first:?}"
        );
        assert_eq!(r.fleet_transitions(), 1, "applied with Reason::Fleet");
        assert_eq!(r.handle.stats().failed_calls, 0);
    }

    // Recovery: only replica 0 is touched until it closes, so it is the one that probes.
    upstream.dead.store(false, Ordering::SeqCst);
    tokio::time::sleep(open + 20 * MS).await;
    let mut outcome = Outcome::Rejected;
    for _ in 0..1000 {
        outcome = set[0].call().await;
        if outcome != Outcome::Rejected {
            break;
        }
        tokio::time::sleep(MS).await;
    }
    assert_eq!(outcome, Outcome::Ok, "replica 0 probed");
    assert_eq!(set[0].state(), State::Closed);
    let closed = Instant::now();
    let all_closed = wait_until(Duration::from_secs(1), || {
        set.iter().all(|r| r.state() == State::Closed)
    })
    .await;
    let close_latency = closed.elapsed();
    println!("close reached every replica in {close_latency:?}");
    assert!(all_closed, "the close did not propagate within 1 s");
    assert_eq!(
        upstream.calls(),
        6,
        "5 failures and one probe, for the whole fleet"
    );
    // Nothing echoed back to replica 0.
    assert_eq!(set[0].fleet_transitions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_operations_are_shared_only_when_asked() {
    let redis = Redis::start();
    let upstream = Upstream::default();
    let open = Duration::from_secs(60);
    let manual = |prefix: &str| fleet_builder(&redis, prefix).share_manual(true).build();
    let set: Vec<Replica> = (0..2)
        .map(|_| Replica::new(&upstream, open, Some(manual("manual").unwrap())))
        .collect();
    let plain = replicas(2, &upstream, open, Some((&redis, "no-manual"))).await;
    all_connected(&set).await;

    set[0].handle.force_open();
    plain[0].handle.force_open();
    assert!(
        wait_until(Duration::from_secs(1), || set[1].state()
            == State::ForcedOpen)
        .await
    );
    set[0].handle.force_closed();
    assert!(wait_until(Duration::from_secs(1), || set[1].state() == State::Closed).await);

    tokio::time::sleep(200 * MS).await;
    assert_eq!(
        plain[1].state(),
        State::Closed,
        "manual operations stay local"
    );
    assert_eq!(plain[1].fleet_transitions(), 0);
}

// ---------------------------------------------------------------------------------------------
// 4: faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_while_redis_is_down_and_sharing_resumes_when_it_is_back() {
    #[cfg(feature = "tracing")]
    logs();
    let mut redis = Redis::start();
    let port = redis.port;
    let upstream = Upstream::dead();
    let open = Duration::from_millis(300);
    let mut set = replicas(4, &upstream, open, Some((&redis, "outage"))).await;

    redis.kill();
    assert!(
        wait_until(Duration::from_secs(5), || set
            .iter()
            .all(|r| !r.fleet().is_connected()))
        .await,
        "the loss was noticed"
    );
    // Local breakers still trip, each on its own 5 failures, and calls never wait.
    let started = Instant::now();
    let failed = failures_round_robin(&mut set).await;
    assert_eq!(failed, 20);
    for r in &set {
        assert_eq!(r.handle.stats().failed_calls, 5);
    }
    println!(
        "with redis down, every replica tripped on its own in {:?}",
        started.elapsed()
    );
    // Half-open without a fleet: each replica probes at once (no 5 s wait for a lease).
    let probes = probes_in_one_period(&mut set, &upstream, open).await;
    assert_eq!(probes, 4, "every replica probed on its own");

    let redis = Redis::start_on(port);
    let back = Instant::now();
    all_connected(&set).await;
    println!("reconnected {:?} after redis came back", back.elapsed());
    for r in &set {
        r.handle.force_closed(); // local: manual operations are not shared here
    }
    for _ in 0..5 {
        set[0].call().await;
    }
    let tripped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || all_open(&set)).await,
        "sharing resumed after the restart"
    );
    println!(
        "after the restart, a trip reached every replica in {:?}",
        tripped.elapsed()
    );
    // One warning per outage and one info on recovery, per fleet member.
    #[cfg(feature = "tracing")]
    {
        let warned = log_lines(&["WARN", "outage:test", "cannot reach Redis"]);
        let recovered = log_lines(&["INFO", "outage:test", "reconnected"]);
        assert_eq!((warned, recovered), (set.len(), set.len()));
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_adds_no_latency_to_calls() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let mut set = replicas(4, &upstream, open, Some((&redis, "stall"))).await;

    let _: () = redis.cmd(redis::cmd("CLIENT").arg("PAUSE").arg(3000).arg("ALL"));
    let paused = Instant::now();
    // 100 calls that trip every replica: each trip hands an event to a fleet task that is
    // stuck on a paused Redis.
    let started = Instant::now();
    let mut failed = 0;
    for i in 0..100 {
        if set[i % 4].call().await == Outcome::Failed {
            failed += 1;
        }
    }
    let took = started.elapsed();
    println!("100 calls with redis paused took {took:?}");
    assert!(took < 500 * MS, "calls waited on redis: {took:?}");
    assert_eq!(failed, 20, "every replica tripped on its own");
    assert!(all_open(&set));

    // Once the pause ends, the fleet reconnects and shares again.
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(paused.elapsed())).await;
    all_connected(&set).await;
    for r in &set {
        r.handle.force_closed();
    }
    for _ in 0..5 {
        set[0].call().await;
    }
    assert!(wait_until(Duration::from_secs(1), || all_open(&set)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_replayed_messages_change_nothing() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let mut set = replicas(2, &upstream, open, Some((&redis, "garbage"))).await;
    // A second shared circuit, to know when everything published before has been read.
    let sentinel = CircuitBreakerLayer::builder()
        .name("sentinel")
        .build()
        .unwrap()
        .handle();
    set[1].fleet().share(&sentinel);

    // A real trip, so that the receiver has a generation to replay and a real message.
    for _ in 0..5 {
        set[0].call().await;
    }
    assert!(wait_until(Duration::from_secs(1), || set[1].state() == State::Open).await);
    let real: String = redis.cmd(redis::cmd("GET").arg("garbage:test:state:upstream"));
    assert!(real.starts_with("tb1|open|test|"), "{real}");
    let generation: u64 = real.split('|').nth(4).unwrap().parse().unwrap();
    set[1].handle.reset(); // local only

    let channel = "garbage:test";
    let future = now_ms() + 60_000;
    let mut junk = 0x9e37_79b9_7f4a_7c15_u64;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                junk ^= junk << 13;
                junk ^= junk >> 7;
                junk ^= junk << 17;
                junk as u8
            })
            .collect();
        redis.publish(channel, bytes);
    }
    let g = generation + 100;
    for payload in [
        real.clone(),                                                    // a replay
        format!("tb1|open|test|someone|{generation}|{future}|upstream"), // an old generation
        format!("tb2|open|test|someone|{g}|{future}|upstream"),          // another version
        format!("tb1|open|other|someone|{g}|{future}|upstream"),         // another fleet
        format!("tb1|open|test|someone|{g}|{}|upstream", now_ms() - 1),  // expired
        format!("tb1|force_open|test|someone|{g}|{future}|upstream"),    // manual, not shared
        format!("tb1|open|test|someone|{g}|{future}|not-shared"),        // a name not shared
        format!("tb1|open|test|someone|{g}|{future}|"),                  // no name
        format!("tb1|open|test|someone|-{g}|{future}|upstream"),         // a bad number
        format!(
            "tb1|open|test|someone|{g}|{future}|upstream{}",
            "x".repeat(5000)
        ),
        format!(
            "tb1|open|test|{}|{g}|{future}|upstream",
            set[1].fleet().origin()
        ), // its own
        "tb1|open|test".to_owned(),
    ] {
        redis.publish(channel, payload);
    }
    // Wrong prefix, same fleet and name: another channel altogether.
    redis.publish(
        "other:test",
        format!("tb1|open|test|someone|{g}|{future}|upstream"),
    );
    redis.publish(
        channel,
        format!("tb1|open|test|someone|1|{future}|sentinel"),
    );
    assert!(
        wait_until(Duration::from_secs(2), || sentinel.state() == State::Open).await,
        "the sentinel, published last, arrived"
    );
    assert_eq!(set[1].state(), State::Closed);
    assert_eq!(set[1].fleet_transitions(), 1, "only the real trip");
    assert!(
        set[1].fleet().is_connected(),
        "garbage did not cost the connection"
    );

    // And a newer, well-formed message still applies.
    let g = g + 1;
    redis.publish(
        channel,
        format!("tb1|open|test|someone|{g}|{future}|upstream"),
    );
    assert!(wait_until(Duration::from_secs(1), || set[1].state() == State::Open).await);
    let left = set[1].handle.stats().retry_after.unwrap();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_with_different_prefixes_do_not_see_each_other() {
    let redis = Redis::start();
    let upstream = Upstream::dead();
    let open = Duration::from_secs(60);
    let mut one = replicas(2, &upstream, open, Some((&redis, "one"))).await;
    let two = replicas(2, &upstream, open, Some((&redis, "two"))).await;
    for _ in 0..5 {
        one[0].call().await;
    }
    assert!(wait_until(Duration::from_secs(1), || all_open(&one)).await);
    tokio::time::sleep(200 * MS).await;
    assert!(two.iter().all(|r| r.state() == State::Closed));
    assert!(two.iter().all(|r| r.fleet_transitions() == 0));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// 5: keyed breakers

type Prompt = (String, bool);

/// A failed call for `key`.
async fn fail_key<S: Service<Prompt>>(svc: &mut S, key: &str) {
    if let Ok(svc) = svc.ready().await {
        let _ = svc.call((key.to_owned(), true)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_breakers_share_per_key_within_the_key_limit() {
    let redis = Redis::start();
    let process = || {
        let layer = KeyedLayer::builder(|p: &Prompt| p.0.clone())
            .breaker(
                CircuitBreakerLayer::builder()
                    .consecutive_failures(3)
                    .open_duration(Duration::from_secs(60)),
            )
            .max_keys(4)
            .build()
            .unwrap();
        let fleet = fleet_on(&redis, "keyed");
        fleet.share_keyed("llm", &layer.breakers());
        let svc = layer.layer(tower::service_fn(|(_, fail): Prompt| async move {
            if fail {
                Err(Down)
            } else {
                Ok(())
            }
        }));
        (layer.breakers(), svc, fleet)
    };
    let (breakers1, mut svc1, fleet1) = process();
    let (breakers2, mut svc2, fleet2) = process();
    let sentinel = CircuitBreakerLayer::builder()
        .name("sentinel")
        .build()
        .unwrap()
        .handle();
    fleet2.share(&sentinel);
    assert!(
        wait_until(Duration::from_secs(5), || fleet1.is_connected()
            && fleet2.is_connected())
        .await
    );

    // Process 2 uses "b" itself.
    svc2.ready()
        .await
        .unwrap()
        .call(("b".into(), false))
        .await
        .unwrap();

    // "a" trips in process 1: process 2, which never called "a", gets it open.
    for _ in 0..3 {
        let _ = svc1.ready().await.unwrap().call(("a".into(), true)).await;
    }
    let a = "a".to_owned();
    assert_eq!(breakers1.handle(&a).unwrap().state(), State::Open);
    assert!(
        wait_until(Duration::from_secs(1), || breakers2
            .handle(&a)
            .is_some_and(|h| h.state() == State::Open))
        .await,
        "the trip of key a reached process 2"
    );
    let err = svc2
        .ready()
        .await
        .unwrap()
        .call((a.clone(), false))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(
        breakers2.handle(&"b".to_owned()).unwrap().state(),
        State::Closed
    );

    // A flood of remote keys: created while there is room, never past max_keys, and the
    // keys process 2 uses stay.
    let future = now_ms() + 60_000;
    for k in 0..100 {
        redis.publish(
            "keyed:test",
            format!("tb1|open|test|flooder|{}|{future}|llm/k{k}", 1_000 + k),
        );
    }
    redis.publish(
        "keyed:test",
        format!("tb1|open|test|flooder|1|{future}|sentinel"),
    );
    assert!(wait_until(Duration::from_secs(2), || sentinel.state() == State::Open).await);
    println!("process 2 keys after the flood: {:?}", breakers2.keys());
    assert!(breakers2.len() <= breakers2.max_keys());
    assert_eq!(breakers2.len(), 4);
    assert!(
        breakers2.handle(&"b".to_owned()).is_some(),
        "a local key stayed"
    );
    assert!(breakers2.handle(&a).is_some());
    assert!(breakers1.len() <= 4);
}
