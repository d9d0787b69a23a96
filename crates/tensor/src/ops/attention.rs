//! Fused scaled-dot-product attention.
//!
//! `softmax(q k^T * scale + mask) v` for `q` `(B, H, T, Dk)`, `k` `(B, Hkv, S, Dk)`, `v`
//! `(B, Hkv, S, Dv)` with `H % Hkv == 0` (grouped-query attention when `Hkv < H`), and `Dk`
//! free to differ from `Dv` (MLA uses 192 and 128).
//!
//! - Memory: the probabilities `(B, H, T, S)` are the only `T x S` buffer kept (once per
//!   head); scores are computed into it and normalised in place, and the backward rebuilds
//!   everything else from it.
//! - Layout: q, k and v are read through their strides, so the usual
//!   `view(B, T, H, D).transpose(1, 2)` costs no copy, and the output is written in
//!   `(B, T, H, Dv)` order and returned as a `(B, H, T, Dv)` view, so the usual
//!   `transpose(1, 2).reshape(B, T, H * Dv)` costs no copy either. [`packed_qkv_attention`]
//!   goes further for multi-head attention over a fused `(B, T, 3C)` projection: its gradient
//!   is written straight into the `(B, T, 3C)` layout, with no split/transpose copies.
//! - Causal masks skip work: queries are processed in blocks of [`ROW_BLOCK`] rows and each
//!   block only multiplies against the keys it can see (3/4 of the products at T = 128; blocks
//!   of 32 skip more but the smaller products ran slower).

use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;

use super::matmul::{gemm_into, MatRef};
use crate::error::{invalid, Error, Result};
use crate::shape::broadcast_strides;
use crate::tensor::{Contig, Tensor};

/// Query rows per block when a causal mask lets blocks skip keys.
pub const ROW_BLOCK: usize = 64;

/// Blocks of at most this many query rows (decoding) use direct dot products instead of
/// `gemm`.
const DIRECT_ROWS: usize = 2;

/// The mask of [`scaled_dot_product_attention`].
#[derive(Clone, Copy)]
pub enum AttnMask<'a> {
    /// Every query sees every key.
    None,
    /// Query `i` sees keys `j <= i + (S - T)` (bottom-right aligned, so a query block at the end
    /// of a cached sequence works; equal to PyTorch's `is_causal` when `T == S`).
    Causal,
    /// An additive mask (0 or `-inf`, or any bias) broadcastable to `(B, H, T, S)`; no gradient.
    Additive(&'a Tensor),
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each parallel task writes a disjoint region through the pointer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`, not its raw field).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Where head `(b, h)` of a `(B, H, T, D)`-indexed operand lives in its buffer.
#[derive(Clone, Copy)]
struct Layout {
    off: usize,
    sb: usize,
    sh: usize,
    st: usize,
    sd: usize,
}

impl Layout {
    fn of(t: &Tensor) -> Layout {
        let s = t.strides();
        Layout {
            off: t.offset(),
            sb: s[0],
            sh: s[1],
            st: s[2],
            sd: s[3],
        }
    }
    /// Row-major `(B, X, Y, D)` buffer read as `(b, h, t, d)` with the given order of the
    /// middle dims: `bthd` true for `(B, T, H, D)`.
    fn dense(h: usize, t: usize, d: usize, bthd: bool) -> Layout {
        if bthd {
            Layout {
                off: 0,
                sb: t * h * d,
                sh: d,
                st: h * d,
                sd: 1,
            }
        } else {
            Layout {
                off: 0,
                sb: h * t * d,
                sh: t * d,
                st: d,
                sd: 1,
            }
        }
    }
    fn head_off(&self, b: usize, h: usize) -> usize {
        self.off + b * self.sb + h * self.sh
    }
}

struct Src {
    buf: Arc<Vec<f32>>,
    l: Layout,
}

impl Src {
    /// Rows `r0..` of head `(b, h)` as a strided matrix.
    fn rows(&self, b: usize, h: usize, r0: usize) -> MatRef {
        MatRef::new(
            &self.buf,
            self.l.head_off(b, h) + r0 * self.l.st,
            self.l.st,
            self.l.sd,
        )
    }
}

struct Geometry {
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    s: usize,
    dk: usize,
    dv: usize,
    scale: f32,
    causal: bool,
    shift: isize,
    mask: Option<(Contig, Vec<usize>)>,
}

impl Geometry {
    /// Row blocks `(r0, r1, kv_len)`: the keys `0..kv_len` that rows `r0..r1` may see.
    fn blocks(&self) -> Vec<(usize, usize, usize)> {
        if !self.causal {
            return vec![(0, self.t, self.s)];
        }
        (0..self.t)
            .step_by(ROW_BLOCK)
            .map(|r0| {
                let r1 = (r0 + ROW_BLOCK).min(self.t);
                let kv = (r1 as isize + self.shift).clamp(0, self.s as isize) as usize;
                (r0, r1, kv)
            })
            .collect()
    }
}

/// Forward: fills `out` (laid out by `ol`) and returns the probabilities `(B*H, T, S)`.
fn forward(g: &Geometry, q: &Src, k: &Src, v: &Src, out: SendPtr, ol: Layout) -> Vec<f32> {
    let (t, s) = (g.t, g.s);
    let group = g.h / g.hkv;
    let blocks = g.blocks();
    let mut p = super::alloc_out(g.b * g.h * t * s); // every row is written below
    p.par_chunks_mut((t * s).max(1))
        .enumerate()
        .for_each(|(bh, pb)| {
            let (bi, hi) = (bh / g.h, bh % g.h);
            let kh = hi / group;
            let mut tmp = vec![0f32; s];
            for &(r0, r1, kv) in &blocks {
                let rows = r1 - r0;
                // Decoding (a query row or two): `gemm`'s per-call set-up costs more than the
                // products, so take direct dot products over unit-stride rows.
                let direct = rows <= DIRECT_ROWS && q.l.sd == 1 && k.l.sd == 1;
                if direct {
                    for i in r0..r1 {
                        let qo = q.l.head_off(bi, hi) + i * q.l.st;
                        let qr = &q.buf[qo..qo + g.dk];
                        for j in 0..kv {
                            let ko = k.l.head_off(bi, kh) + j * k.l.st;
                            pb[i * s + j] = crate::math::dot(qr, &k.buf[ko..ko + g.dk]);
                        }
                    }
                } else {
                    // SAFETY: pb rows r0..r1 have s elements; q/k rows are valid strided matrices.
                    unsafe {
                        gemm_into(
                            rows,
                            kv,
                            g.dk,
                            pb[r0 * s..].as_mut_ptr(),
                            s,
                            false,
                            q.rows(bi, hi, r0),
                            k.rows(bi, kh, 0).t(),
                            Parallelism::None,
                        )
                    };
                }
                for i in r0..r1 {
                    let row = &mut pb[i * s..(i + 1) * s];
                    let lim = if g.causal {
                        (i as isize + g.shift + 1).clamp(0, kv as isize) as usize
                    } else {
                        kv
                    };
                    for x in row[..lim].iter_mut() {
                        *x *= g.scale;
                    }
                    row[lim..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                    if let Some((m, ms)) = &g.mask {
                        let base = bi * ms[0] + hi * ms[1] + i * ms[2];
                        for (j, x) in row[..kv].iter_mut().enumerate() {
                            *x += m[base + j * ms[3]];
                        }
                    }
                    tmp[..kv].copy_from_slice(&row[..kv]);
                    super::reduce::softmax_row(&tmp[..kv], &mut row[..kv], false);
                    row[kv..].iter_mut().for_each(|x| *x = 0.0);
                }
                if direct && v.l.sd == 1 && ol.sd == 1 {
                    for i in r0..r1 {
                        let mut acc = vec![0f32; g.dv];
                        for j in 0..kv {
                            let pij = pb[i * s + j];
                            let vo = v.l.head_off(bi, kh) + j * v.l.st;
                            let (acc, vr) = (&mut acc[..], &v.buf[vo..vo + g.dv]);
                            for (a, &x) in acc.iter_mut().zip(vr) {
                                *a += pij * x;
                            }
                        }
                        // SAFETY: head (bi, hi) writes its own row i of the output, disjoint
                        // per task.
                        unsafe {
                            let o = out.get().add(ol.head_off(bi, hi) + i * ol.st);
                            std::ptr::copy_nonoverlapping(acc.as_ptr(), o, g.dv);
                        }
                    }
                    continue;
                }
                // SAFETY: head (bi, hi) writes its own rows r0..r1 of the output, disjoint per task.
                unsafe {
                    gemm_into(
                        rows,
                        g.dv,
                        kv,
                        out.get().add(ol.head_off(bi, hi) + r0 * ol.st),
                        ol.st,
                        false,
                        MatRef::new(pb, r0 * s, s, 1),
                        v.rows(bi, kh, 0),
                        Parallelism::None,
                    )
                };
            }
        });
    p
}

/// Destinations of the backward: `(buffer, layout)` for dq, dk, dv; dk and dv are accumulated
/// into, so they must start zeroed.
struct Dest {
    dq: (SendPtr, Layout),
    dk: (SendPtr, Layout),
    dv: (SendPtr, Layout),
}

#[allow(clippy::too_many_arguments)]
fn backward(g: &Geometry, p: &[f32], go: &Src, q: &Src, k: &Src, v: &Src, d: &Dest) {
    let (t, s) = (g.t, g.s);
    let group = g.h / g.hkv;
    let blocks = g.blocks();
    (0..g.b * g.hkv).into_par_iter().for_each(|bk| {
        let (bi, kh) = (bk / g.hkv, bk % g.hkv);
        let mut dp = vec![0f32; ROW_BLOCK.max(if g.causal { 0 } else { t }) * s];
        let dk_at = d.dk.1.head_off(bi, kh);
        let dv_at = d.dv.1.head_off(bi, kh);
        for hi in kh * group..(kh + 1) * group {
            let pb = &p[(bi * g.h + hi) * t * s..(bi * g.h + hi + 1) * t * s];
            let dq_at = d.dq.1.head_off(bi, hi);
            for &(r0, r1, kv) in &blocks {
                let rows = r1 - r0;
                let pm = MatRef::new(pb, r0 * s, s, 1);
                let dom = go.rows(bi, hi, r0);
                // SAFETY: destinations are sized by the caller for (B, H|Hkv, T|S, D) under
                // their layouts; this task alone writes head (bi, kh) of dk/dv and heads of
                // its group in dq. dp holds rows x s.
                unsafe {
                    // dV[:kv] += P[r0..r1, :kv]^T dO[r0..r1]
                    gemm_into(
                        kv,
                        g.dv,
                        rows,
                        d.dv.0.get().add(dv_at),
                        d.dv.1.st,
                        true,
                        pm.t(),
                        dom,
                        Parallelism::None,
                    );
                    // dP = dO V[:kv]^T
                    gemm_into(
                        rows,
                        kv,
                        g.dv,
                        dp.as_mut_ptr(),
                        s,
                        false,
                        dom,
                        v.rows(bi, kh, 0).t(),
                        Parallelism::None,
                    );
                }
                // dS = P * (dP - rowsum(P * dP)) * scale, in place in dp
                for i in 0..rows {
                    let pr = &pb[(r0 + i) * s..(r0 + i) * s + kv];
                    let dr = &mut dp[i * s..i * s + kv];
                    let dd = crate::math::dot(pr, dr);
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = pv * (*x - dd) * g.scale;
                    }
                }
                let ds = MatRef::new(&dp, 0, s, 1);
                unsafe {
                    // dQ[r0..r1] = dS K[:kv]
                    gemm_into(
                        rows,
                        g.dk,
                        kv,
                        d.dq.0.get().add(dq_at + r0 * d.dq.1.st),
                        d.dq.1.st,
                        false,
                        ds,
                        k.rows(bi, kh, 0),
                        Parallelism::None,
                    );
                    // dK[:kv] += dS^T Q[r0..r1]
                    gemm_into(
                        kv,
                        g.dk,
                        rows,
                        d.dk.0.get().add(dk_at),
                        d.dk.1.st,
                        true,
                        ds.t(),
                        q.rows(bi, hi, r0),
                        Parallelism::None,
                    );
                }
            }
        }
    });
}

fn geometry(
    op: &'static str,
    dims: [usize; 7],
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Geometry> {
    let [b, h, hkv, t, s, dk, dv] = dims;
    let mask_data = match mask {
        AttnMask::Additive(m) => {
            let out = [b, h, t, s];
            let bs = crate::shape::broadcast_shape(op, m.shape(), &out)?;
            if bs != out {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: out.to_vec(),
                    rhs: m.shape().to_vec(),
                });
            }
            Some((m.contig(), broadcast_strides(m.shape(), &out)))
        }
        _ => None,
    };
    Ok(Geometry {
        b,
        h,
        hkv,
        t,
        s,
        dk,
        dv,
        scale: scale.unwrap_or(1.0 / (dk as f32).sqrt()),
        causal: matches!(mask, AttnMask::Causal),
        shift: s as isize - t as isize,
        mask: mask_data,
    })
}

/// See the module docs. `scale` defaults to `1 / sqrt(Dk)`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Tensor> {
    attend("scaled_dot_product_attention", q, k, v, mask, scale, false)
}

/// [`scaled_dot_product_attention`] on operands stored token-major: `q` `(B, T, H, Dk)`, `k`
/// `(B, S, Hkv, Dk)`, `v` `(B, S, Hkv, Dv)` (any strides, e.g. views into a projection),
/// returning `(B, T, H, Dv)` contiguous, so `reshape(B, T, H Dv)` feeds the output projection
/// directly. The gradients come back in the same token-major layout: no transposes of the
/// heads forward or backward (multi-head latent attention uses it with `Dk != Dv`).
pub fn attention_bthd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Tensor> {
    attend("attention_bthd", q, k, v, mask, scale, true)
}

/// Both attention entry points: operands indexed `(B, H, T, D)`, or `(B, T, H, D)` when
/// `bthd`. The output is always written token-major, `(B, T, H, Dv)`: returned as it is
/// (`bthd`) or as its `(B, H, T, Dv)` view; gradients come back in the operands' order of
/// dims.
fn attend(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask<'_>,
    scale: Option<f32>,
    bthd: bool,
) -> Result<Tensor> {
    // (B, X, Y, D) dims with X, Y = H, T (or T, H when token-major)
    let dims = |x: &Tensor| -> Result<[usize; 4]> {
        let [b, x1, x2, d] = x.dims::<4>(op)?;
        Ok(if bthd { [b, x2, x1, d] } else { [b, x1, x2, d] })
    };
    let [b, h, t, dk] = dims(q)?;
    let [bk, hkv, s, dk2] = dims(k)?;
    let [bv, hv, sv, dv] = dims(v)?;
    if bk != b || bv != b || dk2 != dk || hv != hkv || sv != s || hkv == 0 || h % hkv != 0 {
        let want = if bthd {
            "q (B,T,H,D), k (B,S,Hkv,D), v (B,S,Hkv,Dv)"
        } else {
            "q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,Dv)"
        };
        return invalid(
            op,
            format!(
                "incompatible q {:?}, k {:?}, v {:?} (want {want}, H % Hkv == 0)",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        );
    }
    let geo = geometry(op, [b, h, hkv, t, s, dk, dv], mask, scale)?;
    let src = |x: &Tensor| {
        let mut l = Layout::of(x);
        if bthd {
            // (b, t, h, d) strides read as the (b, h, t, d) layout the kernels index
            (l.sh, l.st) = (l.st, l.sh);
        }
        Src {
            buf: x.storage(),
            l,
        }
    };
    let (qs, ks, vs) = (src(q), src(k), src(v));
    // every head writes all its rows, unless there is no key: then the output is zeros (as in
    // PyTorch: an empty weighted sum)
    let mut out = if s == 0 {
        vec![0f32; b * t * h * dv]
    } else {
        super::alloc_out(b * t * h * dv)
    };
    let ol = Layout::dense(h, t, dv, true);
    let p = forward(&geo, &qs, &ks, &vs, SendPtr(out.as_mut_ptr()), ol);
    let (shape, strides) = if bthd {
        (vec![b, t, h, dv], vec![t * h * dv, h * dv, dv, 1])
    } else {
        // (B, H, T, Dv) view of the (B, T, H, Dv) buffer
        (vec![b, h, t, dv], vec![t * h * dv, dv, h * dv, 1])
    };
    Ok(Tensor::from_op_strided(
        Arc::new(out),
        shape,
        strides,
        0,
        &[q, k, v],
        op,
        move |g: Vec<f32>, _| {
            // g: contiguous in the output's shape
            let go = Src {
                buf: Arc::new(g),
                l: Layout::dense(h, t, dv, bthd),
            };
            // every row of every head is written (rows that see no key get k = 0 products,
            // zeros), unless there is no key at all
            let mut gq = if s == 0 {
                vec![0f32; b * h * t * dk]
            } else {
                super::alloc_out(b * h * t * dk)
            };
            let mut gk = vec![0f32; b * hkv * s * dk];
            let mut gv = vec![0f32; b * hkv * s * dv];
            let dest = Dest {
                dq: (SendPtr(gq.as_mut_ptr()), Layout::dense(h, t, dk, bthd)),
                dk: (SendPtr(gk.as_mut_ptr()), Layout::dense(hkv, s, dk, bthd)),
                dv: (SendPtr(gv.as_mut_ptr()), Layout::dense(hkv, s, dv, bthd)),
            };
            backward(&geo, &p, &go, &qs, &ks, &vs, &dest);
            Ok(vec![Some(gq), Some(gk), Some(gv)])
        },
    ))
}

/// Multi-head attention over a fused projection: `qkv` `(B, T, 3 * H * D)` holds q, k and v
/// side by side (the layout of a single `Linear(C, 3C)`, GPT-2's `c_attn`); the result is
/// `(B, T, H * D)`, ready for the output projection. Same maths as
/// [`scaled_dot_product_attention`] on the split, transposed views, without any copies
/// forward or backward.
pub fn packed_qkv_attention(
    qkv: &Tensor,
    heads: usize,
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Tensor> {
    packed_gqa_attention(qkv, heads, heads, mask, scale)
}

/// [`packed_qkv_attention`] with grouped-query attention: `qkv` `(B, T, (H + 2 Hkv) D)` holds
/// H query heads, then Hkv key heads, then Hkv value heads (query head `i` uses key/value head
/// `i / (H / Hkv)`); the result is `(B, T, H * D)`.
pub fn packed_gqa_attention(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Tensor> {
    let op = "packed_qkv_attention";
    let [b, t, c3] = qkv.dims::<3>(op)?;
    let groups = heads + 2 * kv_heads;
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !c3.is_multiple_of(groups)
    {
        return invalid(
            op,
            format!("last dim {c3} is not (heads {heads} + 2 x kv heads {kv_heads}) x head dim, with heads a multiple of kv heads"),
        );
    }
    let d = c3 / groups;
    let c = heads * d;
    let starts = [0, heads * d, (heads + kv_heads) * d];
    let geo = geometry(op, [b, heads, kv_heads, t, t, d, d], mask, scale)?;
    let (buf, base) = if qkv.is_contiguous() {
        (qkv.storage(), qkv.offset())
    } else {
        (Arc::new(qkv.contig().to_vec()), 0)
    };
    let part = move |i: usize| Layout {
        off: starts[i],
        sb: t * c3,
        sh: d,
        st: c3,
        sd: 1,
    };
    let src = |i: usize| Src {
        buf: buf.clone(),
        l: Layout {
            off: base + starts[i],
            ..part(i)
        },
    };
    let (qs, ks, vs) = (src(0), src(1), src(2));
    let mut out = super::alloc_out(b * t * c); // every head writes all its rows
    let p = forward(
        &geo,
        &qs,
        &ks,
        &vs,
        SendPtr(out.as_mut_ptr()),
        Layout::dense(heads, t, d, true),
    );
    Ok(Tensor::from_op(
        out,
        vec![b, t, c],
        &[qkv],
        op,
        move |g: Vec<f32>, _| {
            let go = Src {
                buf: Arc::new(g),
                l: Layout::dense(heads, t, d, true),
            };
            let mut gqkv = vec![0f32; b * t * c3];
            let ptr = SendPtr(gqkv.as_mut_ptr());
            let dest = Dest {
                dq: (ptr, part(0)),
                dk: (ptr, part(1)),
                dv: (ptr, part(2)),
            };
            backward(&geo, &p, &go, &qs, &ks, &vs, &dest);
            Ok(vec![Some(gqkv)])
        },
    ))
}
