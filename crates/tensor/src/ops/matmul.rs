//! Matrix products on the `gemm` crate: batched `matmul` with broadcast batch dims, and a fused
//! `linear` (`x @ w^T + b`).
//!
//! Operands are read through their strides, so transposed views (`w.t()`, `k.transpose(..)`)
//! cost no copy; `gemm` packs them itself. Small batched products (attention heads) run one
//! product per rayon task; large ones let `gemm` use all threads.

use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::{invalid, Error, Result};
use crate::shape::{broadcast_shape, contiguous_strides, numel, sum_to_shape};
use crate::tensor::Tensor;

/// A strided read-only matrix inside a buffer.
#[derive(Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}
// SAFETY: a MatRef only reads from a buffer that the caller keeps alive and unmodified for the
// duration of the product.
unsafe impl Send for MatRef {}
unsafe impl Sync for MatRef {}

impl MatRef {
    pub(crate) fn new(buf: &[f32], off: usize, rs: usize, cs: usize) -> MatRef {
        MatRef {
            ptr: buf[off..].as_ptr(),
            rs: rs as isize,
            cs: cs as isize,
        }
    }
    /// The transpose (swap strides).
    pub(crate) fn t(self) -> MatRef {
        MatRef {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Whether `gemm` may use several threads (false inside a parallel loop).
pub(crate) fn par(parallel: bool) -> Parallelism {
    let n = rayon::current_num_threads();
    if parallel && n > 1 {
        Parallelism::Rayon(n)
    } else {
        Parallelism::None
    }
}

/// `dst (m x n, row-major, leading dim ldd) (+)= lhs (m x k) @ rhs (k x n)`.
///
/// # Safety
/// `dst` must be valid for `m` rows of `ldd` elements; `lhs` and `rhs` must describe valid
/// matrices of the given sizes.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * ldd), 0, n);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// Safe product of two strided matrices into a new row-major `m x n` vector.
pub(crate) fn gemm_new(m: usize, n: usize, k: usize, lhs: MatRef, rhs: MatRef) -> Vec<f32> {
    let mut out = super::alloc_out(m * n); // gemm_into writes every element (read_dst false)
                                           // SAFETY: out has m*n elements; lhs/rhs come from live buffers of the right sizes.
    unsafe { gemm_into(m, n, k, out.as_mut_ptr(), n, false, lhs, rhs, par(true)) };
    out
}

/// Row-major transpose of a `rows x cols` matrix.
///
/// Bands of 16 source rows are read as streams, 8 columns at a time, and each 16 x 8 block is
/// written as 8 runs of 16 floats: whole cache lines of the output, each written once. (Bands
/// of single 8 x 8 blocks wrote half lines that were evicted and fetched again before the other
/// half came, at power-of-two row strides: 2.5 GB/s on 1024 x 4096.)
pub(crate) fn transpose_copy(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    transpose_copy_on(src, rows, cols, super::attn_kernel::available())
}

/// [`transpose_copy`], with the AVX2 register blocks or without them (`simd`; the machine
/// must have AVX2 for `true`).
fn transpose_copy_on(src: &[f32], rows: usize, cols: usize, simd: bool) -> Vec<f32> {
    const R: usize = 16;
    const C: usize = 8;
    // the register blocks read through raw pointers: a short source must not get that far
    assert!(
        src.len() >= rows * cols,
        "transpose_copy: {} elements for {rows} x {cols}",
        src.len()
    );
    let mut out = super::alloc_out(rows * cols); // every element is written below
    if rows == 0 || cols == 0 {
        return out;
    }
    #[derive(Clone, Copy)]
    struct Dst(*mut f32);
    // SAFETY: each band writes output columns r0..r0+R of every output row: disjoint regions.
    unsafe impl Send for Dst {}
    unsafe impl Sync for Dst {}
    impl Dst {
        fn get(&self) -> *mut f32 {
            self.0
        }
    }
    let dst = Dst(out.as_mut_ptr());
    let bands = rows.div_ceil(R);
    let work = |band: usize| {
        let r0 = band * R;
        let rh = (rows - r0).min(R);
        let mut c0 = 0;
        if rh == R && simd {
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: AVX2 is present; rows r0..r0+16 and columns 0..cols/8*8 of the
                // source are in bounds, and this band alone writes output columns r0..r0+16.
                unsafe { transpose_band_avx2(src, dst.get(), r0, rows, cols) };
                c0 = cols / C * C;
            }
        }
        if rh == R {
            while c0 + C <= cols {
                let mut blk = [[0f32; C]; R];
                for (r, b) in blk.iter_mut().enumerate() {
                    let at = (r0 + r) * cols + c0;
                    b.copy_from_slice(&src[at..at + C]);
                }
                for c in 0..C {
                    let mut line = [0f32; R];
                    for (l, b) in line.iter_mut().zip(&blk) {
                        *l = b[c];
                    }
                    // SAFETY: row c0 + c of the output, columns r0..r0+R, inside the buffer
                    // and written by this band only.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            line.as_ptr(),
                            dst.get().add((c0 + c) * rows + r0),
                            R,
                        )
                    };
                }
                c0 += C;
            }
        }
        for c in c0..cols {
            for r in r0..r0 + rh {
                // SAFETY: as above.
                unsafe { *dst.get().add(c * rows + r) = src[r * cols + c] };
            }
        }
    };
    if rows * cols >= 1 << 15 {
        (0..bands).into_par_iter().for_each(work);
    } else {
        (0..bands).for_each(work);
    }
    out
}

/// The 8 x 8 transpose of the rows `a[0..8]` (8 floats each) in registers.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn transpose8x8(
    a: [std::arch::x86_64::__m256; 8],
) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(a[0], a[1]);
    let t1 = _mm256_unpackhi_ps(a[0], a[1]);
    let t2 = _mm256_unpacklo_ps(a[2], a[3]);
    let t3 = _mm256_unpackhi_ps(a[2], a[3]);
    let t4 = _mm256_unpacklo_ps(a[4], a[5]);
    let t5 = _mm256_unpackhi_ps(a[4], a[5]);
    let t6 = _mm256_unpacklo_ps(a[6], a[7]);
    let t7 = _mm256_unpackhi_ps(a[6], a[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// One band of [`transpose_copy`]: source rows `r0..r0 + 16`, every whole group of 8
/// columns, as two 8 x 8 blocks transposed in registers and written as 8 output runs of 16
/// floats (whole cache lines).
///
/// # Safety
/// The CPU must have AVX2; `src` is `rows x cols` with `r0 + 16 <= rows`, `dst` is
/// `cols x rows`, and no other thread writes output columns `r0..r0 + 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_band_avx2(src: &[f32], dst: *mut f32, r0: usize, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    let base = src.as_ptr().add(r0 * cols);
    let load = |r: usize, c: usize| _mm256_loadu_ps(base.add(r * cols + c));
    let mut c0 = 0;
    while c0 + 8 <= cols {
        let lo = transpose8x8(std::array::from_fn(|r| load(r, c0)));
        let hi = transpose8x8(std::array::from_fn(|r| load(r + 8, c0)));
        for (c, (l, h)) in lo.iter().zip(&hi).enumerate() {
            let out = dst.add((c0 + c) * rows + r0);
            _mm256_storeu_ps(out, *l);
            _mm256_storeu_ps(out.add(8), *h);
        }
        c0 += 8;
    }
}

struct Operand {
    buf: Arc<Vec<f32>>,
    off: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl Operand {
    fn of(t: &Tensor) -> Operand {
        Operand {
            buf: t.storage(),
            off: t.offset(),
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
        }
    }
    fn rows(&self) -> usize {
        self.shape[self.shape.len() - 2]
    }
    fn cols(&self) -> usize {
        self.shape[self.shape.len() - 1]
    }
    /// The matrix at broadcast batch index `bi` of `out_batch`.
    fn mat(&self, out_batch: &[usize], bi: usize) -> MatRef {
        let r = self.shape.len();
        let nb = r - 2;
        let mut off = self.off;
        let mut rem = bi;
        for d in (0..out_batch.len()).rev() {
            let idx = rem % out_batch[d];
            rem /= out_batch[d];
            let od = d as isize - (out_batch.len() as isize - nb as isize);
            if od >= 0 {
                let od = od as usize;
                if self.shape[od] != 1 {
                    off += idx * self.strides[od];
                }
            }
        }
        MatRef::new(&self.buf, off, self.strides[r - 2], self.strides[r - 1])
    }
}

/// Batched product of two strided operands into a contiguous `(batch, m, n)` buffer.
fn bmm(a: &Operand, b: &Operand, batch: &[usize], ta: bool, tb: bool) -> Vec<f32> {
    let (m, k) = if ta {
        (a.cols(), a.rows())
    } else {
        (a.rows(), a.cols())
    };
    let n = if tb { b.rows() } else { b.cols() };
    let nb = numel(batch);
    let mut out = super::alloc_out(nb * m * n); // every product writes its block
    let get = |o: &Operand, bi: usize, t: bool| {
        let mr = o.mat(batch, bi);
        if t {
            mr.t()
        } else {
            mr
        }
    };
    let threads = rayon::current_num_threads();
    if nb >= threads && m * n * k <= 1 << 22 {
        out.par_chunks_mut((m * n).max(1))
            .enumerate()
            .for_each(|(bi, o)| {
                // SAFETY: o has m*n elements; operands are live for the call.
                unsafe {
                    gemm_into(
                        m,
                        n,
                        k,
                        o.as_mut_ptr(),
                        n,
                        false,
                        get(a, bi, ta),
                        get(b, bi, tb),
                        Parallelism::None,
                    )
                }
            });
    } else {
        for (bi, o) in out.chunks_mut((m * n).max(1)).enumerate() {
            // SAFETY: as above.
            unsafe {
                gemm_into(
                    m,
                    n,
                    k,
                    o.as_mut_ptr(),
                    n,
                    false,
                    get(a, bi, ta),
                    get(b, bi, tb),
                    par(true),
                )
            }
        }
    }
    out
}

impl Tensor {
    /// Matrix product over the last two dims, batch dims broadcast (`torch.matmul` for rank >= 2).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        if self.rank() < 2 || rhs.rank() < 2 {
            return invalid(
                "matmul",
                format!(
                    "needs rank >= 2 operands, got {:?} and {:?}",
                    self.shape(),
                    rhs.shape()
                ),
            );
        }
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k) = (self.shape()[ra - 2], self.shape()[ra - 1]);
        let (k2, n) = (rhs.shape()[rb - 2], rhs.shape()[rb - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
            });
        }
        // (.., m, k) @ (k, n): fold the batch into the rows: one large product.
        if rb == 2 && ra > 2 {
            let lead = &self.shape()[..ra - 1];
            let rows = numel(lead);
            let a2 = self.reshape(&[rows, k])?;
            let y = a2.matmul(rhs)?;
            let mut shape = lead.to_vec();
            shape.push(n);
            return y.reshape(&shape);
        }
        let batch = broadcast_shape("matmul", &self.shape()[..ra - 2], &rhs.shape()[..rb - 2])?;
        let (a, b) = (Operand::of(self), Operand::of(rhs));
        let data = bmm(&a, &b, &batch, false, false);
        let mut shape = batch.clone();
        shape.extend([m, n]);
        let (a_shape, b_shape) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(Tensor::from_op(
            data,
            shape.clone(),
            &[self, rhs],
            "matmul",
            move |g: Vec<f32>, needs| {
                let go = Operand {
                    buf: Arc::new(g),
                    off: 0,
                    strides: contiguous_strides(&shape),
                    shape: shape.clone(),
                };
                let full = |mut s: Vec<usize>, r: usize, c: usize| {
                    s.extend([r, c]);
                    s
                };
                let ga = needs[0].then(|| {
                    // dA = dC @ B^T, summed over broadcast batch dims
                    let v = bmm(&go, &b, &batch, false, true);
                    sum_to_shape(&v, &full(batch.clone(), m, k), &a_shape)
                });
                let gb = needs[1].then(|| {
                    // dB = A^T @ dC
                    let v = bmm(&a, &go, &batch, true, false);
                    sum_to_shape(&v, &full(batch.clone(), k, n), &b_shape)
                });
                Ok(vec![ga, gb])
            },
        ))
    }
}

/// Below this many rows, `linear` takes direct dot products instead of `gemm` (see inside).
const SMALL_ROWS: usize = 32;
/// Outputs per parallel task of the direct path.
const DIRECT_CHUNK: usize = 256;

/// [`linear`] with no rows, outputs or inputs: the bias in every row (zeros without one);
/// gradients are zeros for `x` and `w` and the column sums of the output gradient for `b`.
fn linear_empty(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    (rows, o, i): (usize, usize, usize),
) -> Result<Tensor> {
    let y = match b {
        Some(b) => b.contig().repeat(rows),
        None => vec![0f32; rows * o],
    };
    Ok(linear_node(x, w, b, o, y, move |_, needs| {
        (
            needs[0].then(|| vec![0f32; rows * i]),
            needs[1].then(|| vec![0f32; o * i]),
        )
    }))
}

/// `linear`'s output `y` `(.., o)` as a node over `x`, `w` (and `b`): `grads(g, needs)` gives
/// the gradients of `x` and `w`; `b`'s is the column sums of `g`.
fn linear_node(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    o: usize,
    y: Vec<f32>,
    grads: impl FnOnce(&[f32], &[bool]) -> (Option<Vec<f32>>, Option<Vec<f32>>) + Send + 'static,
) -> Tensor {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = o;
    let mut parents = vec![x, w];
    parents.extend(b);
    let has_b = b.is_some();
    Tensor::from_op(y, shape, &parents, "linear", move |g: Vec<f32>, needs| {
        let (gx, gw) = grads(&g, needs);
        let mut out = vec![gx, gw];
        if has_b {
            out.push(needs[2].then(|| column_sums(&g, o)));
        }
        Ok(out)
    })
}

/// Column sums of `g` `(rows, o)`: per-chunk sums collected in order, then added in order
/// (the same result on every run).
fn column_sums(g: &[f32], o: usize) -> Vec<f32> {
    let mut db = vec![0f32; o];
    if o == 0 {
        return db;
    }
    let parts: Vec<Vec<f32>> = g
        .par_chunks(o * 256)
        .map(|c| {
            let mut acc = vec![0f32; o];
            for r in c.chunks_exact(o) {
                acc.iter_mut().zip(r).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    for p in &parts {
        db.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    db
}

/// `x @ w^T + b` with `x` `(.., in)`, `w` `(out, in)` (PyTorch's `Linear` layout), `b` `(out)`.
/// One product over all rows; the bias is written first and accumulated into.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let [o, i] = w.dims::<2>("linear")?;
    let Some(&xi) = x.shape().last() else {
        return invalid("linear", "input is a scalar");
    };
    if xi != i {
        return Err(Error::ShapeMismatch {
            op: "linear",
            lhs: x.shape().to_vec(),
            rhs: w.shape().to_vec(),
        });
    }
    if let Some(b) = b {
        if b.shape() != [o] {
            return Err(Error::ShapeMismatch {
                op: "linear (bias)",
                lhs: vec![o],
                rhs: b.shape().to_vec(),
            });
        }
    }
    let rows: usize = x.shape()[..x.rank() - 1].iter().product();
    if rows == 0 || o == 0 || i == 0 {
        return linear_empty(x, w, b, (rows, o, i));
    }
    let xc = x.contig();
    let wc = w.contig();
    // `gemm` runs 20-60% faster with both operands row-major than with the `w^T` view as the
    // right operand (PERFORMANCE.md); transposing w costs far less than that when there are
    // many rows. With a few rows (decoding one token at a time) both the copy of the whole
    // weight and `gemm`'s set-up cost more than the products: each output is then a direct
    // dot product of an input row with a weight row.
    let mut y = super::alloc_out(rows * o); // bias rows or the product fill it
    let accumulate = if let Some(b) = b {
        let bc = b.contig();
        y.par_chunks_mut(o * 64).for_each(|c| {
            for r in c.chunks_exact_mut(o) {
                r.copy_from_slice(&bc);
            }
        });
        true
    } else {
        false
    };
    let mut wt = Vec::new();
    if rows < SMALL_ROWS {
        // each weight row is read once for all input rows (decoding a few tokens at a time
        // is bound by reading the weights): tasks take blocks of output columns and return
        // their (rows x block) results, scattered into y afterwards
        let block = (DIRECT_CHUNK / rows).max(1);
        let work = |jb: usize| -> Vec<f32> {
            let j0 = jb * block;
            let j1 = (j0 + block).min(o);
            let mut part = vec![0f32; rows * (j1 - j0)];
            for j in j0..j1 {
                let wj = &wc[j * i..(j + 1) * i];
                for r in 0..rows {
                    part[r * (j1 - j0) + j - j0] = crate::math::dot(&xc[r * i..(r + 1) * i], wj);
                }
            }
            part
        };
        let blocks = o.div_ceil(block);
        let parts: Vec<Vec<f32>> = if rows * o * i >= 1 << 20 {
            (0..blocks).into_par_iter().map(work).collect()
        } else {
            (0..blocks).map(work).collect()
        };
        for (jb, part) in parts.iter().enumerate() {
            let j0 = jb * block;
            let w = part.len() / rows;
            for r in 0..rows {
                let dst = &mut y[r * o + j0..r * o + j0 + w];
                let src = &part[r * w..(r + 1) * w];
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
    } else {
        wt = transpose_copy(&wc, o, i); // (in, out)
                                        // SAFETY: y is rows x o; x is rows x i contiguous; wt is i x o contiguous.
        unsafe {
            gemm_into(
                rows,
                o,
                i,
                y.as_mut_ptr(),
                o,
                accumulate,
                MatRef::new(&xc, 0, i, 1),
                MatRef::new(&wt, 0, o, 1),
                par(true),
            );
        }
    }
    drop(wt);
    Ok(linear_node(x, w, b, o, y, move |g, needs| {
        let wm = MatRef::new(&wc, 0, i, 1);
        let gm = MatRef::new(g, 0, o, 1);
        // dx = g (rows x o) @ w (o x i), both row-major; dw = g^T (o x rows) @ x (rows x i),
        // g^T a view. Tried: transposing g (or x) first so both operands are row-major
        // (faster in isolation, no faster in the step), and running dx and dw side by side on
        // one thread each (3% slower in the step than each product on both threads).
        let gx = needs[0].then(|| gemm_new(rows, i, o, gm, wm));
        let gw = needs[1].then(|| gemm_new(o, i, rows, gm.t(), MatRef::new(&xc, 0, i, 1)));
        (gx, gw)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ways of the transpose this machine runs: the plain bands, and the register blocks
    /// where it has AVX2.
    fn transpose_ways() -> &'static [bool] {
        if super::super::attn_kernel::available() {
            &[false, true]
        } else {
            &[false]
        }
    }

    /// The transpose reads nothing outside its source: a source against an unreadable page
    /// (after its end, then before its start), both ways of the transpose (the register
    /// blocks where the machine has AVX2), whole and ragged bands of 8 and 16 rows.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn transposes_read_nothing_outside_their_source() {
        use crate::guarded::Guarded;
        let ways = transpose_ways();
        for at_end in [true, false] {
            for rows in [1usize, 7, 8, 15, 16, 17, 33] {
                for cols in [1usize, 7, 8, 9, 24] {
                    let v: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
                    let src = Guarded::new(&v, at_end);
                    for &simd in ways {
                        let t = transpose_copy_on(src.slice(), rows, cols, simd);
                        for r in 0..rows {
                            for c in 0..cols {
                                assert_eq!(t[c * rows + r], v[r * cols + c]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Both ways of the transpose (register blocks where the machine has AVX2, plain bands
    /// everywhere) against index arithmetic, on whole and ragged bands and column groups.
    #[test]
    fn transposes_with_and_without_register_blocks_match_indexing() {
        let ways = transpose_ways();
        for &simd in ways {
            for (r, c) in [
                (16usize, 8usize),
                (32, 24),
                (48, 7),
                (17, 9),
                (64, 300),
                (5, 3),
            ] {
                let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
                let t = transpose_copy_on(&src, r, c, simd);
                for i in 0..c {
                    for j in 0..r {
                        assert_eq!(
                            t[i * r + j],
                            src[j * c + i],
                            "simd {simd} {r}x{c} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}
