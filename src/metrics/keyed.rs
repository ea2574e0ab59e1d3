//! The series of a set of keyed breakers: one breaker's series per key (plus its bulkhead's),
//! built when a report first sees the key and dropped at the first report that no longer does.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use super::series::{describe_breaker, describe_bulkhead, BreakerSeries, BulkheadSeries, Labels};
use super::Source;
use crate::bulkhead;
use crate::circuit_breaker::{Handle, Stats};
use crate::keyed::Breakers;

pub(super) struct KeyedSource<K> {
    name: Arc<str>,
    breakers: Breakers<K>,
    keys: Mutex<Keys<K>>,
}

/// The keys seen by the latest report.
struct Keys<K> {
    /// Counts reports; a key whose `seen` is behind it has left the registry.
    report: u64,
    series: HashMap<K, KeySeries>,
}

struct KeySeries {
    /// The key's circuit when its series were built: a key evicted and built again between
    /// two reports is a new circuit, with counts from zero and no listener of ours.
    handle: Handle,
    breaker: BreakerSeries,
    bulkhead: Option<(bulkhead::Handle, BulkheadSeries)>,
    seen: u64,
}

impl Drop for KeySeries {
    fn drop(&mut self) {
        self.breaker.retire();
    }
}

impl<K> KeyedSource<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    pub(super) fn new(name: Arc<str>, breakers: Breakers<K>) -> Self {
        describe_breaker();
        describe_bulkhead();
        let source = KeyedSource {
            name,
            breakers,
            keys: Mutex::new(Keys {
                report: 0,
                series: HashMap::new(),
            }),
        };
        // The keys that exist now get their series with the recorder current at registration.
        source.report();
        source
    }

    fn register(&self, key: &K, handle: Handle, stats: &Stats, seen: u64) -> KeySeries {
        let labels = Labels::new(self.name.clone(), Some(key.to_string().into()));
        let bulkhead = self.breakers.bulkhead(key).map(|handle| {
            let series = BulkheadSeries::register(&labels, &handle.stats());
            (handle, series)
        });
        KeySeries {
            breaker: BreakerSeries::register(&handle, labels, stats),
            handle,
            bulkhead,
            seen,
        }
    }
}

impl<K> Source for KeyedSource<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    fn report(&self) {
        // Read before taking the lock: reading a breaker's stats can run its transition
        // listeners, user code that may report too.
        let current: Vec<(K, Handle, Stats)> = self
            .breakers
            .handles()
            .into_iter()
            .map(|(key, handle)| {
                let stats = handle.stats();
                (key, handle, stats)
            })
            .collect();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.report += 1;
        let report = keys.report;
        for (key, handle, stats) in current {
            match keys.series.get_mut(&key) {
                Some(known) if Arc::ptr_eq(&known.handle.shared, &handle.shared) => {
                    known.seen = report;
                    known.breaker.push(&stats);
                    if let Some((handle, series)) = &known.bulkhead {
                        series.push(&handle.stats());
                    }
                }
                _ => {
                    let series = self.register(&key, handle, &stats, report);
                    // Replaces (and retires) the series of the key's previous circuit.
                    keys.series.insert(key, series);
                }
            }
        }
        // Evicted keys: their handles go now, so the circuits are freed.
        keys.series.retain(|_, series| series.seen == report);
    }
}

impl<K> fmt::Debug for KeyedSource<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reported = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .series
            .len();
        f.debug_struct("Keyed")
            .field("name", &self.name)
            .field("reported_keys", &reported)
            .field("max_keys", &self.breakers.max_keys())
            .finish()
    }
}
