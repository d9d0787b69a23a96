//! Register-tile products for attention's per-head work (x86-64 with AVX2 and FMA).
//!
//! Attention multiplies small operands (a block of 64 query rows against at most a few hundred
//! keys of one head, inner dimension 64): `gemm` packs both operands on every call, and in
//! the `llama-tiny` step its packing took ~15% of attention's time, the products running at
//! ~75 GFLOP/s on two cores. Here a head's keys and values are packed once into panels of 16
//! columns and reused by every block of rows, and a causal mask stops the products at the
//! diagonal at the grain of one 6 x 16 tile (`gemm`'s path skips whole blocks of 64 rows: at
//! T = 256 it computes 62.5% of the score square, this path ~53%).
//!
//! Every product is one shape: a `mr x 16` tile of `C` (`mr <= 6`) is `sum_k a_r(k) b_k` with
//! `a_r(k)` read through any two strides (broadcast one float at a time) and `b_k` 16
//! consecutive floats of a panel. The three products of attention map onto it:
//! - `C = X Y^T` (scores, `dP`): `a` the rows of `X`, `b` panels of `Y^T`;
//! - `C = P Y` (output, `dQ`): `a` the rows of `P`, `b` panels of `Y`;
//! - `C += P^T Y` (`dK`, `dV`): `a` the columns of `P` (stride 1 between the tile's rows), `b`
//!   panels of `Y`.
//!
//! The gemm-based path in `attention.rs` is the reference (tests compare the two) and runs on
//! other machines.

/// Rows of a register tile.
pub(super) const MR: usize = 6;
/// Columns of a register tile (and of a panel).
pub(super) const NR: usize = 16;

/// Whether this machine runs the kernel (AVX2 and FMA, checked once).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A `rows x cols` matrix stored as `ceil(cols / 16)` panels of `rows x 16` floats, the
/// columns past `cols` zero: a tile's right operand.
#[derive(Default)]
pub(super) struct Panels {
    buf: Vec<f32>,
    rows: usize,
}

impl Panels {
    /// Packs the `rows x cols` matrix whose element `(r, c)` is at `src + r * rs + c * cs`.
    ///
    /// # Safety
    /// Every such element must be readable.
    pub(super) unsafe fn pack(
        &mut self,
        src: *const f32,
        rs: usize,
        cs: usize,
        rows: usize,
        cols: usize,
    ) {
        let panels = cols.div_ceil(NR);
        self.rows = rows;
        self.buf.clear();
        self.buf.resize(panels * rows * NR, 0.0);
        for p in 0..panels {
            let c0 = p * NR;
            let w = NR.min(cols - c0);
            let dst = &mut self.buf[p * rows * NR..(p + 1) * rows * NR];
            if cs == 1 && w == NR {
                for (r, d) in dst.chunks_exact_mut(NR).enumerate() {
                    d.copy_from_slice(std::slice::from_raw_parts(src.add(r * rs + c0), NR));
                }
            } else {
                // column by column: reads along `rs` (the unit stride when packing a transpose)
                for c in 0..w {
                    let col = src.add((c0 + c) * cs);
                    for r in 0..rows {
                        dst[r * NR + c] = *col.add(r * rs);
                    }
                }
            }
        }
    }

    /// Panel `p` from its row `r` on, as a tile's right operand.
    pub(super) fn rhs(&self, p: usize, r: usize) -> Rhs {
        debug_assert!(r <= self.rows && (p * self.rows + r) * NR <= self.buf.len());
        Rhs {
            ptr: self.buf[(p * self.rows + r) * NR..].as_ptr(),
            ks: NR,
        }
    }
}

/// The left operand of a tile: element `(r, k)` at `ptr + r * rs + k * ks`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 kernel only
pub(super) struct Lhs {
    pub ptr: *const f32,
    pub rs: usize,
    pub ks: usize,
}

/// The right operand of a tile: row `k` is the 16 floats at `ptr + k * ks` (a row of
/// [`Panels`]).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 kernel only
pub(super) struct Rhs {
    pub ptr: *const f32,
    pub ks: usize,
}

/// The destination of a tile: rows `ld` apart, unit column stride; `cols <= 16` of them are
/// written (stored, or added to when `add`), times `scale`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 kernel only
pub(super) struct Dst {
    pub ptr: *mut f32,
    pub ld: usize,
    pub cols: usize,
    pub add: bool,
    pub scale: f32,
}

/// `C[r][0..cols] (+)= scale * sum_{k < kc} a(r, k) * b(k)[0..cols]` for `r < mr`
/// (`mr <= 6`).
/// With `kc == 0` the tile is zeros (stored) or left as it is (added).
///
/// # Safety
/// `a(r, k)` for `r < mr`, `k < kc`, and all 16 floats of `b(k)` for `k < kc` must be readable, the `mr x cols`
/// destination writable and not read by anyone else meanwhile; the machine must have AVX2
/// and FMA ([`available`]).
pub(super) unsafe fn tile(mr: usize, kc: usize, a: Lhs, b: Rhs, c: Dst) {
    #[cfg(target_arch = "x86_64")]
    {
        match mr {
            1 => x86::tile::<1>(kc, a, b, c),
            2 => x86::tile::<2>(kc, a, b, c),
            3 => x86::tile::<3>(kc, a, b, c),
            4 => x86::tile::<4>(kc, a, b, c),
            5 => x86::tile::<5>(kc, a, b, c),
            6 => x86::tile::<6>(kc, a, b, c),
            _ => unreachable!("tile rows {mr} > {MR}"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mr, kc, a, b, c);
        unreachable!("attention kernel called without AVX2/FMA");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Dst, Lhs, Rhs, NR};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const M: usize>(kc: usize, a: Lhs, b: Rhs, c: Dst) {
        let mut lo = [_mm256_setzero_ps(); M];
        let mut hi = [_mm256_setzero_ps(); M];
        let mut rows = [a.ptr; M];
        for (r, p) in rows.iter_mut().enumerate() {
            *p = a.ptr.add(r * a.rs);
        }
        let mut bp = b.ptr;
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for r in 0..M {
                let av = _mm256_broadcast_ss(&*rows[r]);
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
                // (wrapping: after the last k the pointers may point past their buffer)
                rows[r] = rows[r].wrapping_add(a.ks);
            }
            bp = bp.wrapping_add(b.ks);
        }
        if c.scale != 1.0 {
            let f = _mm256_set1_ps(c.scale);
            for r in 0..M {
                lo[r] = _mm256_mul_ps(lo[r], f);
                hi[r] = _mm256_mul_ps(hi[r], f);
            }
        }
        for r in 0..M {
            let d = c.ptr.add(r * c.ld);
            if c.cols == NR {
                let (mut x0, mut x1) = (lo[r], hi[r]);
                if c.add {
                    x0 = _mm256_add_ps(x0, _mm256_loadu_ps(d));
                    x1 = _mm256_add_ps(x1, _mm256_loadu_ps(d.add(8)));
                }
                _mm256_storeu_ps(d, x0);
                _mm256_storeu_ps(d.add(8), x1);
            } else {
                let mut t = [0f32; NR];
                _mm256_storeu_ps(t.as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), hi[r]);
                for (j, &x) in t[..c.cols].iter().enumerate() {
                    if c.add {
                        *d.add(j) += x;
                    } else {
                        *d.add(j) = x;
                    }
                }
            }
        }
    }
}
