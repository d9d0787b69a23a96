//! Routed mixture-of-experts feed-forward in one op: each token row goes only to the SwiGLU
//! experts it was routed to, so the cost is proportional to the number of experts per token
//! (top-k), not to the number of experts.
//!
//! Forward, per expert `e` with the `n_e` (token, slot) pairs routed to it:
//! `Xe = x[tokens]` `(n_e, C)`, `[G | U] = Xe [Wg; Wu]^T` `(n_e, 2F)`, `He = silu(G) * U`,
//! `Ye = He Wd^T` `(n_e, C)`, and `out[n] += w[n, k] * Ye[r]`. The backward follows the same
//! grouping: every product is a dense `gemm` over one expert's rows.

use rayon::prelude::*;

use super::matmul::{gemm_into, par, MatRef};
use super::{alloc_out, transpose_copy};
use crate::error::{Error, Result};
use crate::math::sigmoid;
use crate::tensor::Tensor;

/// One expert's weights as passed to [`moe_experts`]: `gate` `(F, C)`, `up` `(F, C)`, `down`
/// `(C, F)` (PyTorch `Linear` layout, HF names `gate_proj`, `up_proj`, `down_proj`).
#[derive(Clone, Copy)]
pub struct ExpertWeights<'a> {
    /// `(F, C)`.
    pub gate: &'a Tensor,
    /// `(F, C)`.
    pub up: &'a Tensor,
    /// `(C, F)`.
    pub down: &'a Tensor,
}

/// Rows per work item: an expert with more token-slots is split into several items.
const ITEM_ROWS: usize = 512;

/// An expert's `[Wg; Wu]^T` `(C, 2F)` and `Wd^T` `(F, C)`, row-major for `gemm`.
type Transposed = (Vec<f32>, Vec<f32>);

/// What one expert computed in the forward, kept for the backward.
struct Saved {
    /// The expert.
    expert: usize,
    /// `(token, slot)` pairs of this work item (routed to `expert`), in token order.
    rows: Vec<(usize, usize)>,
    /// `[G | U]` `(n_e, 2F)`.
    gu: Vec<f32>,
    /// `Ye` `(n_e, C)`.
    y: Vec<f32>,
}

/// `out[n] = sum_k weights[n, k] * expert_{indices[n, k]}(x[n])` with SwiGLU experts.
///
/// `x` `(N, C)`, `weights` `(N, K)`, `indices` `N * K` expert numbers (row-major `(N, K)`),
/// `experts` the weights of each expert; returns `(N, C)`. Gradients flow to `x`, `weights`
/// and the weights of every expert that received a token; one that received none gets no
/// gradient, as in PyTorch, where it is not part of the graph (optimizers then skip it).
pub fn moe_experts(
    x: &Tensor,
    weights: &Tensor,
    indices: &[usize],
    experts: &[ExpertWeights<'_>],
) -> Result<Tensor> {
    let [n, c] = x.dims::<2>("moe_experts")?;
    let [wn, k] = weights.dims::<2>("moe_experts (weights)")?;
    let bad = |msg: String| {
        Err(Error::Invalid {
            op: "moe_experts",
            msg,
        })
    };
    if wn != n || indices.len() != n * k {
        return bad(format!(
            "x has {n} rows, weights {:?}, {} indices: need weights (N, K) and N * K indices",
            weights.shape(),
            indices.len()
        ));
    }
    let ne = experts.len();
    if ne == 0 {
        return bad("no experts".into());
    }
    let f = experts[0].gate.shape().first().copied().unwrap_or(0);
    for (e, w) in experts.iter().enumerate() {
        if w.gate.shape() != [f, c] || w.up.shape() != [f, c] || w.down.shape() != [c, f] {
            return bad(format!(
                "expert {e}: gate {:?}, up {:?}, down {:?} do not fit (F, {c}), (F, {c}), ({c}, F)",
                w.gate.shape(),
                w.up.shape(),
                w.down.shape()
            ));
        }
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= ne) {
        return bad(format!("expert index {i} out of range for {ne} experts"));
    }
    let xc = x.contig();
    let wc = weights.contig();
    // (token, slot) pairs of each expert, in token order
    let mut rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ne];
    for (p, &e) in indices.iter().enumerate() {
        rows[e].push((p / k, p % k));
    }
    // per expert: [Wg; Wu]^T (C, 2F) and Wd^T (F, C), row-major for gemm
    let mats: Vec<Transposed> = experts
        .iter()
        .zip(&rows)
        .map(|(w, r)| {
            if r.is_empty() {
                return (Vec::new(), Vec::new());
            }
            let mut gu = w.gate.contig().to_vec();
            gu.extend_from_slice(&w.up.contig());
            (
                transpose_copy(&gu, 2 * f, c),
                transpose_copy(&w.down.contig(), c, f),
            )
        })
        .collect();
    let run = |(e, r): (usize, Vec<(usize, usize)>)| -> Saved {
        let (gut, dt) = &mats[e];
        let m = r.len();
        let mut xe = alloc_out(m * c);
        for (dst, &(t, _)) in xe.chunks_exact_mut(c).zip(&r) {
            dst.copy_from_slice(&xc[t * c..(t + 1) * c]);
        }
        let mut gu = alloc_out(m * 2 * f);
        let mut h = alloc_out(m * f);
        let mut y = alloc_out(m * c);
        // SAFETY: every buffer has the sizes stated in the calls.
        unsafe {
            gemm_into(
                m,
                2 * f,
                c,
                gu.as_mut_ptr(),
                2 * f,
                false,
                MatRef::new(&xe, 0, c, 1),
                MatRef::new(gut, 0, 2 * f, 1),
                par(false),
            );
        }
        for (hr, gr) in h.chunks_exact_mut(f).zip(gu.chunks_exact(2 * f)) {
            let (a, b) = gr.split_at(f);
            let (a, b, hr) = (&a[..f], &b[..f], &mut hr[..f]);
            for i in 0..f {
                hr[i] = a[i] * sigmoid(a[i]) * b[i];
            }
        }
        // SAFETY: as above.
        unsafe {
            gemm_into(
                m,
                c,
                f,
                y.as_mut_ptr(),
                c,
                false,
                MatRef::new(&h, 0, f, 1),
                MatRef::new(dt, 0, c, 1),
                par(false),
            );
        }
        Saved {
            expert: e,
            rows: r,
            gu,
            y,
        }
    };
    // work items of at most ITEM_ROWS rows of one expert, side by side on the pool, each
    // product on one thread: a busy expert (unbalanced routing) is split over the threads
    // instead of keeping one of them busy alone
    let items: Vec<(usize, Vec<(usize, usize)>)> = rows
        .into_iter()
        .enumerate()
        .flat_map(|(e, r)| {
            r.chunks(ITEM_ROWS)
                .map(|ch| (e, ch.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let saved: Vec<Saved> = items.into_par_iter().map(run).collect();
    drop(mats);
    let mut out = vec![0f32; n * c];
    for s in &saved {
        for (yr, &(t, slot)) in s.y.chunks_exact(c).zip(&s.rows) {
            let w = wc[t * k + slot];
            out[t * c..(t + 1) * c]
                .iter_mut()
                .zip(yr)
                .for_each(|(o, y)| *o += w * y);
        }
    }
    let mut parents: Vec<&Tensor> = vec![x, weights];
    for w in experts {
        parents.extend([w.gate, w.up, w.down]);
    }
    let wts: Vec<(Tensor, Tensor, Tensor)> = experts
        .iter()
        .map(|w| (w.gate.clone(), w.up.clone(), w.down.clone()))
        .collect();
    Ok(Tensor::from_op(
        out,
        vec![n, c],
        &parents,
        "moe_experts",
        move |g: Vec<f32>, needs| {
            let need_x = needs[0];
            let need_w = needs[1];
            // per work item: (gx rows (m, C), gate/up grad (2F, C), down grad (C, F), gw per row)
            type Grads = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
            let back = |s: &Saved| -> Grads {
                let (wg, wu, wd) = &wts[s.expert];
                let m = s.rows.len();
                // routing-weight gradient: <g[n], Ye[r]>
                let gw: Vec<f32> = if need_w {
                    s.rows
                        .iter()
                        .zip(s.y.chunks_exact(c))
                        .map(|(&(t, _), yr)| crate::math::dot(&g[t * c..(t + 1) * c], yr))
                        .collect()
                } else {
                    Vec::new()
                };
                // gYe = w * g[n]
                let mut gy = alloc_out(m * c);
                let mut xe = alloc_out(m * c);
                for ((dst, xd), &(t, slot)) in gy
                    .chunks_exact_mut(c)
                    .zip(xe.chunks_exact_mut(c))
                    .zip(&s.rows)
                {
                    let w = wc[t * k + slot];
                    dst.iter_mut()
                        .zip(&g[t * c..(t + 1) * c])
                        .for_each(|(d, g)| *d = w * g);
                    xd.copy_from_slice(&xc[t * c..(t + 1) * c]);
                }
                // He recomputed from [G | U]
                let mut h = alloc_out(m * f);
                for (hr, gr) in h.chunks_exact_mut(f).zip(s.gu.chunks_exact(2 * f)) {
                    let (a, b) = gr.split_at(f);
                    let (a, b, hr) = (&a[..f], &b[..f], &mut hr[..f]);
                    for i in 0..f {
                        hr[i] = a[i] * sigmoid(a[i]) * b[i];
                    }
                }
                let wdc = wd.contig(); // (C, F)
                                       // gH = gYe Wd (m, F)
                let mut gh = alloc_out(m * f);
                // gWd = gYe^T He (C, F)
                let mut gwd = alloc_out(c * f);
                // SAFETY: sizes as stated.
                unsafe {
                    gemm_into(
                        m,
                        f,
                        c,
                        gh.as_mut_ptr(),
                        f,
                        false,
                        MatRef::new(&gy, 0, c, 1),
                        MatRef::new(&wdc, 0, f, 1),
                        par(false),
                    );
                    // gemm is slow with a column-major left operand: transpose gYe first
                    gemm_into(
                        c,
                        f,
                        m,
                        gwd.as_mut_ptr(),
                        f,
                        false,
                        MatRef::new(&gy, 0, c, 1).t(),
                        MatRef::new(&h, 0, f, 1),
                        par(false),
                    );
                }
                // [gG | gU] (m, 2F) through silu(G) * U
                let mut ggu = alloc_out(m * 2 * f);
                for ((dr, gr), ghr) in ggu
                    .chunks_exact_mut(2 * f)
                    .zip(s.gu.chunks_exact(2 * f))
                    .zip(gh.chunks_exact(f))
                {
                    let (a, b) = gr.split_at(f);
                    let (ga, gb) = dr.split_at_mut(f);
                    let (a, b, ghr) = (&a[..f], &b[..f], &ghr[..f]);
                    let (ga, gb) = (&mut ga[..f], &mut gb[..f]);
                    for i in 0..f {
                        let sg = sigmoid(a[i]);
                        ga[i] = ghr[i] * b[i] * sg * (1.0 + a[i] * (1.0 - sg));
                        gb[i] = ghr[i] * a[i] * sg;
                    }
                }
                // g[Wg; Wu] = [gG | gU]^T Xe (2F, C)
                let mut gwgu = alloc_out(2 * f * c);
                // gXe = [gG | gU] [Wg; Wu] (m, C)
                let mut gx = Vec::new();
                // SAFETY: sizes as stated.
                unsafe {
                    gemm_into(
                        2 * f,
                        c,
                        m,
                        gwgu.as_mut_ptr(),
                        c,
                        false,
                        MatRef::new(&ggu, 0, 2 * f, 1).t(),
                        MatRef::new(&xe, 0, c, 1),
                        par(false),
                    );
                }
                if need_x {
                    let mut wgu = wg.contig().to_vec();
                    wgu.extend_from_slice(&wu.contig());
                    gx = alloc_out(m * c);
                    // SAFETY: sizes as stated.
                    unsafe {
                        gemm_into(
                            m,
                            c,
                            2 * f,
                            gx.as_mut_ptr(),
                            c,
                            false,
                            MatRef::new(&ggu, 0, 2 * f, 1),
                            MatRef::new(&wgu, 0, c, 1),
                            par(false),
                        );
                    }
                }
                (gx, gwgu, gwd, gw)
            };
            let grads: Vec<Grads> = saved.par_iter().map(back).collect();
            let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(2 + 3 * ne);
            if need_x {
                let mut gx = vec![0f32; n * c];
                for (s, gr) in saved.iter().zip(&grads) {
                    for (src, &(t, _)) in gr.0.chunks_exact(c).zip(&s.rows) {
                        gx[t * c..(t + 1) * c]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(a, b)| *a += b);
                    }
                }
                out.push(Some(gx));
            } else {
                out.push(None);
            }
            if need_w {
                let mut gw = vec![0f32; n * k];
                for (s, gr) in saved.iter().zip(&grads) {
                    for (&v, &(t, slot)) in gr.3.iter().zip(&s.rows) {
                        gw[t * k + slot] += v;
                    }
                }
                out.push(Some(gw));
            } else {
                out.push(None);
            }
            // weight gradients: the items of each expert summed (none for an idle expert)
            let mut per: Vec<Option<(Vec<f32>, Vec<f32>)>> = (0..ne).map(|_| None).collect();
            for (s, (_, gwgu, gwd, _)) in saved.iter().zip(grads) {
                match &mut per[s.expert] {
                    Some((a, b)) => {
                        super::add_assign(a, &gwgu);
                        super::add_assign(b, &gwd);
                    }
                    slot => *slot = Some((gwgu, gwd)),
                }
            }
            for (e, p) in per.into_iter().enumerate() {
                // an expert no token reached gets no gradient, as in PyTorch (where it is not
                // part of the graph): optimizers then skip it instead of decaying it
                let Some((gwgu, gwd)) = p else {
                    out.extend([None, None, None]);
                    continue;
                };
                let (gg, gu) = gwgu.split_at(f * c);
                let want = |i: usize| needs[2 + 3 * e + i];
                out.push(want(0).then(|| gg.to_vec()));
                out.push(want(1).then(|| gu.to_vec()));
                out.push(want(2).then_some(gwd));
            }
            Ok(out)
        },
    ))
}
