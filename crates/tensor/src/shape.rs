//! Shape arithmetic: strides, broadcasting, strided copies.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Product of the dims (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Whether `strides` describe a row-major layout without gaps (size-1 dims may have any
/// stride).
pub fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 && strides[i] != expected {
            return false;
        }
        expected *= shape[i];
    }
    true
}

/// The broadcast of two shapes (numpy rules), or an error naming the op.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::ShapeMismatch {
                op,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            });
        };
    }
    Ok(out)
}

/// Strides (in a contiguous buffer of shape `shape`) for reading it broadcast to `out`:
/// broadcast dims get stride 0.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let cs = contiguous_strides(shape);
    let r = out.len();
    let mut s = vec![0; r];
    for i in 0..shape.len() {
        let oi = r - shape.len() + i;
        s[oi] = if shape[i] == 1 && out[oi] != 1 {
            0
        } else {
            cs[i]
        };
    }
    s
}

/// Calls `f(linear_index, offset)` for every element of `shape` in row-major order, where
/// `offset = base + sum(index_d * strides_d)`.
pub fn for_each_offset(
    shape: &[usize],
    strides: &[usize],
    base: usize,
    mut f: impl FnMut(usize, usize),
) {
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let r = shape.len();
    if r == 0 {
        f(0, base);
        return;
    }
    let mut idx = vec![0usize; r];
    let mut off = base;
    let inner = shape[r - 1];
    let inner_stride = strides[r - 1];
    let mut i = 0;
    while i < n {
        for j in 0..inner {
            f(i + j, off + j * inner_stride);
        }
        i += inner;
        // advance the odometer over the outer dims
        let mut d = r - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Copies a strided view into a new row-major vector.
pub fn strided_copy(src: &[f32], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<f32> {
    let n = numel(shape);
    let mut out = crate::ops::alloc_out(n); // every element is written below
    let r = shape.len();
    if r == 0 {
        if n == 1 {
            out[0] = src[offset];
        }
        return out;
    }
    // Last dim strided (a transpose): copy the last two dims in tiles so that reads and writes
    // both stay within a few cache lines (element-by-element odometer order ran at 2 GB/s).
    if r >= 2 && strides[r - 1] != 1 && shape[r - 1] > 1 && shape[r - 2] > 1 {
        let (a, b) = (shape[r - 2], shape[r - 1]);
        let (sa, sb) = (strides[r - 2], strides[r - 1]);
        if r == 2 && sa == 1 && sb == a {
            // a plain transpose of a contiguous (b, a) matrix
            return crate::ops::transpose_copy(&src[offset..offset + n], b, a);
        }
        let outer_shape = &shape[..r - 2];
        let mut bases = Vec::with_capacity(numel(outer_shape));
        for_each_offset(outer_shape, &strides[..r - 2], offset, |_, off| {
            bases.push(off)
        });
        if outer_shape.is_empty() {
            bases.push(offset);
        }
        out.par_chunks_mut(a * b)
            .zip(bases.par_iter())
            .for_each(|(o, &base)| {
                copy2d_tiled(src, base, a, b, sa, sb, o);
            });
        return out;
    }
    // Parallelise over the first dim when the copy is large.
    if n >= 1 << 16 && shape[0] > 1 {
        let chunk = n / shape[0];
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| {
            for_each_offset(
                &shape[1..],
                &strides[1..],
                offset + i * strides[0],
                |j, off| {
                    o[j] = src[off];
                },
            );
        });
    } else {
        for_each_offset(shape, strides, offset, |i, off| out[i] = src[off]);
    }
    out
}

/// `dst[i * b + j] = src[base + i * sa + j * sb]` for an `a x b` block, in 32 x 32 tiles, in
/// parallel over bands of rows when large.
fn copy2d_tiled(
    src: &[f32],
    base: usize,
    a: usize,
    b: usize,
    sa: usize,
    sb: usize,
    dst: &mut [f32],
) {
    const TILE: usize = 32;
    let band = |(bi, d): (usize, &mut [f32])| {
        let i0 = bi * TILE;
        let ih = (a - i0).min(TILE);
        for j0 in (0..b).step_by(TILE) {
            let jw = (b - j0).min(TILE);
            // walk the source along its unit-stride direction when it has one
            if sa < sb {
                for j in j0..j0 + jw {
                    for i in 0..ih {
                        d[i * b + j] = src[base + (i0 + i) * sa + j * sb];
                    }
                }
            } else {
                for i in 0..ih {
                    for j in j0..j0 + jw {
                        d[i * b + j] = src[base + (i0 + i) * sa + j * sb];
                    }
                }
            }
        }
    };
    if a * b >= 1 << 16 {
        dst.par_chunks_mut(TILE * b).enumerate().for_each(band);
    } else {
        dst.chunks_mut(TILE * b).enumerate().for_each(band);
    }
}

/// Sums `g` (shaped `out`) down to `target` (which broadcasts to `out`).
pub fn sum_to_shape(g: &[f32], out: &[usize], target: &[usize]) -> Vec<f32> {
    if out == target {
        return g.to_vec();
    }
    let tn = numel(target);
    let mut res = vec![0f32; tn];
    if tn == 0 || g.is_empty() {
        return res; // nothing to sum into, or nothing to sum
    }
    // Fast path: target is a suffix of out (bias-like): sum rows.
    let stripped: Vec<usize> = target.iter().copied().skip_while(|&d| d == 1).collect();
    if !stripped.is_empty() && out.ends_with(&stripped) {
        for row in g.chunks_exact(tn) {
            for (r, v) in res.iter_mut().zip(row) {
                *r += v;
            }
        }
        return res;
    }
    if tn == 1 {
        res[0] = g.iter().sum();
        return res;
    }
    let strides = broadcast_strides(target, out);
    for_each_offset(out, &strides, 0, |i, off| res[off] += g[i]);
    res
}

/// Strides that let a tensor of `old_shape`/`old_strides` be viewed as `new_shape` without a
/// copy, if any (PyTorch's `computeStride`): dims are split or merged only where the memory
/// is contiguous across them.
pub fn view_strides(
    old_shape: &[usize],
    old_strides: &[usize],
    new_shape: &[usize],
) -> Option<Vec<usize>> {
    if numel(old_shape) != numel(new_shape) {
        return None;
    }
    if old_shape.is_empty() || numel(old_shape) == 0 {
        return Some(contiguous_strides(new_shape));
    }
    let mut new_strides = vec![0usize; new_shape.len()];
    let mut view_d = new_shape.len() as isize - 1;
    let mut chunk_base = *old_strides.last().expect("rank > 0");
    let mut tensor_numel = 1usize;
    let mut view_numel = 1usize;
    for td in (0..old_shape.len()).rev() {
        tensor_numel *= old_shape[td];
        let boundary =
            td == 0 || (old_shape[td - 1] != 1 && old_strides[td - 1] != tensor_numel * chunk_base);
        if boundary {
            while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1) {
                new_strides[view_d as usize] = view_numel * chunk_base;
                view_numel *= new_shape[view_d as usize];
                view_d -= 1;
            }
            if view_numel != tensor_numel {
                return None;
            }
            if td > 0 {
                chunk_base = old_strides[td - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    if view_d != -1 {
        return None;
    }
    Some(new_strides)
}
