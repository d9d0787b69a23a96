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
//! Where the CPU has AVX-512F, a tile row is one 512-bit register instead of two 256-bit ones
//! (same operands and layout), and [`tiles`] takes two panels at a time (a 6 x 32 tile):
//! at the `llama-tiny` shapes the one-panel 512-bit tile made attention's backward ~20% and
//! its forward ~10% faster than the 256-bit one, and the pairs a further ~20% (forward) and
//! ~12% (backward). `FERROLAB_NO_AVX512=1` keeps the 256-bit tiles.
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

/// Calls the kernel `$f::<M>` for the tile height `$mr` (1 to [`MR`]) with the given arguments.
macro_rules! by_rows {
    ($mr:expr, $f:path, ($($arg:expr),*)) => {{
        use $f as kernel;
        match $mr {
            1 => kernel::<1>($($arg),*),
            2 => kernel::<2>($($arg),*),
            3 => kernel::<3>($($arg),*),
            4 => kernel::<4>($($arg),*),
            5 => kernel::<5>($($arg),*),
            6 => kernel::<6>($($arg),*),
            mr => unreachable!("tile rows {mr} > {MR}"),
        }
    }};
}

/// Whether the tiles run on 512-bit registers (AVX-512F, checked once; `FERROLAB_NO_AVX512=1`
/// keeps them on AVX2, to compare the two).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && !std::env::var("FERROLAB_NO_AVX512").is_ok_and(|v| v == "1")
    })
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
                let mut r0 = 0;
                #[cfg(target_arch = "x86_64")]
                if rs == 1 && w == NR && available() {
                    // a transpose: 8 rows of all 16 columns at a time, in registers
                    r0 = x86::pack_transposed(src.add(c0 * cs), cs, rows, dst);
                }
                // column by column: reads along `rs` (the unit stride when packing a transpose)
                for c in 0..w {
                    let col = src.add((c0 + c) * cs);
                    for r in r0..rows {
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
        if avx512() {
            by_rows!(mr, x86::tile512, (kc, a, b, c));
            return;
        }
        by_rows!(mr, x86::tile, (kc, a, b, c))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mr, kc, a, b, c);
        unreachable!("attention kernel called without AVX2/FMA");
    }
}

/// [`tile`] across panels `0..np` of `b` (each from its row `r`): `c` points at column 0 and
/// names the `cols` columns to write in all (`cols <= 16 * np`; panels past them are skipped). With AVX-512, panels go in
/// pairs, a `mr x 32` tile on 12 registers: per `k`, two loads of `b` and `mr` broadcasts feed
/// `2 mr` multiply-adds, against `mr` of each in the one-panel tile.
///
/// # Safety
/// As [`tile`] for each panel's tile.
pub(super) unsafe fn tiles(mr: usize, kc: usize, a: Lhs, b: &Panels, r: usize, np: usize, c: Dst) {
    debug_assert!(c.cols <= np * NR);
    let mut p = 0;
    // (panels past the last column written have nothing to do)
    while p < np && p * NR < c.cols {
        let c0 = p * NR;
        #[cfg(target_arch = "x86_64")]
        if p + 1 < np && avx512() {
            let d = Dst {
                ptr: c.ptr.add(c0),
                cols: (c.cols - c0).min(2 * NR),
                ..c
            };
            let (b0, b1) = (b.rhs(p, r), b.rhs(p + 1, r));
            by_rows!(mr, x86::pair512, (kc, a, b0, b1, d));
            p += 2;
            continue;
        }
        let d = Dst {
            ptr: c.ptr.add(c0),
            cols: (c.cols - c0).min(NR),
            ..c
        };
        tile(mr, kc, a, b.rhs(p, r), d);
        p += 1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Dst, Lhs, Rhs, NR};
    use std::arch::x86_64::*;

    /// The tile's `M` row pointers into `a`.
    #[inline(always)]
    fn row_ptrs<const M: usize>(a: Lhs) -> [*const f32; M] {
        std::array::from_fn(|r| a.ptr.wrapping_add(r * a.rs))
    }

    /// `x * c.scale` stored into (or, with `c.add`, added to) the first `cols` (at most 16; none
    /// when 0) floats at `d`; the others are not touched.
    ///
    /// # Safety
    /// Those floats must be writable; the machine must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store512(x: __m512, d: *mut f32, cols: usize, c: &Dst) {
        let m: __mmask16 = if cols >= NR { !0 } else { (1u16 << cols) - 1 };
        let mut x = x;
        if c.scale != 1.0 {
            x = _mm512_mul_ps(x, _mm512_set1_ps(c.scale));
        }
        if c.add {
            x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, d));
        }
        _mm512_mask_storeu_ps(d, m, x);
    }

    /// Rows `0..rows / 8 * 8` of a panel whose column `c` is the `rows` consecutive floats
    /// at `src + c * cs` (`c < 16`), written as rows of 16 floats into `dst`; returns the
    /// first row left to do.
    ///
    /// # Safety
    /// Those columns must be readable and `dst` hold `rows * 16` floats; the machine must have
    /// AVX2 (as every caller of the kernels checks).
    pub(super) unsafe fn pack_transposed(
        src: *const f32,
        cs: usize,
        rows: usize,
        dst: &mut [f32],
    ) -> usize {
        pack_transposed_avx2(src, cs, rows, dst)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn pack_transposed_avx2(
        src: *const f32,
        cs: usize,
        rows: usize,
        dst: &mut [f32],
    ) -> usize {
        use crate::ops::matmul::transpose8x8;
        debug_assert!(dst.len() >= rows * NR);
        let full = rows / 8 * 8;
        for r0 in (0..full).step_by(8) {
            let lo = transpose8x8(std::array::from_fn(|c| {
                _mm256_loadu_ps(src.add(c * cs + r0))
            }));
            let hi = transpose8x8(std::array::from_fn(|c| {
                _mm256_loadu_ps(src.add((c + 8) * cs + r0))
            }));
            for (j, (l, h)) in lo.iter().zip(&hi).enumerate() {
                let out = dst.as_mut_ptr().add((r0 + j) * NR);
                _mm256_storeu_ps(out, *l);
                _mm256_storeu_ps(out.add(8), *h);
            }
        }
        full
    }

    /// [`tile`] on 512-bit registers: a tile row is one register. One accumulator per row
    /// would leave the FMA units waiting on their own latency (at most 6 chains), so even and
    /// odd `k` go to two sets, added at the end.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile512<const M: usize>(kc: usize, a: Lhs, b: Rhs, c: Dst) {
        let mut even = [_mm512_setzero_ps(); M];
        let mut odd = [_mm512_setzero_ps(); M];
        let mut rows = row_ptrs::<M>(a);
        let mut bp = b.ptr;
        for _ in 0..kc / 2 {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(b.ks));
            for r in 0..M {
                even[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rows[r]), b0, even[r]);
                odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rows[r].add(a.ks)), b1, odd[r]);
                // (wrapping: after the last k the pointers may point past their buffer)
                rows[r] = rows[r].wrapping_add(2 * a.ks);
            }
            bp = bp.wrapping_add(2 * b.ks);
        }
        if kc % 2 == 1 {
            let b0 = _mm512_loadu_ps(bp);
            for r in 0..M {
                even[r] = _mm512_fmadd_ps(_mm512_set1_ps(*rows[r]), b0, even[r]);
            }
        }
        for r in 0..M {
            store512(
                _mm512_add_ps(even[r], odd[r]),
                c.ptr.add(r * c.ld),
                c.cols,
                &c,
            );
        }
    }

    /// Two panels side by side on 512-bit registers: `C[r][0..cols]` for `cols <= 32`, the
    /// first 16 columns from `b0`, the rest from `b1` (see [`super::tiles`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pair512<const M: usize>(kc: usize, a: Lhs, b0: Rhs, b1: Rhs, c: Dst) {
        let mut lo = [_mm512_setzero_ps(); M];
        let mut hi = [_mm512_setzero_ps(); M];
        let mut rows = row_ptrs::<M>(a);
        let (mut p0, mut p1) = (b0.ptr, b1.ptr);
        for _ in 0..kc {
            let x0 = _mm512_loadu_ps(p0);
            let x1 = _mm512_loadu_ps(p1);
            for r in 0..M {
                let av = _mm512_set1_ps(*rows[r]);
                lo[r] = _mm512_fmadd_ps(av, x0, lo[r]);
                hi[r] = _mm512_fmadd_ps(av, x1, hi[r]);
                // (wrapping: after the last k the pointers may point past their buffer)
                rows[r] = rows[r].wrapping_add(a.ks);
            }
            p0 = p0.wrapping_add(b0.ks);
            p1 = p1.wrapping_add(b1.ks);
        }
        for r in 0..M {
            let d = c.ptr.add(r * c.ld);
            store512(lo[r], d, c.cols, &c);
            store512(hi[r], d.wrapping_add(NR), c.cols.saturating_sub(NR), &c);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const M: usize>(kc: usize, a: Lhs, b: Rhs, c: Dst) {
        let mut lo = [_mm256_setzero_ps(); M];
        let mut hi = [_mm256_setzero_ps(); M];
        let mut rows = row_ptrs::<M>(a);
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    type TileFn = unsafe fn(usize, usize, Lhs, Rhs, Dst);

    /// Runs `run` on an `MR x ld` destination (filled with `data`) through a [`Dst`] of `cols`
    /// columns, `add` and `scale`, and checks every element: rows `< mr` and columns `< cols`
    /// must be `scale * sum(r, j)` (plus the old value when adding), all others untouched.
    #[allow(clippy::too_many_arguments)]
    fn check_tile(
        mr: usize,
        ld: usize,
        cols: usize,
        add: bool,
        scale: f32,
        run: impl FnOnce(Dst),
        sum: impl Fn(usize, usize) -> f64,
        label: &str,
    ) {
        let init = data(MR * ld, 7);
        let mut c = init.clone();
        run(Dst {
            ptr: c.as_mut_ptr(),
            ld,
            cols,
            add,
            scale,
        });
        for (i, (&got, &was)) in c.iter().zip(&init).enumerate() {
            let (r, j) = (i / ld, i % ld);
            let want = if r < mr && j < cols {
                scale as f64 * sum(r, j) + if add { was as f64 } else { 0.0 }
            } else {
                was as f64 // outside the tile: untouched
            };
            assert!(
                (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{label} cols {cols} add {add} scale {scale}: ({r}, {j}) = {got}, want {want}"
            );
        }
    }

    /// Every tile kernel reads exactly its operands and writes exactly its destination: each
    /// operand sits against an unreadable page (after its last float, then before its first),
    /// so one float read or written outside it kills the test process. Row-major and
    /// transposed left operands, every tile height, depths 1 to 17, partial columns.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn tiles_touch_nothing_outside_their_operands() {
        use crate::guarded::Guarded;
        if !available() {
            return;
        }
        let wide = std::arch::is_x86_feature_detected!("avx512f");
        for at_end in [true, false] {
            let guard = |v: &[f32]| Guarded::new(v, at_end);
            for mr in 1..=MR {
                for kc in [1usize, 2, 3, 17] {
                    // a(r, k) at r * kc + k, then transposed: at k * mr + r
                    for (rs, ks) in [(kc, 1), (1, mr)] {
                        let mut a = guard(&data(mr * kc, kc));
                        let lhs = Lhs {
                            ptr: a.ptr(),
                            rs,
                            ks,
                        };
                        let mut b0 = guard(&data(NR * kc, 1));
                        let mut b1 = guard(&data(NR * kc, 2));
                        let (r0, r1) = (
                            Rhs {
                                ptr: b0.ptr(),
                                ks: NR,
                            },
                            Rhs {
                                ptr: b1.ptr(),
                                ks: NR,
                            },
                        );
                        for cols in [1usize, 9, NR, NR + 1, 2 * NR] {
                            // rows `cols` apart: the last row ends at the guard (or the first
                            // starts there)
                            let mut c = guard(&vec![0.5; (mr - 1) * cols + cols]);
                            let cp = c.ptr();
                            let dst = |cols| Dst {
                                ptr: cp,
                                ld: cols,
                                cols,
                                add: true,
                                scale: 0.5,
                            };
                            // SAFETY: the operands hold exactly what the kernels may touch.
                            unsafe {
                                if cols <= NR {
                                    by_rows!(mr, x86::tile, (kc, lhs, r0, dst(cols)));
                                    if wide {
                                        by_rows!(mr, x86::tile512, (kc, lhs, r0, dst(cols)));
                                    }
                                }
                                if wide {
                                    by_rows!(mr, x86::pair512, (kc, lhs, r0, r1, dst(cols)));
                                }
                            }
                            assert!(c.slice().iter().all(|v| v.is_finite()));
                        }
                    }
                }
            }
        }
    }

    /// Packing reads exactly its source: a source against an unreadable page, row-major and
    /// transposed, whole and partial panels, 8-row blocks and their remainders.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn packing_reads_nothing_outside_its_source() {
        use crate::guarded::Guarded;
        for at_end in [true, false] {
            for rows in [1usize, 5, 8, 9, 17] {
                for cols in [1usize, 15, 16, 17, 33] {
                    let v = data(rows * cols, rows + cols);
                    let mut src = Guarded::new(&v, at_end);
                    let mut p = Panels::default();
                    // SAFETY: the source holds rows x cols floats under both layouts.
                    unsafe {
                        p.pack(src.ptr(), cols, 1, rows, cols);
                        let straight = p.buf.clone();
                        // the same matrix read as the transpose of a cols x rows one
                        let t = crate::ops::matmul::transpose_copy(src.slice(), rows, cols);
                        let mut tsrc = Guarded::new(&t, at_end);
                        p.pack(tsrc.ptr(), 1, rows, rows, cols);
                        assert_eq!(p.buf, straight, "rows {rows} cols {cols}");
                    }
                }
            }
        }
    }

    /// Both register widths against the sum in f64, on every tile height, odd and even
    /// depths (the 512-bit tile splits even and odd `k`), partial columns, store and add,
    /// scaled and not.
    #[test]
    fn tiles_of_both_widths_match_a_plain_sum() {
        if !available() {
            return;
        }
        let widths: Vec<(&str, TileFn)> = {
            let mut w: Vec<(&str, TileFn)> = vec![("avx2", |mr, kc, a, b, c| unsafe {
                by_rows!(mr, x86::tile, (kc, a, b, c))
            })];
            if std::arch::is_x86_feature_detected!("avx512f") {
                w.push(("avx512", |mr, kc, a, b, c| unsafe {
                    by_rows!(mr, x86::tile512, (kc, a, b, c))
                }));
            }
            w
        };
        let (rs, ks, ld) = (3usize, 23usize, 21usize); // a(r, k) at r * 3 + k * 23
        for (name, f) in &widths {
            for mr in 1..=MR {
                for kc in [0usize, 1, 2, 3, 8, 65] {
                    let a = data(rs * MR + ks * kc + 1, kc);
                    let b = data(NR * kc + 1, kc + 1);
                    for cols in [NR, 5, 1] {
                        for (add, scale) in [(false, 1.0f32), (true, 1.0), (false, 0.125)] {
                            let lhs = Lhs {
                                ptr: a.as_ptr(),
                                rs,
                                ks,
                            };
                            let rhs = Rhs {
                                ptr: b.as_ptr(),
                                ks: NR,
                            };
                            check_tile(
                                mr,
                                ld,
                                cols,
                                add,
                                scale,
                                // SAFETY: every operand read and written is inside its vector.
                                |dst| unsafe { f(mr, kc, lhs, rhs, dst) },
                                |r, j| {
                                    (0..kc)
                                        .map(|k| a[r * rs + k * ks] as f64 * b[k * NR + j] as f64)
                                        .sum::<f64>()
                                },
                                &format!("{name} mr {mr} kc {kc}"),
                            );
                        }
                    }
                }
            }
        }
    }

    /// A row of tiles across several panels (pairs of panels on AVX-512, with a single one
    /// left over when their count is odd) against the plain sum, from a later row of the
    /// panels, with the last panel partly written.
    #[test]
    fn rows_of_tiles_across_panels_match_a_plain_sum() {
        if !available() {
            return;
        }
        let (rows, ks) = (40usize, 9usize);
        for np in 1..=5usize {
            let n = np * NR - 3; // the right operand's columns; the last panel is partial
            let src = data(rows * n, np);
            let mut b = Panels::default();
            // SAFETY: (r, c) at r * n + c is inside src.
            unsafe { b.pack(src.as_ptr(), n, 1, rows, n) };
            for mr in 1..=MR {
                for (r0, kc) in [(0usize, 0usize), (0, 1), (3, 17), (1, 39)] {
                    // (the fourth: a pair whose second panel has no column to write)
                    for cols in [n, np * NR - 8, 1, NR.min(n)] {
                        for (add, scale) in [(false, 0.5f32), (true, 0.5), (false, 1.0)] {
                            let a = data(MR + ks * kc + 1, mr + kc);
                            let lhs = Lhs {
                                ptr: a.as_ptr(),
                                rs: 1,
                                ks,
                            };
                            check_tile(
                                mr,
                                np * NR + 5,
                                cols,
                                add,
                                scale,
                                // SAFETY: operands inside their vectors; rows r0..r0 + kc of b.
                                |dst| unsafe { tiles(mr, kc, lhs, &b, r0, np, dst) },
                                |r, j| {
                                    (0..kc)
                                        .map(|k| {
                                            let y = if j < n { src[(r0 + k) * n + j] } else { 0.0 };
                                            a[r + k * ks] as f64 * y as f64
                                        })
                                        .sum()
                                },
                                &format!("np {np} mr {mr} r0 {r0} kc {kc}"),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Packing a transpose (columns of unit stride) through registers gives the same panels
    /// as element-by-element indexing, with ragged rows and a partial last panel.
    #[test]
    fn transposed_packing_matches_indexing() {
        if !available() {
            return;
        }
        for (rows, cols) in [
            (1usize, 16usize),
            (7, 16),
            (8, 16),
            (64, 33),
            (67, 20),
            (9, 48),
        ] {
            let cs = rows + 3; // element (r, c) at c * cs + r
            let src = data(cs * cols, rows);
            let mut p = Panels::default();
            // SAFETY: every (r, c) with r < rows, c < cols is inside src.
            unsafe { p.pack(src.as_ptr(), 1, cs, rows, cols) };
            for pnl in 0..cols.div_ceil(NR) {
                for r in 0..rows {
                    for j in 0..NR {
                        let c = pnl * NR + j;
                        let want = if c < cols { src[c * cs + r] } else { 0.0 };
                        assert_eq!(
                            p.buf[(pnl * rows + r) * NR + j],
                            want,
                            "{rows}x{cols}: panel {pnl} row {r} column {j}"
                        );
                    }
                }
            }
        }
    }
}
