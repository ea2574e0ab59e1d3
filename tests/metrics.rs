#![cfg(feature = "metrics")]
//! The `metrics` feature: every documented series, with the documented labels and values, read
//! back from a `DebuggingRecorder` (one per test, installed on the test's thread only).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::oneshot;
use tokio_test::{assert_pending, assert_ready};
use tower::{service_fn, Service, ServiceExt};
use tower_breaker::bulkhead::error::{BulkheadFull, BulkheadTimeout};
use tower_breaker::bulkhead::BulkheadLayer;
use tower_breaker::circuit_breaker::{error::CircuitOpen, CircuitBreakerLayer, State};
use tower_breaker::keyed::KeyedLayer;
use tower_breaker::metrics::Metrics;
use tower_breaker::BoxError;
use tower_layer::Layer;

const STATE: &str = "tower_breaker_circuit_state";
const CALLS: &str = "tower_breaker_calls_total";
const TRANSITIONS: &str = "tower_breaker_transitions_total";
const STATES: [&str; 5] = ["closed", "open", "half_open", "forced_open", "disabled"];
const OUTCOMES: [&str; 6] = [
    "success",
    "failure",
    "ignored",
    "throttled",
    "slow",
    "rejected",
];
const BULKHEAD: [&str; 4] = [
    "tower_breaker_bulkhead_active",
    "tower_breaker_bulkhead_queued",
    "tower_breaker_bulkhead_rejected_total",
    "tower_breaker_bulkhead_timed_out_total",
];
const AUTOMATIC: [(&str, &str); 4] = [
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];

/// `name{k1=v1,k2=v2}`, labels sorted by key.
fn id(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Every breaker series for `base` labels (`name`, maybe `key`), as documented.
fn breaker_series(base: &[(&str, &str)]) -> BTreeSet<String> {
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut labels = base.to_vec();
        labels.extend_from_slice(extra);
        labels
    }
    let mut all = BTreeSet::new();
    for state in STATES {
        all.insert(id(STATE, &with(base, &[("state", state)])));
    }
    for outcome in OUTCOMES {
        all.insert(id(CALLS, &with(base, &[("outcome", outcome)])));
    }
    for (from, to) in AUTOMATIC {
        all.insert(id(TRANSITIONS, &with(base, &[("from", from), ("to", to)])));
    }
    all
}

/// Reads a `DebuggingRecorder`. Its snapshots reset counters and gauges to 0, so counters are
/// summed here over snapshots (the totals a Prometheus scrape would show), while gauges keep
/// the latest snapshot's values.
struct Scrape {
    snapshotter: Snapshotter,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
}

impl Scrape {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Scrape {
            snapshotter: recorder.snapshotter(),
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
        }
    }

    /// Takes a snapshot; returns the series the recorder knows, and the gauges at 1 in it.
    fn take(&mut self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut present = BTreeSet::new();
        let mut ones = BTreeSet::new();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let id = id(key.name(), &labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(id.clone()).or_default() += n,
                DebugValue::Gauge(g) => {
                    if g.0 == 1.0 {
                        ones.insert(id.clone());
                    }
                    self.gauges.insert(id.clone(), g.0);
                }
                DebugValue::Histogram(_) => panic!("no histograms expected: {id}"),
            }
            present.insert(id);
        }
        (present, ones)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let id = id(name, labels);
        self.counters
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("no counter {id}"))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let id = id(name, labels);
        self.gauges
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("no gauge {id}"))
    }

    /// The state gauges of breaker `name`: 1 for `expected`, 0 for the others.
    fn assert_state(&self, name: &str, expected: &str) {
        for state in STATES {
            let want = if state == expected { 1.0 } else { 0.0 };
            assert_eq!(
                self.gauge(STATE, &[("name", name), ("state", state)]),
                want,
                "{name} state {state} (expected {expected} current)"
            );
        }
    }

    fn assert_calls(&self, name: &str, expected: [u64; 6]) {
        let got = OUTCOMES.map(|o| self.counter(CALLS, &[("name", name), ("outcome", o)]));
        assert_eq!(got, expected, "{name} calls by outcome {OUTCOMES:?}");
    }

    fn transitions(&self, name: &str, from: &str, to: &str) -> u64 {
        self.counter(TRANSITIONS, &[("name", name), ("from", from), ("to", to)])
    }
}

/// Succeeds on `true`, fails on `false`.
fn upstream() -> impl Service<bool, Response = (), Error = &'static str> + Clone {
    service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err("down")
        }
    })
}

async fn call<S>(svc: &mut S, ok: bool) -> Result<(), BoxError>
where
    S: Service<bool, Response = (), Error = BoxError>,
{
    svc.ready().await?.call(ok).await
}

#[tokio::test(start_paused = true)]
async fn a_scripted_trip_and_recovery_shows_in_every_breaker_series() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = CircuitBreakerLayer::builder()
        .name("payments")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(10))
        .half_open_permits(1)
        .success_threshold(1)
        .fail_fast()
        .build()
        .unwrap();
    let handle = layer.handle();
    let metrics = Metrics::new().breaker(handle.clone());
    assert!(format!("{metrics:?}").contains("payments"), "{metrics:?}");
    let mut svc = layer.layer(upstream());

    for _ in 0..3 {
        assert!(!call(&mut svc, false).await.unwrap_err().is::<CircuitOpen>());
    }
    let rejected = call(&mut svc, true).await.unwrap_err();
    assert!(rejected.is::<CircuitOpen>(), "{rejected}");

    metrics.report();
    let (present, _) = scrape.take();
    assert_eq!(present, breaker_series(&[("name", "payments")]));
    scrape.assert_state("payments", "open");
    scrape.assert_calls("payments", [0, 3, 0, 0, 0, 1]);
    assert_eq!(scrape.transitions("payments", "closed", "open"), 1);
    assert_eq!(scrape.transitions("payments", "open", "half_open"), 0);
    assert_eq!(scrape.transitions("payments", "half_open", "closed"), 0);
    assert_eq!(scrape.transitions("payments", "half_open", "open"), 0);

    // Past the open duration the probe succeeds: half-open, then closed.
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&mut svc, true).await.unwrap();
    assert_eq!(handle.state(), State::Closed);

    metrics.report();
    let (present, _) = scrape.take();
    assert_eq!(present, breaker_series(&[("name", "payments")]));
    scrape.assert_state("payments", "closed");
    scrape.assert_calls("payments", [1, 3, 0, 0, 0, 1]);
    assert_eq!(scrape.transitions("payments", "closed", "open"), 1);
    assert_eq!(scrape.transitions("payments", "open", "half_open"), 1);
    assert_eq!(scrape.transitions("payments", "half_open", "closed"), 1);
    assert_eq!(scrape.transitions("payments", "half_open", "open"), 0);
}

#[tokio::test(start_paused = true)]
async fn transitions_are_counted_without_a_report() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = CircuitBreakerLayer::builder()
        .name("search")
        .consecutive_failures(1)
        .fail_fast()
        .build()
        .unwrap();
    let handle = layer.handle();
    let metrics = Metrics::new().breaker(handle.clone());
    let mut svc = layer.layer(upstream());
    let (before, _) = scrape.take();
    assert_eq!(scrape.transitions("search", "closed", "open"), 0);
    scrape.assert_state("search", "closed");

    assert!(call(&mut svc, false).await.is_err());
    let (_, ones) = scrape.take();
    assert_eq!(scrape.transitions("search", "closed", "open"), 1);
    scrape.assert_state("search", "open");
    assert_eq!(
        ones,
        BTreeSet::from([id(STATE, &[("name", "search"), ("state", "open")])])
    );
    // The call itself waits for a report.
    scrape.assert_calls("search", [0; 6]);

    // A transition only a manual operation makes gets its series when it first happens.
    let forced = id(
        TRANSITIONS,
        &[("name", "search"), ("from", "open"), ("to", "forced_open")],
    );
    assert!(!before.contains(&forced));
    handle.force_open();
    let (present, _) = scrape.take();
    assert!(present.contains(&forced), "{present:?}");
    assert_eq!(scrape.transitions("search", "open", "forced_open"), 1);
    scrape.assert_state("search", "forced_open");

    metrics.report();
    scrape.take();
    scrape.assert_calls("search", [0, 1, 0, 0, 0, 0]);
    scrape.assert_state("search", "forced_open");
}

#[tokio::test(start_paused = true)]
async fn counts_go_on_rising_after_a_reset() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = CircuitBreakerLayer::builder()
        .name("cache")
        .build()
        .unwrap();
    let handle = layer.handle();
    let metrics = Metrics::new().breaker(handle.clone());
    let mut svc = layer.layer(upstream());

    for _ in 0..3 {
        call(&mut svc, true).await.unwrap();
    }
    metrics.report();
    scrape.take();
    scrape.assert_calls("cache", [3, 0, 0, 0, 0, 0]);

    handle.reset();
    for _ in 0..2 {
        call(&mut svc, true).await.unwrap();
    }
    assert_eq!(handle.stats().successful_calls, 2);
    metrics.report();
    scrape.take();
    scrape.assert_calls("cache", [5, 0, 0, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_gauges_follow_held_calls_and_counters_count_rejections() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(2)
        .max_queue(1)
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let metrics = Metrics::new().bulkhead(handle.clone());
    // Each call runs until its sender is used (or dropped).
    let svc = layer.layer(service_fn(|release: oneshot::Receiver<()>| async move {
        let _ = release.await;
        Ok::<_, Infallible>(())
    }));
    let mut calls = Vec::new();
    let mut releases = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = oneshot::channel::<()>();
        releases.push(tx);
        calls.push(tokio_test::task::spawn(svc.clone().oneshot(rx)));
    }

    let figures = |scrape: &Scrape| {
        (
            scrape.gauge(BULKHEAD[0], &[("name", "db")]),
            scrape.gauge(BULKHEAD[1], &[("name", "db")]),
            scrape.counter(BULKHEAD[2], &[("name", "db")]),
            scrape.counter(BULKHEAD[3], &[("name", "db")]),
        )
    };

    // Two calls run, one waits.
    assert_pending!(calls[0].poll());
    assert_pending!(calls[1].poll());
    assert_pending!(calls[2].poll());
    metrics.report();
    let (present, _) = scrape.take();
    let expected: BTreeSet<String> = BULKHEAD.iter().map(|m| id(m, &[("name", "db")])).collect();
    assert_eq!(present, expected);
    assert_eq!(figures(&scrape), (2.0, 1.0, 0, 0));

    // The queue is full: the fourth is refused at once.
    let full = assert_ready!(calls[3].poll()).unwrap_err();
    assert!(full.is::<BulkheadFull>(), "{full}");
    // The waiter gives up after max_wait.
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(calls[2].is_woken());
    let timeout = assert_ready!(calls[2].poll()).unwrap_err();
    assert!(timeout.is::<BulkheadTimeout>(), "{timeout}");
    metrics.report();
    scrape.take();
    assert_eq!(figures(&scrape), (2.0, 0.0, 1, 1));

    // The running calls finish and give their slots back.
    for tx in releases.drain(..2) {
        tx.send(()).unwrap();
    }
    assert_ready!(calls[0].poll()).unwrap();
    assert_ready!(calls[1].poll()).unwrap();
    metrics.report();
    scrape.take();
    assert_eq!(figures(&scrape), (0.0, 0.0, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn keyed_series_carry_name_and_key_and_count_a_trip_before_the_first_report() {
    type Req = (&'static str, bool);
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = KeyedLayer::builder(|r: &Req| r.0)
        .breaker(CircuitBreakerLayer::builder().consecutive_failures(2))
        .bulkhead(BulkheadLayer::builder().max_concurrent(4))
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let metrics = Metrics::new().keyed("llm", &breakers);
    let mut svc = layer.layer(service_fn(|(_, ok): Req| async move {
        if ok {
            Ok(())
        } else {
            Err("down")
        }
    }));
    let mut send = async |req: Req| svc.ready().await?.call(req).await;

    send(("openai", true)).await.unwrap();
    // Both failures and the trip happen before any report has seen the key.
    send(("anthropic", false)).await.unwrap_err();
    send(("anthropic", false)).await.unwrap_err();
    let rejected = send(("anthropic", true)).await.unwrap_err();
    assert!(rejected.is::<CircuitOpen>(), "{rejected}");

    metrics.report();
    let (present, _) = scrape.take();
    let mut expected = BTreeSet::new();
    for key in ["openai", "anthropic"] {
        let base = [("name", "llm"), ("key", key)];
        expected.extend(breaker_series(&base));
        expected.extend(BULKHEAD.iter().map(|m| id(m, &base)));
    }
    assert_eq!(present, expected);

    let state = |scrape: &Scrape, key: &str, state: &str| {
        scrape.gauge(STATE, &[("name", "llm"), ("key", key), ("state", state)])
    };
    assert_eq!(state(&scrape, "openai", "closed"), 1.0);
    assert_eq!(state(&scrape, "anthropic", "open"), 1.0);
    assert_eq!(state(&scrape, "anthropic", "closed"), 0.0);
    let calls = |scrape: &Scrape, key: &str, outcome: &str| {
        scrape.counter(
            CALLS,
            &[("name", "llm"), ("key", key), ("outcome", outcome)],
        )
    };
    assert_eq!(calls(&scrape, "openai", "success"), 1);
    assert_eq!(calls(&scrape, "anthropic", "failure"), 2);
    assert_eq!(calls(&scrape, "anthropic", "rejected"), 1);
    let moved = |scrape: &Scrape, from: &str, to: &str| {
        let labels = [
            ("name", "llm"),
            ("key", "anthropic"),
            ("from", from),
            ("to", to),
        ];
        scrape.counter(TRANSITIONS, &labels)
    };
    assert_eq!(moved(&scrape, "closed", "open"), 1);
    assert_eq!(
        scrape.gauge(BULKHEAD[0], &[("name", "llm"), ("key", "openai")]),
        0.0
    );

    // From now on the key's listener counts its transitions, once each.
    breakers.handle(&"anthropic").unwrap().force_closed();
    metrics.report();
    scrape.take();
    assert_eq!(moved(&scrape, "closed", "open"), 1);
    assert_eq!(moved(&scrape, "open", "closed"), 1);
    assert_eq!(state(&scrape, "anthropic", "closed"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_key_flood_reports_at_most_max_keys_and_drops_evicted_handles() {
    const MAX_KEYS: usize = 8;
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = KeyedLayer::builder(|k: &u32| *k)
        .max_keys(MAX_KEYS)
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let metrics = Metrics::new().keyed("flood", &breakers);
    let mut svc = layer.layer(service_fn(|_: u32| async { Ok::<_, Infallible>(()) }));

    // Lives as long as key 0's circuit (its listener owns it).
    let mut key0: Weak<()> = Weak::new();
    let mut reports = 0;
    for k in 0..1000u32 {
        svc.ready().await.unwrap().call(k).await.unwrap();
        if k == 0 {
            let marker = Arc::new(());
            key0 = Arc::downgrade(&marker);
            breakers.handle(&0).unwrap().on_transition(move |_| {
                let _ = &marker;
            });
        }
        if k % 50 != 0 {
            continue;
        }
        if k == 50 {
            // Key 0 left the registry long ago and the service's cache has moved on: only the
            // handle cached by the report at k = 0 keeps its circuit alive.
            assert!(!breakers.keys().contains(&0));
            assert!(key0.upgrade().is_some(), "the cached handle should be held");
        }
        metrics.report();
        reports += 1;
        let (_, ones) = scrape.take();
        // Every reported key has exactly one state gauge at 1.
        let reported: BTreeSet<String> = ones
            .iter()
            .filter(|s| s.starts_with(STATE))
            .map(|s| {
                s.split("key=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            reported.len(),
            ones.len(),
            "one state at 1 per key: {ones:?}"
        );
        assert!(
            reported.len() <= MAX_KEYS,
            "{} keys reported at k = {k}",
            reported.len()
        );
        let live: BTreeSet<String> = breakers.keys().iter().map(u32::to_string).collect();
        assert_eq!(reported, live, "at k = {k}");
        if k == 50 {
            assert!(
                key0.upgrade().is_none(),
                "the report should drop the evicted key's handle"
            );
        }
    }
    assert_eq!(reports, 20);
    assert_eq!(breakers.len(), MAX_KEYS);
    assert!(breakers.evicted() >= 1000 - MAX_KEYS as u64);
}

#[tokio::test(start_paused = true)]
async fn a_spawned_reporter_pushes_on_its_interval() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = CircuitBreakerLayer::builder()
        .name("ticker")
        .build()
        .unwrap();
    let metrics = Metrics::new().breaker(layer.handle());
    let task = metrics.spawn(Duration::from_secs(15));
    let mut svc = layer.layer(upstream());
    tokio::time::sleep(Duration::from_secs(1)).await;
    call(&mut svc, true).await.unwrap();
    call(&mut svc, false).await.unwrap_err();

    tokio::time::sleep(Duration::from_secs(10)).await;
    scrape.take();
    scrape.assert_calls("ticker", [0; 6]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    scrape.take();
    scrape.assert_calls("ticker", [1, 1, 0, 0, 0, 0]);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_evicted_circuit_no_longer_writes_its_keys_series() {
    /// Calls on `Some(rx)` fail once `rx` fires; calls on `None` succeed at once.
    type Req = (&'static str, Option<oneshot::Receiver<()>>);
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut scrape = Scrape::new(&recorder);

    let layer = KeyedLayer::builder(|r: &Req| r.0)
        .breaker(CircuitBreakerLayer::builder().consecutive_failures(1))
        .max_keys(1)
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let metrics = Metrics::new().keyed("evict", &breakers);
    let mut svc = layer.layer(service_fn(|(_, fail): Req| async move {
        match fail {
            Some(fail) => {
                let _ = fail.await;
                Err("down")
            }
            None => Ok(()),
        }
    }));

    let (fail, rx) = oneshot::channel();
    let mut held = tokio_test::task::spawn(svc.ready().await.unwrap().call(("a", Some(rx))));
    assert_pending!(held.poll());
    let old = breakers.handle(&"a").unwrap();
    metrics.report();

    // "b" takes the only place; the report after that forgets "a".
    svc.ready().await.unwrap().call(("b", None)).await.unwrap();
    assert_eq!(breakers.keys(), ["b"]);
    metrics.report();
    scrape.take();

    // The call still in flight on "a"'s old circuit fails and trips it.
    fail.send(()).unwrap();
    assert!(assert_ready!(held.poll()).is_err());
    assert_eq!(old.state(), State::Open);
    let (_, ones) = scrape.take();
    assert!(ones.is_empty(), "{ones:?}");
    let tripped = [
        ("name", "evict"),
        ("key", "a"),
        ("from", "closed"),
        ("to", "open"),
    ];
    assert_eq!(scrape.counter(TRANSITIONS, &tripped), 0);
}
