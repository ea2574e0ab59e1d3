//! The packed word a breaker publishes for its hot path: the circuit's state, its generation
//! and the closed phase's failure streak in one `u64`, read with one atomic load (see the
//! invariants in [`shared`](super)).

use crate::circuit_breaker::State;

// The packed word published for the hot path:
// bits 0..3 state, bits 3..32 consecutive failures (saturating), bits 32..64 generation.
const STATE_MASK: u64 = 0b111;
const FAILS_SHIFT: u32 = 3;
const FAILS_MAX: u64 = (1 << 29) - 1;
const FAILS_MASK: u64 = FAILS_MAX << FAILS_SHIFT;
const GEN_SHIFT: u32 = 32;

/// Reads and builds the packed `(generation, consecutive failures, state)` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) fn new(state: State, generation: u32) -> Self {
        Word((u64::from(generation) << GEN_SHIFT) | state as u64)
    }
    pub(crate) fn state(self) -> State {
        // A match rather than indexing a table: no bounds check on the hot path.
        match self.0 & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }
    pub(crate) fn failures(self) -> u32 {
        ((self.0 & FAILS_MASK) >> FAILS_SHIFT) as u32
    }
    pub(crate) fn with_failures(self, n: u32) -> Self {
        let n = u64::from(n).min(FAILS_MAX);
        Word((self.0 & !FAILS_MASK) | (n << FAILS_SHIFT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_packs_state_generation_and_failures() {
        let w = Word::new(State::HalfOpen, u32::MAX).with_failures(7);
        assert_eq!(w.state(), State::HalfOpen);
        assert_eq!(w.generation(), u32::MAX);
        assert_eq!(w.failures(), 7);
        assert_eq!(w.with_failures(u32::MAX).failures() as u64, FAILS_MAX);
        for s in State::ALL {
            assert_eq!(Word::new(s, 3).state(), s);
        }
    }
}
