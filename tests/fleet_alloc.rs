#![cfg(feature = "redis")]
//! Zero heap allocations per admitted call for a breaker shared with a fleet: the fleet works
//! on a background task and through transition listeners, never on the call path. Same harness
//! as tests/alloc.rs (a counting global allocator, per thread, over `poll_ready` + `call` +
//! poll to completion, after a warm-up); the fleet's task runs on another thread meanwhile,
//! connected to a `redis-server` started here, or failing to reach an unused port.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tower_breaker::circuit_breaker::{CircuitBreakerLayer, State};
use tower_breaker::fleet::Fleet;
use tower_breaker::keyed::KeyedLayer;
use tower_layer::Layer;

#[path = "support/no_alloc.rs"]
mod no_alloc;
use no_alloc::{count_allocations, Echo};

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Shares a plain and a keyed breaker with a fleet at `url`, then counts the allocations of
/// their admitted calls.
fn check(rt: &tokio::runtime::Runtime, url: &str, connect: bool) {
    let _guard = rt.enter();
    let fleet = Fleet::builder()
        .url(url)
        .fleet("alloc")
        .command_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
    if connect {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fleet.is_connected() {
            assert!(Instant::now() < deadline, "the fleet did not connect");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    let layer = CircuitBreakerLayer::builder()
        .name("alloc")
        .build()
        .unwrap();
    fleet.share(&layer.handle());
    let mut svc = layer.layer(Echo);
    count_allocations(&mut svc, 1_000); // warm-up
    let allocations = count_allocations(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10 000 admitted calls"
    );
    assert_eq!(layer.handle().state(), State::Closed);

    let keyed = KeyedLayer::builder(|r: &u64| r % 4).build().unwrap();
    fleet.share_keyed("alloc", &keyed.breakers());
    let mut svc = keyed.layer(Echo);
    count_allocations(&mut svc, 1_000); // warm-up: builds the four keys (and shares them)
    let allocations = count_allocations(&mut svc, 10_000);
    assert_eq!(
        allocations, 0,
        "keyed: {allocations} allocations in 10 000 admitted calls"
    );
    assert_eq!(keyed.breakers().len(), 4);
    if connect {
        assert!(fleet.is_connected());
    }
}

#[test]
fn admitted_calls_of_a_shared_breaker_do_not_allocate() {
    // The fleet's task on its own threads, as in a server; calls are driven on this one.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // Nothing listens on this port: the fleet keeps failing to connect meanwhile.
    check(&rt, &format!("redis://127.0.0.1:{}/", free_port()), false);

    let port = free_port();
    let server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut server) = server else {
        panic!("redis-server must be installed (apt-get install redis-server)");
    };
    check(&rt, &format!("redis://127.0.0.1:{port}/"), true);
    let _ = server.kill();
    let _ = server.wait();
}
