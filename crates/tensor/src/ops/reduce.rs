//! Reductions over a dim (sum, mean, max), softmax, log-softmax and the fused cross-entropy.
//!
//! A reduction over dim `d` sees the tensor as `(outer, n, inner)` with `n = shape[d]`.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{invalid, Result};
use crate::math;
use crate::tensor::Tensor;

fn split3(shape: &[usize], d: usize) -> (usize, usize, usize) {
    let outer = shape[..d].iter().product();
    let inner = shape[d + 1..].iter().product();
    (outer, shape[d], inner)
}

fn reduced_shape(shape: &[usize], d: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[d] = 1;
    } else {
        s.remove(d);
    }
    s
}

/// Broadcasts a reduced gradient `(outer, inner)` back over `(outer, n, inner)`, times `scale`.
fn spread(g: &[f32], outer: usize, n: usize, inner: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; outer * n * inner];
    for o in 0..outer {
        for j in 0..n {
            let dst = &mut out[(o * n + j) * inner..(o * n + j + 1) * inner];
            let src = &g[o * inner..(o + 1) * inner];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s * scale;
            }
        }
    }
    out
}

impl Tensor {
    fn reduce_sum(&self, d: usize, keepdim: bool, scale: f32, name: &'static str) -> Tensor {
        let (outer, n, inner) = split3(self.shape(), d);
        let x = self.contig();
        let mut out = vec![0f32; outer * inner];
        for o in 0..outer {
            let dst = &mut out[o * inner..(o + 1) * inner];
            for j in 0..n {
                let src = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                for (a, b) in dst.iter_mut().zip(src) {
                    *a += b;
                }
            }
            for a in dst.iter_mut() {
                *a *= scale;
            }
        }
        let shape = reduced_shape(self.shape(), d, keepdim);
        Tensor::from_op(out, shape, &[self], name, move |g: Vec<f32>, _| {
            let g = &g[..];
            Ok(vec![Some(spread(g, outer, n, inner, scale))])
        })
    }

    /// Sum over `dim`.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.dim_index(dim, "sum_dim")?;
        Ok(self.reduce_sum(d, keepdim, 1.0, "sum_dim"))
    }

    /// Mean over `dim`.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.dim_index(dim, "mean_dim")?;
        let n = self.shape()[d];
        if n == 0 {
            return invalid("mean_dim", "mean over an empty dim");
        }
        Ok(self.reduce_sum(d, keepdim, 1.0 / n as f32, "mean_dim"))
    }

    /// Sum of all elements (rank-0 result).
    pub fn sum_all(&self) -> Tensor {
        let x = self.contig();
        // Partial sums collected in order, then added in order: the same result on every run
        // (a parallel `sum()` would combine partials in an order that depends on scheduling).
        let parts: Vec<f64> = x
            .par_chunks(1 << 14)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .collect();
        let s: f64 = parts.iter().sum();
        let n = self.numel();
        Tensor::from_op(
            vec![s as f32],
            vec![],
            &[self],
            "sum_all",
            move |g: Vec<f32>, _| Ok(vec![Some(vec![g[0]; n])]),
        )
    }

    /// Mean of all elements (rank-0 result).
    pub fn mean_all(&self) -> Result<Tensor> {
        let n = self.numel();
        if n == 0 {
            return invalid("mean_all", "mean of an empty tensor");
        }
        Ok(self.sum_all().mul_scalar(1.0 / n as f32))
    }

    /// Maximum over `dim`; the gradient goes to the first maximal element. A NaN is the
    /// maximum (the first one), as in `torch.max(dim)`.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.dim_index(dim, "max_dim")?;
        let (outer, n, inner) = split3(self.shape(), d);
        if n == 0 {
            return invalid("max_dim", "max over an empty dim");
        }
        let x = self.contig();
        let mut out = vec![f32::NEG_INFINITY; outer * inner];
        let mut arg = vec![0usize; outer * inner];
        for o in 0..outer {
            for j in 0..n {
                for i in 0..inner {
                    let v = x[(o * n + j) * inner + i];
                    let k = o * inner + i;
                    if v > out[k] || j == 0 || (v.is_nan() && !out[k].is_nan()) {
                        out[k] = v;
                        arg[k] = j;
                    }
                }
            }
        }
        let shape = reduced_shape(self.shape(), d, keepdim);
        Ok(Tensor::from_op(
            out,
            shape,
            &[self],
            "max_dim",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                let mut gx = vec![0f32; outer * n * inner];
                for o in 0..outer {
                    for i in 0..inner {
                        let k = o * inner + i;
                        gx[(o * n + arg[k]) * inner + i] = g[k];
                    }
                }
                Ok(vec![Some(gx)])
            },
        ))
    }

    /// Softmax over `dim`. A slice whose entries are all `-inf` (a fully masked row) gives
    /// zeros, where PyTorch gives NaN; a NaN anywhere in a slice gives NaN there, as in PyTorch.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        // dx = y * (g - sum_j g_j y_j)
        self.softmax_op(dim, false, "softmax", |g, y, lane, gx| {
            let dot: f32 = lane.iter().map(|&k| g[k] * y[k]).sum();
            lane.iter().for_each(|&k| gx[k] = y[k] * (g[k] - dot));
        })
    }

    /// Log-softmax over `dim`. A slice whose entries are all `-inf` gives `-inf` everywhere,
    /// where PyTorch gives NaN.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        // dx = g - softmax * sum_j g_j
        self.softmax_op(dim, true, "log_softmax", |g, y, lane, gx| {
            let s: f32 = lane.iter().map(|&k| g[k]).sum();
            lane.iter().for_each(|&k| gx[k] = g[k] - y[k].exp() * s);
        })
    }

    /// Softmax or log-softmax over `dim`. The output is kept for the backward by sharing its
    /// storage (no copy); `grad(g, y, lane, gx)` writes the input gradient of one lane (the
    /// flat indices of one softmax row).
    fn softmax_op(
        &self,
        dim: isize,
        log: bool,
        name: &'static str,
        grad: impl Fn(&[f32], &[f32], &[usize], &mut [f32]) + Send + 'static,
    ) -> Result<Tensor> {
        let d = self.dim_index(dim, name)?;
        let (outer, n, inner) = split3(self.shape(), d);
        let y = Arc::new(softmax_kernel(&self.contig(), outer, n, inner, log));
        let ys = y.clone();
        let shape = self.shape().to_vec();
        let strides = crate::shape::contiguous_strides(&shape);
        Ok(Tensor::from_op_strided(
            y,
            shape,
            strides,
            0,
            &[self],
            name,
            move |g: Vec<f32>, _| {
                let mut gx = vec![0f32; g.len()];
                let mut lane = vec![0usize; n];
                for o in 0..outer {
                    for i in 0..inner {
                        for (j, k) in lane.iter_mut().enumerate() {
                            *k = (o * n + j) * inner + i;
                        }
                        grad(&g, &ys, &lane, &mut gx);
                    }
                }
                Ok(vec![Some(gx)])
            },
        ))
    }
}

/// Row softmax (or log-softmax) of `(outer, n, inner)` data over the middle dim.
pub(crate) fn softmax_kernel(
    x: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Vec<f32> {
    let mut y = super::alloc_out(x.len());
    if inner == 1 {
        y.par_chunks_mut(n.max(1))
            .zip(x.par_chunks(n.max(1)))
            .for_each(|(yr, xr)| softmax_row(xr, yr, log));
        return y;
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let m = (0..n).map(|j| x[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            // (a lane of NaN also has max -inf, as `f32::max` skips NaN: it goes on to NaN)
            if m == f32::NEG_INFINITY && !(0..n).any(|j| x[at(j)].is_nan()) {
                // all -inf: zeros (log: -inf), as `softmax_row` gives over the last dim
                for j in 0..n {
                    y[at(j)] = if log { f32::NEG_INFINITY } else { 0.0 };
                }
                continue;
            }
            let s: f32 = (0..n).map(|j| crate::math::exp(x[at(j)] - m)).sum();
            let ls = s.ln();
            for j in 0..n {
                y[at(j)] = if log {
                    x[at(j)] - m - ls
                } else {
                    crate::math::exp(x[at(j)] - m) / s
                };
            }
        }
    }
    y
}

/// Softmax of one contiguous row (max-subtracted; a row of all `-inf` gives zeros).
pub(crate) fn softmax_row(x: &[f32], y: &mut [f32], log: bool) {
    let m = math::max(x);
    // (a row of NaN also has max -inf, as `max` skips NaN: it goes on to give NaN)
    if m == f32::NEG_INFINITY && !x.iter().any(|v| v.is_nan()) {
        y.iter_mut()
            .for_each(|v| *v = if log { f32::NEG_INFINITY } else { 0.0 });
        return;
    }
    if log {
        let ls = math::sum_exp(x, m).ln();
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv - m - ls;
        }
    } else {
        let inv = 1.0 / math::exp_into(x, m, y);
        y.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Options of [`cross_entropy`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyOpts {
    /// Targets equal to this are skipped (PyTorch: -100).
    pub ignore_index: i64,
    /// Label smoothing epsilon in `[0, 1]`.
    pub label_smoothing: f32,
}

impl Default for CrossEntropyOpts {
    fn default() -> Self {
        CrossEntropyOpts {
            ignore_index: -100,
            label_smoothing: 0.0,
        }
    }
}

/// Fused mean cross-entropy of `logits` `(N, V)` against class indices `targets` `(N)`.
///
/// Matches `torch.nn.functional.cross_entropy` with `reduction="mean"`: the mean is over
/// non-ignored targets; with label smoothing `eps` the target distribution is
/// `(1 - eps) * onehot + eps / V`. Only per-row log-sum-exp values are kept for the backward.
pub fn cross_entropy(logits: &Tensor, targets: &[i64], opts: CrossEntropyOpts) -> Result<Tensor> {
    let [n, v] = logits.dims::<2>("cross_entropy")?;
    if targets.len() != n {
        return invalid(
            "cross_entropy",
            format!(
                "{} targets for logits of shape {:?}",
                targets.len(),
                logits.shape()
            ),
        );
    }
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return invalid(
            "cross_entropy",
            format!("label_smoothing {eps} is outside [0, 1]"),
        );
    }
    for (i, &t) in targets.iter().enumerate() {
        if t != opts.ignore_index && (t < 0 || t as usize >= v) {
            return invalid(
                "cross_entropy",
                format!("target {t} at row {i} is outside [0, {v})"),
            );
        }
    }
    if v == 0 {
        // no classes: every target is ignored (checked above), as is an empty batch below
        return Ok(Tensor::from_op(
            vec![f32::NAN],
            vec![],
            &[logits],
            "cross_entropy",
            |_, needs| Ok(vec![needs[0].then(Vec::new)]),
        ));
    }
    let x = logits.contig();
    let valid = targets.iter().filter(|&&t| t != opts.ignore_index).count();
    let ignore = opts.ignore_index;
    // With a graph, the forward keeps exp(z - max) per row (what the backward needs, in place
    // of the logits) so the backward is one scaling pass over it, with no second exp.
    let track = logits.requires_grad() && crate::autograd::is_grad_enabled();
    let mut p = if track {
        super::alloc_out(n * v)
    } else {
        Vec::new()
    };
    let row_loss = |r: &[f32], t: i64, e: Option<&mut [f32]>| -> (f32, f32) {
        let m = math::max(r);
        let s = match e {
            Some(e) => math::exp_into(r, m, e),
            None => math::sum_exp(r, m),
        };
        let lse = m + s.ln();
        let nll = lse - r[t as usize];
        let loss = if eps > 0.0 {
            let mean_z = math::sum(r) / v as f32;
            (1.0 - eps) * nll + eps * (lse - mean_z)
        } else {
            nll
        };
        (1.0 / s, loss)
    };
    // per row: (1 / sum exp, loss); ignored rows (0, 0)
    let rows: Vec<(f32, f32)> = if track {
        p.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(targets.par_iter())
            .map(|((e, r), &t)| {
                if t == ignore {
                    (0.0, 0.0)
                } else {
                    row_loss(r, t, Some(e))
                }
            })
            .collect()
    } else {
        x.par_chunks(v)
            .zip(targets.par_iter())
            .map(|(r, &t)| {
                if t == ignore {
                    (0.0, 0.0)
                } else {
                    row_loss(r, t, None)
                }
            })
            .collect()
    };
    drop(x);
    let total: f64 = rows.iter().map(|r| r.1 as f64).sum();
    let loss = if valid == 0 {
        f32::NAN
    } else {
        (total / valid as f64) as f32
    };
    let targets = targets.to_vec();
    Ok(Tensor::from_op(
        vec![loss],
        vec![],
        &[logits],
        "cross_entropy",
        move |g: Vec<f32>, _| {
            // d loss / d z = (softmax(z) - (1 - eps) onehot - eps / V) * g / valid
            let scale = g[0] / valid.max(1) as f32;
            let off = eps / v as f32 * scale;
            let mut gx = p;
            gx.par_chunks_mut(v)
                .zip(targets.par_iter().zip(rows.par_iter()))
                .for_each(|(gr, (&t, &(inv_s, _)))| {
                    if t == ignore {
                        gr.iter_mut().for_each(|x| *x = 0.0);
                        return;
                    }
                    let k = inv_s * scale;
                    gr.iter_mut().for_each(|x| *x = *x * k - off);
                    gr[t as usize] -= (1.0 - eps) * scale;
                });
            Ok(vec![Some(gx)])
        },
    ))
}
