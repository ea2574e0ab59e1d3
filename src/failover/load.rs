//! tower's [`Load`] through the failover router, so a p2c `Balance` can weigh failovers.

use tower::load::Load;

use super::Failover;

/// The load of the member the next `call` goes to (chosen by the last `poll_ready`), or, before
/// one is chosen, of the first member still in service; `None` when there is none.
impl<S: Load, R> Load for Failover<S, R> {
    type Metric = Option<S::Metric>;

    fn load(&self) -> Self::Metric {
        let index = self
            .ready
            .or_else(|| self.members.iter().position(|m| !m.retired))?;
        Some(self.members[index].service.load())
    }
}
