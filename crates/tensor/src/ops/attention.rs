//! Fused scaled-dot-product attention.
//!
//! `softmax(q k^T * scale + mask) v` for `q` `(B, H, T, Dk)`, `k` `(B, Hkv, S, Dk)`, `v`
//! `(B, Hkv, S, Dv)` with `H % Hkv == 0` (grouped-query attention when `Hkv < H`), and `Dk`
//! free to differ from `Dv` (MLA uses 192 and 128).
//!
//! - Memory: the probabilities `(B, H, T, S)` are the only `T x S` buffer kept (once per
//!   head; on the register-tile path rows are `S` rounded up to a whole, odd number of
//!   16-float tiles, so 6% more at S = 256); scores are computed into it and normalised in
//!   place, and the backward rebuilds everything else from it. A row whose visible scores
//!   hold a NaN gives NaN probabilities on both paths; on the register-tile path its hidden
//!   ones stay 0, so the NaN does not reach the gradients of keys that row cannot see.
//! - Layout: q, k and v are read through their strides, so the usual
//!   `view(B, T, H, D).transpose(1, 2)` costs no copy, and the output is written in
//!   `(B, T, H, Dv)` order and returned as a `(B, H, T, Dv)` view, so the usual
//!   `transpose(1, 2).reshape(B, T, H * Dv)` costs no copy either. [`packed_qkv_attention`]
//!   goes further for multi-head attention over a fused `(B, T, 3C)` projection: its gradient
//!   is written straight into the `(B, T, 3C)` layout, with no split/transpose copies.
//! - Causal masks skip work. On x86-64 with AVX2 and FMA the products run on register tiles of
//!   6 x 16 ([`attn_kernel`](super::attn_kernel)): each head's keys and values are packed once,
//!   and every tile of 6 query rows stops at the diagonal (at T = 256 ~53% of the score square
//!   is computed). Elsewhere, and when decoding one or two rows, `gemm` runs the products: queries
//!   in blocks of [`ROW_BLOCK`] rows, each multiplying against the keys it can see (3/4 of the
//!   products at T = 128). `FERROLAB_PLAIN_ATTENTION=1` forces the `gemm` path (for A/B runs);
//!   a test compares the two paths.

use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;

use super::attn_kernel::{self, Dst, Lhs, Panels, MR, NR};
use super::matmul::{gemm_into, MatRef};
use crate::error::{invalid, Error, Result};
use crate::shape::broadcast_strides;
use crate::tensor::{Contig, Tensor};

/// Whether the `gemm` path is forced (`FERROLAB_PLAIN_ATTENTION=1`, read once): for A/B runs
/// against the register-tile kernels.
fn plain_attention() -> bool {
    static PLAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLAIN.get_or_init(|| std::env::var("FERROLAB_PLAIN_ATTENTION").is_ok_and(|v| v == "1"))
}

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
    /// Whether the register-tile kernels run the products ([`attn_kernel`]).
    fast: bool,
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

    /// The keys `0..lim(i)` query row `i` sees.
    fn lim(&self, i: usize) -> usize {
        if self.causal {
            (i as isize + self.shift + 1).clamp(0, self.s as isize) as usize
        } else {
            self.s
        }
    }

    /// The first of the rows `r0..r1` that sees key `j` (`r1` when none does).
    fn first_row_seeing(&self, j: usize, r0: usize, r1: usize) -> usize {
        if self.causal {
            (j as isize - self.shift).clamp(r0 as isize, r1 as isize) as usize
        } else {
            r0
        }
    }
}

/// Forward: fills `out` (laid out by `ol`) and returns the probabilities `(B*H, T, S)` (rows
/// [`fast_stride`]`(S)` apart on the register-tile path).
fn forward(g: &Geometry, q: &Src, k: &Src, v: &Src, out: SendPtr, ol: Layout) -> Vec<f32> {
    if g.s == 0 {
        return Vec::new(); // no key: the caller's output is zeros
    }
    if g.fast {
        return forward_fast(g, q, k, v, out, ol);
    }
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
    if g.s == 0 {
        // no key: dq stays the caller's zeros (the gemm path would index the empty k and v)
        return;
    }
    if g.fast {
        return backward_fast(g, p, go, q, k, v, d);
    }
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

/// Query rows per block of the register-tile backward (sixteen tiles of [`MR`] rows; blocks of
/// 48 were 2-5% slower at T = 256, the transposed products adding into dK and dV twice as often).
const FAST_BLOCK: usize = 16 * MR;

/// The row stride of the probabilities on the register-tile path: `s` rounded up to whole
/// tiles (so a tile's 16 columns are always inside the row) and to an odd number of
/// 64-byte lines. Rows 1 KB apart (`s = 256`) fall into 4 of the first-level cache's 64 sets,
/// and the backward reads columns of P down 96 rows.
fn fast_stride(s: usize) -> usize {
    let sp = s.next_multiple_of(NR);
    if (sp / NR).is_multiple_of(2) {
        sp + NR
    } else {
        sp
    }
}

/// Softmax of row `i` of the (already scaled) scores in place over its visible keys `0..lim`,
/// zeros after. The scores are there up to `lim` rounded up to a whole tile: the hidden ones
/// among them are set to `-inf` first, so the loops run over whole chunks.
fn softmax_scores(g: &Geometry, row: &mut [f32], bi: usize, hi: usize, i: usize) {
    let lim = g.lim(i);
    let n = lim.next_multiple_of(NR).min(row.len());
    if let Some((m, ms)) = &g.mask {
        let base = bi * ms[0] + hi * ms[1] + i * ms[2];
        for (j, x) in row[..lim].iter_mut().enumerate() {
            *x += m[base + j * ms[3]];
        }
    }
    row[lim..n].fill(f32::NEG_INFINITY);
    let m = crate::math::max(&row[..n]);
    // all hidden (or -inf): zeros, as `softmax_row`; a NaN goes on to give NaN
    if m == f32::NEG_INFINITY && !row[..n].iter().any(|v| v.is_nan()) {
        row.fill(0.0);
        return;
    }
    let inv = 1.0 / crate::math::exp_into_self(&mut row[..n], m);
    for x in row[..lim].iter_mut() {
        *x *= inv;
    }
    row[n..].fill(0.0);
}

/// [`forward`] with the register-tile kernels. Each task packs K^T and V of its key/value head
/// once; then one tile of query rows at a time: its scores up to the diagonal, their softmax
/// and its output, while its rows of P are in the first-level cache. P rows are
/// [`fast_stride`] apart.
///
/// A task is one query head, or, with grouped-query attention and at least four tasks per
/// thread that way, a whole group of query heads sharing one packing (it was once per query
/// head).
fn forward_fast(g: &Geometry, q: &Src, k: &Src, v: &Src, out: SendPtr, ol: Layout) -> Vec<f32> {
    let (t, s, sp) = (g.t, g.s, fast_stride(g.s));
    let group = g.h / g.hkv;
    let heads_per_task = if group > 1 && g.b * g.hkv >= 4 * rayon::current_num_threads() {
        group
    } else {
        1
    };
    let mut p = super::alloc_out(g.b * g.h * t * sp); // every row is written below
    p.par_chunks_mut((heads_per_task * t * sp).max(1))
        .enumerate()
        .for_each_init(
            || (Panels::default(), Panels::default()),
            |(kt, vp), (task, pt)| {
                // a task's heads share one key/value head: a whole group, or a single head
                let first = task * heads_per_task;
                let (bi, kh) = (first / g.h, first % g.h / group);
                // SAFETY: k and v hold the (B, Hkv, S, D) elements their layouts index.
                unsafe {
                    // K^T (dk x s) and V (s x dv) in panels of 16 columns
                    let ko = k.l.head_off(bi, kh);
                    kt.pack(k.buf.as_ptr().wrapping_add(ko), k.l.sd, k.l.st, g.dk, s);
                    let vo = v.l.head_off(bi, kh);
                    vp.pack(v.buf.as_ptr().wrapping_add(vo), v.l.st, v.l.sd, s, g.dv);
                }
                for (j, pb) in pt.chunks_mut((t * sp).max(1)).enumerate() {
                    let hi = (first + j) % g.h;
                    forward_head(g, q, (kt, vp), (bi, hi), pb, out, ol);
                }
            },
        );
    p
}

/// One head `(bi, hi)` of [`forward_fast`], on its packed K^T and V: its rows of P into `pb`
/// (`t` rows of [`fast_stride`]), its output into `out`.
fn forward_head(
    g: &Geometry,
    q: &Src,
    (kt, vp): (&Panels, &Panels),
    (bi, hi): (usize, usize),
    pb: &mut [f32],
    out: SendPtr,
    ol: Layout,
) {
    let (t, sp) = (g.t, fast_stride(g.s));
    let q_at = q.l.head_off(bi, hi);
    // SAFETY (all blocks below): q holds the (B, H, T, D) elements its layout indexes; pb holds
    // t rows of sp; this task alone writes head (bi, hi) of the output (rows ol.st apart, unit
    // column stride); every tile stays inside those.
    for i0 in (0..t).step_by(MR) {
        let mr = MR.min(t - i0);
        let kv = g.lim(i0 + mr - 1);
        // scores = Q K^T * scale, the tiles with at least one visible key
        let a = Lhs {
            ptr: unsafe { q.buf.as_ptr().add(q_at + i0 * q.l.st) },
            rs: q.l.st,
            ks: q.l.sd,
        };
        let np = kv.div_ceil(NR);
        let c = Dst {
            ptr: pb[i0 * sp..].as_mut_ptr(),
            ld: sp,
            cols: np * NR,
            add: false,
            scale: g.scale,
        };
        unsafe { attn_kernel::tiles(mr, g.dk, a, kt, 0, np, c) };
        for i in i0..i0 + mr {
            softmax_scores(g, &mut pb[i * sp..(i + 1) * sp], bi, hi, i);
        }
        // out = P V over the tile's visible keys (P is zero past each row's own)
        let a = Lhs {
            ptr: pb[i0 * sp..].as_ptr(),
            rs: sp,
            ks: 1,
        };
        let c = Dst {
            ptr: unsafe { out.get().add(ol.head_off(bi, hi) + i0 * ol.st) },
            ld: ol.st,
            cols: g.dv,
            add: false,
            scale: 1.0,
        };
        unsafe { attn_kernel::tiles(mr, kv, a, vp, 0, g.dv.div_ceil(NR), c) };
    }
}

/// `C[0..kv] += A[r0..r1, 0..kv]^T Y[r0..r1]` for the backward's `dK` and `dV`: `a` points at
/// row `r0` of `A` (rows `sp` apart), `y` holds rows `r0..r1` of `Y` (`n` columns) in panels,
/// `c` is row 0 of `C` (rows `ldc` apart, unit column stride). Each tile of keys starts at the
/// first row that sees it.
///
/// # Safety
/// As [`attn_kernel::tile`] for every tile: `A` and `C` must hold the rows and columns named.
#[allow(clippy::too_many_arguments)]
unsafe fn add_transposed_product(
    g: &Geometry,
    (r0, r1, kv): (usize, usize, usize),
    a: *const f32,
    y: &Panels,
    n: usize,
    c: *mut f32,
    ldc: usize,
) {
    let sp = fast_stride(g.s);
    for j0 in (0..kv).step_by(MR) {
        let mr = MR.min(kv - j0);
        let i_lo = g.first_row_seeing(j0, r0, r1);
        if i_lo == r1 {
            continue;
        }
        let lhs = Lhs {
            ptr: a.add((i_lo - r0) * sp + j0),
            rs: 1,
            ks: sp,
        };
        let dst = Dst {
            ptr: c.add(j0 * ldc),
            ld: ldc,
            cols: n,
            add: true,
            scale: 1.0,
        };
        attn_kernel::tiles(mr, r1 - i_lo, lhs, y, i_lo - r0, n.div_ceil(NR), dst);
    }
}

/// [`backward`] with the register-tile kernels. Per key/value head, V^T and K are packed
/// once; per block of [`FAST_BLOCK`] query rows, the rows of dO and Q are packed, and the
/// block's share of dK and dV is added into them ([`add_transposed_product`]).
fn backward_fast(g: &Geometry, p: &[f32], go: &Src, q: &Src, k: &Src, v: &Src, d: &Dest) {
    let (t, s, sp) = (g.t, g.s, fast_stride(g.s));
    let group = g.h / g.hkv;
    (0..g.b * g.hkv).into_par_iter().for_each(|bk| {
        let (bi, kh) = (bk / g.hkv, bk % g.hkv);
        let (mut vt, mut kp, mut dop, mut qp) = <(Panels, Panels, Panels, Panels)>::default();
        let mut dp = vec![0f32; FAST_BLOCK * sp];
        // SAFETY (all blocks below): sources hold the (B, H|Hkv, T|S, D) elements their layouts
        // index; destinations are sized by the caller for their layouts (unit column
        // stride); this task alone writes head (bi, kh) of dk/dv and the heads of its group
        // in dq; p holds (B*H, T) rows of sp and dp FAST_BLOCK of them; every tile stays
        // inside those.
        unsafe {
            // V^T (dv x s) and K (s x dk) in panels of 16 columns
            vt.pack(
                v.buf.as_ptr().wrapping_add(v.l.head_off(bi, kh)),
                v.l.sd,
                v.l.st,
                g.dv,
                s,
            );
            kp.pack(
                k.buf.as_ptr().wrapping_add(k.l.head_off(bi, kh)),
                k.l.st,
                k.l.sd,
                s,
                g.dk,
            );
        }
        for hi in kh * group..(kh + 1) * group {
            let pb = &p[(bi * g.h + hi) * t * sp..(bi * g.h + hi + 1) * t * sp];
            let dq_at = d.dq.1.head_off(bi, hi);
            let (go_at, q_at) = (go.l.head_off(bi, hi), q.l.head_off(bi, hi));
            for r0 in (0..t).step_by(FAST_BLOCK) {
                let r1 = (r0 + FAST_BLOCK).min(t);
                let nb = r1 - r0;
                let kv = g.lim(r1 - 1);
                unsafe {
                    let gp = go.buf.as_ptr().add(go_at + r0 * go.l.st);
                    dop.pack(gp, go.l.st, go.l.sd, nb, g.dv);
                    let qr = q.buf.as_ptr().add(q_at + r0 * q.l.st);
                    qp.pack(qr, q.l.st, q.l.sd, nb, g.dk);
                }
                let rows = (r0, r1, kv);
                // dV[:kv] += P[r0..r1, :kv]^T dO[r0..r1]
                unsafe {
                    let c = d.dv.0.get().wrapping_add(d.dv.1.head_off(bi, kh));
                    add_transposed_product(
                        g,
                        rows,
                        pb[r0 * sp..].as_ptr(),
                        &dop,
                        g.dv,
                        c,
                        d.dv.1.st,
                    );
                }
                // dP = dO V^T, the tiles with at least one visible key
                for i0 in (r0..r1).step_by(MR) {
                    let mr = MR.min(r1 - i0);
                    let a = Lhs {
                        ptr: unsafe { go.buf.as_ptr().add(go_at + i0 * go.l.st) },
                        rs: go.l.st,
                        ks: go.l.sd,
                    };
                    let np = g.lim(i0 + mr - 1).div_ceil(NR);
                    let c = Dst {
                        ptr: dp[(i0 - r0) * sp..].as_mut_ptr(),
                        ld: sp,
                        cols: np * NR,
                        add: false,
                        scale: 1.0,
                    };
                    unsafe { attn_kernel::tiles(mr, g.dv, a, &vt, 0, np, c) };
                }
                // dS = P * (dP - rowsum(P * dP)) * scale over each row's keys, zeros after up
                // to the block's kv (the products below read no further)
                for i in r0..r1 {
                    let l = g.lim(i);
                    let pr = &pb[i * sp..i * sp + l];
                    let dr = &mut dp[(i - r0) * sp..(i - r0) * sp + kv];
                    let dd = crate::math::dot(pr, &dr[..l]);
                    for (x, &pv) in dr[..l].iter_mut().zip(pr) {
                        *x = pv * (*x - dd) * g.scale;
                    }
                    dr[l..].fill(0.0);
                }
                // dQ[r0..r1] = dS K over each tile's visible keys
                for i0 in (r0..r1).step_by(MR) {
                    let mr = MR.min(r1 - i0);
                    let a = Lhs {
                        ptr: dp[(i0 - r0) * sp..].as_ptr(),
                        rs: sp,
                        ks: 1,
                    };
                    let kc = g.lim(i0 + mr - 1);
                    let c = Dst {
                        ptr: unsafe { d.dq.0.get().add(dq_at + i0 * d.dq.1.st) },
                        ld: d.dq.1.st,
                        cols: g.dk,
                        add: false,
                        scale: 1.0,
                    };
                    unsafe { attn_kernel::tiles(mr, kc, a, &kp, 0, g.dk.div_ceil(NR), c) };
                }
                // dK[:kv] += dS[r0..r1, :kv]^T Q[r0..r1]
                unsafe {
                    let c = d.dk.0.get().wrapping_add(d.dk.1.head_off(bi, kh));
                    add_transposed_product(g, rows, dp.as_ptr(), &qp, g.dk, c, d.dk.1.st);
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
        // decoding (a query row or two) keeps the direct dot products
        fast: t > DIRECT_ROWS && attn_kernel::available() && !plain_attention(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| r.uniform() * 4.0 - 2.0).collect()
    }

    /// How a test lays its operands out.
    #[derive(Clone, Copy, Debug)]
    enum Operands {
        /// `(B, H, T, D)`, dense.
        Bhtd,
        /// `(B, T, H, D)`, dense (token-major, as `attention_bthd` reads them).
        Bthd,
        /// `(B, H, D, T)`: channels `T` apart.
        ChannelsApart,
        /// Keys and values one row broadcast over all positions (stride 0).
        BroadcastKv,
    }

    /// The output, dq, dk and dv of one path.
    fn run(g: &Geometry, ops: Operands, seed: u64) -> [Vec<f32>; 4] {
        let (b, h, hkv, t, s, dk, dv) = (g.b, g.h, g.hkv, g.t, g.s, g.dk, g.dv);
        let bthd = matches!(ops, Operands::Bthd);
        let src = |n_h: usize, n_t: usize, d: usize, kv: bool, seed: u64| match ops {
            Operands::ChannelsApart => Src {
                buf: Arc::new(rand(b * n_h * n_t * d, seed)),
                l: Layout {
                    off: 0,
                    sb: n_h * d * n_t,
                    sh: d * n_t,
                    st: 1,
                    sd: n_t,
                },
            },
            Operands::BroadcastKv if kv => Src {
                buf: Arc::new(rand(b * n_h * d, seed)),
                l: Layout {
                    off: 0,
                    sb: n_h * d,
                    sh: d,
                    st: 0,
                    sd: 1,
                },
            },
            _ => Src {
                buf: Arc::new(rand(b * n_h * n_t * d, seed)),
                l: Layout::dense(n_h, n_t, d, bthd),
            },
        };
        let q = src(h, t, dk, false, seed);
        let (k, v) = (
            src(hkv, s, dk, true, seed + 1),
            src(hkv, s, dv, true, seed + 2),
        );
        // as `attend`: with no key the output and dq are zeros, not written by every path
        let unset = if s == 0 { 0.0 } else { f32::NAN };
        let mut out = vec![unset; b * t * h * dv];
        let ol = Layout::dense(h, t, dv, true);
        let p = forward(g, &q, &k, &v, SendPtr(out.as_mut_ptr()), ol);
        let go = Src {
            buf: Arc::new(rand(b * h * t * dv, seed + 3)),
            l: Layout::dense(h, t, dv, bthd),
        };
        let (mut dq, mut dkk, mut dvv) = (
            vec![unset; b * h * t * dk],
            vec![0f32; b * hkv * s * dk],
            vec![0f32; b * hkv * s * dv],
        );
        let d = Dest {
            dq: (SendPtr(dq.as_mut_ptr()), Layout::dense(h, t, dk, bthd)),
            dk: (SendPtr(dkk.as_mut_ptr()), Layout::dense(hkv, s, dk, bthd)),
            dv: (SendPtr(dvv.as_mut_ptr()), Layout::dense(hkv, s, dv, bthd)),
        };
        backward(g, &p, &go, &q, &k, &v, &d);
        [out, dq, dkk, dvv]
    }

    /// The register-tile path against the `gemm` one: ragged tiles (T not a multiple of 6, S
    /// and the head dims not multiples of 16), several blocks of rows and the block edge
    /// (96), grouped queries, a cached prefix (S > T), queries that see no key (S < T, whole
    /// blocks of them; S = 0), rows of an additive mask that hide every key, no mask, and
    /// operands token-major, with channels apart, or broadcast over positions.
    #[test]
    fn register_tiles_match_gemm_path() {
        use Operands::*;
        if !attn_kernel::available() {
            eprintln!("no AVX2/FMA here: the register-tile path is not used on this machine");
            return;
        }
        let mut m = rand(2 * 53 * 61, 9);
        for row in [3, 10, 53 + 20] {
            m[row * 61..(row + 1) * 61].fill(f32::NEG_INFINITY);
        }
        let mask = crate::Tensor::from_vec(m, &[2, 1, 53, 61]).unwrap();
        let (c, n) = (AttnMask::Causal, AttnMask::None);
        let cases: &[([usize; 7], AttnMask, Operands)] = &[
            ([2, 4, 2, 100, 100, 24, 40], c, Bhtd),
            ([1, 2, 1, 97, 130, 33, 20], c, Bthd),
            ([1, 2, 2, 60, 45, 16, 17], c, Bhtd),
            ([1, 2, 1, 100, 20, 16, 16], c, Bhtd),
            ([1, 1, 1, 60, 5, 8, 8], c, ChannelsApart),
            ([1, 2, 2, 7, 0, 4, 4], c, Bhtd),
            ([1, 2, 2, 5, 0, 4, 4], n, Bthd),
            ([2, 2, 2, 53, 61, 8, 8], n, Bthd),
            ([2, 2, 1, 53, 61, 20, 12], AttnMask::Additive(&mask), Bhtd),
            ([2, 2, 1, 49, 64, 16, 16], n, BroadcastKv),
            ([1, 1, 1, 48, 1, 4, 4], n, Bhtd),
            ([1, 1, 1, 6, 16, 4, 4], c, ChannelsApart),
            ([1, 2, 2, 96, 96, 64, 64], c, Bthd),
            ([1, 1, 1, 97, 97, 16, 16], c, Bhtd),
            ([1, 2, 2, 49, 49, 64, 64], c, BroadcastKv),
            ([1, 4, 4, 256, 256, 64, 64], c, Bthd),
            ([1, 1, 1, 3, 3, 1, 1], c, Bhtd),
            ([1, 3, 1, 49, 49, 5, 3], c, ChannelsApart),
            // enough (batch, key/value head) pairs that a forward task takes a whole group of
            // query heads (sharing its packed K^T and V) on the test's two threads
            ([40, 4, 2, 20, 20, 8, 8], c, Bhtd),
            ([33, 3, 1, 13, 17, 8, 4], n, Bthd),
            ([2, 8, 4, 53, 61, 8, 8], AttnMask::Additive(&mask), Bhtd),
        ];
        // two threads, whatever the machine: which tasks the forward makes depends on it
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| check_cases(cases));
    }

    fn check_cases(cases: &[([usize; 7], AttnMask, Operands)]) {
        for (i, &(dims, m, ops)) in cases.iter().enumerate() {
            let mut g = geometry("test", dims, m, None).unwrap();
            g.fast = false;
            let want = run(&g, ops, 100 + i as u64);
            g.fast = true;
            let got = run(&g, ops, 100 + i as u64);
            for (name, (w, x)) in ["out", "dq", "dk", "dv"].iter().zip(want.iter().zip(&got)) {
                let scale = w.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
                for (j, (a, b)) in w.iter().zip(x).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "case {i} {dims:?} {ops:?}: {name}[{j}] {b} vs {a} on the gemm path"
                    );
                }
            }
        }
    }
}
