//! Layout ops: reshape, permute, transpose, narrow, expand, contiguous, cat, split.
//!
//! Views share storage and only change shape/strides/offset; their backward maps the gradient
//! back to the input's shape.

use rayon::prelude::*;

use crate::error::{invalid, Error, Result};
use crate::shape::{contiguous_strides, numel, strided_copy, sum_to_shape, view_strides};
use crate::tensor::Tensor;

/// Copies a contiguous gradient of shape `shape` into position `start..start+len` of dim `dim`
/// inside a zero tensor of shape `full`: each output row is written once (zeros, the
/// gradient, zeros), on the pool when large.
fn pad_into(g: &[f32], full: &[usize], dim: usize, start: usize, len: usize) -> Vec<f32> {
    let inner: usize = full[dim + 1..].iter().product();
    let outer: usize = full[..dim].iter().product();
    let row_part = len * inner;
    map_rows(outer, full[dim] * inner, g, row_part, |orow, grow| {
        let (head, rest) = orow.split_at_mut(start * inner);
        let (mid, tail) = rest.split_at_mut(row_part);
        head.fill(0.0);
        mid.copy_from_slice(grow);
        tail.fill(0.0);
    })
}

/// Runs `f(first_row, out_rows, src_rows)` over matching blocks of whole rows of `out` (rows
/// of `ow > 0`) and `src` (rows of `sw > 0`): on the pool when `out` is large, else in one call.
fn rows_par(
    out: &mut [f32],
    ow: usize,
    src: &[f32],
    sw: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync + Send,
) {
    if out.len() < super::PAR_MIN {
        return f(0, out, src);
    }
    let rows = (super::chunk_len(out.len()) / ow).max(1);
    out.par_chunks_mut(rows * ow)
        .zip(src.par_chunks(rows * sw))
        .enumerate()
        .for_each(|(i, (o, s))| f(i * rows, o, s));
}

/// A new `rows x w` buffer whose row `i` is written by `f(row, src row i)` (`src` has rows of
/// `sw`), on the pool when large. A zero width on either side leaves zeros.
fn map_rows(
    rows: usize,
    w: usize,
    src: &[f32],
    sw: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) -> Vec<f32> {
    if w == 0 || sw == 0 {
        return vec![0f32; rows * w];
    }
    let mut out = super::alloc_out(rows * w); // f writes every element of every row
    rows_par(&mut out, w, src, sw, |_, o, s| {
        for (orow, srow) in o.chunks_exact_mut(w).zip(s.chunks_exact(sw)) {
            f(orow, srow);
        }
    });
    out
}

impl Tensor {
    /// Same elements, new shape; a view when the tensor is contiguous, a copy otherwise.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        let back = move |g: Vec<f32>, _: &[bool]| Ok(vec![Some(g)]);
        match view_strides(self.shape(), self.strides(), shape) {
            Some(strides) => Ok(Tensor::from_op_strided(
                self.storage(),
                shape.to_vec(),
                strides,
                self.offset(),
                &[self],
                "reshape",
                back,
            )),
            None => {
                let data = self.contig().to_vec();
                Ok(Tensor::from_op(
                    data,
                    shape.to_vec(),
                    &[self],
                    "reshape",
                    back,
                ))
            }
        }
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]`. A view (no copy).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the dims of shape {:?}",
                    self.shape()
                ),
            );
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| self.strides()[p]).collect();
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let out_shape = shape.clone();
        Ok(Tensor::from_op_strided(
            self.storage(),
            shape,
            strides,
            self.offset(),
            &[self],
            "permute",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                // g is contiguous in the output's shape; read it through the inverse permutation.
                let gs = contiguous_strides(&out_shape);
                let in_shape: Vec<usize> = inv.iter().map(|&i| out_shape[i]).collect();
                let in_strides: Vec<usize> = inv.iter().map(|&i| gs[i]).collect();
                Ok(vec![Some(strided_copy(g, 0, &in_shape, &in_strides))])
            },
        ))
    }

    /// Swaps two dims (negative indices count from the end). A view.
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let a = self.dim_index(d0, "transpose")?;
        let b = self.dim_index(d1, "transpose")?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// Elements `start..start+len` along `dim`. A view.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.dim_index(dim, "narrow")?;
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.shape()[d])
        {
            return invalid(
                "narrow",
                format!(
                    "{len} elements from {start} out of bounds for dim {d} of shape {:?}",
                    self.shape()
                ),
            );
        }
        let mut shape = self.shape().to_vec();
        shape[d] = len;
        let full = self.shape().to_vec();
        Ok(Tensor::from_op_strided(
            self.storage(),
            shape,
            self.strides().to_vec(),
            self.offset() + start * self.strides()[d],
            &[self],
            "narrow",
            move |g: Vec<f32>, _| Ok(vec![Some(pad_into(&g, &full, d, start, len))]),
        ))
    }

    /// Inserts a dim of size 1 at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim: dim as isize,
                rank: self.rank(),
            });
        }
        let mut s = self.shape().to_vec();
        s.insert(dim, 1);
        self.reshape(&s)
    }

    /// Removes a dim of size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim_index(dim, "squeeze")?;
        if self.shape()[d] != 1 {
            return invalid(
                "squeeze",
                format!("dim {d} of shape {:?} is not 1", self.shape()),
            );
        }
        let mut s = self.shape().to_vec();
        s.remove(d);
        self.reshape(&s)
    }

    /// Broadcasts to `shape` (numpy rules) without copying; the backward sums.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        let out = crate::shape::broadcast_shape("expand", self.shape(), shape)?;
        if out != shape {
            return Err(Error::ShapeMismatch {
                op: "expand",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        let r = shape.len();
        let k = self.rank();
        let mut strides = vec![0; r];
        for i in 0..k {
            let oi = r - k + i;
            strides[oi] = if self.shape()[i] == 1 && shape[oi] != 1 {
                0
            } else {
                self.strides()[i]
            };
        }
        let in_shape = self.shape().to_vec();
        let out_shape = shape.to_vec();
        Ok(Tensor::from_op_strided(
            self.storage(),
            shape.to_vec(),
            strides,
            self.offset(),
            &[self],
            "expand",
            move |g: Vec<f32>, _| Ok(vec![Some(sum_to_shape(&g, &out_shape, &in_shape))]),
        ))
    }

    /// A row-major copy if the tensor is not already contiguous.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let data = self.contig().to_vec();
        Tensor::from_op(
            data,
            self.shape().to_vec(),
            &[self],
            "contiguous",
            |g: Vec<f32>, _| Ok(vec![Some(g)]),
        )
    }

    /// Splits `dim` into pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor>> {
        let d = self.dim_index(dim, "split")?;
        if sizes.iter().sum::<usize>() != self.shape()[d] {
            return invalid(
                "split",
                format!(
                    "sizes {sizes:?} do not add up to dim {d} of shape {:?}",
                    self.shape()
                ),
            );
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(d as isize, start, s)?);
            start += s;
        }
        Ok(out)
    }

    /// Splits `dim` into `n` equal pieces.
    pub fn chunk(&self, n: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = self.dim_index(dim, "chunk")?;
        if n == 0 || !self.shape()[d].is_multiple_of(n) {
            return invalid(
                "chunk",
                format!(
                    "dim {d} of shape {:?} does not split into {n}",
                    self.shape()
                ),
            );
        }
        self.split(&vec![self.shape()[d] / n; n], dim)
    }

    /// Flattens dims `from..` into one.
    pub fn flatten_from(&self, from: usize) -> Result<Tensor> {
        if from > self.rank() {
            return Err(Error::DimOutOfRange {
                op: "flatten_from",
                dim: from as isize,
                rank: self.rank(),
            });
        }
        let mut s = self.shape()[..from].to_vec();
        s.push(self.shape()[from..].iter().product());
        self.reshape(&s)
    }
}

/// Concatenates tensors along `dim`; all other dims must agree.
pub fn cat(ts: &[&Tensor], dim: isize) -> Result<Tensor> {
    let Some(first) = ts.first() else {
        return invalid("cat", "no tensors given");
    };
    let d = first.dim_index(dim, "cat")?;
    for t in ts {
        let ok = t.rank() == first.rank()
            && t.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "cat",
                lhs: first.shape().to_vec(),
                rhs: t.shape().to_vec(),
            });
        }
    }
    let mut shape = first.shape().to_vec();
    shape[d] = ts.iter().map(|t| t.shape()[d]).sum();
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    let row = shape[d] * inner;
    let mut out = vec![0f32; numel(&shape)];
    let mut start = 0;
    let mut parts = Vec::with_capacity(ts.len());
    for t in ts {
        let c = t.contig();
        let w = t.shape()[d] * inner;
        for o in 0..outer {
            out[o * row + start..o * row + start + w].copy_from_slice(&c[o * w..(o + 1) * w]);
        }
        parts.push((start, w));
        start += w;
    }
    Ok(Tensor::from_op(
        out,
        shape,
        ts,
        "cat",
        move |g: Vec<f32>, needs| {
            let g = &g[..];
            Ok(parts
                .iter()
                .zip(needs)
                .map(|(&(s, w), &need)| {
                    need.then(|| {
                        let mut v = Vec::with_capacity(outer * w);
                        for o in 0..outer {
                            v.extend_from_slice(&g[o * row + s..o * row + s + w]);
                        }
                        v
                    })
                })
                .collect())
        },
    ))
}

/// Stacks equally shaped tensors along a new dim.
pub fn stack(ts: &[&Tensor], dim: usize) -> Result<Tensor> {
    let us: Vec<Tensor> = ts.iter().map(|t| t.unsqueeze(dim)).collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = us.iter().collect();
    cat(&refs, dim as isize)
}

/// Per-head concatenation for multi-head latent attention's keys: from `a` `(B, T, H * A)`
/// (heads of `A` channels) take the first `take` channels of each head, and append channels
/// `b_start..b_start + b_len` of `b` `(B, T, W)`, shared by every head. Returns
/// `(B, T, H * (take + b_len))`, each head `[a_h[..take] | b[b_start..]]`, in one contiguous
/// pass (where narrow + expand + cat would copy strided views); the backward sums the shared
/// part over heads.
pub fn head_cat(
    a: &Tensor,
    heads: usize,
    take: usize,
    b: &Tensor,
    b_start: usize,
    b_len: usize,
) -> Result<Tensor> {
    let op = "head_cat";
    let [ba, t, wa] = a.dims::<3>(op)?;
    let [bb, tb, wb] = b.dims::<3>(op)?;
    if heads == 0
        || !wa.is_multiple_of(heads)
        || take > wa / heads
        || ba != bb
        || t != tb
        || b_start.checked_add(b_len).is_none_or(|end| end > wb)
    {
        return invalid(
            op,
            format!(
                "cannot take {take} of {heads} heads from {:?} and {b_len} channels from {b_start} \
                 of {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    let ah = wa / heads;
    let oh = take + b_len;
    let rows = ba * t;
    let (ac, bc) = (a.contig(), b.contig());
    let ow = heads * oh;
    let mut out = super::alloc_out(rows * ow); // every element is written below
    if ow > 0 && wa > 0 {
        rows_par(&mut out, ow, &ac, wa, |r0, o, asrc| {
            for (i, (orow, arow)) in o
                .chunks_exact_mut(ow)
                .zip(asrc.chunks_exact(wa))
                .enumerate()
            {
                let bo = (r0 + i) * wb + b_start;
                for (h, dst) in orow.chunks_exact_mut(oh).enumerate() {
                    dst[..take].copy_from_slice(&arow[h * ah..h * ah + take]);
                    dst[take..].copy_from_slice(&bc[bo..bo + b_len]);
                }
            }
        });
    } else if ow > 0 {
        // no channels of a (so take = 0): every head is b's part
        for (i, orow) in out.chunks_exact_mut(ow).enumerate() {
            for dst in orow.chunks_exact_mut(oh) {
                dst.copy_from_slice(&bc[i * wb + b_start..i * wb + b_start + b_len]);
            }
        }
    }
    Ok(Tensor::from_op(
        out,
        vec![ba, t, ow],
        &[a, b],
        op,
        move |g: Vec<f32>, needs| {
            // every element of both gradients is written (zeros outside the taken parts)
            let ga = needs[0].then(|| {
                map_rows(rows, wa, &g, ow, |drow, grow| {
                    for (dh, gh) in drow.chunks_exact_mut(ah).zip(grow.chunks_exact(oh)) {
                        dh[..take].copy_from_slice(&gh[..take]);
                        dh[take..].fill(0.0);
                    }
                })
            });
            let gb = needs[1].then(|| {
                map_rows(rows, wb, &g, ow, |drow, grow| {
                    drow.fill(0.0);
                    let d = &mut drow[b_start..b_start + b_len];
                    for gh in grow.chunks_exact(oh) {
                        d.iter_mut().zip(&gh[take..]).for_each(|(x, s)| *x += s);
                    }
                })
            });
            Ok(vec![ga, gb])
        },
    ))
}
