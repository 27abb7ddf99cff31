//! The core's only source of randomness: a small PRNG seeded by the caller.
//!
//! Election timeouts must differ between nodes (so split votes resolve) and must be
//! reproducible in the simulator (so a failing seed replays). SplitMix64 gives both in a
//! few instructions; it is not, and need not be, cryptographic.

/// SplitMix64 (Steele, Lea, Flood 2014), the generator `java.util.SplittableRandom` uses.
#[derive(Clone, Debug)]
pub struct Rand {
    state: u64,
}

impl Rand {
    /// A generator seeded with `seed`; equal seeds give equal sequences.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `min..=max` (`min` if `max < min`), nearly uniform (bias < 2^-32 for
    /// ranges below 2^32).
    pub fn range_inclusive(&mut self, min: u64, max: u64) -> u64 {
        if max <= min {
            return min;
        }
        let span = max - min;
        if span == u64::MAX {
            return self.next_u64();
        }
        min + self.next_u64() % (span + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::Rand;

    #[test]
    fn range_stays_inside_and_covers_both_ends() {
        let mut rand = Rand::new(7);
        let (mut low, mut high) = (false, false);
        for _ in 0..10_000 {
            let value = rand.range_inclusive(10, 13);
            assert!((10..=13).contains(&value));
            low |= value == 10;
            high |= value == 13;
        }
        assert!(low && high);
    }

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rand::new(42), Rand::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rand::new(1).next_u64(), Rand::new(2).next_u64());
    }
}
