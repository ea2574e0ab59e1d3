//! Sharing keyed breakers: each key's circuit is shared under `<scope>/<key>`.
//!
//! Keys appear and go as calls come: the fleet installs a new-key hook on the registry, so each
//! key is shared when it is built (by a call, `register`, or the fleet itself), and looks keys
//! up by parsing the part of a message's name after `<scope>/` back into a `K`.
//!
//! A remote trip for a key this process does not have builds it only if the registry has room
//! without evicting anything ([`Breakers::create_if_room`]): another process's keys never push
//! out the keys this one uses, and a flood of remote keys cannot grow the registry past
//! `max_keys`.

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;

use super::circuits::{Circuits, KeyedScope};
use super::event::Ctx;
use crate::circuit_breaker::Handle;
use crate::keyed::Breakers;

/// One shared keyed registry.
struct Scope<K> {
    breakers: Breakers<K>,
}

impl<K> KeyedScope for Scope<K>
where
    K: FromStr + fmt::Display + Clone + Hash + Eq + Send + Sync + 'static,
{
    fn find(&self, key: &str, create: bool) -> Option<Handle> {
        let parsed: K = key.parse().ok()?;
        // A key must print as the name it came under, or two names could reach one circuit
        // (`"01"` and `"1"` for an integer key, say) and generations would not line up.
        if parsed.to_string() != key {
            return None;
        }
        match self.breakers.handle(&parsed) {
            Some(handle) => Some(handle),
            None if create => self.breakers.create_if_room(parsed),
            None => None,
        }
    }

    fn handles(&self) -> Vec<Handle> {
        self.breakers
            .handles()
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }
}

/// Shares every key of `breakers`, present and future, under `<scope>/<key>`.
pub(super) fn share<K>(ctx: &Arc<Ctx>, circuits: &Circuits, scope: &str, breakers: &Breakers<K>)
where
    K: FromStr + fmt::Display + Clone + Hash + Eq + Send + Sync + 'static,
{
    let scope: Arc<str> = scope.into();
    let hook_ctx = ctx.clone();
    let hook_scope = scope.clone();
    let existing = breakers.watch_new_keys(Arc::new(move |key: &K, handle: &Handle| {
        hook_ctx.watch(handle, name(&hook_scope, key));
    }));
    circuits.add_keyed(
        scope.clone(),
        Arc::new(Scope {
            breakers: breakers.clone(),
        }),
    );
    for (key, handle) in existing {
        ctx.watch(&handle, name(&scope, &key));
    }
}

/// The fleet-wide name of `key`'s circuit.
fn name<K: fmt::Display>(scope: &str, key: &K) -> Arc<str> {
    format!("{scope}/{key}").into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::circuit_breaker::{CircuitBreakerLayer, State};
    use crate::fleet::event::{failure_queue, Event};
    use crate::keyed::KeyedLayer;

    fn ctx() -> (Arc<Ctx>, mpsc::Receiver<Event>) {
        let (events, rx) = mpsc::channel(64);
        let ctx = Ctx {
            events,
            failures: failure_queue(1).0,
            share_manual: false,
            share_failures: true,
            probe_lease: Duration::from_secs(1),
        };
        (Arc::new(ctx), rx)
    }

    fn joined(rx: &mut mpsc::Receiver<Event>) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let Event::Joined { name } = event {
                names.push(name.to_string());
            }
        }
        names
    }

    #[tokio::test]
    async fn shares_present_and_future_keys_and_creates_remote_ones_within_the_limit() {
        let layer = KeyedLayer::builder(|k: &u32| *k)
            .breaker(CircuitBreakerLayer::builder().consecutive_failures(1))
            .max_keys(3)
            .build()
            .unwrap();
        let breakers = layer.breakers();
        breakers.register(7).unwrap();
        let (ctx, mut rx) = ctx();
        let circuits = Circuits::default();
        share(&ctx, &circuits, "llm", &breakers);
        assert_eq!(joined(&mut rx), ["llm/7"]);

        // Known keys are found; malformed or non-canonical ones are not, nor other scopes.
        assert!(circuits.find("llm/7", false).is_some());
        for name in ["llm/07", "llm/+7", "llm/x", "llm/", "llm7", "other/7", "7"] {
            assert!(circuits.find(name, true).is_none(), "{name}");
        }
        assert_eq!(breakers.len(), 1, "nothing was created for them");

        // Remote keys are created (and shared) while there is room, and no further.
        assert!(circuits.find("llm/1", false).is_none());
        for k in 1..=10 {
            let _ = circuits.find(&format!("llm/{k}"), true);
        }
        assert_eq!(breakers.len(), 4, "3 keys + 1 registered");
        assert_eq!(joined(&mut rx), ["llm/1", "llm/2", "llm/3"]);
        assert!(breakers.handle(&4).is_none());

        // A key that appears later is shared too, and its circuit waits for the lease.
        breakers.remove(&1);
        let handle = breakers.register(9).unwrap();
        assert_eq!(joined(&mut rx), ["llm/9"]);
        handle.apply_remote(State::Open, Some(Duration::from_millis(1)), false);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(handle.state(), State::HalfOpen);
        assert!(!handle.is_admitting(), "held for the fleet's lease");
        assert_eq!(circuits.all().len(), 4);
    }
}
