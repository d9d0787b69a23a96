//! The small linear congruential generator of word2vec.c.

/// word2vec.c's LCG: `next = next * 25214903917 + 11` (wrapping, 64 bit).
///
/// Deterministic and cheap; each training thread owns one, so `threads = 1` with a fixed
/// seed reproduces the same vectors bit for bit.
#[derive(Debug, Clone)]
pub struct Lcg {
    state: u64,
}

impl Lcg {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Advances the state and returns it.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_mul(25_214_903_917).wrapping_add(11);
        self.state
    }

    /// A value in `0..n` (`n > 0`) taken from the high bits (the low bits of an LCG are weak).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 16) % n
    }

    /// A uniform value in `[0, 1)` with 48 bits of resolution.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 16) as f64 / (1u64 << 48) as f64
    }
}
