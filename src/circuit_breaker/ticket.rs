//! The admission an admitted call carries, and its one-word form for the hot path.

use std::num::NonZeroU64;

/// Admission to one call, tagged with the generation that admitted it (a result counts only
/// in its own generation; docs/semantics.md, Generations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Admitted while closed.
    Closed { generation: u32 },
    /// One of the half-open phase's probes.
    Probe { generation: u32, id: u32 },
    /// Admitted while disabled: nothing is recorded.
    Unrecorded,
}

/// Probe ids are below this, so that every ticket packs into one word.
pub(crate) const PROBE_ID_LIMIT: u32 = u32::MAX - FIRST_PROBE;

/// The next probe id at or after `*next` that `in_use` does not claim, advancing `*next` past
/// it. Ids wrap below [`PROBE_ID_LIMIT`] (so that a ticket packs into one word); at most
/// `half_open_permits` probes are outstanding, so the skip is short.
pub(crate) fn next_free_probe_id(next: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        let id = *next;
        *next = (id + 1) % PROBE_ID_LIMIT;
        if !in_use(id) {
            return id;
        }
    }
}

const CLOSED: u32 = 1;
const UNRECORDED: u32 = 2;
const FIRST_PROBE: u32 = 3;

impl Ticket {
    pub(crate) fn generation(&self) -> Option<u32> {
        match *self {
            Ticket::Closed { generation } | Ticket::Probe { generation, .. } => Some(generation),
            Ticket::Unrecorded => None,
        }
    }

    /// The one-word form. Panics on a probe id at or above [`PROBE_ID_LIMIT`] (the machine
    /// never hands one out).
    #[inline]
    pub(crate) fn pack(self) -> PackedTicket {
        let (generation, low) = match self {
            Ticket::Closed { generation } => (generation, CLOSED),
            Ticket::Unrecorded => (0, UNRECORDED),
            Ticket::Probe { generation, id } => {
                assert!(id < PROBE_ID_LIMIT, "probe id out of range");
                (generation, FIRST_PROBE + id)
            }
        };
        let bits = u64::from(generation) << 32 | u64::from(low);
        PackedTicket(NonZeroU64::new(bits).expect("the low half is never zero"))
    }
}

/// A [`Ticket`] in one machine word: generation in the high half; in the low half 1 for
/// closed, 2 for unrecorded, `3 + id` for a probe.
///
/// Reservations and call guards carry tickets in this form because a three-field enum is
/// written with narrow stores and then moved with wide loads, and on x86 each such load waits
/// for the stores to retire (a failed store-to-load forward). One word is written and moved
/// whole. Never zero, so `Option<PackedTicket>` is one word too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedTicket(NonZeroU64);

impl PackedTicket {
    #[inline]
    pub(crate) fn unpack(self) -> Ticket {
        let bits = self.0.get();
        let generation = (bits >> 32) as u32;
        match bits as u32 {
            CLOSED => Ticket::Closed { generation },
            UNRECORDED => Ticket::Unrecorded,
            low => Ticket::Probe {
                generation,
                id: low - FIRST_PROBE,
            },
        }
    }

    /// Whether this is a probe's ticket.
    #[inline]
    pub(crate) fn is_probe(self) -> bool {
        self.0.get() as u32 >= FIRST_PROBE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ticket_survives_packing() {
        let generations = [0, 1, 7, u32::MAX - 1, u32::MAX];
        let ids = [0, 1, 2, 3, 1_000, PROBE_ID_LIMIT - 1];
        let mut tickets = vec![Ticket::Unrecorded];
        for generation in generations {
            tickets.push(Ticket::Closed { generation });
            tickets.extend(ids.iter().map(|&id| Ticket::Probe { generation, id }));
        }
        for ticket in tickets {
            let packed = ticket.pack();
            assert_eq!(packed.unpack(), ticket);
            assert_eq!(packed.is_probe(), matches!(ticket, Ticket::Probe { .. }));
        }
    }

    #[test]
    fn distinct_tickets_pack_to_distinct_words() {
        let a = Ticket::Probe {
            generation: 1,
            id: 0,
        };
        let b = Ticket::Closed { generation: 1 };
        let c = Ticket::Probe {
            generation: 0,
            id: 0,
        };
        assert_ne!(a.pack(), b.pack());
        assert_ne!(a.pack(), c.pack());
        assert_eq!(std::mem::size_of::<Option<PackedTicket>>(), 8);
    }

    #[test]
    fn probe_ids_wrap_and_skip_the_outstanding_ones() {
        let outstanding = [0, 1, PROBE_ID_LIMIT - 1];
        let in_use = |id| outstanding.contains(&id);
        let mut next = PROBE_ID_LIMIT - 2;
        assert_eq!(next_free_probe_id(&mut next, in_use), PROBE_ID_LIMIT - 2);
        // PROBE_ID_LIMIT - 1, then 0 and 1 (after the wrap) are taken.
        assert_eq!(next_free_probe_id(&mut next, in_use), 2);
        assert_eq!(next_free_probe_id(&mut next, in_use), 3);
        assert_eq!(next, 4);
    }

    #[test]
    #[should_panic(expected = "probe id out of range")]
    fn an_id_past_the_limit_is_refused() {
        let _ = Ticket::Probe {
            generation: 0,
            id: PROBE_ID_LIMIT,
        }
        .pack();
    }
}
