//! Rotary position embedding (RoPE).
//!
//! Rotates pairs of channels of `x` `(.., T, D)` by angle `pos * theta^(-2i/D)`. Two pair
//! layouts exist in the wild: interleaved `(2i, 2i+1)` (the RoFormer/GPT-J/DeepSeek-V3
//! checkpoint layout) and half-split `(i, i + D/2)` (GPT-NeoX/LLaMA in HF `transformers`).

use rayon::prelude::*;

use crate::error::{invalid, Result};
use crate::tensor::Tensor;

/// Which channels form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i + 1)`.
    Interleaved,
    /// Pairs `(i, i + D/2)`.
    HalfSplit,
}

/// `cos` and `sin` tables `(positions.len(), dim / 2)` for frequencies `theta^(-2i/dim)`.
pub fn rope_tables(positions: &[usize], dim: usize, theta: f32) -> Result<(Tensor, Tensor)> {
    if dim == 0 || !dim.is_multiple_of(2) {
        return invalid(
            "rope_tables",
            format!("dim must be even and > 0, got {dim}"),
        );
    }
    let half = dim / 2;
    let mut c = Vec::with_capacity(positions.len() * half);
    let mut s = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for i in 0..half {
            let inv = (theta as f64).powf(-((2 * i) as f64) / dim as f64);
            let a = p as f64 * inv;
            c.push(a.cos() as f32);
            s.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(c, &[positions.len(), half])?,
        Tensor::from_vec(s, &[positions.len(), half])?,
    ))
}

/// Rotates the channel pairs of one head `x` (length D) into `out` by the angles whose cosines
/// and sines are `c`, `s` (length D/2); `sign` -1 rotates backwards (the backward pass).
#[inline]
pub(crate) fn rotate_head(
    x: &[f32],
    out: &mut [f32],
    c: &[f32],
    s: &[f32],
    layout: RopeLayout,
    sign: f32,
) {
    let half = c.len();
    let s = &s[..half];
    // one loop per layout, every slice cut to the loop's length: the loops vectorise
    match layout {
        RopeLayout::HalfSplit => {
            let (xa, xb) = x[..2 * half].split_at(half);
            let (oa, ob) = out[..2 * half].split_at_mut(half);
            for i in 0..half {
                let (a, b, sn) = (xa[i], xb[i], sign * s[i]);
                oa[i] = a * c[i] - b * sn;
                ob[i] = a * sn + b * c[i];
            }
        }
        RopeLayout::Interleaved => {
            let pairs = out[..2 * half]
                .chunks_exact_mut(2)
                .zip(x[..2 * half].chunks_exact(2));
            for ((o, xp), (&ci, &si)) in pairs.zip(c.iter().zip(s)) {
                let sn = sign * si;
                o[0] = xp[0] * ci - xp[1] * sn;
                o[1] = xp[0] * sn + xp[1] * ci;
            }
        }
    }
}

fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    d: usize,
    layout: RopeLayout,
    inverse: bool,
) -> Vec<f32> {
    let half = d / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(t * d)
        .zip(x.par_chunks(t * d))
        .for_each(|(o, xs)| {
            for ti in 0..t {
                let (c, s) = (
                    &cos[ti * half..(ti + 1) * half],
                    &sin[ti * half..(ti + 1) * half],
                );
                let xr = &xs[ti * d..(ti + 1) * d];
                rotate_head(xr, &mut o[ti * d..(ti + 1) * d], c, s, layout, sign);
            }
        });
    out
}

/// Applies RoPE to `x` `(.., T, D)` with tables `(T, D/2)` from [`rope_tables`].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 {
        return invalid("rope", format!("needs (.., T, D), got {:?}", x.shape()));
    }
    let (t, d) = (x.shape()[r - 2], x.shape()[r - 1]);
    if d % 2 != 0 || cos.shape() != [t, d / 2] || sin.shape() != [t, d / 2] {
        return invalid(
            "rope",
            format!(
                "x {:?} needs even D and cos/sin of shape [{t}, {}], got {:?} and {:?}",
                x.shape(),
                d / 2,
                cos.shape(),
                sin.shape()
            ),
        );
    }
    let (c, s) = (cos.contig(), sin.contig());
    let y = rotate(&x.contig(), &c, &s, t, d, layout, false);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        &[x],
        "rope",
        move |g: Vec<f32>, _| {
            let g = &g[..];
            // The rotation is orthogonal: the backward rotates by the opposite angle.
            Ok(vec![Some(rotate(g, &c, &s, t, d, layout, true))])
        },
    ))
}

/// Runs `row(out_row, x_row, cos_t, sin_t)` over the rows `(B T, w)` of `x` in parallel, with
/// the tables' row `t` of each row's position (`half` entries each).
fn map_rows(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (t, w, half): (usize, usize, usize),
    row: impl Fn(&mut [f32], &[f32], &[f32], &[f32]) + Sync,
) -> Vec<f32> {
    if x.is_empty() {
        return Vec::new();
    }
    let mut out = super::alloc_out(x.len());
    let rows_per = (super::chunk_len(x.len()) / w).max(1);
    out.par_chunks_mut(rows_per * w)
        .zip(x.par_chunks(rows_per * w))
        .enumerate()
        .for_each(|(ci, (o, xs))| {
            for (ri, (orow, xrow)) in o.chunks_exact_mut(w).zip(xs.chunks_exact(w)).enumerate() {
                let ti = (ci * rows_per + ri) % t;
                let (c, s) = (
                    &cos[ti * half..(ti + 1) * half],
                    &sin[ti * half..(ti + 1) * half],
                );
                row(orow, xrow, c, s);
            }
        });
    out
}

fn rotate_packed(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (t, w, d, n_rot): (usize, usize, usize, usize),
    layout: RopeLayout,
    inverse: bool,
) -> Vec<f32> {
    let sign = if inverse { -1.0 } else { 1.0 };
    map_rows(x, cos, sin, (t, w, d / 2), |orow, xrow, c, s| {
        for j in 0..n_rot {
            let xr = &xrow[j * d..(j + 1) * d];
            rotate_head(xr, &mut orow[j * d..(j + 1) * d], c, s, layout, sign);
        }
        orow[n_rot * d..].copy_from_slice(&xrow[n_rot * d..]);
    })
}

/// RoPE on a packed projection: `x` `(B, T, W)` holds heads of size `head_dim` side by side
/// (e.g. q heads, then k heads, then v heads of one fused `Linear`); the first `n_rot` heads
/// are rotated, the rest of each row is passed through. Tables `(T, head_dim / 2)` from
/// [`rope_tables`]. One pass and one buffer each way, where splitting into heads, permuting
/// and rotating would copy the projection several times; the result feeds
/// [`packed_qkv_attention`](crate::packed_qkv_attention) directly.
pub fn rope_packed(
    x: &Tensor,
    head_dim: usize,
    n_rot: usize,
    cos: &Tensor,
    sin: &Tensor,
    layout: RopeLayout,
) -> Result<Tensor> {
    let op = "rope_packed";
    let [_b, t, w] = x.dims::<3>(op)?;
    let d = head_dim;
    if d == 0 || !d.is_multiple_of(2) || n_rot * d > w {
        return invalid(
            op,
            format!(
                "{n_rot} heads of even size {d} do not fit in rows of {w} ({:?})",
                x.shape()
            ),
        );
    }
    if cos.shape() != [t, d / 2] || sin.shape() != [t, d / 2] {
        return invalid(
            op,
            format!(
                "cos/sin must be [{t}, {}], got {:?} and {:?}",
                d / 2,
                cos.shape(),
                sin.shape()
            ),
        );
    }
    let (c, s) = (cos.contig(), sin.contig());
    let dims = (t, w, d, n_rot);
    let y = rotate_packed(&x.contig(), &c, &s, dims, layout, false);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        &[x],
        op,
        move |g: Vec<f32>, _| Ok(vec![Some(rotate_packed(&g, &c, &s, dims, layout, true))]),
    ))
}

/// `(t, w, group, tail)` of [`rope_tail`].
type TailDims = (usize, usize, usize, usize);

fn rotate_tail(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (t, w, group, tail): TailDims,
    layout: RopeLayout,
    inverse: bool,
) -> Vec<f32> {
    let sign = if inverse { -1.0 } else { 1.0 };
    let keep = group - tail;
    map_rows(x, cos, sin, (t, w, tail / 2), |orow, xrow, c, s| {
        for (og, xg) in orow.chunks_exact_mut(group).zip(xrow.chunks_exact(group)) {
            og[..keep].copy_from_slice(&xg[..keep]);
            rotate_head(&xg[keep..], &mut og[keep..], c, s, layout, sign);
        }
    })
}

/// RoPE on the last `tail` channels of every group of `group` channels: `x` `(B, T, W)` with
/// `W` a multiple of `group`; the first `group - tail` channels of each group pass through.
/// This is multi-head latent attention's decoupled RoPE in one pass: queries `(B, T, H (d_nope
/// + d_rope))` rotate the rope part of each head, and the key projection `[c | k_pe]` (one
/// group) rotates its shared rope key. Tables `(T, tail / 2)` from [`rope_tables`].
pub fn rope_tail(
    x: &Tensor,
    group: usize,
    tail: usize,
    cos: &Tensor,
    sin: &Tensor,
    layout: RopeLayout,
) -> Result<Tensor> {
    let op = "rope_tail";
    let [_b, t, w] = x.dims::<3>(op)?;
    if group == 0
        || tail == 0
        || !tail.is_multiple_of(2)
        || tail > group
        || !w.is_multiple_of(group)
    {
        return invalid(
            op,
            format!(
                "an even tail of {tail} in groups of {group} does not fit rows of {w} ({:?})",
                x.shape()
            ),
        );
    }
    if cos.shape() != [t, tail / 2] || sin.shape() != [t, tail / 2] {
        return invalid(
            op,
            format!(
                "cos/sin must be [{t}, {}], got {:?} and {:?}",
                tail / 2,
                cos.shape(),
                sin.shape()
            ),
        );
    }
    let (c, s) = (cos.contig(), sin.contig());
    let dims = (t, w, group, tail);
    let y = rotate_tail(&x.contig(), &c, &s, dims, layout, false);
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        &[x],
        op,
        move |g: Vec<f32>, _| Ok(vec![Some(rotate_tail(&g, &c, &s, dims, layout, true))]),
    ))
}
