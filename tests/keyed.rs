//! Per-key breakers: isolation, per-key settings, availability, handles and bounded keys.

use std::time::Duration;

use tokio_test::assert_ready_ok;
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};
use tower_breaker::keyed::KeyedLayer;
use tower_breaker::BoxError;
use tower_layer::Layer;

/// A request for `key` that fails when the flag is set.
type Req = (&'static str, bool);

fn llm_layer() -> KeyedLayer<&'static str, fn(&Req) -> &'static str> {
    KeyedLayer::builder((|r: &Req| r.0) as fn(&Req) -> &'static str)
        .breaker(
            CircuitBreakerLayer::builder()
                .consecutive_failures(5)
                .open_duration(Duration::from_secs(60))
                .half_open_permits(1)
                .success_threshold(1),
        )
        .configure(|key, b| match *key {
            "anthropic" => b
                .consecutive_failures(3)
                .open_duration(Duration::from_secs(120)),
            _ => b,
        })
        .build()
        .unwrap()
}

fn provider() -> impl Service<Req, Response = &'static str, Error = &'static str> + Clone {
    service_fn(|(key, fail): Req| async move {
        if fail {
            Err("provider failed")
        } else {
            Ok(key)
        }
    })
}

async fn send<S: Service<Req, Error = BoxError>>(
    svc: &mut S,
    req: Req,
) -> Result<S::Response, BoxError> {
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_circuit_with_its_own_settings() {
    let layer = llm_layer();
    let breakers = layer.breakers();
    let mut svc = layer.layer(provider());

    for _ in 0..3 {
        assert!(send(&mut svc, ("anthropic", true)).await.is_err());
        assert!(send(&mut svc, ("openai", true)).await.is_err());
    }
    assert_eq!(send(&mut svc, ("azure", false)).await.unwrap(), "azure");

    // anthropic trips after 3 failures; openai (5) does not.
    let anthropic = breakers.handle(&"anthropic").unwrap();
    assert_eq!(anthropic.state(), State::Open);
    assert_eq!(anthropic.name(), "anthropic");
    assert_eq!(breakers.handle(&"openai").unwrap().state(), State::Closed);
    let err = send(&mut svc, ("anthropic", false)).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.name(), "anthropic");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(
        anthropic.stats().failed_calls,
        3,
        "the rejected call did not reach it"
    );
    assert_eq!(send(&mut svc, ("openai", false)).await.unwrap(), "openai");

    // The keys whose circuit admits now, oldest key first.
    assert_eq!(breakers.available(), vec!["openai", "azure"]);
    assert_eq!(breakers.keys(), vec!["anthropic", "openai", "azure"]);

    // openai's failures in a row reached 5 only with two more.
    for _ in 0..2 {
        assert!(send(&mut svc, ("openai", true)).await.is_err());
    }
    assert_eq!(
        breakers.available(),
        vec!["openai", "azure"],
        "a success reset its streak"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_key_recovers_after_its_open_duration() {
    let layer = llm_layer();
    let breakers = layer.breakers();
    let mut svc = layer.layer(provider());
    for _ in 0..3 {
        let _ = send(&mut svc, ("anthropic", true)).await;
    }
    tokio::time::advance(Duration::from_millis(119_999)).await;
    assert!(send(&mut svc, ("anthropic", false))
        .await
        .unwrap_err()
        .is::<CircuitOpen>());
    assert!(breakers.available().is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(breakers.available(), vec!["anthropic"]);
    assert_eq!(
        send(&mut svc, ("anthropic", false)).await.unwrap(),
        "anthropic"
    );
    assert_eq!(
        breakers.handle(&"anthropic").unwrap().state(),
        State::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_handle_steers_that_key_only() {
    let layer = llm_layer();
    let breakers = layer.breakers();
    let mut svc = layer.layer(provider());
    let openai = breakers.register("openai").unwrap();
    breakers.register("azure").unwrap();
    openai.force_open();
    assert!(send(&mut svc, ("openai", false))
        .await
        .unwrap_err()
        .is::<CircuitOpen>());
    assert_eq!(send(&mut svc, ("azure", false)).await.unwrap(), "azure");
    assert_eq!(breakers.available(), vec!["azure"]);
    openai.force_closed();
    assert_eq!(send(&mut svc, ("openai", false)).await.unwrap(), "openai");
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let (inner, mut handle) = tower_test::mock::pair::<Req, &'static str>();
    let mut svc = llm_layer().layer(inner);
    let mut task = tokio_test::task::spawn(());
    handle.allow(0);
    assert!(task.enter(|cx, _| svc.poll_ready(cx)).is_pending());
    handle.allow(1);
    assert!(task.is_woken());
    assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
}

type FloodReq = (u64, bool);

fn flood_layer(max_keys: usize) -> KeyedLayer<u64, fn(&FloodReq) -> u64> {
    KeyedLayer::builder((|r: &FloodReq| r.0) as fn(&FloodReq) -> u64)
        .breaker(CircuitBreakerLayer::builder().consecutive_failures(1))
        .max_keys(max_keys)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_stays_within_max_keys() {
    let layer = flood_layer(64);
    let breakers = layer.breakers();
    let mut svc = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    for key in 0..10_000u64 {
        assert_eq!(
            svc.ready().await.unwrap().call((key, false)).await.unwrap(),
            key
        );
        assert!(breakers.len() <= 64);
    }
    assert_eq!(breakers.len(), 64);
    assert_eq!(breakers.evicted(), 10_000 - 64);
    // The most recent keys are the ones kept.
    assert_eq!(breakers.keys(), (10_000 - 64..10_000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn eviction_spares_keys_in_flight_and_prefers_closed_circuits() {
    let (inner, mut handle) = tower_test::mock::pair::<FloodReq, u64>();
    let layer = flood_layer(3);
    let breakers = layer.breakers();
    let mut svc = layer.layer(inner);
    handle.allow(100);

    // Key 1: a call in flight (oldest). Key 2: open, idle. Key 3: closed, idle.
    let in_flight = svc.ready().await.unwrap().call((1, false));
    let (_, _pending_response) = handle.next_request().await.unwrap();
    let failing = svc.ready().await.unwrap().call((2, true));
    handle.next_request().await.unwrap().1.send_error("down");
    assert!(failing.await.is_err());
    assert_eq!(breakers.handle(&2).unwrap().state(), State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    let ok = svc.ready().await.unwrap().call((3, false));
    handle.next_request().await.unwrap().1.send_response(3);
    assert_eq!(ok.await.unwrap(), 3);

    // Key 4 needs room: key 3 goes (idle and closed), though 1 and 2 are older.
    tokio::time::advance(Duration::from_secs(1)).await;
    let ok = svc.ready().await.unwrap().call((4, false));
    handle.next_request().await.unwrap().1.send_response(4);
    assert_eq!(ok.await.unwrap(), 4);
    assert_eq!(breakers.keys(), vec![1, 2, 4]);

    // Key 5: key 4 is the only idle closed key (1 is busy, 2 is open).
    let ok = svc.ready().await.unwrap().call((5, false));
    handle.next_request().await.unwrap().1.send_response(5);
    ok.await.unwrap();
    assert_eq!(breakers.keys(), vec![1, 2, 5]);
    drop(in_flight);
    // Key 1 is idle now, and the least recently used closed key.
    let ok = svc.ready().await.unwrap().call((6, false));
    handle.next_request().await.unwrap().1.send_response(6);
    ok.await.unwrap();
    assert_eq!(breakers.keys(), vec![2, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_after_the_idle_timeout() {
    let layer = KeyedLayer::builder(|r: &FloodReq| r.0)
        .max_keys(100)
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let mut svc = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    breakers.register(0).unwrap();
    for key in 1..=3 {
        svc.ready().await.unwrap().call((key, false)).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(9)).await;
    svc.ready().await.unwrap().call((2, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    breakers.evict_idle();
    // 1 and 3 idle for 10 s; 2 used 1 s ago; 0 registered.
    assert_eq!(breakers.keys(), vec![0, 2]);
    assert_eq!(breakers.evicted(), 2);

    // New keys sweep on their own.
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.ready().await.unwrap().call((7, false)).await.unwrap();
    assert_eq!(breakers.keys(), vec![0, 7]);
}

#[tokio::test(start_paused = true)]
async fn registered_keys_are_kept_and_not_counted() {
    let layer = flood_layer(2);
    let breakers = layer.breakers();
    for key in [100, 200, 300] {
        breakers.register(key).unwrap();
    }
    let mut svc = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    for key in 0..50 {
        svc.ready().await.unwrap().call((key, false)).await.unwrap();
    }
    assert_eq!(breakers.keys(), vec![100, 200, 300, 48, 49]);
    assert!(breakers.remove(&200));
    assert!(!breakers.remove(&200));
    assert_eq!(breakers.len(), 4);
}

#[tokio::test]
async fn invalid_settings_are_errors() {
    let err = KeyedLayer::builder(|r: &FloodReq| r.0)
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_keys");

    // A per-key configuration that is invalid fails that key's calls, not the others.
    let layer = KeyedLayer::builder(|r: &FloodReq| r.0)
        .configure(|key, b| {
            if *key == 13 {
                b.half_open_permits(0)
            } else {
                b
            }
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call((13, false))
        .await
        .unwrap_err();
    assert!(err.is::<tower_breaker::ConfigError>());
    assert_eq!(
        svc.ready().await.unwrap().call((12, false)).await.unwrap(),
        12
    );
    assert_eq!(layer.breakers().keys(), vec![12]);
}

#[test]
fn keyed_types_are_send_sync_clone() {
    fn assert_all<T: Send + Sync + Clone + std::fmt::Debug>() {}
    type Layer = KeyedLayer<&'static str, fn(&Req) -> &'static str>;
    assert_all::<Layer>();
    assert_all::<
        tower_breaker::keyed::Keyed<
            tower::util::BoxCloneSyncService<Req, &'static str, BoxError>,
            &'static str,
            fn(&Req) -> &'static str,
        >,
    >();
    assert_all::<tower_breaker::keyed::Breakers<u64>>();
    assert_all::<tower_breaker::health::HealthCheck>();
}

#[tokio::test]
async fn configure_may_call_back_into_the_registry() {
    use std::sync::{Arc, OnceLock};
    use tower_breaker::keyed::Breakers;

    let cell: Arc<OnceLock<Breakers<u64>>> = Arc::new(OnceLock::new());
    let seen = cell.clone();
    let layer = KeyedLayer::builder(|r: &FloodReq| r.0)
        .configure(move |_, b| {
            // Runs without the registry's lock held.
            let known = seen.get().map_or(0, |breakers| breakers.len());
            b.consecutive_failures(known as u32 + 1)
        })
        .build()
        .unwrap();
    cell.set(layer.breakers()).ok();
    let mut svc = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    for key in 0..3 {
        svc.ready().await.unwrap().call((key, false)).await.unwrap();
    }
    assert_eq!(layer.breakers().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_busy_key_is_evicted_only_when_every_key_is_busy_and_its_call_still_finishes() {
    let (inner, mut handle) = tower_test::mock::pair::<FloodReq, u64>();
    let layer = flood_layer(1);
    let breakers = layer.breakers();
    let mut svc = layer.layer(inner);
    handle.allow(10);

    let first = svc.ready().await.unwrap().call((1, false));
    let (_, respond_first) = handle.next_request().await.unwrap();
    let old_circuit = breakers.handle(&1).unwrap();
    // Key 2 needs room and key 1 is the only candidate, though busy: memory stays bounded.
    let second = svc.ready().await.unwrap().call((2, false));
    let (_, respond_second) = handle.next_request().await.unwrap();
    assert_eq!(breakers.keys(), vec![2]);
    assert_eq!(breakers.evicted(), 1);

    // The evicted key's call completes and is recorded on the circuit it started on.
    respond_first.send_response(1);
    respond_second.send_response(2);
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(second.await.unwrap(), 2);
    assert_eq!(old_circuit.stats().successful_calls, 1);
    assert!(breakers.handle(&1).is_none());
}

/// A bulkhead per key: each key has its own limit; a call over it fails at once with
/// `BulkheadFull` without reaching the inner service or spending a probe permit, and the slot
/// comes back when a call ends or its future is dropped.
#[tokio::test(start_paused = true)]
async fn per_key_bulkheads_bound_each_key_separately() {
    use tokio::sync::oneshot;
    use tower_breaker::bulkhead::{error::BulkheadFull, BulkheadLayer};

    let layer = KeyedLayer::builder(|r: &(&'static str, oneshot::Receiver<()>)| r.0)
        .bulkhead(BulkheadLayer::builder().max_concurrent(2))
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let mut svc = layer.layer(service_fn(
        move |(key, rx): (&'static str, oneshot::Receiver<()>)| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let _ = rx.await;
                Ok::<_, BoxError>(key)
            }
        },
    ));

    let mut held = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        held.push(svc.ready().await.unwrap().call(("a", rx)));
    }
    let stats = breakers.bulkhead(&"a").unwrap().stats();
    assert_eq!(
        (stats.name.as_str(), stats.active, stats.available),
        ("a", 2, 0)
    );

    let (_tx, rx) = oneshot::channel();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a", rx))
        .await
        .unwrap_err();
    assert!(err.is::<BulkheadFull>(), "{err}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "not called when full"
    );
    assert_eq!(breakers.bulkhead(&"a").unwrap().stats().rejected, 1);
    assert_eq!(
        breakers.handle(&"a").unwrap().stats().total_calls,
        0,
        "the circuit saw nothing"
    );

    // Another key has its own limit.
    let (tx_b, rx_b) = oneshot::channel();
    let other = svc.ready().await.unwrap().call(("b", rx_b));
    tx_b.send(()).unwrap();
    assert_eq!(other.await.unwrap(), "b");

    // A finished call and a dropped future each give their slot back.
    senders.remove(0).send(()).unwrap();
    assert_eq!(held.remove(0).await.unwrap(), "a");
    drop(held);
    let stats = breakers.bulkhead(&"a").unwrap().stats();
    assert_eq!((stats.active, stats.available), (0, 2));
    assert!(breakers.bulkhead(&"missing").is_none());
}

/// Keyed breakers are fail-fast, and that is the mode honoured whatever the breaker builder
/// selects: `fail_fast()` (the only mode a builder can select) and the builder's default alike
/// give a ready `poll_ready` and a `CircuitOpen` from `call` while the key's circuit is open.
#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_fail_fast_whatever_the_builder_selects() {
    let explicit = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .fail_fast();
    let default = CircuitBreakerLayer::builder().consecutive_failures(1);
    for (name, breaker) in [("fail_fast()", explicit), ("default", default)] {
        let layer = KeyedLayer::builder((|r: &Req| r.0) as fn(&Req) -> &'static str)
            .breaker(breaker)
            .configure(|_, b| b.open_duration(Duration::from_secs(30)))
            .build()
            .unwrap();
        let mut svc = layer.layer(provider());
        assert!(send(&mut svc, ("a", true)).await.is_err());
        assert_eq!(
            layer.breakers().handle(&"a").unwrap().state(),
            State::Open,
            "{name}"
        );
        let mut task = tokio_test::task::spawn(());
        assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)), "{name}");
        let err = svc.call(("a", false)).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
        assert_eq!(open.retry_after(), Some(Duration::from_secs(30)), "{name}");
    }
}

/// A service clone remembers the keys it called; a key removed (or evicted) since is looked up
/// again, so the clone's next call uses the key's new circuit, not the forgotten one.
#[tokio::test(start_paused = true)]
async fn a_clone_forgets_a_removed_key_and_uses_its_new_circuit() {
    let layer = flood_layer(8);
    let breakers = layer.breakers();
    let mut svc = layer.layer(service_fn(|(k, fail): FloodReq| async move {
        if fail {
            Err::<u64, BoxError>("down".into())
        } else {
            Ok(k)
        }
    }));
    assert!(send_flood(&mut svc, (1, true)).await.is_err());
    let old = breakers.handle(&1).unwrap();
    assert_eq!(old.state(), State::Open);
    assert!(send_flood(&mut svc, (1, false))
        .await
        .unwrap_err()
        .is::<CircuitOpen>());

    assert!(breakers.remove(&1));
    assert_eq!(send_flood(&mut svc, (1, false)).await.unwrap(), 1);
    let new = breakers.handle(&1).unwrap();
    assert_eq!(new.state(), State::Closed);
    assert_eq!(new.stats().successful_calls, 1);
    assert_eq!(
        old.stats().successful_calls,
        0,
        "the forgotten circuit saw nothing"
    );

    // The same after an eviction: keys 2..=9 push key 1 out of the 8 slots; then key 1 is new.
    for key in 2..=9 {
        send_flood(&mut svc, (key, false)).await.unwrap();
    }
    assert!(breakers.handle(&1).is_none());
    new.force_open();
    assert_eq!(send_flood(&mut svc, (1, false)).await.unwrap(), 1);
    assert_eq!(breakers.handle(&1).unwrap().stats().successful_calls, 1);
}

async fn send_flood<S: Service<FloodReq, Error = BoxError>>(
    svc: &mut S,
    req: FloodReq,
) -> Result<S::Response, BoxError> {
    svc.ready().await?.call(req).await
}

/// Clones on several threads calling overlapping keys, with new keys arriving and evicting old
/// ones: every call gets an answer, the key count stays within `max_keys`, and every key built
/// is either tracked or counted as evicted.
#[test]
fn clones_on_several_threads_share_the_keys_and_stay_bounded() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 5_000;
    let built = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = built.clone();
    let layer = KeyedLayer::builder((|r: &FloodReq| r.0) as fn(&FloodReq) -> u64)
        .max_keys(16)
        .configure(move |_, b| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            b
        })
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let prototype = layer.layer(service_fn(|(k, _): FloodReq| async move {
        Ok::<_, BoxError>(k)
    }));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut svc = prototype.clone();
            let breakers = breakers.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    for i in 0..CALLS {
                        // Mostly a few hot keys shared by every thread, now and then a new one.
                        let key = if i % 10 == 0 {
                            1_000 + t * CALLS + i
                        } else {
                            i % 4
                        };
                        assert_eq!(send_flood(&mut svc, (key, false)).await.unwrap(), key);
                        assert!(breakers.len() <= 16);
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(breakers.len() <= 16);
    // Keys built concurrently for the same key lose the race and are dropped unused, so
    // `built` may exceed the keys that were ever tracked, never fall short of them.
    let tracked_ever = breakers.len() as u64 + breakers.evicted();
    assert!(tracked_ever >= THREADS * CALLS / 10);
    assert!(built.load(std::sync::atomic::Ordering::SeqCst) >= tracked_ever);
}
