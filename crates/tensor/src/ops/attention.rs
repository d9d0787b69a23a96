//! Fused scaled-dot-product attention.
//!
//! `softmax(q k^T * scale + mask) v` for `q` `(B, H, T, Dk)`, `k` `(B, Hkv, S, Dk)`, `v`
//! `(B, Hkv, S, Dv)` with `H % Hkv == 0` (grouped-query attention when `Hkv < H`), and `Dk`
//! free to differ from `Dv` (MLA uses 192 and 128).
//!
//! Memory: the probabilities `(B, H, T, S)` are the only `T x S` buffer kept (once per head);
//! scores are computed into it and normalised in place, and the backward rebuilds everything
//! else from it. q, k and v are read through their strides, so the usual
//! `view(B, T, H, D).transpose(1, 2)` costs no copy, and the output is written in
//! `(B, T, H, Dv)` order and returned as a `(B, H, T, Dv)` view, so that the usual
//! `transpose(1, 2).reshape(B, T, H * Dv)` costs no copy either.

use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;

use super::matmul::{gemm_into, MatRef};
use crate::error::{invalid, Error, Result};
use crate::shape::broadcast_strides;
use crate::tensor::Tensor;

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

struct Qkv {
    buf: Arc<Vec<f32>>,
    off: usize,
    st: Vec<usize>,
}

impl Qkv {
    fn of(t: &Tensor) -> Qkv {
        Qkv {
            buf: t.storage(),
            off: t.offset(),
            st: t.strides().to_vec(),
        }
    }
    fn head(&self, b: usize, h: usize) -> MatRef {
        MatRef::new(&self.buf, self.off + b * self.st[0] + h * self.st[1], self.st[2], self.st[3])
    }
}

/// See the module docs. `scale` defaults to `1 / sqrt(Dk)`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask<'_>,
    scale: Option<f32>,
) -> Result<Tensor> {
    let op = "scaled_dot_product_attention";
    let [b, h, t, dk] = q.dims::<4>(op)?;
    let [bk, hkv, s, dk2] = k.dims::<4>(op)?;
    let [bv, hv, sv, dv] = v.dims::<4>(op)?;
    if bk != b || bv != b || dk2 != dk || hv != hkv || sv != s || hkv == 0 || h % hkv != 0 {
        return invalid(
            op,
            format!(
                "incompatible q {:?}, k {:?}, v {:?} (want q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,Dv), H % Hkv == 0)",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        );
    }
    let group = h / hkv;
    let scale = scale.unwrap_or(1.0 / (dk as f32).sqrt());
    // Additive mask read through broadcast strides over (B, H, T, S).
    let add_mask = match mask {
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
    let causal = matches!(mask, AttnMask::Causal);
    let shift = s as isize - t as isize;
    let (qo, ko, vo) = (Qkv::of(q), Qkv::of(k), Qkv::of(v));

    let mut p = vec![0f32; b * h * t * s];
    let mut out = vec![0f32; b * t * h * dv];
    let optr = SendPtr(out.as_mut_ptr());
    p.par_chunks_mut((t * s).max(1)).enumerate().for_each(|(bh, pb)| {
        let (bi, hi) = (bh / h, bh % h);
        let kh = hi / group;
        let mut tmp = vec![0f32; s];
        // SAFETY: pb is t x s; q/k heads are valid strided matrices.
        unsafe {
            gemm_into(t, s, dk, pb.as_mut_ptr(), s, false, qo.head(bi, hi), ko.head(bi, kh).t(), Parallelism::None)
        };
        for i in 0..t {
            let row = &mut pb[i * s..(i + 1) * s];
            for (j, x) in row.iter_mut().enumerate() {
                *x *= scale;
                if causal && j as isize > i as isize + shift {
                    *x = f32::NEG_INFINITY;
                }
                if let Some((m, ms)) = &add_mask {
                    *x += m[bi * ms[0] + hi * ms[1] + i * ms[2] + j * ms[3]];
                }
            }
            tmp.copy_from_slice(row);
            super::reduce::softmax_row(&tmp, row, false);
        }
        let dst = optr;
        // SAFETY: head (bi, hi) writes rows bi*t*h*dv + i*h*dv + hi*dv .. +dv, disjoint per head.
        unsafe {
            gemm_into(
                t,
                dv,
                s,
                dst.get().add(bi * t * h * dv + hi * dv),
                h * dv,
                false,
                MatRef::new(pb, 0, s, 1),
                vo.head(bi, kh),
                Parallelism::None,
            )
        };
    });
    let p = Arc::new(p);
    // (B, H, T, Dv) view of the (B, T, H, Dv) buffer
    let strides = vec![t * h * dv, dv, h * dv, 1];
    Ok(Tensor::from_op_strided(
        Arc::new(out),
        vec![b, h, t, dv],
        strides,
        0,
        &[q, k, v],
        op,
        move |g, _needs| {
            // g: (B, H, T, Dv) contiguous
            let mut gq = vec![0f32; b * h * t * dk];
            let mut gk = vec![0f32; b * hkv * s * dk];
            let mut gv = vec![0f32; b * hkv * s * dv];
            let gqp = SendPtr(gq.as_mut_ptr());
            gk.par_chunks_mut(s * dk)
                .zip(gv.par_chunks_mut(s * dv))
                .enumerate()
                .for_each(|(bk, (gkh, gvh))| {
                    let (bi, kh) = (bk / hkv, bk % hkv);
                    let mut dp = vec![0f32; t * s];
                    for hi in kh * group..(kh + 1) * group {
                        let pb = &p[(bi * h + hi) * t * s..(bi * h + hi + 1) * t * s];
                        let go = MatRef::new(g, (bi * h + hi) * t * dv, dv, 1);
                        let pm = MatRef::new(pb, 0, s, 1);
                        // SAFETY: all buffers sized as described; gq rows of head (bi, hi) are
                        // written by this task only.
                        unsafe {
                            // dV += P^T dO
                            gemm_into(s, dv, t, gvh.as_mut_ptr(), dv, true, pm.t(), go, Parallelism::None);
                            // dP = dO V^T
                            gemm_into(t, s, dv, dp.as_mut_ptr(), s, false, go, vo.head(bi, kh).t(), Parallelism::None);
                        }
                        // dS = P * (dP - rowsum(P * dP)) * scale, in place in dp
                        for i in 0..t {
                            let pr = &pb[i * s..(i + 1) * s];
                            let dr = &mut dp[i * s..(i + 1) * s];
                            let d = crate::math::dot(pr, dr);
                            for (x, &pv) in dr.iter_mut().zip(pr) {
                                *x = pv * (*x - d) * scale;
                            }
                        }
                        let ds = MatRef::new(&dp, 0, s, 1);
                        unsafe {
                            // dQ = dS K
                            gemm_into(
                                t,
                                dk,
                                s,
                                gqp.get().add((bi * h + hi) * t * dk),
                                dk,
                                false,
                                ds,
                                ko.head(bi, kh),
                                Parallelism::None,
                            );
                            // dK += dS^T Q
                            gemm_into(s, dk, t, gkh.as_mut_ptr(), dk, true, ds.t(), qo.head(bi, hi), Parallelism::None);
                        }
                    }
                });
            Ok(vec![Some(gq), Some(gk), Some(gv)])
        },
    ))
}
