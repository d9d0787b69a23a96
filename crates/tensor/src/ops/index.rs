//! Indexing ops: embedding, index_select, gather, scatter_add, where, masked_fill, one_hot,
//! top-k.
//!
//! Index arguments are host slices: token ids are `u32` (what tokenizers produce), positions
//! along a dim are `usize`. A CUDA backend uploads them; models do not change.

use rayon::prelude::*;

use crate::error::{invalid, Error, Result};
use crate::shape::{broadcast_shape, numel, sum_to_shape};
use crate::tensor::Tensor;

fn split3(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (
        shape[..d].iter().product(),
        shape[d],
        shape[d + 1..].iter().product(),
    )
}

/// Rows of `weight` `(V, D)` picked by `ids` (shaped `ids_shape`): output `(ids_shape.., D)`.
/// The backward scatter-adds into the rows used.
pub fn embedding(weight: &Tensor, ids: &[u32], ids_shape: &[usize]) -> Result<Tensor> {
    let [v, d] = weight.dims::<2>("embedding")?;
    if numel(ids_shape) != ids.len() {
        return invalid(
            "embedding",
            format!("{} ids for shape {ids_shape:?}", ids.len()),
        );
    }
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &x)| x as usize >= v) {
        return invalid(
            "embedding",
            format!("id {bad} at position {i} is outside the vocabulary of {v}"),
        );
    }
    let w = weight.contig();
    let mut out = super::alloc_out(ids.len() * d);
    out.par_chunks_mut(d.max(1))
        .zip(ids.par_iter())
        .for_each(|(o, &id)| {
            o.copy_from_slice(&w[id as usize * d..(id as usize + 1) * d]);
        });
    let mut shape = ids_shape.to_vec();
    shape.push(d);
    let ids = ids.to_vec();
    Ok(Tensor::from_op(
        out,
        shape,
        &[weight],
        "embedding",
        move |g: Vec<f32>, _| {
            let g = &g[..];
            let mut gw = vec![0f32; v * d];
            for (r, &id) in ids.iter().enumerate() {
                let dst = &mut gw[id as usize * d..(id as usize + 1) * d];
                dst.iter_mut()
                    .zip(&g[r * d..(r + 1) * d])
                    .for_each(|(a, b)| *a += b);
            }
            Ok(vec![Some(gw)])
        },
    ))
}

fn check_index(op: &'static str, idx: &[usize], n: usize) -> Result<()> {
    if let Some((i, &bad)) = idx.iter().enumerate().find(|(_, &x)| x >= n) {
        return invalid(
            op,
            format!("index {bad} at position {i} is out of range for a dim of {n}"),
        );
    }
    Ok(())
}

impl Tensor {
    /// Picks entries `indices` along `dim` (`torch.index_select`).
    pub fn index_select(&self, dim: isize, indices: &[usize]) -> Result<Tensor> {
        let d = self.dim_index(dim, "index_select")?;
        let (outer, n, inner) = split3(self.shape(), d);
        check_index("index_select", indices, n)?;
        let x = self.contig();
        let k = indices.len();
        let mut out = vec![0f32; outer * k * inner];
        for o in 0..outer {
            for (j, &ix) in indices.iter().enumerate() {
                out[(o * k + j) * inner..(o * k + j + 1) * inner]
                    .copy_from_slice(&x[(o * n + ix) * inner..(o * n + ix + 1) * inner]);
            }
        }
        let mut shape = self.shape().to_vec();
        shape[d] = k;
        let indices = indices.to_vec();
        Ok(Tensor::from_op(
            out,
            shape,
            &[self],
            "index_select",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                let mut gx = vec![0f32; outer * n * inner];
                for o in 0..outer {
                    for (j, &ix) in indices.iter().enumerate() {
                        let dst = &mut gx[(o * n + ix) * inner..(o * n + ix + 1) * inner];
                        let src = &g[(o * k + j) * inner..(o * k + j + 1) * inner];
                        dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                    }
                }
                Ok(vec![Some(gx)])
            },
        ))
    }

    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]` along `dim` (`torch.gather`); `index`
    /// has `index_shape`, which equals `self`'s shape except possibly along `dim`.
    pub fn gather(&self, dim: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        let d = self.dim_index(dim, "gather")?;
        let ok = index_shape.len() == self.rank()
            && index_shape
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b)
            && numel(index_shape) == index.len();
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "gather",
                lhs: self.shape().to_vec(),
                rhs: index_shape.to_vec(),
            });
        }
        let (outer, n, inner) = split3(self.shape(), d);
        check_index("gather", index, n)?;
        let k = index_shape[d];
        let x = self.contig();
        let mut out = vec![0f32; index.len()];
        for o in 0..outer {
            for j in 0..k {
                for i in 0..inner {
                    let p = (o * k + j) * inner + i;
                    out[p] = x[(o * n + index[p]) * inner + i];
                }
            }
        }
        let index = index.to_vec();
        Ok(Tensor::from_op(
            out,
            index_shape.to_vec(),
            &[self],
            "gather",
            move |g: Vec<f32>, _| {
                let g = &g[..];
                let mut gx = vec![0f32; outer * n * inner];
                for o in 0..outer {
                    for j in 0..k {
                        for i in 0..inner {
                            let p = (o * k + j) * inner + i;
                            gx[(o * n + index[p]) * inner + i] += g[p];
                        }
                    }
                }
                Ok(vec![Some(gx)])
            },
        ))
    }

    /// `self` with `src` added at `index` along `dim` (`torch.Tensor.scatter_add`); `index` has
    /// `src`'s shape.
    pub fn scatter_add(&self, dim: isize, index: &[usize], src: &Tensor) -> Result<Tensor> {
        let d = self.dim_index(dim, "scatter_add")?;
        let ok = src.rank() == self.rank()
            && src
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b)
            && src.numel() == index.len();
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "scatter_add",
                lhs: self.shape().to_vec(),
                rhs: src.shape().to_vec(),
            });
        }
        let (outer, n, inner) = split3(self.shape(), d);
        check_index("scatter_add", index, n)?;
        let k = src.shape()[d];
        let mut out = self.contig().to_vec();
        let s = src.contig();
        for o in 0..outer {
            for j in 0..k {
                for i in 0..inner {
                    let p = (o * k + j) * inner + i;
                    out[(o * n + index[p]) * inner + i] += s[p];
                }
            }
        }
        let index = index.to_vec();
        Ok(Tensor::from_op(
            out,
            self.shape().to_vec(),
            &[self, src],
            "scatter_add",
            move |g: Vec<f32>, needs| {
                let gs = needs[1].then(|| {
                    let mut v = vec![0f32; index.len()];
                    for o in 0..outer {
                        for j in 0..k {
                            for i in 0..inner {
                                let p = (o * k + j) * inner + i;
                                v[p] = g[(o * n + index[p]) * inner + i];
                            }
                        }
                    }
                    v
                });
                Ok(vec![needs[0].then_some(g), gs])
            },
        ))
    }

    /// `value` where `mask` is non-zero, `self` elsewhere (`mask` broadcasts to `self`).
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        let s = broadcast_shape("masked_fill", mask.shape(), self.shape())?;
        if s != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "masked_fill",
                lhs: self.shape().to_vec(),
                rhs: mask.shape().to_vec(),
            });
        }
        where_cond(mask, &Tensor::scalar(value), self)
    }

    /// The `k` largest entries of the last dim, in descending order, and their indices (ties:
    /// lower index first; NaN counts as larger than any number, as in `torch.topk`). The
    /// gradient flows through the values.
    pub fn topk(&self, k: usize) -> Result<(Tensor, Vec<usize>)> {
        let Some(&n) = self.shape().last() else {
            return invalid("topk", "input is a scalar");
        };
        if k > n {
            return invalid("topk", format!("k = {k} is larger than the last dim ({n})"));
        }
        let x = self.contig();
        let rows = self.numel() / n.max(1);
        let mut vals = vec![0f32; rows * k];
        let mut idx = vec![0usize; rows * k];
        vals.par_chunks_mut(k.max(1))
            .zip(idx.par_chunks_mut(k.max(1)))
            .enumerate()
            .for_each(|(r, (vr, ir))| {
                if k == 0 {
                    return;
                }
                let row = &x[r * n..(r + 1) * n];
                let mut order: Vec<usize> = (0..n).collect();
                // a total order: NaN above every number (as in torch.topk), -0 equal to 0
                let key = |v: f32| {
                    if v.is_nan() {
                        f32::NAN.abs()
                    } else if v == 0.0 {
                        0.0
                    } else {
                        v
                    }
                };
                let cmp =
                    |a: &usize, b: &usize| key(row[*b]).total_cmp(&key(row[*a])).then(a.cmp(b));
                if k < n {
                    order.select_nth_unstable_by(k - 1, cmp);
                    order.truncate(k);
                }
                order.sort_by(cmp);
                for (j, &o) in order.iter().enumerate() {
                    vr[j] = row[o];
                    ir[j] = o;
                }
            });
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = k;
        let saved = idx.clone();
        let t = Tensor::from_op(vals, shape, &[self], "topk", move |g: Vec<f32>, _| {
            let g = &g[..];
            let mut gx = vec![0f32; rows * n];
            for r in 0..rows {
                for j in 0..k {
                    gx[r * n + saved[r * k + j]] += g[r * k + j];
                }
            }
            Ok(vec![Some(gx)])
        });
        Ok((t, idx))
    }
}

/// `a` where `cond` is non-zero, `b` elsewhere, all three broadcast together.
pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let s = broadcast_shape("where", cond.shape(), a.shape())?;
    let s = broadcast_shape("where", &s, b.shape())?;
    let c = cond.detach().expand(&s)?.contig();
    let av = a.detach().expand(&s)?.contig();
    let bv = b.detach().expand(&s)?.contig();
    let out: Vec<f32> = (0..c.len())
        .map(|i| if c[i] != 0.0 { av[i] } else { bv[i] })
        .collect();
    let (ash, bsh, os) = (a.shape().to_vec(), b.shape().to_vec(), s.clone());
    Ok(Tensor::from_op(
        out,
        s,
        &[a, b],
        "where",
        move |g: Vec<f32>, needs| {
            let g = &g[..];
            let ga = needs[0].then(|| {
                let v: Vec<f32> = g
                    .iter()
                    .zip(c.iter())
                    .map(|(g, &c)| if c != 0.0 { *g } else { 0.0 })
                    .collect();
                sum_to_shape(&v, &os, &ash)
            });
            let gb = needs[1].then(|| {
                let v: Vec<f32> = g
                    .iter()
                    .zip(c.iter())
                    .map(|(g, &c)| if c != 0.0 { 0.0 } else { *g })
                    .collect();
                sum_to_shape(&v, &os, &bsh)
            });
            Ok(vec![ga, gb])
        },
    ))
}

/// One-hot rows: `(len, n)` with a 1 at each index.
pub fn one_hot(indices: &[usize], n: usize) -> Result<Tensor> {
    check_index("one_hot", indices, n)?;
    let mut v = vec![0f32; indices.len() * n];
    for (r, &i) in indices.iter().enumerate() {
        v[r * n + i] = 1.0;
    }
    Tensor::from_vec(v, &[indices.len(), n])
}
