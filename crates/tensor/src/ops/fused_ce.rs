//! The output head and the cross-entropy in one op, a block of rows at a time, so the
//! `(N, V)` logits and their gradient never exist whole.
//!
//! For each block of rows: logits `z = h W^T` (a few hundred KB, stays in cache), the row
//! log-sum-exp and loss, and right away (when a graph is recorded) the logit gradient
//! `(softmax(z) - onehot) / n_valid`, which gives this block's `dh = dz W` and adds
//! `h^T dz` into the weight gradient. The backward then only scales the kept gradients by the
//! incoming one. Same flops as `linear` + `cross_entropy`; at V = 2048 and 4096 rows it avoids
//! four passes over 32 MB buffers.

use rayon::prelude::*;

use super::matmul::{gemm_into, par, MatRef};
use super::{alloc_out, transpose_copy};
use crate::autograd::is_grad_enabled;
use crate::error::{invalid, Result};
use crate::math;
use crate::tensor::Tensor;

/// Rows per block.
const BLOCK: usize = 256;

/// Mean cross-entropy of `linear(h, w)` against `targets` (`-100` ignored), i.e.
/// `cross_entropy(linear(h, w, None), targets, Default::default())` without materialising
/// the logits. `h` `(N, C)`, `w` `(V, C)`, `targets` `N` class indices. No target left: NaN.
pub fn linear_cross_entropy(h: &Tensor, w: &Tensor, targets: &[i64]) -> Result<Tensor> {
    let op = "linear_cross_entropy";
    let [n, c] = h.dims::<2>(op)?;
    let [v, c2] = w.dims::<2>(op)?;
    if c != c2 || targets.len() != n {
        return invalid(
            op,
            format!(
                "h {:?}, weight {:?} and {} targets: need (N, C), (V, C) and N",
                h.shape(),
                w.shape(),
                targets.len()
            ),
        );
    }
    const IGNORE: i64 = -100;
    for (i, &t) in targets.iter().enumerate() {
        if t != IGNORE && (t < 0 || t as usize >= v) {
            return invalid(op, format!("target {t} at row {i} is outside [0, {v})"));
        }
    }
    if n == 0 || c == 0 || v == 0 {
        // nothing to block over: the plain ops give the same (NaN, or ln V when C is 0)
        let logits = super::matmul::linear(h, w, None)?;
        return super::reduce::cross_entropy(&logits, targets, Default::default());
    }
    let valid = targets.iter().filter(|&&t| t != IGNORE).count();
    let inv_valid = 1.0 / valid.max(1) as f32;
    let track = (h.requires_grad() || w.requires_grad()) && is_grad_enabled();
    let hc = h.contig();
    let wc = w.contig();
    let wt = transpose_copy(&wc, v, c); // (C, V)
    let mut dh = if track { alloc_out(n * c) } else { Vec::new() };
    // one block: its loss sum, and (tracking) its dh rows and h^T dz added into `acc` (C, V)
    let block = |hb: &[f32], tb: &[i64], dhb: Option<&mut [f32]>, acc: &mut Vec<f32>| -> f64 {
        let m = tb.len();
        let mut z = alloc_out(m * v);
        // SAFETY: z is m x v; hb is m x c; wt is c x v, all row-major.
        unsafe {
            gemm_into(
                m,
                v,
                c,
                z.as_mut_ptr(),
                v,
                false,
                MatRef::new(hb, 0, c, 1),
                MatRef::new(&wt, 0, v, 1),
                par(false),
            );
        }
        let mut loss = 0f64;
        for (row, &t) in z.chunks_exact_mut(v).zip(tb) {
            if t == IGNORE {
                row.fill(0.0);
                continue;
            }
            let zt = row[t as usize];
            let mx = math::max(row);
            let s = math::exp_into_self(row, mx);
            loss += (mx + s.ln() - zt) as f64;
            if track {
                let k = inv_valid / s;
                row.iter_mut().for_each(|x| *x *= k);
                row[t as usize] -= inv_valid;
            }
        }
        if let Some(dhb) = dhb {
            if acc.is_empty() {
                *acc = vec![0f32; c * v];
            }
            let ht = transpose_copy(hb, m, c); // (C, m)
                                               // SAFETY: sizes as stated: dhb m x c = z (m x v) @ w (v x c); acc c x v += ht
                                               // (c x m) @ z (m x v).
            unsafe {
                gemm_into(
                    m,
                    c,
                    v,
                    dhb.as_mut_ptr(),
                    c,
                    false,
                    MatRef::new(&z, 0, v, 1),
                    MatRef::new(&wc, 0, c, 1),
                    par(false),
                );
                gemm_into(
                    c,
                    v,
                    m,
                    acc.as_mut_ptr(),
                    v,
                    true,
                    MatRef::new(&ht, 0, m, 1),
                    MatRef::new(&z, 0, v, 1),
                    par(false),
                );
            }
        }
        loss
    };
    let (total, gwt) = if track {
        // one weight-gradient accumulator per thread: each task takes a contiguous run of
        // blocks
        let blocks = n.div_ceil(BLOCK);
        let per_task = blocks.div_ceil(rayon::current_num_threads().max(1)).max(1);
        let rows = per_task * BLOCK;
        let parts: Vec<(f64, Vec<f32>)> = dh
            .par_chunks_mut(rows * c)
            .zip(hc.par_chunks(rows * c))
            .zip(targets.par_chunks(rows))
            .map(|((dhs, hs), ts)| {
                let mut acc = Vec::new();
                let mut l = 0f64;
                for ((dhb, hb), tb) in dhs
                    .chunks_mut(BLOCK * c)
                    .zip(hs.chunks(BLOCK * c))
                    .zip(ts.chunks(BLOCK))
                {
                    l += block(hb, tb, Some(dhb), &mut acc);
                }
                (l, acc)
            })
            .collect();
        let mut total = 0f64;
        let mut gwt: Vec<f32> = Vec::new();
        for (l, acc) in parts {
            total += l;
            if gwt.is_empty() {
                gwt = acc;
            } else if !acc.is_empty() {
                super::add_assign(&mut gwt, &acc);
            }
        }
        (total, gwt)
    } else {
        // block losses collected, then added in order: a parallel `sum()` would combine them
        // in an order that depends on scheduling
        let parts: Vec<f64> = hc
            .par_chunks(BLOCK * c)
            .zip(targets.par_chunks(BLOCK))
            .map(|(hb, tb)| block(hb, tb, None, &mut Vec::new()))
            .collect();
        (parts.iter().sum(), Vec::new())
    };
    let loss = if valid == 0 {
        f32::NAN
    } else {
        (total / valid as f64) as f32
    };
    Ok(Tensor::from_op(
        vec![loss],
        vec![],
        &[h, w],
        op,
        move |g: Vec<f32>, needs| {
            let g = g[0];
            let gh = needs[0].then(|| {
                let mut d = dh;
                d.iter_mut().for_each(|x| *x *= g);
                d
            });
            let gw = needs[1].then(|| {
                if gwt.is_empty() {
                    return vec![0f32; v * c];
                }
                let mut d = transpose_copy(&gwt, c, v); // (V, C)
                d.iter_mut().for_each(|x| *x *= g);
                d
            });
            Ok(vec![gh, gw])
        },
    ))
}
