//! A `Steer` picker that skips open circuits.

use std::fmt;
use std::time::Duration;

use crate::circuit_breaker::{Handle, State};

/// A [`tower::steer::Picker`] that sends each request to the first service whose circuit is
/// not open; see [`skip_open`].
#[derive(Clone)]
pub struct SkipOpen {
    handles: Vec<Handle>,
}

/// A `Steer` picker over fail-fast breakers: `handles[i]` is the circuit of `Steer`'s service
/// `i` (the order given to [`Steer::new`](tower::steer::Steer::new)).
///
/// Each request goes to the first service whose circuit is not open: closed, disabled or
/// **half-open**. When every circuit is open, it goes to the one
/// that will admit soonest (the smallest `retry_after`; a forced-open circuit never), so its
/// fail-fast breaker answers at once with a
/// [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error carrying the earliest
/// `retry_after`. A service without a handle (an index past `handles`) is treated as never open.
///
/// Use it with **fail-fast** breakers: `Steer` polls every service until all are ready, and a
/// default-mode breaker with an open circuit is `Pending`, which would block `Steer` entirely.
///
/// Why half-open counts as available, rather than [`Handle::is_admitting`] (a free probe
/// permit): `Steer` reserves readiness on every service, so its own service usually holds one
/// of the half-open circuit's permits; skipping a circuit whose permits are all reserved would
/// skip the very service holding the last permit, and the circuit would never close. The cost
/// is at most one fast [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error per
/// recovery: `Steer` re-polls a service only after calling it, and a fail-fast breaker's
/// readiness is sticky, so the first request to a circuit that half-opened after `Steer` last
/// polled it is rejected, and the next ones probe. For exact, wait-instead-of-fail routing, use
/// [`Failover`](super::Failover) with default-mode breakers.
///
/// ```
/// use tower::{service_fn, steer::Steer, Service, ServiceExt};
/// use tower_layer::Layer;
/// use tower_breaker::circuit_breaker::CircuitBreakerLayer;
/// use tower_breaker::failover::skip_open;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let primary = CircuitBreakerLayer::builder().name("primary").fail_fast().build().unwrap();
/// let backup = CircuitBreakerLayer::builder().name("backup").fail_fast().build().unwrap();
/// let picker = skip_open([primary.handle(), backup.handle()]);
/// primary.handle().force_open();
///
/// let svc = |n: u32| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(n) });
/// let mut steer = Steer::new(vec![primary.layer(svc(1)), backup.layer(svc(2))], picker);
/// assert_eq!(steer.ready().await.unwrap().call(()).await.unwrap(), 2);
/// # }
/// ```
pub fn skip_open(handles: impl IntoIterator<Item = Handle>) -> SkipOpen {
    SkipOpen {
        handles: handles.into_iter().collect(),
    }
}

impl SkipOpen {
    fn choose(&self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        let mut soonest: Option<(usize, Duration)> = None;
        for index in 0..len {
            let Some(handle) = self.handles.get(index) else {
                return index;
            };
            if !matches!(handle.state(), State::Open | State::ForcedOpen) {
                return index;
            }
            if let Some(wait) = handle.stats().retry_after {
                if soonest.is_none_or(|(_, best)| wait < best) {
                    soonest = Some((index, wait));
                }
            }
        }
        soonest.map_or(0, |(index, _)| index)
    }
}

impl<S, Req> tower::steer::Picker<S, Req> for SkipOpen {
    fn pick(&mut self, _request: &Req, services: &[S]) -> usize {
        self.choose(services.len())
    }
}

impl fmt::Debug for SkipOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.handles.iter().map(|h| h.name()).collect();
        f.debug_struct("SkipOpen")
            .field("circuits", &names)
            .finish()
    }
}
