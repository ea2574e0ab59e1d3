//! Which local circuit a fleet-wide name stands for: the background task's lookup from the
//! names in messages to [`Handle`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

use crate::circuit_breaker::shared::Shared;
use crate::circuit_breaker::Handle;
use crate::sync::{lock, Mutex};

/// The shared circuits of one keyed registry, as seen from the fleet (see
/// [`keyed`](super::keyed)).
pub(super) trait KeyedScope: Send + Sync {
    /// The circuit of `key` (the name after `<scope>/`), if there is one; with `create`, one is
    /// made if the registry has room.
    fn find(&self, key: &str, create: bool) -> Option<Handle>;

    /// Every key's circuit.
    fn handles(&self) -> Vec<Handle>;
}

/// A shared keyed registry and the scope its names start with.
type Scoped = (Arc<str>, Arc<dyn KeyedScope>);

/// Every circuit shared with one fleet.
#[derive(Default)]
pub(super) struct Circuits {
    /// Breakers shared one by one, by name. Weak, so that sharing a breaker does not keep it
    /// alive.
    plain: Mutex<HashMap<Arc<str>, Weak<Shared>>>,
    /// Keyed registries, by scope.
    keyed: Mutex<Vec<Scoped>>,
}

impl Circuits {
    /// Adds a breaker under `name`; `false` if this very breaker is shared under it already.
    /// Another breaker of the same name replaces the first for messages from the fleet.
    pub(super) fn add_plain(&self, name: Arc<str>, handle: &Handle) -> bool {
        let mut plain = lock(&self.plain);
        if let Some(known) = plain.get(&name) {
            if std::ptr::eq(known.as_ptr(), Arc::as_ptr(&handle.shared)) {
                return false;
            }
        }
        plain.retain(|_, circuit| circuit.strong_count() > 0);
        plain.insert(name, Arc::downgrade(&handle.shared));
        true
    }

    pub(super) fn add_keyed(&self, scope: Arc<str>, circuits: Arc<dyn KeyedScope>) {
        lock(&self.keyed).push((scope, circuits));
    }

    /// The local circuit `name` stands for: a breaker shared under that name, else a key
    /// (`<scope>/<key>`) of a shared keyed registry — made, with `create`, if the registry has
    /// room.
    pub(super) fn find(&self, name: &str, create: bool) -> Option<Handle> {
        if let Some(shared) = lock(&self.plain).get(name).and_then(Weak::upgrade) {
            return Some(Handle::new(shared));
        }
        // Copied out, so the registry (which may build a circuit) runs with no lock held here.
        let keyed = lock(&self.keyed).clone();
        keyed.iter().find_map(|(scope, circuits)| {
            let key = name.strip_prefix(&**scope)?.strip_prefix('/')?;
            circuits.find(key, create)
        })
    }

    /// Every shared circuit that still exists.
    pub(super) fn all(&self) -> Vec<Handle> {
        let mut all: Vec<Handle> = lock(&self.plain)
            .values()
            .filter_map(Weak::upgrade)
            .map(Handle::new)
            .collect();
        let keyed = lock(&self.keyed).clone();
        for (_, circuits) in keyed {
            all.extend(circuits.handles());
        }
        all
    }
}

impl fmt::Debug for Circuits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<Arc<str>> = lock(&self.plain).keys().cloned().collect();
        names.sort_unstable();
        let scopes: Vec<Arc<str>> = lock(&self.keyed).iter().map(|(s, _)| s.clone()).collect();
        f.debug_struct("Circuits")
            .field("breakers", &names)
            .field("keyed", &scopes)
            .finish()
    }
}
