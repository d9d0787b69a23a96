//! Seeded, counter-based random numbers.
//!
//! The generator is a pair `(seed, offset)`: element `i` of a draw of `n` numbers is a hash of
//! `(seed, offset + i)` and the draw then advances `offset` by `n`. So results never depend on
//! the number of threads, and saving/restoring the state (what recompute does around a
//! segment, and what a training snapshot stores) replays exactly the same numbers. One
//! exception: the parts of a batch run side by side ([`crate::parallel_backward`], one part
//! per thread in training) draw from streams of their own ([`RngState::stream`]).

use std::cell::Cell;

use rayon::prelude::*;

use crate::shape::numel;
use crate::tensor::Tensor;

/// The state of a generator: seed and how many numbers were drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RngState {
    /// The seed.
    pub seed: u64,
    /// Numbers drawn so far.
    pub offset: u64,
}

impl RngState {
    /// Stream `i` of this state: itself for 0, else a generator with a seed of its own
    /// (derived from this seed, this offset and `i`) at the same offset. The parts of a batch
    /// run side by side draw from these ([`crate::parallel_backward`]); the caller then goes on
    /// past the longest draw, so a later call's streams start from another offset and never
    /// repeat these numbers.
    pub fn stream(self, i: u64) -> RngState {
        if i == 0 {
            return self;
        }
        RngState {
            seed: splitmix64(self.seed ^ splitmix64(self.offset ^ splitmix64(i))),
            offset: self.offset,
        }
    }
}

thread_local! {
    // Per thread, so that tests and independent workers never perturb each other; ops draw on
    // the calling thread, never inside their parallel loops (a part of `parallel_backward`
    // runs on a pool thread with its stream set there).
    static GLOBAL: Cell<RngState> = const { Cell::new(RngState { seed: 0, offset: 0 }) };
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn bits(seed: u64, counter: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ counter.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// A uniform float in `[0, 1)` from 24 random bits.
#[inline]
fn unit(b: u64) -> f32 {
    (b >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Sets the thread's generator to `seed` with nothing drawn.
pub fn manual_seed(seed: u64) {
    GLOBAL.with(|g| g.set(RngState { seed, offset: 0 }));
}

/// The global generator's state.
pub fn get_state() -> RngState {
    GLOBAL.with(|g| g.get())
}

/// Restores the thread's generator's state.
pub fn set_state(s: RngState) {
    GLOBAL.with(|g| g.set(s));
}

fn take(n: usize) -> RngState {
    GLOBAL.with(|g| {
        let s = g.get();
        g.set(RngState {
            seed: s.seed,
            offset: s.offset.wrapping_add(n as u64),
        });
        s
    })
}

/// A private generator with the same scheme, for callers that must not touch the global one
/// (data shuffling, samplers).
#[derive(Clone, Debug)]
pub struct Rng {
    state: RngState,
}

impl Rng {
    /// A generator at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: RngState { seed, offset: 0 },
        }
    }
    /// Restores a saved state.
    pub fn from_state(state: RngState) -> Rng {
        Rng { state }
    }
    /// The current state (to save in a snapshot).
    pub fn state(&self) -> RngState {
        self.state
    }
    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let b = bits(self.state.seed, self.state.offset);
        self.state.offset = self.state.offset.wrapping_add(1);
        b
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        unit(self.next_u64())
    }
    /// Uniform integer in `[0, n)` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }
}

fn fill_uniform(s: RngState, out: &mut [f32]) {
    out.par_chunks_mut(1 << 14).enumerate().for_each(|(c, o)| {
        let base = s.offset.wrapping_add((c << 14) as u64);
        for (i, v) in o.iter_mut().enumerate() {
            *v = unit(bits(s.seed, base.wrapping_add(i as u64)));
        }
    });
}

/// `n` uniform numbers in `[0, 1)` from the thread's generator.
pub fn uniform_vec(n: usize) -> Vec<f32> {
    let s = take(n);
    let mut v = vec![0f32; n];
    fill_uniform(s, &mut v);
    v
}

/// `n` normal numbers (Box-Muller over pairs of counters) from the thread's generator.
pub fn normal_vec(n: usize, mean: f32, std: f32) -> Vec<f32> {
    let s = take(2 * n);
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 14).enumerate().for_each(|(c, o)| {
        for (i, x) in o.iter_mut().enumerate() {
            let k = ((c << 14) + i) as u64 * 2;
            let u1 = 1.0 - unit(bits(s.seed, s.offset.wrapping_add(k))) as f64; // (0, 1]
            let u2 = unit(bits(s.seed, s.offset.wrapping_add(k + 1))) as f64;
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            *x = mean + std * z as f32;
        }
    });
    v
}

impl Tensor {
    /// Normal samples from the thread's generator.
    pub fn randn(shape: &[usize], mean: f32, std: f32) -> Tensor {
        Tensor::from_vec(normal_vec(numel(shape), mean, std), shape).expect("numel matches")
    }
    /// Uniform samples in `[lo, hi)` from the thread's generator.
    pub fn rand(shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let v = uniform_vec(numel(shape))
            .into_iter()
            .map(|u| lo + (hi - lo) * u)
            .collect();
        Tensor::from_vec(v, shape).expect("numel matches")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_restore_replays_draws() {
        manual_seed(7);
        let _ = uniform_vec(3);
        let s = get_state();
        let a = uniform_vec(100_000);
        set_state(s);
        let b = uniform_vec(100_000);
        assert_eq!(a, b);
        let c = uniform_vec(10);
        assert_ne!(&a[..10], &c[..]);
    }

    #[test]
    fn normal_moments() {
        manual_seed(1);
        let v = normal_vec(200_000, 1.0, 2.0);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((m - 1.0).abs() < 0.02, "mean {m}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::new(3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let k = r.below(7);
            seen[k] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
