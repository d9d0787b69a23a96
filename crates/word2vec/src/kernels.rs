//! Hand-written SGD kernels (the inner loops of word2vec.c).
//!
//! Training uses [`SigmoidTable`], a linearly interpolated table of the logistic function
//! (within 1e-6 of the exact value, exact outside the tabulated range), instead of one `expf`
//! per target; unlike word2vec.c's 1000-entry step table it does not skip updates when
//! `|x| > 6`, so each step is the gradient of the log-likelihood up to that error. The exact
//! [`sigmoid`] is the reference: the tests check the table against it and the step, run with
//! either, against finite differences.

use crate::huffman::Huffman;
use crate::rng::Lcg;
use crate::sampling::NegativeTable;

/// Exact logistic sigmoid (the reference of [`SigmoidTable`]).
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A way of computing the logistic function inside [`targets_step`].
pub(crate) trait Logistic {
    /// σ(x).
    fn sigmoid(&self, x: f32) -> f32;
}

/// The exact sigmoid, one `expf` per call (the reference path; training uses the table).
#[cfg(test)]
pub(crate) struct ExactSigmoid;

#[cfg(test)]
impl Logistic for ExactSigmoid {
    #[inline]
    fn sigmoid(&self, x: f32) -> f32 {
        sigmoid(x)
    }
}

/// Half-width of the tabulated range of [`SigmoidTable`].
const TABLE_MAX: f32 = 8.0;
/// Table entries per unit of `x`.
const TABLE_PER_UNIT: f32 = 128.0;
/// Number of intervals of the table.
const TABLE_INTERVALS: usize = (2.0 * TABLE_MAX * TABLE_PER_UNIT) as usize;

/// σ tabulated on `[-8, 8]` every 1/128 and linearly interpolated: the error is at most
/// `h²/8 · max|σ''| ≈ 7e-7` (plus f32 rounding); outside the range the exact function is used
/// (rare: the branch is well predicted). Cheaper than `expf` plus a division, which were a
/// sizeable share of hierarchical softmax, where every node of the path needs one.
pub(crate) struct SigmoidTable {
    values: Vec<f32>,
}

impl SigmoidTable {
    /// Builds the table (2049 values, computed in f64).
    pub(crate) fn new() -> Self {
        let values = (0..=TABLE_INTERVALS)
            .map(|i| {
                let x = -(TABLE_MAX as f64) + i as f64 / TABLE_PER_UNIT as f64;
                (1.0 / (1.0 + (-x).exp())) as f32
            })
            .collect();
        Self { values }
    }
}

impl Logistic for SigmoidTable {
    #[inline]
    fn sigmoid(&self, x: f32) -> f32 {
        let t = (x + TABLE_MAX) * TABLE_PER_UNIT;
        // also false for NaN, which then takes the exact path
        if t >= 0.0 && t < TABLE_INTERVALS as f32 {
            let i = t as usize;
            let frac = t - i as f32;
            // i + 1 <= TABLE_INTERVALS: the table has TABLE_INTERVALS + 1 entries
            match (self.values.get(i), self.values.get(i + 1)) {
                (Some(&a), Some(&b)) => a + frac * (b - a),
                _ => sigmoid(x),
            }
        } else {
            sigmoid(x)
        }
    }
}

/// Dot product: the AVX2+FMA kernel when the build targets such a CPU (the workspace builds
/// with `target-cpu=native`), else [`dot_scalar`].
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        avx2::dot(a, b)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        dot_scalar(a, b)
    }
}

/// Portable dot product with eight independent accumulators (the reference of the AVX2 kernel
/// and the fallback on other CPUs).
#[inline]
#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
pub(crate) fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Explicit AVX2 + FMA dot product.
///
/// Why intrinsics: every auto-vectorised form tried (16 lanes, `mul_add`, two `[f32; 8]`
/// accumulators) came out as 2-lane xmm operations, and the single 8-lane chain of the portable
/// version is latency-bound (13 dependent adds per row of 100). Here two 8-lane FMA chains
/// run side by side and the horizontal sum is a 3-step shuffle tree; hierarchical softmax
/// computes ~11 such dots per word pair.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_setzero_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps,
        _mm_shuffle_ps,
    };

    #[inline]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ca, ra) = a[..n].as_chunks::<8>();
        let (cb, rb) = b[..n].as_chunks::<8>();
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            tail = x.mul_add(*y, tail);
        }
        // SAFETY: the target features are enabled at compile time (the cfg above), and every
        // load reads exactly the 8 f32 of one `[f32; 8]` chunk of a live slice.
        unsafe {
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut pairs = ca.chunks_exact(2).zip(cb.chunks_exact(2));
            for (x, y) in &mut pairs {
                let (x0, y0) = (
                    _mm256_loadu_ps(x[0].as_ptr()),
                    _mm256_loadu_ps(y[0].as_ptr()),
                );
                let (x1, y1) = (
                    _mm256_loadu_ps(x[1].as_ptr()),
                    _mm256_loadu_ps(y[1].as_ptr()),
                );
                acc0 = _mm256_fmadd_ps(x0, y0, acc0);
                acc1 = _mm256_fmadd_ps(x1, y1, acc1);
            }
            if ca.len() % 2 == 1 {
                if let (Some(x), Some(y)) = (ca.last(), cb.last()) {
                    let (x0, y0) = (_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
                    acc0 = _mm256_fmadd_ps(x0, y0, acc0);
                }
            }
            let s = _mm256_add_ps(acc0, acc1);
            let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps::<1>(q, q));
            _mm_cvtss_f32(q) + tail
        }
    }
}

/// `ln σ(x)` computed stably in `f64`.
#[inline]
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

/// One SGD step of the binary-logistic objective of an input vector `h` against `targets`
/// (rows of the output matrix `out`, each with label 1 or 0).
///
/// For each target `t` with output row `u_t`: `g = alpha * (label - σ(h·u_t))`,
/// `neu1e += g * u_t` (with the row before its update), `u_t += g * h`. After the call,
/// `neu1e / alpha` is the gradient of the log-likelihood with respect to `h` and each row moved
/// by `alpha` times its gradient (for distinct targets). Returns the log-likelihood
/// `Σ ln σ(±h·u_t)` before the update when `with_loss`, else 0 (it costs more than the
/// sigmoid itself).
#[inline]
pub(crate) fn targets_step<S: Logistic>(
    logistic: &S,
    h: &[f32],
    neu1e: &mut [f32],
    out: &mut [f32],
    targets: &[(usize, f32)],
    alpha: f32,
    with_loss: bool,
) -> f64 {
    let dim = h.len();
    let mut ll = 0.0f64;
    for &(t, label) in targets {
        let row = &mut out[t * dim..(t + 1) * dim];
        let dot = dot(h, row);
        let f = logistic.sigmoid(dot);
        let g = (label - f) * alpha;
        if with_loss {
            ll += if label > 0.5 {
                log_sigmoid(dot as f64)
            } else {
                log_sigmoid(-dot as f64)
            };
        }
        for ((e, r), x) in neu1e.iter_mut().zip(row.iter_mut()).zip(h) {
            *e = g.mul_add(*r, *e);
            *r = g.mul_add(*x, *r);
        }
    }
    ll
}

/// Fills `targets` with the negative-sampling targets of `word`: the word itself with label 1
/// and `negative` draws from `table` with label 0 (draws equal to `word` are skipped, as in
/// word2vec.c and gensim).
pub(crate) fn ns_targets(
    word: usize,
    negative: usize,
    table: &NegativeTable,
    rng: &mut Lcg,
    targets: &mut Vec<(usize, f32)>,
) {
    targets.clear();
    targets.push((word, 1.0));
    for _ in 0..negative {
        let t = table.sample(rng);
        if t != word {
            targets.push((t, 0.0));
        }
    }
}

/// Fills `targets` with the hierarchical-softmax targets of `word`: each inner node on its
/// Huffman path with label `1 - code bit` (word2vec.c's convention).
pub(crate) fn hs_targets(word: usize, huffman: &Huffman, targets: &mut Vec<(usize, f32)>) {
    targets.clear();
    for (&p, &c) in huffman.points(word).iter().zip(huffman.code(word)) {
        targets.push((p as usize, 1.0 - c as f32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent f64 log-likelihood of `h` against `targets` in `out`.
    fn loglik(h: &[f64], out: &[f64], targets: &[(usize, f32)]) -> f64 {
        let d = h.len();
        targets
            .iter()
            .map(|&(t, label)| {
                let dot: f64 = (0..d).map(|k| h[k] * out[t * d + k]).sum();
                let p = 1.0 / (1.0 + (-dot).exp());
                if label > 0.5 {
                    p.ln()
                } else {
                    (1.0 - p).ln()
                }
            })
            .sum()
    }

    fn check_gradient(targets: &[(usize, f32)], rows: usize) {
        check_gradient_with(&ExactSigmoid, targets, rows);
        check_gradient_with(&SigmoidTable::new(), targets, rows);
    }

    fn check_gradient_with<S: Logistic>(logistic: &S, targets: &[(usize, f32)], rows: usize) {
        let dim = 11; // one 8-lane chunk of `dot` plus a tail
        let mut rng = Lcg::new(42);
        let h: Vec<f32> = (0..dim).map(|_| rng.uniform() as f32 - 0.5).collect();
        let out0: Vec<f32> = (0..rows * dim)
            .map(|_| rng.uniform() as f32 - 0.5)
            .collect();
        let alpha = 0.05f32;
        let mut out = out0.clone();
        let mut neu1e = vec![0.0f32; dim];
        let ll = targets_step(logistic, &h, &mut neu1e, &mut out, targets, alpha, true);

        let hd: Vec<f64> = h.iter().map(|&x| x as f64).collect();
        let od: Vec<f64> = out0.iter().map(|&x| x as f64).collect();
        assert!((ll - loglik(&hd, &od, targets)).abs() < 1e-5);
        let eps = 1e-4;
        for k in 0..dim {
            let (mut hp, mut hm) = (hd.clone(), hd.clone());
            hp[k] += eps;
            hm[k] -= eps;
            let fd = (loglik(&hp, &od, targets) - loglik(&hm, &od, targets)) / (2.0 * eps);
            let applied = neu1e[k] as f64 / alpha as f64;
            assert!((fd - applied).abs() < 1e-4, "dh[{k}]: fd {fd} vs {applied}");
        }
        for i in 0..rows * dim {
            let (mut op, mut om) = (od.clone(), od.clone());
            op[i] += eps;
            om[i] -= eps;
            let fd = (loglik(&hd, &op, targets) - loglik(&hd, &om, targets)) / (2.0 * eps);
            let applied = (out[i] as f64 - out0[i] as f64) / alpha as f64;
            assert!(
                (fd - applied).abs() < 1e-4,
                "dout[{i}]: fd {fd} vs {applied}"
            );
        }
    }

    #[test]
    fn dot_matches_plain_f64_sum() {
        let mut rng = Lcg::new(5);
        for n in [0, 1, 7, 15, 16, 17, 100, 300] {
            let a: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 - 0.5).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!((got - want).abs() < 1e-5, "n {n}: {got} vs {want}");
            let reference = dot_scalar(&a, &b) as f64;
            assert!(
                (reference - want).abs() < 1e-5,
                "n {n}: {reference} vs {want}"
            );
        }
    }

    #[test]
    fn sigmoid_table_agrees_with_exact_sigmoid() {
        let table = SigmoidTable::new();
        let mut worst = 0.0f32;
        // dense sweep over the table, its edges and beyond
        for i in -1_200_000..=1_200_000 {
            let x = i as f32 * 1e-5;
            worst = worst.max((table.sigmoid(x) - sigmoid(x)).abs());
        }
        for x in [-8.0f32, 8.0, -7.999_99, 7.999_99, -30.0, 30.0, -1e30, 1e30] {
            assert!((table.sigmoid(x) - sigmoid(x)).abs() < 1e-6, "x = {x}");
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert!(table.sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn targets_step_with_table_matches_exact_step() {
        let dim = 100;
        let mut rng = Lcg::new(9);
        let h: Vec<f32> = (0..dim).map(|_| rng.uniform() as f32 - 0.5).collect();
        let out0: Vec<f32> = (0..8 * dim).map(|_| rng.uniform() as f32 - 0.5).collect();
        let targets = [(0, 1.0), (3, 0.0), (5, 0.0), (7, 1.0)];
        let (mut out_a, mut out_b) = (out0.clone(), out0);
        let (mut e_a, mut e_b) = (vec![0.0f32; dim], vec![0.0f32; dim]);
        let ll_a = targets_step(
            &ExactSigmoid,
            &h,
            &mut e_a,
            &mut out_a,
            &targets,
            0.025,
            true,
        );
        let tab = SigmoidTable::new();
        let ll_b = targets_step(&tab, &h, &mut e_b, &mut out_b, &targets, 0.025, true);
        assert_eq!(ll_a, ll_b); // the log-likelihood is always exact
        for (a, b) in e_a.iter().zip(&e_b).chain(out_a.iter().zip(&out_b)) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn negative_sampling_gradient_matches_finite_differences() {
        let table = NegativeTable::new(&[10, 9, 8, 7, 6, 5], 0.75);
        let mut rng = Lcg::new(3);
        let mut targets = Vec::new();
        ns_targets(1, 3, &table, &mut rng, &mut targets);
        // make sure the negatives are distinct rows for the exact-gradient property
        targets.dedup_by_key(|t| t.0);
        assert_eq!(targets[0], (1, 1.0));
        assert!(targets.len() >= 2);
        check_gradient(&targets, 6);
        // and a fixed hand-made set
        check_gradient(&[(0, 1.0), (2, 0.0), (3, 0.0), (5, 0.0)], 6);
    }

    #[test]
    fn hierarchical_softmax_gradient_matches_finite_differences() {
        let huffman = Huffman::new(&[5, 3, 2, 1]);
        let mut targets = Vec::new();
        hs_targets(3, &huffman, &mut targets);
        assert_eq!(targets.len(), 3);
        // labels are 1 - code
        for (t, c) in targets.iter().zip(huffman.code(3)) {
            assert_eq!(t.1, 1.0 - *c as f32);
        }
        check_gradient(&targets, 3);
        hs_targets(0, &huffman, &mut targets);
        check_gradient(&targets, 3);
    }
}
