//! The list of services waiting for a circuit to admit again.

use std::task::Waker;

/// Wakers of services waiting for the circuit to admit, one slot per waiting service (a service
/// that polls again replaces its waker rather than adding one, so the list is bounded by the
/// number of live services).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    slots: Vec<Option<Waker>>,
    /// Slots owned by a live service.
    owned: Vec<bool>,
    free: Vec<usize>,
}

impl Waiters {
    pub(crate) fn register(&mut self, key: &mut Option<usize>, waker: &Waker) {
        let index = match *key {
            Some(index) => index,
            None => {
                let index = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.owned.push(false);
                    self.slots.len() - 1
                });
                self.owned[index] = true;
                *key = Some(index);
                index
            }
        };
        match &mut self.slots[index] {
            Some(existing) if existing.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    pub(crate) fn remove(&mut self, key: usize) {
        if self.owned.get(key) == Some(&true) {
            self.slots[key] = None;
            self.owned[key] = false;
            self.free.push(key);
        }
    }

    pub(crate) fn take_all(&mut self) -> Vec<Waker> {
        self.slots.iter_mut().filter_map(Option::take).collect()
    }
}
