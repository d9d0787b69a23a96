//! Hand-written SGD kernels (the inner loops of word2vec.c).
//!
//! The sigmoid is computed exactly, `1 / (1 + exp(-x))` in `f32`, without word2vec.c's
//! precomputed table and without skipping updates when `|x| > 6`; the update is then the
//! exact gradient of the log-likelihood, which the tests check by finite differences.

use crate::huffman::Huffman;
use crate::rng::Lcg;
use crate::sampling::NegativeTable;

/// Exact logistic sigmoid.
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Dot product with eight independent accumulators (lets the compiler vectorise it).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
pub(crate) fn targets_step(
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
        let f = sigmoid(dot);
        let g = (label - f) * alpha;
        if with_loss {
            ll += if label > 0.5 {
                log_sigmoid(dot as f64)
            } else {
                log_sigmoid(-dot as f64)
            };
        }
        for ((e, r), x) in neu1e.iter_mut().zip(row.iter_mut()).zip(h) {
            *e += g * *r;
            *r += g * x;
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
        let dim = 11; // one 8-lane chunk of `dot` plus a tail
        let mut rng = Lcg::new(42);
        let h: Vec<f32> = (0..dim).map(|_| rng.uniform() as f32 - 0.5).collect();
        let out0: Vec<f32> = (0..rows * dim)
            .map(|_| rng.uniform() as f32 - 0.5)
            .collect();
        let alpha = 0.05f32;
        let mut out = out0.clone();
        let mut neu1e = vec![0.0f32; dim];
        let ll = targets_step(&h, &mut neu1e, &mut out, targets, alpha, true);

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
