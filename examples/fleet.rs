//! Four replicas of a service share their circuit through Redis: one upstream dies, stays dead
//! for a while, then recovers. The scenario runs three times — local-only, sharing trips but
//! not failure counts (`share_failures(false)`), and shared (the default: failures are counted
//! fleet-wide) — and prints what the fleet costs the upstream each time.
//!
//! Each replica is a thread with its own tokio runtime, breaker (`consecutive_failures(5)`) and
//! Redis connection, as four processes would be. The load is uneven, as it usually is: replica
//! 1 sends a request every 2 ms, replica 2 every 4 ms, and so on. The example starts its own
//! `redis-server` on a free port and stops it at the end.
//!
//! Run with `cargo run --example fleet --features redis`. Takes about six seconds.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, Reason, State};
use tower_breaker::fleet::Fleet;
use tower_layer::Layer;

const REPLICAS: usize = 4;
const OPEN: Duration = Duration::from_millis(300);
/// How long the upstream stays dead after the whole fleet stopped calling it.
const DEAD_FOR: Duration = Duration::from_millis(1500);

/// The dependency: fails while `dead`; counts the calls that reach it.
#[derive(Default)]
struct Upstream {
    dead: AtomicBool,
    calls: AtomicUsize,
}

struct Report {
    failed_before_all_open: usize,
    probes_per_period: f64,
    /// Until the first replica closed, and until all had.
    first_closed: Duration,
    time_to_close: Duration,
}

fn main() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("This example needs `redis-server` on the PATH.");
        eprintln!("Install it with `apt-get install redis-server` (Debian, Ubuntu) or");
        eprintln!("`brew install redis` (macOS), then run it again.");
        std::process::exit(1);
    }
    let redis = RedisServer::start();
    println!("redis-server on port {}\n", redis.port);

    let url = redis.url();
    let local = scenario(None);
    let trips_only = scenario(Some((&url, false)));
    let shared = scenario(Some((&url, true)));

    println!(
        "{:<18} {:>26} {:>13} {:>30}",
        "", "failed calls before", "probes per", "time to close after recovery"
    );
    println!(
        "{:<18} {:>26} {:>13} {:>30}",
        "", "the fleet stopped calling", "open period", "first replica / all 4"
    );
    for (name, r) in [
        ("local-only", local),
        ("shared trips only", trips_only),
        ("shared", shared),
    ] {
        let close = format!(
            "{} ms / {} ms",
            r.first_closed.as_millis(),
            r.time_to_close.as_millis()
        );
        println!(
            "{:<18} {:>26} {:>13.1} {:>30}",
            name, r.failed_before_all_open, r.probes_per_period, close
        );
    }
    println!(
        "\nShared: the fleet counts failures together, so its 5th failed call, wherever it lands, \
         trips the circuit; the trip opens every replica for the time it has left, one replica \
         per open period probes for all, and its close closes them all. Sharing trips only, \
         the fleet waits for one replica's own 5 failures."
    );
}

/// One run: the upstream dead, then dead for `DEAD_FOR` more, then recovered. `fleet`: the
/// Redis URL, and whether failures are counted fleet-wide; `None` for local-only breakers.
fn scenario(fleet: Option<(&str, bool)>) -> Report {
    let upstream = Arc::new(Upstream::default());
    upstream.dead.store(true, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(REPLICAS + 1));
    let half_opens = Arc::new(AtomicUsize::new(0));
    let (handles_tx, handles_rx) = mpsc::channel();

    let threads: Vec<_> = (0..REPLICAS)
        .map(|i| {
            let upstream = upstream.clone();
            let stop = stop.clone();
            let start = start.clone();
            let half_opens = half_opens.clone();
            let handles_tx = handles_tx.clone();
            let fleet = fleet.map(|(url, counts)| (url.to_owned(), counts));
            thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(replica(
                    i, fleet, upstream, stop, start, half_opens, handles_tx,
                ));
            })
        })
        .collect();
    let handles: Vec<Handle> = handles_rx.iter().take(REPLICAS).collect();
    start.wait();

    let all = |state: State| handles.iter().all(|h| h.state() == state);
    wait_for(|| all(State::Open));
    let failed_before_all_open = upstream.calls.load(Ordering::SeqCst);

    // Dead for a few more open periods: count the probes. The count starts and ends at a
    // moment when every replica has just (re-)opened, so no period is cut in two.
    let settled = || {
        handles.iter().all(|h| {
            let stats = h.stats();
            stats.state == State::Open && stats.retry_after.is_some_and(|d| d > OPEN / 2)
        })
    };
    let calls = upstream.calls.load(Ordering::SeqCst);
    let periods = half_opens.load(Ordering::SeqCst);
    thread::sleep(DEAD_FOR);
    wait_for(settled);
    let probes = upstream.calls.load(Ordering::SeqCst) - calls;
    let periods = half_opens.load(Ordering::SeqCst) - periods;

    // Recovery.
    upstream.dead.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    wait_for(|| handles.iter().any(|h| h.state() == State::Closed));
    let first_closed = recovered.elapsed();
    wait_for(|| all(State::Closed));
    let time_to_close = recovered.elapsed();

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    Report {
        failed_before_all_open,
        probes_per_period: probes as f64 / periods.max(1) as f64,
        first_closed,
        time_to_close,
    }
}

/// One replica: its breaker (and fleet member), then requests at its own pace until `stop`.
async fn replica(
    i: usize,
    fleet: Option<(String, bool)>,
    upstream: Arc<Upstream>,
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
    half_opens: Arc<AtomicUsize>,
    handles: mpsc::Sender<Handle>,
) {
    let layer = CircuitBreakerLayer::builder()
        .name("upstream")
        .consecutive_failures(5)
        .open_duration(OPEN)
        .half_open_permits(1)
        .success_threshold(1)
        .fail_fast()
        .build()
        .unwrap();
    let handle = layer.handle();
    if i == 0 {
        // Replica 1's open periods stand for the fleet's.
        handle.on_transition(move |t| {
            if t.reason == Reason::OpenElapsed {
                half_opens.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let fleet = fleet.map(|(url, share_failures)| {
        let fleet = Fleet::builder()
            .url(url)
            // A fleet per run, so that one run's keys do not meet the next one's.
            .fleet(if share_failures {
                "example"
            } else {
                "example-trips-only"
            })
            .share_failures(share_failures)
            .probe_lease(Duration::from_secs(2))
            .build()
            .unwrap();
        fleet.share(&handle);
        fleet
    });
    if let Some(fleet) = &fleet {
        while !fleet.is_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    handles.send(handle).unwrap();
    let mut svc = layer.layer(service_fn(move |()| {
        upstream.calls.fetch_add(1, Ordering::SeqCst);
        let dead = upstream.dead.load(Ordering::SeqCst);
        async move {
            if dead {
                Err("upstream down")
            } else {
                Ok(())
            }
        }
    }));
    // `Barrier::wait` blocks the thread: fine here, nothing else runs on this runtime yet
    // that needs to make progress before every replica is ready.
    start.wait();
    let pace = Duration::from_millis(2 * (i as u64 + 1));
    while !stop.load(Ordering::SeqCst) {
        if let Ok(svc) = svc.ready().await {
            let _ = svc.call(()).await;
        }
        tokio::time::sleep(pace).await;
    }
    if let Some(fleet) = fleet {
        fleet.shutdown();
    }
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A `redis-server` of the example's own, persistence off, stopped on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(server.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
